"""The shipped editing workflows run as written from any directory (tiny checkpoint, few steps),
find their sample images next to themselves, and save what they promise."""
from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest
import torch
import yaml

from stages_util import one_thread, tiny_checkpoint  # noqa: F401
from unclip_nodes.graph.cache import Cache
from unclip_nodes.graph import run_workflow
from unclip_nodes.nodes.image import load_image

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
EDIT = ["inpaint", "outpaint", "interpolate_images", "text_diff", "mix", "variations_inverted"]
FAST = {"steps": 2, "upsample_steps": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


def run(name, ckpt, out, **inputs):
    return run_workflow(WORKFLOWS / f"{name}.yaml", {"model": str(ckpt), **FAST, **inputs},
                        cache=Cache.off(), out_dir=out)


@pytest.mark.parametrize("name", EDIT + ["image_variations"])
def test_workflow_defaults_to_the_pocket_model_and_a_shipped_image(name):
    wf = yaml.safe_load((WORKFLOWS / f"{name}.yaml").read_text())
    assert wf["inputs"]["model"]["default"] == "pocket"
    images = [v["default"] for k, v in wf["inputs"].items()
              if k.startswith("image") and v["type"] == "STRING"]
    assert images and all((WORKFLOWS / p).is_file() and not Path(p).is_absolute() for p in images)


def test_inpaint_workflow_from_another_directory_keeps_the_unmasked_pixels(
        tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the sample image is found next to the workflow
    r = run("inpaint", tiny_checkpoint, tmp_path / "out")
    original, _ = load_image(str(WORKFLOWS / "images" / "red_circle_white.png"))
    out, mask = r.outputs["image"], r.outputs["mask"]
    keep = (mask == 0)[..., None].expand(out.shape)
    assert out.shape == original.shape
    assert torch.equal(out[keep], original[keep])
    assert len(r.files) == 1


def test_outpaint_workflow_keeps_the_original_in_the_middle(tiny_checkpoint, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("outpaint", tiny_checkpoint, tmp_path / "out", left=8, top=0, right=8, bottom=0)
    original, _ = load_image(str(WORKFLOWS / "images" / "blue_square_black.png"))
    assert r.outputs["image"].shape == (1, 64, 80, 3)
    assert torch.equal(r.outputs["image"][:, :, 8:72], original)


@pytest.mark.parametrize("name, thetas", [("interpolate_images", "0,0.5,1"),
                                          ("text_diff", "0,0.25")])
def test_path_workflows_save_a_sheet_and_an_animation_with_the_thetas(
        tiny_checkpoint, tmp_path, monkeypatch, name, thetas):
    monkeypatch.chdir(tmp_path)
    r = run(name, tiny_checkpoint, tmp_path / "out", thetas=thetas, format="gif")
    n = len(thetas.split(","))
    assert r.outputs["frames"].shape == (n, 64, 64, 3)
    assert r.outputs["thetas"] == thetas
    sheet = next(f for f in r.files if f.endswith(".png"))
    anim = next(f for f in r.files if f.endswith(".gif"))
    assert PIL.Image.open(sheet).text["frames"] == thetas
    with PIL.Image.open(anim) as gif:
        assert gif.n_frames == n
        assert json.loads(gif.info["comment"])["frames"] == thetas


def test_mix_workflow_decodes_count_images(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("mix", tiny_checkpoint, tmp_path / "out", count=2)
    assert r.outputs["images"].shape == (2, 64, 64, 3) and len(r.files) == 2


def test_variations_inverted_workflow_reconstructs_and_varies(tiny_checkpoint, tmp_path,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run("variations_inverted", tiny_checkpoint, tmp_path / "out", count=2, eta=0.5)
    assert r.outputs["reconstruction"].shape == (1, 32, 32, 3)
    v = r.outputs["variations"]
    assert v.shape == (2, 32, 32, 3) and not torch.equal(v[0], v[1])
    assert r.outputs["grid"].shape[0] == 1 and len(r.files) == 1


def test_a_relative_image_path_prefers_the_current_directory(tiny_checkpoint, tmp_path,
                                                             monkeypatch):
    """Backwards compatible: the workflow's folder is only the fallback."""
    (tmp_path / "images").mkdir()
    PIL.Image.new("RGB", (64, 64), (0, 200, 0)).save(tmp_path / "images" / "red_circle_white.png")
    monkeypatch.chdir(tmp_path)
    r = run("inpaint", tiny_checkpoint, tmp_path / "out", mask_w=8, mask_h=8)
    assert r.outputs["image"][0, 40, 40].tolist() == pytest.approx([0.0, 200 / 255, 0.0])
