"""Inside ComfyUI, the CLIP that ComfyUI's own model files take or give is read from their
headers, so that an embedding of another CLIP is refused before the prompt runs, on our node,
instead of failing inside KSampler ("The size of tensor a (768) must match ... (1024)").

The files are written here with the key names and shapes of the real ones (SD 2.1 unCLIP -l and
-h, SDXL, clip_vision_l / _g) and small tensors elsewhere; ComfyUI's folder_paths is modelled.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stages_util import tiny_checkpoint  # noqa: F401  (fixture)
from test_comfy_clip_vision import TEMPLATES
from test_comfy_prompt_checks import comfy_folders
from unclip_nodes.graph import comfy
from unclip_nodes.graph.comfy_prompt import problems
from unclip_nodes.graph.validate import load as load_workflow
from unclip_nodes.nodes import comfy_models
from unclip_nodes.nodes.tiny import main as tiny


def vision_tower(prefix: str, width: int, hidden: int, layers: int, *, open_clip=False) -> dict:
    """A CLIP image tower's keys: transformers' layout (clip_vision_*.safetensors, SD 2.1
    unCLIP -l) or open_clip's (SD 2.1 unCLIP -h)."""
    sd = {}
    for i in range(layers):
        key = (f"{prefix}visual.transformer.resblocks.{i}.ln_1.weight" if open_clip
               else f"{prefix}vision_model.encoder.layers.{i}.layer_norm1.weight")
        sd[key] = torch.zeros(2)
    if open_clip:
        sd[f"{prefix}visual.proj"] = torch.zeros(hidden, width, dtype=torch.float16)
    else:
        sd[f"{prefix}visual_projection.weight"] = torch.zeros(width, hidden, dtype=torch.float16)
    return sd


def unet(adm: int | None) -> dict:
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}
    if adm:
        sd["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(2, adm)
    return sd


def sd21_unclip_l() -> dict:
    return {**unet(1536), **vision_tower("embedder.model.visual.", 768, 1024, 24)}


def sd21_unclip_h() -> dict:
    text_layers = {f"embedder.model.transformer.resblocks.{i}.ln_1.weight": torch.zeros(2)
                   for i in range(40)}  # a text tower beside it: its layers are not counted
    return {**unet(2048), **vision_tower("embedder.model.", 1024, 1280, 32, open_clip=True),
            **text_layers}


@pytest.fixture
def files(tmp_path) -> Path:
    d = tmp_path / "files"
    d.mkdir()
    torch.save({"state_dict": sd21_unclip_l(), "global_step": 0}, d / "sd21-unclip-l.ckpt")
    torch.save({"state_dict": sd21_unclip_h()}, d / "sd21-unclip-h.ckpt")
    save_file(unet(2816), d / "sd_xl_base_1.0.safetensors")
    save_file(unet(None), d / "v1-5.safetensors")
    save_file(vision_tower("", 768, 1024, 24), d / "clip_vision_l.safetensors")
    save_file(vision_tower("", 1280, 1664, 48), d / "clip_vision_g.safetensors")
    (d / "broken.safetensors").write_bytes(b"\xff" * 64)
    (d / "notes.ckpt").write_bytes(b"not a checkpoint")
    return d


@pytest.mark.parametrize("name,width,space", [
    ("sd21-unclip-l.ckpt", 768, "OpenAI CLIP ViT-L/14"),
    ("sd21-unclip-h.ckpt", 1024, "OpenCLIP ViT-H/14"),
    ("sd_xl_base_1.0.safetensors", 1280, "OpenCLIP ViT-bigG/14"),
])
def test_an_unclip_capable_checkpoint_says_which_clip_its_unclip_conditioning_takes(
        files, name, width, space):
    facts = comfy_models.unclip_facts(comfy_models.shapes(str(files / name)), name)
    assert (facts.clip_dim, facts.space, facts.label) == (width, space, name)


def test_a_checkpoint_without_an_image_input_and_unreadable_files_are_simply_not_known(files):
    assert comfy_models.unclip_facts(comfy_models.shapes(str(files / "v1-5.safetensors")),
                                     "v1-5") is None
    for name in ("broken.safetensors", "notes.ckpt", "absent.safetensors"):
        assert comfy_models.shapes(str(files / name)) is None


def test_clip_vision_files_and_the_towers_inside_unclip_checkpoints_name_their_clip(files):
    def space(name, prefix=""):
        f = comfy_models.vision_facts(comfy_models.shapes(str(files / name)), name, prefix)
        return f.clip_dim, f.space
    assert space("clip_vision_l.safetensors") == (768, "OpenAI CLIP ViT-L/14")
    assert space("clip_vision_g.safetensors") == (1280, "OpenCLIP ViT-bigG/14")
    assert space("sd21-unclip-l.ckpt", "embedder.model.") == (768, "OpenAI CLIP ViT-L/14")
    assert space("sd21-unclip-h.ckpt", "embedder.model.") == (1024, "OpenCLIP ViT-H/14")


def test_a_safetensors_header_is_read_without_the_tensor_data(files, tmp_path):
    whole = (files / "clip_vision_g.safetensors").read_bytes()
    header = 8 + int.from_bytes(whole[:8], "little")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole[:header])  # the data is gone; the shapes are all still there
    assert comfy_models.shapes(str(cut)) == comfy_models.shapes(
        str(files / "clip_vision_g.safetensors"))
    assert comfy_models.shapes(str(cut))["visual_projection.weight"] == (1280, 1664)


@pytest.fixture
def comfyui(files, tmp_path, monkeypatch, karlo_768, tiny_checkpoint):
    """ComfyUI's folder_paths with the files in its checkpoints and clip_vision folders, and
    two tiny Karlos in its unclip folder: ``karlo-768`` (ViT-L/14's width), ``karlo-tiny``."""
    for d in ("input", "output", "temp"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    shutil.copytree(karlo_768, tmp_path / "models" / "unclip" / "karlo-768")
    shutil.copytree(tiny_checkpoint, tmp_path / "models" / "unclip" / "karlo-tiny")
    fp = comfy_folders(tmp_path)

    def get_full_path(folder, name):
        path = files / name
        return str(path) if folder in ("checkpoints", "clip_vision") and path.exists() else None
    fp.get_full_path = get_full_path
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return tmp_path / "models" / "unclip"


@pytest.fixture(scope="module")
def karlo_768(tmp_path_factory) -> Path:
    """A tiny Karlo whose prior gives 768-d embeddings, the width of ViT-L/14."""
    path = tmp_path_factory.mktemp("karlo768") / "karlo"
    assert tiny([str(path), "--clip-width", "768"]) == 0
    return path


def prompt(name: str, model: str, pick: str, file: str, models: Path) -> tuple[dict, dict]:
    """The template's API prompt, exported headless (``model`` looked up in ``models``), with
    ``file`` then picked in the drop-down ``pick`` as a user would in ComfyUI's web UI."""
    sets = {"karlo" if name.startswith("karlo") else "model": model}
    with pytest.MonkeyPatch.context() as mp:
        mp.delitem(sys.modules, "folder_paths", raising=False)
        mp.setenv("UNCLIP_MODELS", str(models))
        api = comfy.to_api(load_workflow(TEMPLATES / f"{name}.yaml", sets))
    for node in api.values():
        if pick in node["inputs"]:
            node["inputs"][pick] = file
    return api, {n["_meta"]["title"]: k for k, n in api.items()}


def test_a_vit_l_prior_embedding_into_sd21_unclip_h_is_refused_on_our_node_before_the_run(
        comfyui):
    api, ids = prompt("karlo_prior_to_sd21_unclip", "karlo-768", "ckpt_name",
                      "sd21-unclip-h.ckpt", comfyui)
    found = problems(api)
    assert list(found) == [ids["embedding"]]  # ImageEmbedsToClipVision, ours: it can show it
    assert found[ids["embedding"]] == (
        f"its output reaches KSampler (node {ids['sample']}), positive: positive carries an "
        "unCLIP image embedding (768-d, from Karlo unCLIP) but sd21-unclip-h.ckpt takes 1024-d "
        "OpenCLIP ViT-H/14 ones: use a prior or encoder of OpenCLIP ViT-H/14 (ComfyUI's "
        "clip_vision_h.safetensors into CLIPVisionEncode) or a checkpoint made for the "
        "embedding's CLIP")


def test_the_same_prompt_with_the_checkpoint_of_its_clip_passes(comfyui):
    api, _ = prompt("karlo_prior_to_sd21_unclip", "karlo-768", "ckpt_name", "sd21-unclip-l.ckpt",
                    comfyui)
    assert problems(api) == {}


def test_headless_or_with_a_file_comfyui_does_not_have_nothing_is_assumed(comfyui, karlo_768,
                                                                          monkeypatch):
    api, _ = prompt("karlo_prior_to_sd21_unclip", "karlo-768", "ckpt_name",
                    "somebody-elses.ckpt", comfyui)
    assert problems(api) == {}
    monkeypatch.delitem(sys.modules, "folder_paths")  # headless: no ComfyUI folders to look in
    api, _ = prompt("karlo_prior_to_sd21_unclip", str(karlo_768), "ckpt_name",
                    "sd21-unclip-h.ckpt", comfyui)
    assert problems(api) == {}


def test_comfyuis_clip_vision_g_into_a_vit_l_decoder_is_refused_before_the_run(comfyui):
    api, ids = prompt("clip_vision_encode_to_decoder", "karlo-768", "clip_name",
                      "clip_vision_g.safetensors", comfyui)
    found = problems(api)
    assert list(found) == [ids["decode"]]
    msg = found[ids["decode"]]
    assert msg.startswith("image_embeds: ") and "1280-d" in msg and "768-d" in msg, msg
    assert "clip_vision_g.safetensors, OpenCLIP ViT-bigG/14" in msg, msg
    ok, _ = prompt("clip_vision_encode_to_decoder", "karlo-768", "clip_name",
                   "clip_vision_l.safetensors", comfyui)
    assert problems(ok) == {}
    small, ids = prompt("clip_vision_encode_to_decoder", "karlo-tiny", "clip_name",
                        "clip_vision_l.safetensors", comfyui)
    assert list(problems(small)) == [ids["decode"]]  # the tiny decoder's CLIP is narrower
