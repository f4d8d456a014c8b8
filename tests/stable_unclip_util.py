"""Helpers for the Stable unCLIP tests: the tiny checkpoints of both layouts written once per
session, our handles loaded from them through LoadUnCLIP, and diffusers' pipelines read from
the same folders (the same weights on both sides)."""
from __future__ import annotations

import pytest
import torch

from conftest import require_module

_TINY: dict = {}
LAYOUTS = ("txt2img", "img2img")


@pytest.fixture(scope="session")
def tiny_stable_unclip(tmp_path_factory):
    """{"txt2img": DIR, "img2img": DIR}: tiny random checkpoints, written once per session."""
    if not _TINY:
        from unclip_nodes.nodes.tiny_stable_unclip import save_tiny_stable_unclip
        root = tmp_path_factory.mktemp("tiny_sunclip")
        for layout in LAYOUTS:
            _TINY[layout] = save_tiny_stable_unclip(root / layout, layout)
    return dict(_TINY)


def load(path) -> dict:
    """LoadUnCLIP on a folder, on the CPU in float32: the stages by name."""
    import unclip_nodes.nodes  # noqa: F401  (registers the nodes)
    from unclip_nodes.nodes.declare import REGISTRY
    out = REGISTRY["LoadUnCLIP"].fn(path=str(path), prior_path="", device="cpu", dtype="fp32",
                                    allow_pickle=False)
    return dict(zip(("clip_text", "clip_vision", "prior", "decoder", "upsampler"), out))


@pytest.fixture(scope="session")
def su_handles(tiny_stable_unclip):
    return {layout: load(tiny_stable_unclip[layout]) for layout in LAYOUTS}


@pytest.fixture(scope="session")
def su_pipelines(tiny_stable_unclip):
    """diffusers' StableUnCLIPPipeline and StableUnCLIPImg2ImgPipeline on the tiny folders; a
    diffusers without them fails under CI instead of skipping."""
    require_module("diffusers.pipelines.stable_diffusion.pipeline_stable_unclip",
                   "the parity reference StableUnCLIPPipeline")
    require_module("diffusers.pipelines.stable_diffusion.pipeline_stable_unclip_img2img",
                   "the parity reference StableUnCLIPImg2ImgPipeline")
    from diffusers import StableUnCLIPImg2ImgPipeline, StableUnCLIPPipeline
    out = {}
    for layout, cls in (("txt2img", StableUnCLIPPipeline),
                        ("img2img", StableUnCLIPImg2ImgPipeline)):
        pipe = cls.from_pretrained(str(tiny_stable_unclip[layout]), local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        out[layout] = pipe
    return out


@pytest.fixture
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """IMAGE [batch, size, size, 3]: smooth random colour fields on the 8-bit grid (so a PIL
    copy holds exactly the same values)."""
    coarse = torch.rand(batch, 3, 4, 4, generator=generator(seed))
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                        align_corners=False).clamp(0, 1)
    return ((x * 255).round() / 255).permute(0, 2, 3, 1).contiguous()
