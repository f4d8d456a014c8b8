"""The shipped Stable unCLIP workflows run from the command line on the tiny checkpoints,
export to ComfyUI (and the exported prompt runs headless to the same pixels), and say which
folder to give when none is given."""
from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest

from stable_unclip_util import tiny_stable_unclip  # noqa: F401
from unclip_nodes.graph.cli import main

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "stable_unclip"
LAYOUT = {"text_to_image": "txt2img", "inpaint": "txt2img", "variations": "img2img",
          "img2img": "img2img", "interpolate": "img2img", "text_diff": "img2img"}
NAMES = tuple(LAYOUT)
QUICK = ["--set", "steps=3"]


def folders(tiny: dict, name: str) -> list[str]:
    out = ["--set", f"model={tiny[LAYOUT[name]]}"]
    if name == "text_diff":  # the captions' CLIP comes from the text-to-image folder
        out += ["--set", f"text_model={tiny['txt2img']}"]
    if LAYOUT[name] == "txt2img":
        out += ["--set", "prior_steps=2"]
    return out


def test_every_stable_unclip_workflow_is_shipped():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_stable_unclip_workflow_runs_from_the_command_line(name, tiny_stable_unclip, tmp_path,
                                                           capsys):
    out = tmp_path / "out"
    rc = main(["run", str(WORKFLOWS / f"{name}.yaml"), *folders(tiny_stable_unclip, name),
               *QUICK, "--out", str(out), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    pngs = sorted(out.glob("*.png"))
    assert pngs, "nothing saved"
    for png in pngs:
        with PIL.Image.open(png) as im:
            assert min(im.size) >= 32
            stored = json.loads(im.text["unclip_inputs"])
        assert stored["model"] == str(tiny_stable_unclip[LAYOUT[name]])


@pytest.mark.parametrize("name", NAMES)
def test_stable_unclip_workflow_without_a_folder_names_the_folder_to_give(name, capsys):
    assert main(["validate", str(WORKFLOWS / f"{name}.yaml")]) == 2
    err = capsys.readouterr().err
    assert "workflow input 'model' has no default: give it with --set model=..." in err
    pipeline = "StableUnCLIPPipeline" if LAYOUT[name] == "txt2img" else \
        "StableUnCLIPImg2ImgPipeline"
    assert pipeline in err
    assert "Traceback" not in err


@pytest.mark.parametrize("fmt", ["api", "ui"])
@pytest.mark.parametrize("name", NAMES)
def test_stable_unclip_workflow_exports_to_comfyui(name, fmt, tiny_stable_unclip, tmp_path,
                                                   capsys):
    target = tmp_path / f"{name}.json"
    rc = main(["export", str(WORKFLOWS / f"{name}.yaml"), f"--comfy-{fmt}", "-o", str(target),
               *folders(tiny_stable_unclip, name)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(target.read_text())
    if fmt == "api":
        loader = next(n for n in data.values() if n["class_type"] == "unCLIP LoadUnCLIP")
        assert loader["inputs"]["path"] == str(tiny_stable_unclip[LAYOUT[name]])
        assert all(n["class_type"].startswith("unCLIP ") for n in data.values())
    else:
        assert any(n["type"] == "unCLIP LoadUnCLIP" for n in data["nodes"])


def test_exported_stable_unclip_prompt_runs_headless_to_the_same_pixels(tiny_stable_unclip,
                                                                        tmp_path):
    wf = WORKFLOWS / "text_to_image.yaml"
    args = [*folders(tiny_stable_unclip, "text_to_image"), *QUICK, "--set", "noise_level=100"]
    assert main(["export", str(wf), "--comfy-api", "-o", str(tmp_path / "p.json"), *args]) == 0
    assert main(["run", str(wf), *args, "--out", str(tmp_path / "a"), "--no-cache"]) == 0
    assert main(["run", str(tmp_path / "p.json"), "--out", str(tmp_path / "b"),
                 "--no-cache", "--trust-inputs"]) == 0  # it names the model folder
    (a,), (b,) = sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png"))
    with PIL.Image.open(a) as ia, PIL.Image.open(b) as ib:
        assert ia.tobytes() == ib.tobytes()
