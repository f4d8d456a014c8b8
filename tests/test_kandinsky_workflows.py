"""The shipped Kandinsky 2.2 workflows run from the command line on the tiny checkpoint, export to
ComfyUI, and say which folders to give when none are given; DDIM inversion works in MoVQ latent
space."""
from __future__ import annotations

import json
from pathlib import Path

import PIL.Image
import pytest
import torch

from kandinsky_util import k22_handles, tiny_kandinsky  # noqa: F401
from unclip_nodes.graph.cli import main
from unclip_nodes.nodes import clip, decoder, invert
from unclip_nodes.nodes.core.sampling import sample
from unclip_nodes.nodes.core.sampling import DDIMSampler

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "kandinsky"
FOLDER = {"inpaint": "decoder-inpaint", "controlnet_depth": "controlnet-depth"}
NAMES = ("text_to_image", "variations", "interpolate", "text_diff", "inpaint",
         "controlnet_depth")


def folders(root: Path, name: str) -> list[str]:
    return ["--set", f"prior={root / 'prior'}",
            "--set", f"decoder={root / FOLDER.get(name, 'decoder')}"]


def test_every_kandinsky_workflow_is_shipped():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_kandinsky_workflow_runs_from_the_command_line(name, tiny_kandinsky, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["run", str(WORKFLOWS / f"{name}.yaml"), *folders(tiny_kandinsky, name),
               "--set", "steps=3", "--out", str(out), "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    pngs = sorted(out.glob("*.png"))
    assert pngs, "nothing saved"
    for png in pngs:
        with PIL.Image.open(png) as im:
            assert im.size[0] >= 64 and im.size[1] >= 64
            stored = json.loads(im.text["unclip_inputs"])
        assert stored["decoder"].endswith(FOLDER.get(name, "decoder"))


@pytest.mark.parametrize("name", NAMES)
def test_kandinsky_workflow_without_folders_names_the_folders_to_give(name, capsys):
    assert main(["validate", str(WORKFLOWS / f"{name}.yaml")]) == 2
    err = capsys.readouterr().err
    assert "workflow input 'prior' has no default: give it with --set prior=..." in err
    assert "kandinsky-2-2-prior" in err
    assert "workflow input 'decoder' has no default" in err
    assert f"kandinsky-2-2-{FOLDER.get(name, 'decoder')}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("fmt", ["api", "ui"])
@pytest.mark.parametrize("name", NAMES)
def test_kandinsky_workflow_exports_to_comfyui(name, fmt, tiny_kandinsky, tmp_path, capsys):
    target = tmp_path / f"{name}.json"
    rc = main(["export", str(WORKFLOWS / f"{name}.yaml"), f"--comfy-{fmt}", "-o", str(target),
               *folders(tiny_kandinsky, name)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(target.read_text())
    if fmt == "api":
        loader = next(n for n in data.values() if n["class_type"] == "unCLIP LoadUnCLIP")
        assert loader["inputs"]["prior_path"] == str(tiny_kandinsky / "prior")
        assert all(n["class_type"].startswith("unCLIP ") for n in data.values())
    else:
        assert any(n["type"] == "unCLIP LoadUnCLIP" for n in data["nodes"])


def test_exported_kandinsky_prompt_runs_headless_to_the_same_pixels(tiny_kandinsky, tmp_path,
                                                                    capsys):
    wf = WORKFLOWS / "text_to_image.yaml"
    args = [*folders(tiny_kandinsky, "text_to_image"), "--set", "steps=3"]
    assert main(["export", str(wf), "--comfy-api", "-o", str(tmp_path / "p.json"), *args]) == 0
    assert main(["run", str(wf), *args, "--out", str(tmp_path / "a"), "--no-cache"]) == 0
    assert main(["run", str(tmp_path / "p.json"), "--out", str(tmp_path / "b"),
                 "--no-cache", "--trust-inputs"]) == 0  # it names the model folders
    (a,), (b,) = sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png"))
    with PIL.Image.open(a) as ia, PIL.Image.open(b) as ib:
        assert ia.tobytes() == ib.tobytes()


def test_ddim_inversion_in_movq_latents_finds_the_noise_and_improves_with_steps(k22_handles):
    """Decode x_T with DDIM eta 0, invert the latents it gives: the inversion lands back near
    x_T, and its error shrinks as the steps get finer (DDIM's inversion is exact in the limit).
    Measured on the tiny random model: 13 % of mean |x_T| at 5 steps, 3.7 % at 25."""
    h = k22_handles
    dec, vision = h["decoder"], h["clip_vision"]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    cond = dec.conditioning(clip.clip_image_encode(vision, image), None, 1)
    sampler = DDIMSampler(dec.scheduler_config, eta=0.0)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    error = {}
    with torch.inference_mode():
        model = dec.model(cond, 1.0)
        for steps in (5, 25):
            x0 = sample(model, sampler, sampler.timesteps(steps), x_T.clone(), None)
            back = invert.ddim_invert(model, sampler, x0, steps)
            error[steps] = float((back - x_T).abs().mean() / x_T.abs().mean())
    assert error[25] < 0.06
    assert error[25] < error[5] / 2.5


def test_ddim_invert_node_gives_noise_the_decoder_takes_at_the_images_size(k22_handles):
    h = k22_handles
    dec, vision = h["decoder"], h["clip_vision"]
    image = torch.rand(1, 100, 70, 3, generator=torch.Generator().manual_seed(4))
    z = clip.clip_image_encode(vision, image)
    x_T = invert.ddim_invert_node(dec, image, z, None, steps=4, guidance_scale=1.0)
    assert x_T.shape == (1, 4, 128 // 8, 128 // 8)  # 100 x 70 rounded up to whole UNet cells
    out = decoder.decoder_node(dec, z, None, steps=4, guidance_scale=1.0, seed=0,
                               images_per_embedding=1, noise=x_T, sampler="ddim")
    assert out.shape == (1, 128, 128, 3)
