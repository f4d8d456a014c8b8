"""The shipped stage workflows run as written (on the tiny checkpoint, few steps)."""
from __future__ import annotations

from pathlib import Path

import PIL.Image
import pytest
import yaml

from stages_util import tiny_checkpoint  # noqa: F401
from unclip_nodes.graph.cache import Cache
from unclip_nodes.graph import run_workflow

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


def test_text_to_image_workflow_saves_one_upsampled_image_per_prompt(tiny_checkpoint, tmp_path):
    r = run_workflow(WORKFLOWS / "text_to_image.yaml",
                     {"model": str(tiny_checkpoint), "steps": 2, "upsample_steps": 2,
                      "prompt": "a red circle\na blue star", "seed": 3},
                     cache=Cache.off(), out_dir=tmp_path)
    assert r.outputs["image"].shape == (2, 64, 64, 3)
    assert r.outputs["small"].shape == (2, 32, 32, 3)
    assert len(r.files) == 2 and all(PIL.Image.open(f).size == (64, 64) for f in r.files)


def test_image_variations_workflow_makes_count_variations(tiny_checkpoint, tmp_path):
    src = tmp_path / "in.png"
    PIL.Image.new("RGB", (50, 40), (200, 30, 30)).save(src)
    r = run_workflow(WORKFLOWS / "image_variations.yaml",
                     {"model": str(tiny_checkpoint), "image": str(src), "count": 3, "steps": 2,
                      "upsample_steps": 2}, cache=Cache.off(), out_dir=tmp_path / "out")
    images = r.outputs["images"]
    assert images.shape == (3, 64, 64, 3)
    assert (images[0] - images[1]).abs().max() > 0.01
    assert len(r.files) == 3


@pytest.mark.parametrize("name", ["text_to_image.yaml", "image_variations.yaml"])
def test_stage_workflows_default_to_the_pocket_model_and_end_in_save_image(name):
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    assert wf["inputs"]["model"]["default"] == "pocket"
    assert wf["nodes"]["model"]["params"]["path"] == "$model"
    savers = [n for n in wf["nodes"].values() if n["type"] == "SaveImage"]
    assert len(savers) == 1 and "filename_prefix" in savers[0]["params"] and "images" in savers[0]["links"]
