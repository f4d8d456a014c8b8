"""Stage-wise residency and checkpoint constants: a one-shot run lets go of each model after its
last use, so one stage's weights are resident at a time; a sweep (and a session that keeps its
models) still loads each model once; a constant that depends only on a checkpoint (Kandinsky's
zero-image embedding, Karlo's empty-prompt encoding) is computed once and then found in the disk
cache without loading its encoder; the run report splits time into loading and computing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from kandinsky_util import tiny_kandinsky  # noqa: F401
from unclip_nodes.graph import Cache, run_sweep, run_workflow
from unclip_nodes.graph.cli import main
from unclip_nodes.nodes import runtime
from unclip_nodes.nodes.core import checkpoint, constants
from unclip_nodes.nodes.core.manager import MANAGER
from unclip_nodes.nodes.loaders import load_clip_vision, load_decoder

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "steps=2", "--set", "upsample_steps=2"]


@pytest.fixture
def fresh():
    """No model loaded and no constant kept in memory: as in a new process."""
    checkpoint.clear_model_cache()
    MANAGER.events.clear()
    checkpoint.LOADED.clear()
    yield
    checkpoint.clear_model_cache()


def events(what: str) -> list[str]:
    return [name for kind, name in MANAGER.events if kind == what]


def test_a_one_shot_run_releases_each_model_after_its_last_use(fresh, tmp_path, capsys):
    rc = main(["run", "text_to_image", *FAST, "--out", str(tmp_path / "out"), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    loads, releases = events("load"), events("release")
    assert sorted(loads) == sorted(set(loads))  # each model once
    assert sorted(releases) == sorted(loads)    # and each let go of
    assert MANAGER.resident() == {}
    order = [f"{kind} {name}" for kind, name in MANAGER.events if kind in ("load", "release")]
    # the prior is gone before the decoder arrives, the decoder before the upsampler
    assert order.index("release pocket/prior") < order.index("load pocket/decoder")
    assert order.index("release pocket/decoder") < order.index("load pocket/super_res_first")


def test_models_stay_for_later_runs_when_release_is_off(fresh, tmp_path):
    for seed in (1, 2):
        run_workflow(ROOT / "workflows" / "text_to_image.yaml", {"steps": 2, "seed": seed,
                                                                 "upsample_steps": 2},
                     out_dir=tmp_path, cache=Cache.off())
    assert events("release") == []
    assert sorted(events("load")) == sorted(set(events("load")))  # the second run loads nothing
    assert "pocket/decoder" in MANAGER.resident()


def test_a_released_sweep_still_loads_each_model_once(fresh, tmp_path, capsys):
    rc = main(["run", "text_to_image", *FAST, "--sweep", "seed=0..2", "--sweep",
               "prompt=a red circle on a white background,a blue square on a black background",
               "--out", str(tmp_path / "out"), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    loads = events("load")
    assert len(loads) == len(set(loads)) and "pocket/prior" in loads
    assert MANAGER.resident() == {}


def test_the_report_splits_each_node_into_loading_and_computing(fresh, tmp_path, capsys):
    report = tmp_path / "report.json"
    rc = main(["run", "text_to_image", *FAST, "--out", str(tmp_path / "out"), "--no-cache",
               "--report", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(report.read_text())
    nodes = {n["node"]: n for n in doc["nodes"]}
    assert nodes["prior"]["load_seconds"] > 0  # the prior loads on first use
    assert 0 <= nodes["prior"]["load_seconds"] <= nodes["prior"]["seconds"]
    assert nodes["model"]["load_seconds"] == 0  # the loader only opens the folder
    t = doc["time"]
    assert t["load"] == pytest.approx(sum(n["load_seconds"] for n in doc["nodes"]), abs=1e-3)
    assert t["save"] == pytest.approx(nodes["save"]["seconds"], abs=1e-3)
    assert t["load"] + t["compute"] + t["save"] <= doc["seconds"] + 1e-3
    assert "loading models" in out and "computing" in out


def test_kandinskys_zero_image_embedding_is_kept_on_disk_and_skips_the_image_encoder(
        fresh, tiny_kandinsky, tmp_path):
    store = Cache(tmp_path / "cache").constants()
    host = runtime.Host(store=store)
    shutil.copytree(tiny_kandinsky / "prior", tmp_path / "prior")
    prior_dir = str(tmp_path / "prior")

    def zero():
        with runtime.use_host(host):
            vision = load_clip_vision(prior_dir, "cpu", "fp32", False)
            return vision.negative_embeds()

    first = zero()
    assert [p for _, p in checkpoint.LOADED] == ["image_encoder"]
    checkpoint.clear_model_cache()  # a new process: memory gone, the disk cache stays
    checkpoint.LOADED.clear()
    again = zero()
    assert checkpoint.LOADED == []  # found, never computed
    assert torch.equal(first, again)
    # other weights are another checkpoint: computed afresh
    enc = tmp_path / "prior" / "image_encoder" / "model.safetensors"
    enc.write_bytes(enc.read_bytes())  # same bytes, a new file: its identity changes
    checkpoint.clear_model_cache()
    zero()
    assert [p for _, p in checkpoint.LOADED] == ["image_encoder"]


def test_karlos_empty_prompt_encoding_is_a_constant_kept_on_disk(fresh, tmp_path):
    store = Cache(tmp_path / "cache").constants()
    with runtime.use_host(runtime.Host(store=store)):
        first = load_decoder("pocket", "cpu", "fp32", False).empty_text(2)
    assert sorted(p for _, p in checkpoint.LOADED) == ["text_encoder", "tokenizer"]
    checkpoint.clear_model_cache()
    checkpoint.LOADED.clear()
    with runtime.use_host(runtime.Host(store=store)):
        again = load_decoder("pocket", "cpu", "fp32", False).empty_text(2)
    assert checkpoint.LOADED == []
    assert torch.equal(first.hidden_states, again.hidden_states)
    assert again.prompts == ("", "")


def test_without_a_store_a_constant_is_kept_in_memory_only(fresh):
    calls = []
    value = constants.constant("test", {"x": 1}, None, lambda: calls.append(1) or 5)
    assert value == constants.constant("test", {"x": 1}, None, lambda: calls.append(1) or 6)
    assert calls == [1]


def test_weights_load_into_modules_built_without_random_initialisation(fresh, monkeypatch):
    """Each component is built on the meta device and filled from its safetensors files: no
    initialiser runs (a random init of Kandinsky's 1.2 B-parameter UNet would cost longer than
    reading it)."""
    calls = []
    for name in ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "xavier_uniform_",
                 "zeros_", "ones_"):
        original = getattr(torch.nn.init, name)

        def counting(tensor, *a, _original=original, _name=name, **kw):
            if tensor.device.type != "meta":  # on the meta device an initialiser costs nothing
                calls.append(_name)
            return _original(tensor, *a, **kw)
        monkeypatch.setattr(torch.nn.init, name, counting)
    dec = load_decoder("pocket", "cpu", "fp32", False)
    unet, proj = dec.decoder, dec.text_proj
    assert calls == []
    assert all(p.device.type == "cpu" for p in unet.parameters())
    assert float(unet.conv_in.weight.abs().sum()) > 0 and proj is not None
