"""Helpers for the Kandinsky 2.2 parity tests: a tiny checkpoint written once per session, our
handles loaded from it through the loader nodes, and diffusers' Kandinsky 2.2 pipelines built
from those very handles' components (so both sides share every weight)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

_TINY: dict = {}


@pytest.fixture(scope="session")
def tiny_kandinsky(tmp_path_factory):
    """DIR with prior/, decoder/, decoder-inpaint/ and controlnet-depth/ (tiny random weights),
    written once per test session."""
    if "path" not in _TINY:
        from unclip_nodes.nodes.tiny_kandinsky import save_tiny_kandinsky
        _TINY["path"] = save_tiny_kandinsky(tmp_path_factory.mktemp("tiny_k22") / "k22")
    return _TINY["path"]


def _registry():
    import unclip_nodes.nodes  # noqa: F401  (registers the nodes)
    from unclip_nodes.nodes.declare import REGISTRY
    return REGISTRY


def load_text_to_image(root):
    """LoadUnCLIP on the text-to-image decoder plus the prior folder:
    (clip_text, clip_vision, prior, decoder, upsampler)."""
    return _registry()["LoadUnCLIP"].fn(path=str(root / "decoder"), prior_path=str(root / "prior"),
                                        device="cpu", dtype="fp32", allow_pickle=False)


def load_decoder(root, folder: str):
    """LoadUnCLIPDecoder on one decoder folder (decoder, decoder-inpaint, controlnet-depth)."""
    return _registry()["LoadUnCLIPDecoder"].fn(path=str(root / folder), device="cpu",
                                               dtype="fp32", allow_pickle=False)


@pytest.fixture(scope="session")
def k22_handles(tiny_kandinsky):
    """Our handles for the tiny checkpoint: the LoadUnCLIP stages, the inpainting decoder and
    the ControlNet decoder."""
    clip_text, clip_vision, prior, decoder, upsampler = load_text_to_image(tiny_kandinsky)
    assert upsampler is None
    return {"clip_text": clip_text, "clip_vision": clip_vision, "prior": prior,
            "decoder": decoder, "inpaint": load_decoder(tiny_kandinsky, "decoder-inpaint"),
            "controlnet": load_decoder(tiny_kandinsky, "controlnet-depth")}


@pytest.fixture
def single_thread():
    """Run a comparison on one thread: quicker on the shared 2-core machines, and both sides
    do their arithmetic the same way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- diffusers' pipelines over our components -----------------------------------------------------

def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prior_pipeline(clip_text, clip_vision, prior):
    from diffusers import KandinskyV22PriorPipeline, UnCLIPScheduler
    from transformers import CLIPImageProcessor
    return _quiet(KandinskyV22PriorPipeline(
        prior=prior.prior, image_encoder=clip_vision.image_encoder,
        text_encoder=clip_text.text_encoder, tokenizer=clip_text.tokenizer,
        scheduler=UnCLIPScheduler.from_config(prior.scheduler_config),
        image_processor=CLIPImageProcessor(**clip_vision.preprocess)))


def _decoder_pipeline(cls_name: str, decoder):
    import diffusers
    cls = getattr(diffusers, cls_name)
    scheduler = diffusers.DDPMScheduler.from_config(decoder.scheduler_config)
    return _quiet(cls(unet=decoder.unet, movq=decoder.movq, scheduler=scheduler))


def text_to_image_pipeline(decoder):
    return _decoder_pipeline("KandinskyV22Pipeline", decoder)


def img2img_pipeline(decoder):
    return _decoder_pipeline("KandinskyV22Img2ImgPipeline", decoder)


def inpaint_pipeline(decoder):
    return _decoder_pipeline("KandinskyV22InpaintPipeline", decoder)


def controlnet_pipeline(decoder):
    return _decoder_pipeline("KandinskyV22ControlnetPipeline", decoder)


# --- small tools ----------------------------------------------------------------------------------

def generator(seed: int) -> torch.Generator:
    """The generator our nodes draw from for ``seed``."""
    return torch.Generator("cpu").manual_seed(seed)


def max_diff(a, b) -> float:
    a = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).float()
    b = torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b).float()
    assert a.shape == b.shape, (tuple(a.shape), tuple(b.shape))
    return float((a - b).abs().max())


def nchw(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> a contiguous [B, C, H, W] tensor, still in 0..1."""
    return image.permute(0, 3, 1, 2).contiguous()


def smooth_images(batch: int, size: int, seed: int) -> torch.Tensor:
    """IMAGE [batch, size, size, 3] of smooth random colour fields (low-frequency content, so
    the tiny MoVQ sees something like a picture rather than white noise)."""
    g = generator(seed)
    coarse = torch.rand(batch, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                        align_corners=False)
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()
