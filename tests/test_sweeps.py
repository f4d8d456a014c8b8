"""Sweeps: many values of workflow inputs run as one graph in which shared work runs once."""
import json
import os

import enginenodes  # noqa: F401  -- registers the Test* node types
import PIL.Image
import pytest
import torch

from stages_util import tiny_checkpoint  # noqa: F401
from unclip_nodes.graph import Cache, MemoryTier, run_workflow
from unclip_nodes.graph.cli import main
from unclip_nodes.graph.sweep import parse_sweep, plan_sweep, run_sweep
from unclip_nodes.nodes.errors import UserError

WF = """
inputs:
  seed: {type: INT, default: 1}
  factor: {type: FLOAT, default: 2.0}
  label: {type: STRING, default: plain}
outputs:
  image: add.image
nodes:
  model: {type: TestLoader, params: {name: $label}}
  noise: {type: TestNoise, params: {seed: 7, size: 4}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: $factor}}
  apply: {type: TestApply, links: {model: model.model, image: scale.image}}
  noise2: {type: TestNoise, params: {seed: $seed, size: 4}}
  add: {type: TestAdd, links: {a: apply.image, b: noise2.image}}
  save: {type: TestSave, links: {image: add.image}, params: {prefix: out}}
"""


@pytest.fixture
def log(tmp_path, monkeypatch):
    """What the test nodes ran, in order (they append their type to ENGINE_TEST_LOG)."""
    path = tmp_path / "ran.log"
    monkeypatch.setenv("ENGINE_TEST_LOG", str(path))
    return lambda: path.read_text().split() if path.exists() else []


def cache(tmp_path):
    return Cache(tmp_path / "cache", memory=MemoryTier())


def test_sweep_values_are_lists_integer_ranges_or_lines_of_a_file(tmp_path):
    assert parse_sweep("seed=1, 2,3").values == ["1", "2", "3"]
    assert parse_sweep("seed=0..7").values == ["0..7"]  # expanded once the input's type is known
    (tmp_path / "p.txt").write_text("a red circle, small\n\nthe blue star\n")
    assert parse_sweep("prompt=@p.txt", base=tmp_path).values == ["a red circle, small",
                                                                  "the blue star"]
    for bad, msg in [("seed", "write --sweep NAME=a,b,c"), ("seed=1,,2", "an empty value"),
                     ("p=@nothere.txt", "cannot read")]:
        with pytest.raises(UserError, match=msg):
            parse_sweep(bad, base=tmp_path)


def test_shared_nodes_run_once_and_per_value_nodes_once_per_value(write_workflow, tmp_path, log):
    s = run_sweep(write_workflow(WF), ["seed=0..2", "factor=1,2.5"], cache=cache(tmp_path),
                  out_dir=tmp_path / "out")
    status = s.result.status()
    assert {n for n, st in status.items() if st != "ran"} == set()
    assert sorted(status) == sorted(
        ["model", "noise", "factor-1/scale", "factor-1/apply", "factor-2.5/scale",
         "factor-2.5/apply"] + [f"seed-{i}/noise2" for i in range(3)]
        + [f"seed-{i}_factor-{f}/{n}" for i in range(3) for f in ("1", "2.5")
           for n in ("add", "save")])
    ran = log()
    assert ran.count("TestLoader") == 1 and ran.count("TestApply") == 2
    assert ran.count("TestNoise") == 1 + 3 and ran.count("TestAdd") == 6
    assert s.plan.shared["model"] == 6 and s.plan.shared["seed-1/noise2"] == 2
    report = s.result.to_json()["sweep"]
    assert [c["tag"] for c in report["combinations"]][:2] == ["seed-0_factor-1",
                                                              "seed-0_factor-2.5"]


def test_swept_outputs_equal_separate_runs(write_workflow, tmp_path):
    path = write_workflow(WF)
    s = run_sweep(path, {"seed": [3, 4], "label": ["a", "bb"]}, cache=Cache.off(),
                  out_dir=tmp_path / "out")
    for combo in s.plan.combinations:
        alone = run_workflow(path, combo.inputs, cache=Cache.off(), out_dir=tmp_path / "alone")
        assert torch.equal(s.outputs(combo)["image"], alone.outputs["image"])
    assert len(s.plan.combinations) == 4


def test_zip_pairs_values_instead_of_combining(write_workflow, tmp_path):
    s = run_sweep(write_workflow(WF), ["seed=5,6", "factor=0.5,3"], zip=True,
                  cache=Cache.off(), out_dir=tmp_path / "out")
    assert [c.inputs for c in s.plan.combinations] == [{"seed": 5, "factor": 0.5},
                                                       {"seed": 6, "factor": 3.0}]
    with pytest.raises(UserError, match="equally long: seed has 2, factor has 3"):
        plan_sweep(write_workflow(WF), ["seed=5,6", "factor=1,2,3"], zip=True)


def test_savers_name_files_by_swept_values_and_record_their_own_run(write_workflow, tmp_path):
    out = tmp_path / "out"
    s = run_sweep(write_workflow(WF), ["seed=0,1"], overrides={"factor": "3"}, cache=Cache.off(),
                  out_dir=out)
    assert sorted(p.name for p in out.glob("*.txt")) == ["out_seed-0.txt", "out_seed-1.txt"]
    value, inputs = (out / "out_seed-1.txt").read_text().splitlines()
    assert json.loads(inputs) == {"seed": 1, "factor": 3.0, "label": "plain"}
    assert float(value) == pytest.approx(float(s.outputs(s.plan.combinations[1])["image"].sum()),
                                         abs=1e-5)


def test_text_values_are_named_by_position_unless_short_plain_words(write_workflow, tmp_path):
    long = ["a red circle", "a blue star"]
    assert [c.tag for c in plan_sweep(write_workflow(WF), {"label": long}).combinations] == [
        "label-1", "label-2"]
    assert [c.tag for c in plan_sweep(write_workflow(WF), ["label=cat,dog"]).combinations] == [
        "label-cat", "label-dog"]


def test_contact_sheet_shows_every_combination_in_sweep_rows_and_columns(write_workflow,
                                                                         tmp_path):
    s = run_sweep(write_workflow(WF), ["seed=0..2", "factor=1,2"], cache=Cache.off(),
                  out_dir=tmp_path / "out")
    assert s.grid == tmp_path / "out" / "wf_sweep_00001_.png"
    sheet = PIL.Image.open(s.grid)
    cell = 96 + 12  # 4 px images enlarged to 96 px, and a label strip
    assert sheet.size == (2 * 96 + 2, 3 * cell + 2 * 2)  # columns: factor, rows: seed
    corner = torch.tensor(sheet.getpixel((96 + 2 + 5, cell + 2 + 5)), dtype=torch.float32)
    img = s.outputs(s.plan.combinations[3])["image"][0, 0, 0]  # seed 1, factor 2
    assert torch.allclose(corner / 255, img.clamp(0, 1), atol=1 / 255)
    assert json.loads(sheet.text["unclip_sweep"])["inputs"] == ["seed", "factor"]


def test_sweep_mistakes_are_user_errors(write_workflow):
    path = write_workflow(WF)
    cases = [(["sed=1,2"], {}, "no input 'sed' (did you mean 'seed'?)"),
             (["seed=1,x"], {}, "--sweep seed=x: expected an integer"),
             (["seed=1,2"], {"seed": "3"}, "also given with --set"),
             (["seed=1,2,1"], {}, "1 given more than once"),
             (["seed=1", "seed=2"], {}, "swept twice"),
             (["seed=0..100000"], {}, "too many")]
    for sweeps, sets, msg in cases:
        with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")
                           .replace("?", r"\?")):
            plan_sweep(path, sweeps, overrides=sets)


def test_mistake_of_some_combinations_says_which(write_workflow):
    path = write_workflow(WF)
    with pytest.raises(UserError) as e:
        plan_sweep(path, ["factor=1,20,30"])
    lines = str(e.value).splitlines()
    assert [line.split("field 'factor': ")[1] for line in lines] == [
        f"FLOAT parameter: {v}.0 is above the maximum 10.0 (from workflow input '$factor') (in "
        f"the sweep's factor-{v})" for v in (20, 30)]
    assert lines[0].startswith(f"{path}:10:")


def test_second_sweep_run_is_all_cache_hits_but_savers(write_workflow, tmp_path, log):
    path, c = write_workflow(WF), cache(tmp_path)
    run_sweep(path, ["seed=0,1"], cache=c, out_dir=tmp_path / "out")
    first = len(log())
    again = run_sweep(path, ["seed=0,1"], cache=c, out_dir=tmp_path / "out")
    assert log()[first:] == ["TestSave", "TestSave"]
    assert {st for n, st in again.result.status().items() if not n.endswith("save")} <= {
        "memory hit", "not needed"}


def test_sweep_reaches_into_presets(tmp_path, write_workflow):
    write_workflow("""
        inputs:
          seed: {type: INT, default: 0}
        nodes:
          n: {type: TestNoise, params: {seed: $seed}}
        outputs: {image: n.image}
        """, name="noise.yaml")
    path = write_workflow("""
        inputs:
          seed: {type: INT, default: 0}
        nodes:
          fixed: {type: "preset:noise.yaml", params: {seed: 9}}
          swept: {type: "preset:noise.yaml", params: {seed: $seed}}
          add: {type: TestAdd, links: {a: fixed.image, b: swept.image}}
        outputs: {image: add.image}
        """)
    s = run_sweep(path, ["seed=1,2"], cache=Cache.off(), out_dir=tmp_path / "out")
    assert sorted(s.result.status()) == ["fixed/n", "seed-1/add", "seed-1/swept/n", "seed-2/add",
                                         "seed-2/swept/n"]


def test_sweep_of_a_preset_file_whose_image_input_is_given_a_file(tmp_path, write_workflow):
    """``unclip run PRESET --set image=FILE --sweep ...``: the image is loaded once."""
    PIL.Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    path = write_workflow("""
        inputs:
          image: {type: IMAGE}
          factor: {type: FLOAT, default: 1.0}
        nodes:
          s: {type: TestScale, links: {image: $image}, params: {factor: $factor}}
        outputs: {image: s.image}
        """)
    s = run_sweep(path, ["factor=0.5,0.25"], overrides={"image": str(tmp_path / "red.png")},
                  cache=Cache.off(), out_dir=tmp_path / "out")
    assert s.result.status() == {"$image": "ran", "factor-0.5/s": "ran", "factor-0.25/s": "ran"}
    assert [float(s.outputs(c)["image"][0, 0, 0, 0]) for c in s.plan.combinations] == [0.5, 0.25]


def test_cli_sweep_writes_named_files_contact_sheet_and_report(write_workflow, cli, tmp_path):
    write_workflow(WF)
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    done = cli(["run", "wf.yaml", "--sweep", "label=@labels.txt", "--sweep", "seed=0..1",
                "--report", "r.json"])
    assert done.returncode == 0, done.stderr
    names = sorted(os.listdir(tmp_path / "output"))
    assert names == ["out_label-cat_seed-0.txt", "out_label-cat_seed-1.txt",
                     "out_label-dog_seed-0.txt", "out_label-dog_seed-1.txt",
                     "wf_sweep_00001_.png"]  # the values in the order of the --sweep options
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["sweep"]["grid"].endswith("wf_sweep_00001_.png")
    status = {n["node"]: n["status"] for n in report["nodes"]}
    assert status["noise"] == "ran" and status["label-cat/model"] == "ran"


def test_zip_without_sweeps_is_a_user_error(write_workflow, capsys):
    assert main(["run", str(write_workflow(WF)), "--zip"]) == 2
    assert "--zip pairs the values of several --sweep" in capsys.readouterr().err


def test_decoder_seed_sweep_shares_text_and_prior_and_matches_separate_runs(tiny_checkpoint,
                                                                            tmp_path):
    """On the real stages: one model load, one text encoding, one prior; each seed's image
    equals its own separate run bit for bit."""
    wf = {"inputs": {"seed": {"type": "INT", "default": 0}},
          "nodes": {
              "model": {"type": "LoadUnCLIP", "params": {"path": str(tiny_checkpoint)}},
              "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                       "params": {"prompt": "a red circle"}},
              "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"},
                        "params": {"steps": 2, "seed": 1}},
              "decode": {"type": "Decoder",
                         "links": {"decoder": "model.decoder",
                                   "image_embeds": "prior.image_embeds", "text": "text.text"},
                         "params": {"steps": 2, "seed": "$seed"}},
              "save": {"type": "SaveImage", "links": {"images": "decode.image"},
                       "params": {"prefix": "t2i"}}},
          "outputs": {"image": "decode.image"}}
    s = run_sweep(wf, ["seed=0..2"], cache=Cache.off(), out_dir=tmp_path / "out")
    assert s.result.status() == {
        "model": "ran", "text": "ran", "prior": "ran",
        **{f"seed-{i}/{n}": "ran" for i in range(3) for n in ("decode", "save")}}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "t2i_seed-0_00001_.png", "t2i_seed-1_00001_.png", "t2i_seed-2_00001_.png",
        "workflow_sweep_00001_.png"]
    images = [s.outputs(c)["image"] for c in s.plan.combinations]
    assert not torch.equal(images[0], images[1])
    for i, img in enumerate(images):
        alone = run_workflow(wf, {"seed": i}, cache=Cache.off(), out_dir=tmp_path / "alone")
        assert torch.equal(img, alone.outputs["image"])
