"""Cache semantics on the real stages (tiny checkpoint, few steps), read from the run report."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from stages_util import tiny_checkpoint  # noqa: F401
from unclip_nodes.graph.cache import Cache, MemoryTier
from unclip_nodes.graph import run_workflow

RAN = "ran"


def workflow(path) -> dict:
    """Text to image with a seed per stage, so that one stage can be changed alone."""
    return {
        "inputs": {"prior_seed": {"type": "INT", "default": 1},
                   "decoder_seed": {"type": "INT", "default": 2},
                   "upsample_steps": {"type": "INT", "default": 2}},
        "nodes": {
            "model": {"type": "LoadUnCLIP", "params": {"path": str(path)}},
            "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                     "params": {"prompt": "a red circle"}},
            "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"},
                      "params": {"steps": 2, "seed": "$prior_seed"}},
            "decode": {"type": "Decoder",
                       "links": {"decoder": "model.decoder", "image_embeds": "prior.image_embeds",
                                 "text": "text.text"},
                       "params": {"steps": 2, "seed": "$decoder_seed"}},
            "upsample": {"type": "Upsample",
                         "links": {"upsampler": "model.upsampler", "image": "decode.image"},
                         "params": {"steps": "$upsample_steps", "seed": 3}},
        },
        "outputs": {"image": "upsample.image"},
    }


def ran(result) -> set[str]:
    return {node for node, status in result.status().items() if status == RAN}


@pytest.fixture
def cache(tmp_path):
    return Cache(tmp_path / "cache", memory=MemoryTier())


def test_new_decoder_seed_reruns_decoder_and_upsampler_only(tiny_checkpoint, cache, tmp_path):
    wf = workflow(tiny_checkpoint)
    first = run_workflow(wf, cache=cache, out_dir=tmp_path)
    assert ran(first) == {"model", "text", "prior", "decode", "upsample"}
    again = run_workflow(wf, {"decoder_seed": 5}, cache=cache, out_dir=tmp_path)
    assert ran(again) == {"decode", "upsample"}
    assert again.status()["prior"] != RAN and again.status()["text"] != RAN
    assert (again.outputs["image"] - first.outputs["image"]).abs().max() > 0.01


def test_new_upsampler_steps_rerun_only_the_upsampler(tiny_checkpoint, cache, tmp_path):
    wf = workflow(tiny_checkpoint)
    first = run_workflow(wf, cache=cache, out_dir=tmp_path)
    again = run_workflow(wf, {"upsample_steps": 3}, cache=cache, out_dir=tmp_path)
    assert ran(again) == {"upsample"}
    assert again.outputs["image"].shape == first.outputs["image"].shape


def test_unchanged_rerun_in_a_new_process_loads_no_model(tiny_checkpoint, tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        from unclip_nodes.graph.cache import Cache
        from unclip_nodes.graph import run_workflow
        from unclip_nodes.nodes import loaders
        wf = json.loads(sys.argv[1])
        r = run_workflow(wf, cache=Cache({str(tmp_path / 'cache')!r}), out_dir={str(tmp_path)!r})
        print(json.dumps({{"status": r.status(), "loaded": loaders.LOADED}}))
    """)
    arg = json.dumps(workflow(tiny_checkpoint))

    def run():
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-c", script, arg], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])
    cold = run()
    assert {n for n, s in cold["status"].items() if s == RAN} == \
        {"model", "text", "prior", "decode", "upsample"}, cold
    assert {part for _, part in cold["loaded"]} >= {"text_encoder", "prior", "decoder"}
    warm = run()
    assert not [n for n, s in warm["status"].items() if s == RAN], warm
    assert warm["loaded"] == [], warm
