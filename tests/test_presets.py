"""Presets: a workflow file used as a node type (``type: preset:...``), expanded inline."""
import os
import textwrap

import enginenodes  # noqa: F401  -- registers the Test* node types
import pytest
import test_engine_fuzz as fz
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from stages_util import tiny_checkpoint  # noqa: F401
from unclip_nodes.graph import Cache, MemoryTier, load, run_workflow
from unclip_nodes.graph import cli, preset
from unclip_nodes.graph.cache import compute_keys
from unclip_nodes.graph.run import execute
from unclip_nodes.nodes.errors import UserError

NOISE = """
description: Seeded noise, scaled.
inputs:
  seed: {type: INT, default: 1}
  factor: {type: FLOAT, default: 2.0}
  note: {type: STRING, default: "$not_a_reference"}
nodes:
  noise: {type: TestNoise, params: {seed: $seed, size: 4}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: $factor}}
  label: {type: TestLoader, params: {name: $note}}
outputs:
  image: scale.image
"""

MIX = """
inputs:
  image: {type: IMAGE, description: what to mix with the noise}
  factor: {type: FLOAT, default: 0.5}
nodes:
  half: {type: TestScale, links: {image: $image}, params: {factor: $factor}}
  noise: {type: "preset:noise.yaml", params: {seed: 5}}
  add: {type: TestAdd, links: {a: half.image, b: noise.image}}
outputs:
  image: add.image
  total: add.total
"""


@pytest.fixture
def files(tmp_path):
    def write(**docs):
        for name, text in docs.items():
            (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
        return tmp_path
    return write


def noise(seed, size=4):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def messages(excinfo) -> list[str]:
    return str(excinfo.value).splitlines()


def test_preset_node_runs_the_presets_nodes_with_prefixed_ids(files, tmp_path):
    files(noise=NOISE, a="""
        inputs:
          seed: {type: INT, default: 3}
        nodes:
          up: {type: "preset:noise.yaml", params: {seed: $seed, factor: 3}}
          save: {type: TestSave, links: {image: up.image}}
        outputs:
          image: up.image
        """)
    r = run_workflow(tmp_path / "a.yaml", {"seed": 4}, cache=Cache.off(), out_dir=tmp_path / "o")
    assert r.status() == {"up/noise": "ran", "up/scale": "ran", "up/label": "not needed",
                          "save": "ran"}
    assert torch.equal(r.outputs["image"], noise(4) * 3.0)


def test_expanded_nodes_have_the_cache_keys_of_the_same_nodes_written_out(files, tmp_path):
    files(noise=NOISE, a="""
        nodes:
          up: {type: "preset:noise.yaml", params: {seed: 9}}
        outputs: {image: up.image}
        """, b="""
        nodes:
          n: {type: TestNoise, params: {seed: 9, size: 4}}
          s: {type: TestScale, links: {image: n.image}, params: {factor: 2.0}}
        outputs: {image: s.image}
        """)
    a, b = load(tmp_path / "a.yaml"), load(tmp_path / "b.yaml")
    ka, kb = compute_keys(a.nodes, list(a.nodes)), compute_keys(b.nodes, list(b.nodes))
    assert ka["up/scale"] == kb["s"] and ka["up/noise"] == kb["n"]


def test_socket_input_takes_a_link_and_presets_nest(files, tmp_path):
    files(noise=NOISE, mix=MIX, a="""
        nodes:
          src: {type: TestNoise, params: {seed: 2, size: 4}}
          m: {type: "preset:mix.yaml", links: {image: src.image}, params: {factor: 4}}
        outputs: {image: m.image, total: m.total}
        """)
    r = run_workflow(tmp_path / "a.yaml", cache=Cache.off())
    assert set(r.status()) == {"src", "m/half", "m/noise/noise", "m/noise/scale",
                               "m/noise/label", "m/add"}
    expected = noise(2) * 4.0 + noise(5) * 2.0
    assert torch.equal(r.outputs["image"], expected)
    assert r.outputs["total"] == pytest.approx(float(expected.sum()))


def test_preset_defaults_that_start_with_dollar_stay_literal(files, tmp_path):
    files(noise=NOISE, a="""
        nodes:
          up: {type: "preset:noise.yaml"}
          save: {type: TestSave, links: {image: up.image}}
        """)
    rs = load(tmp_path / "a.yaml")
    assert rs.nodes["up/label"].params["name"] == "$not_a_reference"


def test_mistake_inside_a_preset_names_both_files_and_lines(files, tmp_path):
    files(b="""
        inputs:
          seed: {type: INT, default: 1}
        nodes:
          noise: {type: TestNoise, params: {seed: $seed, size: 99}}
        outputs:
          image: noise.image
        """, a="""
        nodes:
          first: {type: TestNoise}
          up:
            type: preset:b.yaml
          save: {type: TestSave, links: {image: up.image}}
        """)
    with pytest.raises(UserError) as e:
        load(tmp_path / "a.yaml")
    b, a = tmp_path / "b.yaml", tmp_path / "a.yaml"
    assert str(e.value) == (f"{b}:4:56 (used by {a}:3:3 node 'up'): node 'up/noise', field "
                            "'size': INT parameter: 99 is above the maximum 64")


def test_nested_mistake_lists_every_user_and_is_reported_once_per_place(files, tmp_path):
    files(inner="""
        nodes:
          n: {type: TestNoise, params: {size: $sise}}
        outputs: {image: n.image}
        """, mid="""
        nodes:
          i: {type: "preset:inner.yaml"}
        outputs: {image: i.image}
        """, a="""
        nodes:
          x: {type: "preset:mid.yaml"}
          y: {type: "preset:mid.yaml"}
          save: {type: TestAdd, links: {a: x.image, b: y.image}}
        outputs: {image: save.image}
        """)
    with pytest.raises(UserError) as e:
        load(tmp_path / "a.yaml")
    p = tmp_path
    assert messages(e) == [
        f"{p}/inner.yaml:2:39 (used by {p}/mid.yaml:2:3 node 'i', used by {p}/a.yaml:2:3 node "
        "'x'): node 'x/i/n', field 'size': undefined workflow input '$sise'; defined: none"]


def test_presets_that_use_each_other_are_a_cycle_naming_the_chain(files, tmp_path):
    files(a="""
        nodes:
          b: {type: "preset:b.yaml"}
        outputs: {image: b.image}
        """, b="""
        nodes:
          a: {type: "preset:a.yaml"}
          n: {type: TestNoise}
        outputs: {image: n.image}
        """)
    with pytest.raises(UserError) as e:
        load(tmp_path / "a.yaml")
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert str(e.value) == (f"{b}:2:13 (used by {a}:2:3 node 'b'): node 'b/a', field 'type': "
                            f"presets use each other in a cycle: {a} -> {b} -> {a}")


def test_using_node_mistakes_are_reported_where_the_node_is(files, tmp_path):
    files(noise=NOISE, mix=MIX, a="""
        inputs:
          word: {type: STRING, default: x}
        nodes:
          m:
            type: preset:mix.yaml
            params: {factr: 2, image: 1}
          n:
            type: preset:noise.yaml
            params: {seed: $word, factor: "many"}
            links: {image: m.image}
          q: {type: "preset:mix.yaml", links: {image: m.total}}
          save: {type: TestSave, links: {image: n.imag}}
        """)
    with pytest.raises(UserError) as e:
        load(tmp_path / "a.yaml")
    a = tmp_path / "a.yaml"
    assert messages(e) == [
        f"{a}:4:3: node 'm', field 'image': missing input 'image' (IMAGE) of preset 'mix.yaml': "
        "link it under 'links' as '<node>.<output>'",
        f"{a}:6:21: node 'm', field 'factr': preset 'mix.yaml' has no input 'factr' (did you mean "
        "'factor'?); its inputs: factor",
        f"{a}:6:31: node 'm', field 'image': 'image' is a socket input (IMAGE) of preset "
        "'mix.yaml', not a value: link it under 'links' as '<node>.<output>'",
        f"{a}:9:20: node 'n', field 'seed': input 'seed' of preset 'noise.yaml' takes INT but "
        "'$word' is STRING",
        f"{a}:9:35: node 'n', field 'factor': input 'factor' of preset 'noise.yaml' (FLOAT): "
        "expected a number, got 'many'",
        f"{a}:10:20: node 'n', field 'image': preset 'noise.yaml' has no socket input 'image'; "
        "its socket inputs: none",
        f"{a}:11:47: node 'q', field 'image': type mismatch: 'm.total' gives FLOAT but input "
        "'image' of preset 'mix.yaml' takes IMAGE",
        f"{a}:12:41: node 'save', field 'image': link 'n.imag': preset 'noise.yaml' has no output "
        "'imag' (did you mean 'image'?); its outputs: image",
    ]


def test_unknown_preset_name_suggests_a_close_one(tmp_path, monkeypatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "soft_noise.yaml").write_text("nodes: {n: {type: TestNoise}}\n")
    monkeypatch.setenv("UNCLIP_PRESETS", str(tmp_path / "lib"))
    wf = {"nodes": {"x": {"type": "preset:sotf_noise"}}}
    with pytest.raises(UserError, match=r"no preset named 'sotf_noise' \(did you mean "
                                        r"'soft_noise'\?\)"):
        load(wf)


def test_named_presets_come_from_shipped_folders_then_unclip_presets(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    for d, size in ((one, 3), (two, 5)):
        d.mkdir()
        (d / "blob.yaml").write_text(f"nodes: {{n: {{type: TestNoise, params: {{size: {size}}}}}}}"
                                     "\noutputs: {image: n.image}\n")
    (two / "only_two.yaml").write_text("nodes: {n: {type: TestNoise}}\noutputs: {image: n.image}\n")
    monkeypatch.setenv("UNCLIP_PRESETS", f"{one}:{two}".replace(":", __import__("os").pathsep))
    assert preset.find_preset("blob") == one / "blob.yaml"  # first folder wins
    assert preset.find_preset("only_two") == two / "only_two.yaml"
    assert preset.list_presets()["only_two"] == two / "only_two.yaml"
    assert preset.find_preset("text_to_image") == preset.SHIPPED / "text_to_image.yaml"
    rs = load({"nodes": {"b": {"type": "preset:blob"}}, "outputs": {"image": "b.image"}})
    assert rs.nodes["b/n"].params["size"] == 3
    monkeypatch.chdir(tmp_path)
    assert cli.workflow_path("only_two") == two / "only_two.yaml"  # `unclip run only_two`


def test_same_preset_used_twice_alike_runs_its_shared_nodes_once(files, tmp_path, monkeypatch):
    """Nodes with equal cache keys compute the same: the first stands for the others."""
    monkeypatch.setenv("ENGINE_TEST_LOG", str(tmp_path / "ran.log"))
    files(noise=NOISE, a="""
        nodes:
          one: {type: "preset:noise.yaml", params: {seed: 2, factor: 3}}
          two: {type: "preset:noise.yaml", params: {seed: 2, factor: 5}}
          add: {type: TestAdd, links: {a: one.image, b: two.image}}
          save1: {type: TestSave, links: {image: one.image}, params: {prefix: s}}
          save2: {type: TestSave, links: {image: one.image}, params: {prefix: s}}
        outputs: {image: add.image, same: two.image}
        """)
    r = run_workflow(tmp_path / "a.yaml", cache=Cache.off(), out_dir=tmp_path / "o")
    assert r.status() == {"one/noise": "ran", "one/scale": "ran", "one/label": "not needed",
                          "two/noise": "same as one/noise", "two/scale": "ran",
                          "two/label": "not needed", "add": "ran", "save1": "ran",
                          "save2": "ran"}  # savers have no key: each writes its own file
    assert (tmp_path / "ran.log").read_text().split().count("TestNoise") == 1
    assert torch.equal(r.outputs["image"], noise(2) * 3.0 + noise(2) * 5.0)
    assert torch.equal(r.outputs["same"], noise(2) * 5.0)
    assert len(r.files) == 2
    keys = {rec.node: rec.key for rec in r.report}
    assert keys["two/noise"] == keys["one/noise"] is not None


def test_socket_inputs_need_a_value_to_run_but_validate_as_a_preset(files, tmp_path):
    files(noise=NOISE, mix=MIX)
    with pytest.raises(UserError) as e:
        load(tmp_path / "mix.yaml")
    assert messages(e)[0].endswith("mix.yaml:2:3: field 'image': workflow input 'image' is a "
                                   "socket (IMAGE) and has no value: use this workflow as a "
                                   "preset (type: preset:...) and link it, or give it one (--set "
                                   "image=FILE for an IMAGE, values={'image': ...} from Python)")
    rs = load(tmp_path / "mix.yaml", preset=True)  # `unclip validate`: a preset definition
    assert rs.unbound == ["image"] and rs.nodes["half"].links == {"image": ("$image", "value")}
    with pytest.raises(UserError, match=r"cannot run: the socket input\(s\) 'image' \(IMAGE\)"):
        execute(rs, cache=Cache.off())
    with pytest.raises(UserError, match="which only presets have"):
        load({"nodes": {"s": {"type": "TestScale", "links": {"image": "$image"}}}})


def test_socket_input_links_are_type_checked_even_without_a_value(files, tmp_path):
    files(bad="""
        inputs:
          image: {type: MASK}
        nodes:
          s: {type: TestScale, links: {image: $image}, params: {factor: $image}}
        outputs: {image: s.image, again: $image}
        """)
    with pytest.raises(UserError) as e:
        load(tmp_path / "bad.yaml", preset=True)
    assert [m.split(": ", 1)[1] for m in messages(e)[:3]] == [
        "node 's', field 'image': type mismatch: '$image' gives MASK but input 'image' of "
        "TestScale takes IMAGE",
        "node 's', field 'factor': '$image' is a socket input (MASK): link it under 'links', not "
        "'params'",
        "field 'again': output 'again': '$image' is a workflow input; an output names a node's "
        "output, '<node id>.<output name>'"]


def test_socket_input_takes_a_python_value_keyed_by_its_content(files, tmp_path):
    files(noise=NOISE, mix=MIX)
    c = Cache(tmp_path / "c", memory=MemoryTier())
    image = noise(9)
    r = run_workflow(tmp_path / "mix.yaml", {"factor": 2.0}, values={"image": image}, cache=c)
    assert torch.equal(r.outputs["image"], image * 2.0 + noise(5) * 2.0)
    assert r.status()["$image"] == "ran" and r.report[0].type == "WorkflowValue"
    again = run_workflow(tmp_path / "mix.yaml", {"factor": 2.0}, values={"image": image.clone()},
                         cache=c)
    assert again.status()["add"] == "memory hit"  # equal content, equal keys
    as_override = run_workflow(tmp_path / "mix.yaml", {"factor": 2.0, "image": image}, cache=c)
    assert as_override.status()["add"] == "memory hit"  # a tensor override is a value too
    other = run_workflow(tmp_path / "mix.yaml", {"factor": 2.0}, values={"image": noise(8)},
                         cache=c)
    assert other.status()["add"] == "ran"
    assert not torch.equal(other.outputs["image"], r.outputs["image"])
    with pytest.raises(UserError) as e:
        load(tmp_path / "mix.yaml", values={"image": torch.zeros(4, 4), "factor": 1.0,
                                            "nothing": 1})
    assert [m.split(": ", 1)[1] for m in messages(e)] == [
        "field 'factor': value for 'factor': that workflow input is a value input: give it as an "
        "override; socket inputs: image",
        "field 'nothing': value for 'nothing': that workflow input does not exist; socket inputs: "
        "image",
        "field 'image': value for 'image' (IMAGE): expected a tensor with 4 dimensions "
        "([B, H, W, C]), got a Tensor of shape [4, 4]"]


def test_signature_gives_a_presets_inputs_and_typed_outputs(files, tmp_path):
    files(noise=NOISE, mix=MIX)
    sig = preset.signature(tmp_path / "mix.yaml")
    assert {n: (i.type, i.socket) for n, i in sig.inputs.items()} == {
        "image": ("IMAGE", True), "factor": ("FLOAT", False)}
    assert sig.outputs == {"image": "IMAGE", "total": "FLOAT"}


def test_run_time_error_inside_a_preset_is_placed_in_the_preset(files, tmp_path):
    files(bad="""
        inputs:
          text: {type: STRING, default: boom}
        nodes:
          f: {type: TestFail, params: {text: $text}}
        outputs: {image: f.image}
        """, a="""
        nodes:
          u: {type: "preset:bad.yaml"}
        outputs: {image: u.image}
        """)
    with pytest.raises(UserError) as e:
        run_workflow(tmp_path / "a.yaml", cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert str(e.value) == (f"{tmp_path}/bad.yaml:2:33 (used by {tmp_path}/a.yaml:2:3 node 'u'): "
                            "node 'u/f', field 'text': cannot use 'boom'")


def test_cli_validate_reports_preset_mistakes_with_exit_2(files, tmp_path, cli):
    files(b="""
        nodes:
          n: {type: TestNoise, params: {sed: 1}}
        outputs: {image: n.image}
        """, a="""
        nodes:
          up: {type: "preset:b.yaml"}
        outputs: {image: up.image}
        """)
    done = cli(["validate", "a.yaml"])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("b.yaml:2:38 (used by a.yaml:2:3 node 'up'): node 'up/n', "
                                  "field 'sed': TestNoise has no parameter 'sed' (did you mean "
                                  "'seed'?)")


def test_cli_validates_a_file_with_socket_inputs_as_a_preset_and_runs_it_given_a_file(
        files, tmp_path, capsys, monkeypatch):
    files(noise=NOISE, mix=MIX)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", "mix.yaml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "mix.yaml: ok as a preset (5 nodes, outputs: image, total)"
    assert out[1] == ("  image: IMAGE, a socket: linked where the preset is used; to run this "
                      "file itself, give --set image=IMAGE_FILE  what to mix with the noise")
    assert out[-1] == "use it as a node: type: preset:mix.yaml"
    assert cli.main(["run", "mix.yaml", "--no-cache"]) == 2
    assert "workflow input 'image' is a socket (IMAGE) and has no value" in \
        capsys.readouterr().err
    from PIL import Image
    Image.new("RGB", (4, 4), (255, 255, 255)).save(tmp_path / "white.png")
    assert cli.main(["run", "mix.yaml", "--set", "image=white.png", "--no-cache",
                     "--report", "r.json"]) == 0
    report = (tmp_path / "r.json").read_text()
    assert '"image": "white.png"' in report and '"node": "$image"' in report
    with pytest.raises(UserError, match="--set image=gone.png: no such file"):
        load(tmp_path / "mix.yaml", {"image": "gone.png"})


def test_shipped_upscale_preset_equals_the_upsample_node_written_out(tiny_checkpoint, tmp_path):
    """``preset:upscale`` (workflows/presets/) links a real IMAGE through its socket input."""
    src = {"type": "TestNoise", "params": {"seed": 4, "size": 32}}
    via_preset = {"nodes": {"src": src, "up": {
        "type": "preset:upscale", "links": {"image": "src.image"},
        "params": {"model": str(tiny_checkpoint), "steps": 2, "seed": 6}}},
        "outputs": {"image": "up.image"}}
    by_hand = {"nodes": {"src": src,
                         "m": {"type": "LoadUnCLIPUpsampler",
                               "params": {"path": str(tiny_checkpoint)}},
                         "u": {"type": "Upsample", "links": {"upsampler": "m.upsampler",
                                                             "image": "src.image"},
                               "params": {"steps": 2, "seed": 6}}},
               "outputs": {"image": "u.image"}}
    c = Cache(tmp_path / "c", memory=MemoryTier())
    first = run_workflow(via_preset, cache=c)
    assert first.outputs["image"].shape == (1, 64, 64, 3)
    again = run_workflow(by_hand, cache=c)  # the same cache keys: nothing runs again
    assert again.status() == {"src": "not needed", "m": "not needed", "u": "memory hit"}
    assert torch.equal(again.outputs["image"], first.outputs["image"])


PRESET_TYPES = ["preset:noise.yaml", "preset:mix.yaml", "preset:inner.yaml", "preset:self.yaml",
                "preset:nothere", "preset:", "preset:../x.yaml", "preset:upscale"]


@settings(fz.FUZZ, max_examples=int(os.environ.get("ENGINE_FUZZ_EXAMPLES", 60)))
@given(outer=st.dictionaries(st.sampled_from(["inputs", "nodes", "outputs"]), fz.value)
       | st.fixed_dictionaries({"nodes": st.dictionaries(
           st.sampled_from(fz.NAMES), st.fixed_dictionaries(
               {"type": st.sampled_from(PRESET_TYPES) | st.sampled_from(fz.TYPES)},
               optional={"links": st.dictionaries(fz.name, fz.value, max_size=3),
                         "params": st.dictionaries(fz.name, fz.value, max_size=3)}),
           max_size=4)}, optional={"inputs": st.dictionaries(fz.name, fz.winput, max_size=3),
                                   "outputs": st.dictionaries(fz.name, fz.value, max_size=2)}),
       inner=fz.document, sets=fz.overrides)
def test_random_preset_uses_give_only_user_errors(tmp_path, outer, inner, sets):
    for name, text in (("noise", NOISE), ("mix", MIX)):
        (tmp_path / f"{name}.yaml").write_text(textwrap.dedent(text))
    dump = lambda d: yaml.safe_dump(d, allow_unicode=True, sort_keys=False)  # noqa: E731
    (tmp_path / "inner.yaml").write_text(dump(inner), encoding="utf-8")
    (tmp_path / "self.yaml").write_text(dump(outer), encoding="utf-8")
    fz.expect_only_user_errors(tmp_path / "self.yaml", sets)
