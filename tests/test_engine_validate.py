"""Validation finds every user mistake before anything runs, each located at file:line:column."""
import enginenodes  # noqa: F401  -- registers the Test* node types
import pytest

from unclip_nodes.graph import load
from unclip_nodes.nodes.errors import UserError, UserErrors

GOOD = """
inputs:
  seed: {type: INT, default: 1, description: Noise seed.}
outputs:
  image: scale.image
nodes:
  noise:
    type: TestNoise
    params: {seed: $seed, size: 4}
  scale:
    type: TestScale
    links: {image: noise.image}
    params: {factor: 2}
"""  # lines appended to it add nodes (from line 13 on)

# (what is wrong, YAML, overrides, expected "line:column" or None, text the message must contain)
CASES = [
    ("yaml syntax", "nodes:\n  a: {type: TestNoise\n  b: 1\n", {}, "3:4", "YAML syntax error"),
    ("unknown top key", GOOD + "output:\n  x: scale.image\n", {}, "13:1",
     "unknown key 'output' in the workflow (did you mean 'outputs'?)"),
    ("unknown node key", GOOD.replace("    params: {factor: 2}", "    param: {factor: 2}"), {},
     "12:5", "unknown key 'param' in node 'scale' (did you mean 'params'?)"),
    ("unknown node type", GOOD.replace("type: TestScale", "type: TestScal"), {}, "10:11",
     "unknown node type 'TestScal' (did you mean 'TestScale'"),
    ("unknown input", GOOD.replace("{image: noise.image}", "{imag: noise.image}"), {}, "11:19",
     "TestScale has no input 'imag' (did you mean 'image'?)"),
    ("unknown parameter", GOOD.replace("{factor: 2}", "{factr: 2}"), {}, "12:21",
     "TestScale has no parameter 'factr' (did you mean 'factor'?)"),
    ("missing required input", GOOD.replace("    links: {image: noise.image}\n", ""), {}, "9:3",
     "missing required input 'image' (IMAGE)"),
    ("missing required param", GOOD + "  read: {type: TestReadFile}\n", {}, "13:3",
     "missing required parameter 'path'"),
    ("link to missing node", GOOD.replace("noise.image}", "nois.image}"), {}, "11:20",
     "there is no node 'nois' (did you mean 'noise'?)"),
    ("link to missing output", GOOD.replace("noise.image}", "noise.img}"), {}, "11:20",
     "TestNoise has no output 'img' (did you mean 'image'?)"),
    ("link syntax", GOOD.replace("noise.image}", "noise}"), {}, "11:20",
     "a link must be written '<node id>.<output name>', e.g. 'noise.image'"),
    ("socket type mismatch", GOOD + "  r: {type: TestRange}\n  s: {type: TestScale, "
     "links: {image: r.value}}\n", {}, "14:39",
     "'r.value' gives INT but input 'image' of TestScale takes IMAGE"),
    ("param wrong type", GOOD.replace("{factor: 2}", "{factor: big}"), {}, "12:22",
     "expected a number, got 'big'"),
    ("param out of range", GOOD.replace("size: 4", "size: 65"), {}, "8:33",
     "65 is above the maximum 64"),
    ("param not among choices", GOOD.replace("size: 4}", "size: 4, channels: cmyk}"), {},
     "8:46", "'cmyk' is not one of: rgb, gray"),
    ("unknown --set name", GOOD, {"sed": "3"}, None,
     "--set sed: the workflow has no input 'sed' (did you mean 'seed'?)"),
    ("unparsable --set value", GOOD, {"seed": "three"}, None,
     "--set seed=three: expected an integer, got 'three'"),
    ("undefined workflow input", GOOD.replace("$seed", "$sed"), {}, "8:20",
     "undefined workflow input '$sed' (did you mean 'seed'?)"),
    ("input default of wrong type", GOOD.replace("default: 1,", "default: 1.5,"), {}, "2:30",
     "default of workflow input 'seed' (INT): expected an integer, got 1.5"),
    ("input value out of the param's range", GOOD.replace("default: 1,", "default: -1,"), {},
     "8:20", "-1 is below the minimum 0 (from workflow input '$seed')"),
    ("cycle", GOOD + "  c1: {type: TestScale, links: {image: c2.image}}\n"
     "  c2: {type: TestScale, links: {image: c1.image}}\n", {}, "13:3",
     "the links form a cycle: c1 -> c2 -> c1"),
    ("check hook", GOOD + "  r: {type: TestRange, params: {low: 3, high: 1}}\n", {}, "13:38",
     "low (3) must not exceed high (1)"),
    ("fingerprint hook", GOOD + "  f: {type: TestReadFile, params: {path: /no/such/file}}\n", {},
     "13:42", "file not found: /no/such/file"),
    ("duplicate key", GOOD.replace("    params: {factor: 2}", "    params: {factor: 2, factor: 3}"),
     {}, "12:25", "'factor' is given twice in 'params' of node 'scale' (first given at line 12)"),
    ("bad $ reference", GOOD.replace("$seed", "'$ seed'"), {}, "8:20",
     "write '$$' for a literal '$'"),
    ("input without default", GOOD.replace("default: 1, ", ""), {}, "2:3",
     "workflow input 'seed' has no default: give it with --set seed=..."),
    ("nothing to run", GOOD.replace("outputs:\n  image: scale.image\n", ""), {}, None,
     "nothing to run"),
]


@pytest.mark.parametrize("what,text,overrides,place,expected", CASES, ids=[c[0] for c in CASES])
def test_validation_reports_each_mistake_with_its_place(write_workflow, what, text, overrides,
                                                        place, expected):
    path = write_workflow(text)
    with pytest.raises(UserError) as info:
        load(path, overrides)
    errors = getattr(info.value, "errors", [info.value])
    matching = [str(e) for e in errors if expected in str(e)]
    assert matching, f"{expected!r} not in:\n{info.value}"
    if place is not None:
        assert matching[0].startswith(f"{path}:{place}: "), matching[0]


def test_the_good_workflow_validates_and_resolves_references_and_overrides(write_workflow):
    rs = load(write_workflow(GOOD), {"seed": "0x10"})
    assert rs.inputs == {"seed": 16}
    assert rs.nodes["noise"].params == {"seed": 16, "size": 4, "channels": "rgb"}
    assert rs.nodes["scale"].links == {"image": ("noise", "image")}
    assert rs.outputs == {"image": ("scale", "image")}


def test_all_problems_are_reported_at_once_in_file_order(write_workflow):
    text = GOOD.replace("TestScale", "TestScal").replace("size: 4", "size: 0") + "extra: 1\n"
    with pytest.raises(UserErrors) as info:
        load(write_workflow(text), {"nope": "1"})
    messages = [str(e) for e in info.value.errors]
    assert len(messages) == 4
    assert [e.line for e in info.value.errors] == [8, 10, 13, None]
    assert "node 'noise', field 'size'" in messages[0]


def test_dollar_dollar_escapes_a_literal_dollar(write_workflow):
    text = GOOD + "  f: {type: TestSave, links: {image: scale.image}, params: {prefix: $$HOME}}\n"
    assert load(write_workflow(text)).nodes["f"].params["prefix"] == "$HOME"


def test_typed_overrides_follow_the_input_type(write_workflow):
    text = """
    inputs:
      f: {type: FLOAT, default: 1}
      b: {type: BOOLEAN, default: false}
      s: {type: STRING, default: x}
    nodes:
      r: {type: TestRange, params: {flag: $b}}
      n: {type: TestScale, links: {image: m.image}, params: {factor: $f}}
      m: {type: TestNoise}
      t: {type: TestSave, links: {image: n.image}, params: {prefix: $s}}
    """
    rs = load(write_workflow(text), {"f": "2.5", "b": "yes", "s": "42"})
    assert rs.inputs == {"f": 2.5, "b": True, "s": "42"}
    assert rs.nodes["r"].params["flag"] is True


def test_python_mapping_is_accepted_without_positions():
    wf = {"nodes": {"n": {"type": "TestNoise", "params": {"size": 2}}},
          "outputs": {"image": "n.image"}}
    assert load(wf).nodes["n"].params["size"] == 2
    wf["nodes"]["n"]["params"]["size"] = 0
    with pytest.raises(UserError, match=r"^node 'n', field 'size': .*below the minimum 1"):
        load(wf)


def test_missing_workflow_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="workflow file not found"):
        load(tmp_path / "nope.yaml")


def test_cli_validate_exits_2_with_located_messages_and_no_traceback(write_workflow, cli):
    path = write_workflow(GOOD.replace("size: 4", "size: 99"))
    proc = cli(["validate", path, "--set", "seed=x"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{path}:8:33: node 'noise', field 'size': INT parameter: 99 is above" in proc.stderr
    assert "--set seed=x: expected an integer" in proc.stderr


def test_cli_validate_accepts_a_good_workflow(write_workflow, capsys):
    from unclip_nodes.graph.cli import main
    assert main(["validate", str(write_workflow(GOOD)), "--set", "seed=5"]) == 0
    out = capsys.readouterr().out
    assert "ok (2 nodes, outputs: image)" in out
    assert "  --set seed=  INT = 5  Noise seed." in out


def test_cli_set_without_equals_is_a_user_error(write_workflow, capsys):
    from unclip_nodes.graph.cli import main
    assert main(["validate", str(write_workflow(GOOD)), "--set", "seed"]) == 2
    assert "write --set NAME=VALUE" in capsys.readouterr().err


def test_suggestions_catch_typos_case_and_words_in_another_order():
    from unclip_nodes.graph.workflow import suggest
    assert suggest("ImageResize", ["LoadImage", "ResizeImage"]) == " (did you mean 'ResizeImage'?)"
    assert suggest("testscale", ["TestScale", "TestSave"]).startswith(" (did you mean 'TestScale'")
    assert suggest("Lodimage", ["LoadImage"]) == " (did you mean 'LoadImage'?)"
    assert suggest("Sampler", ["LoadImage", "TestScale"]) == ""


def test_a_missing_input_value_is_reported_once_not_again_by_the_node_checks(write_workflow):
    text = """
    inputs:
      path: {type: STRING}
    outputs: {text: read.text}
    nodes:
      read: {type: TestReadFile, params: {path: $path}}
    """
    with pytest.raises(UserError) as info:
        load(write_workflow(text))
    assert str(info.value).endswith("workflow input 'path' has no default: give it with --set "
                                    "path=...")
    assert "file not found" not in str(info.value)
