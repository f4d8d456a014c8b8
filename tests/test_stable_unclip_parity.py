"""Numerical parity of our nodes on Stable unCLIP with diffusers' StableUnCLIPPipeline and
StableUnCLIPImg2ImgPipeline, on the tiny checkpoints of both layouts (CPU, float32, one thread).

Seed contract: each sampling node draws from ``torch.Generator("cpu")`` seeded with its seed, in
diffusers' order.  Image variations are one diffusers call with one generator (embedding noise,
then latents), exactly what our Decoder draws.  Text to image is one diffusers call whose single
generator feeds the prior and then the decoder, where our Prior and Decoder nodes each have their
own: there the reference's prior draws come from the Prior's seed, and its embedding noise and
latents are drawn by hand from the Decoder's seed in the Decoder's order and handed to it
(``noise_image_embeddings(noise=...)`` and ``latents=``), which changes none of its arithmetic.

Every measured difference is recorded in the test's ``user_properties``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stable_unclip_util import (generator, single_thread, smooth_images,  # noqa: F401
                                su_handles, su_pipelines, tiny_stable_unclip)
from unclip_nodes.nodes import clip, decoder, prior

TOL = 1e-5
DIM, SIZE = 32, 32  # the tiny embedding width; the tiny decoder's native size (VAE factor 1)
PRIOR_GUIDANCE, GUIDANCE = 4.0, 6.0
PROMPTS = ["a red circle on a blue background", "a small green star"]
NEGATIVES = ["black and white", "a large yellow square"]

pytestmark = pytest.mark.usefixtures("single_thread")
STEPS = pytest.mark.parametrize("steps", [2, 5])
BATCH = pytest.mark.parametrize("batch", [1, 2])
LEVEL = pytest.mark.parametrize("level", [0, 250])


@pytest.fixture
def close(request):
    def check(name, ours, ref, tol=TOL):
        ours = torch.as_tensor(np.asarray(ours)).float()
        ref = torch.as_tensor(np.asarray(ref)).float()
        assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
        d = float((ours - ref).abs().max())
        request.node.user_properties.append((name, d))
        assert d <= tol, f"{name}: max abs difference {d:.3g} > {tol:g}"
        return d
    return check


def a_picture(image) -> bool:
    return float(torch.as_tensor(np.asarray(image)).float().std()) > 0.02


def decode(handles, embeds, *, steps, seed, level, prompt="", negative="", per=1, **kw):
    return decoder.decoder_node(handles["decoder"], embeds, kw.pop("text", None), steps=steps,
                                guidance_scale=GUIDANCE, seed=seed, images_per_embedding=per,
                                noise_level=level, prompt=prompt, negative_prompt=negative, **kw)


@STEPS
@BATCH
@LEVEL
def test_text_to_image_matches_stable_unclip_pipeline(su_handles, su_pipelines, close, steps,
                                                      batch, level):
    """CLIPTextEncode -> Prior -> Decoder (the SD prompt taken from the linked text) against
    one StableUnCLIPPipeline call, guidance on in both stages."""
    h, pipe = su_handles["txt2img"], su_pipelines["txt2img"]
    prompts = PROMPTS[:batch]
    text = clip.clip_text_encode(h["clip_text"], "\n".join(prompts))
    embeds = prior.prior_node(h["prior"], text, None, steps=steps, guidance_scale=PRIOR_GUIDANCE,
                              seed=21, candidates=1)
    ours = decode(h, embeds, steps=steps, seed=22, level=level, negative="\n".join(
        NEGATIVES[:batch]), text=text)

    by_hand = generator(22)  # the Decoder's draws: embedding noise, then latents
    noise = torch.randn(batch, DIM, generator=by_hand)
    latents = torch.randn(batch, 4, SIZE, SIZE, generator=by_hand)
    plain = type(pipe).noise_image_embeddings.__get__(pipe)
    pipe.noise_image_embeddings = lambda image_embeds, noise_level, noise_=None, generator=None: \
        plain(image_embeds, noise_level, noise=noise)
    try:
        ref = pipe(prompts, negative_prompt=NEGATIVES[:batch], num_inference_steps=steps,
                   guidance_scale=GUIDANCE, prior_num_inference_steps=steps,
                   prior_guidance_scale=PRIOR_GUIDANCE, noise_level=level, latents=latents,
                   generator=generator(21), output_type="np").images
    finally:
        del pipe.noise_image_embeddings
    assert a_picture(ref)
    close("image", ours, ref)


@STEPS
@BATCH
@LEVEL
def test_image_variations_match_img2img_pipeline(su_handles, su_pipelines, close, steps, batch,
                                                 level):
    """CLIPImageEncode -> Decoder against StableUnCLIPImg2ImgPipeline given the same pictures
    (its feature extractor and image encoder), with a prompt and a negative prompt per image."""
    h, pipe = su_handles["img2img"], su_pipelines["img2img"]
    images = smooth_images(batch, SIZE, seed=3)
    embeds = clip.clip_image_encode(h["clip_vision"], images)
    ours = decode(h, embeds, steps=steps, seed=5, level=level, prompt="\n".join(PROMPTS[:batch]),
                  negative="\n".join(NEGATIVES[:batch]))
    pictures = [Image.fromarray((im.numpy() * 255).round().astype(np.uint8)) for im in images]
    ref = pipe(image=pictures, prompt=PROMPTS[:batch], negative_prompt=NEGATIVES[:batch],
               num_inference_steps=steps, guidance_scale=GUIDANCE, noise_level=level,
               generator=generator(5), output_type="np").images
    assert a_picture(ref)
    close("image", ours, ref)


@STEPS
@LEVEL
def test_images_of_one_embedding_share_its_noised_embedding_as_in_diffusers(
        su_handles, su_pipelines, close, steps, level):
    """images_per_embedding 2 draws one embedding noise per embedding (diffusers'
    num_images_per_prompt); the empty prompt when none is given."""
    h, pipe = su_handles["img2img"], su_pipelines["img2img"]
    embeds = clip.clip_image_encode(h["clip_vision"], smooth_images(2, SIZE, seed=4))
    ours = decode(h, embeds, steps=steps, seed=6, level=level, per=2)
    ref = pipe(image_embeds=embeds.image_embeds, prompt=["", ""], num_images_per_prompt=2,
               num_inference_steps=steps, guidance_scale=GUIDANCE, noise_level=level,
               generator=generator(6), output_type="np").images
    close("image", ours, ref)


@LEVEL
def test_per_image_noise_equals_diffusers_with_each_image_its_own_embedding(
        su_handles, su_pipelines, close, level):
    """per_image_noise: the noise is drawn per image, as diffusers does when every image is
    given as an embedding row of its own."""
    h, pipe = su_handles["img2img"], su_pipelines["img2img"]
    embeds = clip.clip_image_encode(h["clip_vision"], smooth_images(2, SIZE, seed=7))
    ours = decode(h, embeds, steps=2, seed=8, level=level, per=2, per_image_noise=True)
    ref = pipe(image_embeds=embeds.image_embeds.repeat_interleave(2, 0), prompt=[""] * 4,
               num_inference_steps=2, guidance_scale=GUIDANCE, noise_level=level,
               generator=generator(8), output_type="np").images
    close("image", ours, ref)
    shared = decode(h, embeds, steps=2, seed=8, level=level, per=2)
    assert float((ours - shared).abs().max()) > 1e-3  # the option changes the draws
