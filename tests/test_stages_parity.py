"""Numerical parity of our stage nodes with diffusers' (deprecated) UnCLIP pipelines.

Both sides use the same component objects (loaded by LoadUnCLIP from a tiny random checkpoint)
and the same random numbers; the reference pipelines are constructed directly, not with
from_pretrained (which fails on the Karlo layout in diffusers 0.42).
"""
from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

import stages_util
from conftest import requires
from stages_util import (as_image_tensor, load, one_thread, staged_generators,  # noqa: F401
                         text_pipeline, tiny_checkpoint, variation_pipeline)
from unclip_nodes.nodes import clip, decoder, prior, upsample
from unclip_nodes.nodes.core.text import uncond_of
from unclip_nodes.nodes.families import karlo
from unclip_nodes.nodes.core.sampling import UnCLIPSampler

# skipped where diffusers lacks the reference pipelines, but failed under CI (CI=true)
needs_reference = requires(stages_util.HAVE_REFERENCE, stages_util.needs_reference.kwargs["reason"])

TOL = 1e-5
PROMPTS = ["a red circle on a blue background", "a small green star"]


@pytest.fixture(scope="module")
def handles(tiny_checkpoint):
    return load(tiny_checkpoint)


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a).float() - torch.as_tensor(b).float()).abs().max())


@needs_reference
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("steps", [2, 5])
@pytest.mark.parametrize("batch", [1, 2])
def test_text_to_image_nodes_match_unclip_pipeline(handles, steps, batch):
    clip_text, _, pri, dec, up = handles
    prompts = PROMPTS[:batch]
    text = clip.clip_text_encode(clip_text, "\n".join(prompts))
    z = prior.prior_node(pri, text, None, steps=steps, guidance_scale=4.0, seed=11, candidates=1)
    small = decoder.decoder_node(dec, z, text, steps=steps, guidance_scale=8.0, seed=22,
                                 images_per_embedding=1)
    ours = upsample.upsample_node(up, small, steps=steps, seed=33)

    pipe = text_pipeline(handles)
    seeds = {"prior_scheduler": 11, "decoder_scheduler": 22, "super_res_scheduler": 33}
    with staged_generators(pipe, seeds):
        ref = pipe(prompts, prior_num_inference_steps=steps, decoder_num_inference_steps=steps,
                   super_res_num_inference_steps=steps, prior_guidance_scale=4.0,
                   decoder_guidance_scale=8.0, output_type="np").images
    assert ours.shape == (batch, 64, 64, 3)
    assert max_diff(ours, as_image_tensor(ref)) <= TOL
    assert ours.std() > 0.05  # a real image, not a constant


@needs_reference
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("steps", [2, 5])
@pytest.mark.parametrize("batch", [1, 2])
def test_sampling_loops_share_one_generator_like_unclip_pipeline(handles, steps, batch):
    """Chained with one generator, our three loops draw exactly the numbers the pipeline draws.

    Tensors pass between the loops directly (no IMAGE hand-off), so here the upsampler can use
    Karlo's epsilon prediction, whose first step amplifies any difference 2e4 times."""
    from diffusers import UnCLIPScheduler
    clip_text, _, pri, dec, up = handles
    sr_config = dict(up.scheduler_config, prediction_type="epsilon")
    prompts = PROMPTS[:batch]
    text = clip.encode_prompts(clip_text, prompts)
    g = torch.Generator("cpu").manual_seed(5)
    cond = (text.text_embeds, text.hidden_states, text.attention_mask)
    uncond = uncond_of(text, batch)
    with torch.inference_mode():
        z = prior.sample_prior(pri.prior, cond, uncond, guidance_scale=4.0, steps=steps,
                               generator=g, sampler=UnCLIPSampler(pri.scheduler_config))
        x = karlo.sample_decoder(dec.decoder, dec.text_proj, z, cond, uncond, guidance_scale=8.0,
                                   steps=steps, generator=g,
                                   sampler=UnCLIPSampler(dec.scheduler_config))
        hi = karlo.sample_upsampler(up.first, up.last, x, steps=steps, generator=g,
                                       sampler=UnCLIPSampler(sr_config))
    ours = decoder.to_image(hi)
    pipe = text_pipeline(handles)
    pipe.super_res_scheduler = UnCLIPScheduler.from_config(sr_config)
    ref = pipe(prompts, prior_num_inference_steps=steps, decoder_num_inference_steps=steps,
               super_res_num_inference_steps=steps, output_type="np",
               generator=torch.Generator("cpu").manual_seed(5)).images
    assert max_diff(ours, as_image_tensor(ref)) <= TOL


def _test_images(batch: int) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(batch)
    return [PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            for _ in range(batch)]


def _as_image(pils) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.array(p)).float() / 255.0 for p in pils])


@needs_reference
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("steps", [2, 5])
@pytest.mark.parametrize("batch", [1, 2])
def test_image_variation_nodes_match_unclip_image_variation_pipeline(handles, steps, batch):
    clip_text, clip_vision, _, dec, up = handles
    pils = _test_images(batch)
    per = 2 if batch == 1 else 1  # also cover several images per embedding
    z = clip.clip_image_encode(clip_vision, _as_image(pils))
    small = decoder.decoder_node(dec, z, None, steps=steps, guidance_scale=8.0, seed=7,
                                 images_per_embedding=per)
    ours = upsample.upsample_node(up, small, steps=steps, seed=8)

    pipe = variation_pipeline(handles)
    with staged_generators(pipe, {"decoder_scheduler": 7, "super_res_scheduler": 8}):
        ref = pipe(pils, num_images_per_prompt=per, decoder_num_inference_steps=steps,
                   super_res_num_inference_steps=steps, decoder_guidance_scale=8.0,
                   output_type="np").images
    assert ours.shape == (batch * per, 64, 64, 3)
    assert max_diff(ours, as_image_tensor(ref)) <= TOL
    if per == 2:  # same embedding, different noise: different images
        assert max_diff(ours[0], ours[1]) > 0.01
