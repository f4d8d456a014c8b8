"""Precision options: a seed means the same noise in every dtype, half-precision weights sample
close to float32, fp16 weight files are read when asked for, the MoVQ decodes in float32, and
attention runs through PyTorch's scaled_dot_product_attention."""
from __future__ import annotations

import shutil

import pytest
import torch

from kandinsky_util import tiny_kandinsky  # noqa: F401
from unclip_nodes.nodes import clip, decoder, prior
from unclip_nodes.nodes.core import sampling
from unclip_nodes.nodes.core.checkpoint import weight_variant
from unclip_nodes.nodes.declare import REGISTRY


def load(root, dtype: str):
    return REGISTRY["LoadUnCLIP"].fn(path=str(root / "decoder"), prior_path=str(root / "prior"),
                                     device="cpu", dtype=dtype, allow_pickle=False)


def text_to_image(root, dtype: str, draws: list | None = None, monkeypatch=None):
    if draws is not None:
        def recording(shape, generator, device):
            x = sampling.noise(shape, generator, device)
            draws.append(x.clone())
            return x
        monkeypatch.setattr(prior, "noise", recording)
        monkeypatch.setattr(decoder, "noise", recording)
    clip_text, _, pri, dec, _ = load(root, dtype)
    text = clip.clip_text_encode(clip_text, "a red cat")
    z = prior.prior_node(pri, text, None, steps=3, guidance_scale=4.0, seed=5, candidates=1)
    return decoder.decoder_node(dec, z, None, steps=3, guidance_scale=4.0, seed=5,
                                images_per_embedding=1)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_a_seed_draws_the_same_initial_noise_in_every_dtype(tiny_kandinsky, dtype, monkeypatch):
    full, half = [], []
    text_to_image(tiny_kandinsky, "fp32", full, monkeypatch)
    text_to_image(tiny_kandinsky, dtype, half, monkeypatch)
    assert len(full) == len(half) == 2            # the prior's z_T, then the decoder's x_T
    for a, b in zip(full, half):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


def test_half_precision_weights_sample_close_to_float32(tiny_kandinsky):
    full = text_to_image(tiny_kandinsky, "fp32")
    half = text_to_image(tiny_kandinsky, "bf16")
    assert torch.isfinite(half).all() and half.dtype == torch.float32
    diff = float((full - half).abs().mean())
    assert 0 < diff < 0.05, diff                  # bf16 rounding, not another picture


def test_the_movq_decodes_in_float32_under_a_half_precision_decoder(tiny_kandinsky):
    dec = load(tiny_kandinsky, "bf16")[3]
    assert dec.unet.dtype == torch.bfloat16
    assert dec.movq.dtype == torch.float32


def test_fp16_weight_files_are_read_when_asked_for_or_when_alone(tiny_kandinsky, tmp_path):
    root = tmp_path / "k22"
    shutil.copytree(tiny_kandinsky, root)
    unet = root / "decoder" / "unet"
    plain = unet / "diffusion_pytorch_model.safetensors"
    shutil.copy(plain, unet / "diffusion_pytorch_model.fp16.safetensors")
    assert weight_variant(unet, torch.float32) is None
    assert weight_variant(unet, torch.float16) == "fp16"
    assert weight_variant(unet, torch.bfloat16) == "fp16"
    plain.unlink()                                 # only the fp16 variant: read it for fp32 too
    assert weight_variant(unet, torch.float32) == "fp16"
    from unclip_nodes.nodes.loaders import clear_model_cache
    clear_model_cache()
    dec = REGISTRY["LoadUnCLIPDecoder"].fn(path=str(root / "decoder"), device="cpu",
                                           dtype="fp32", allow_pickle=False)
    assert dec.unet.dtype == torch.float32


def test_attention_runs_through_scaled_dot_product_attention(tiny_kandinsky):
    clip_text, clip_vision, pri, dec, _ = load(tiny_kandinsky, "fp32")
    processors = {type(p).__name__ for p in dec.unet.attn_processors.values()}
    assert processors and all(name.endswith("2_0") for name in processors), processors
    for model in (clip_text.text_encoder, clip_vision.image_encoder):
        assert model.config._attn_implementation == "sdpa"
    assert all(type(p).__name__.endswith("2_0") for p in pri.prior.attn_processors.values())
