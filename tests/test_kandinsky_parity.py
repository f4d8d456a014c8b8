"""Numerical parity of our nodes on Kandinsky 2.2 with diffusers' Kandinsky 2.2 pipelines.

Both sides share every component object (loaded by our loader nodes from a tiny random
checkpoint) and the seed contract: a node's randomness is ``torch.Generator("cpu")`` seeded
with its seed, drawn in diffusers' order, so the reference is the pipeline called with a fresh
generator of that seed.  Where diffusers has a documented batching bug (no-guidance batches,
inpaint batches), the tests pin what we do instead against an input diffusers handles right.

Every measured difference is recorded in the test's ``user_properties`` (e.g. in ``--junitxml``).
"""
from __future__ import annotations

import pytest
import torch

from kandinsky_util import (controlnet_pipeline, generator, img2img_pipeline,  # noqa: F401
                            inpaint_pipeline, k22_handles, max_diff, nchw, prior_pipeline,
                            single_thread, smooth_images, text_to_image_pipeline,
                            tiny_kandinsky)
from unclip_nodes.nodes import clip, decoder, inpaint, prior
from unclip_nodes.nodes.types import ImageEmbeds

TOL = 1e-5
SIZE = 64  # the tiny decoders' native size (8 x 8 MoVQ latents)
GUIDANCE = 4.0
PROMPTS = ["a red circle on a blue background", "a small green star"]
NEGATIVES = ["black and white", "a large yellow square"]
DIM = 32

pytestmark = pytest.mark.usefixtures("single_thread")
STEPS = pytest.mark.parametrize("steps", [2, 5])
BATCH = pytest.mark.parametrize("batch", [1, 2])


@pytest.fixture
def close(request):
    """``close(name, ours, reference)``: record the max abs difference (in the test's
    user_properties) and assert it is within TOL; returns it."""
    def check(name, ours, ref, tol=TOL):
        d = max_diff(ours, ref)
        request.node.user_properties.append((name, d))
        assert d <= tol, f"{name}: max abs difference {d:.3g} > {tol:g}"
        return d
    return check


def random_embeds(batch: int, seed: int) -> ImageEmbeds:
    """Random image embeddings with a random negative of the same batch."""
    g = generator(seed)
    z = torch.randn(batch, DIM, generator=g)
    return ImageEmbeds(image_embeds=z, negative_image_embeds=torch.randn(batch, DIM, generator=g))


def decoder_reference(pipe, embeds: ImageEmbeds, *, steps, seed, guidance=GUIDANCE, **kw):
    negative = embeds.negative_image_embeds.expand_as(embeds.image_embeds)
    return pipe(image_embeds=embeds.image_embeds, negative_image_embeds=negative, height=SIZE,
                width=SIZE, num_inference_steps=steps, guidance_scale=guidance,
                generator=generator(seed), output_type="np", **kw).images


def decode(dec, embeds, *, steps, seed, guidance=GUIDANCE, per=1, **kw):
    return decoder.decoder_node(dec, embeds, None, steps=steps, guidance_scale=guidance,
                                seed=seed, images_per_embedding=per, **kw)


def assert_a_picture(image):
    """Not a constant: the comparison means something."""
    assert float(image.std()) > 0.02


# --- the prior ------------------------------------------------------------------------------------

@STEPS
@BATCH
def test_prior_matches_prior_pipeline_with_zero_image_negative(k22_handles, close, steps, batch):
    h = k22_handles
    prompts = PROMPTS[:batch]
    text = clip.clip_text_encode(h["clip_text"], "\n".join(prompts))
    ours = prior.prior_node(h["prior"], text, None, steps=steps, guidance_scale=GUIDANCE,
                            seed=11, candidates=1)
    ref = prior_pipeline(h["clip_text"], h["clip_vision"], h["prior"])(
        prompts, num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generator(11))
    assert ours.image_embeds.shape == (batch, DIM)
    close("image_embeds", ours.image_embeds, ref.image_embeds)
    # one zero-image row serves the whole batch; diffusers repeats it per prompt
    neg = ours.negative_image_embeds
    assert neg.shape[0] in (1, batch)
    close("negative_image_embeds", neg.expand(batch, -1), ref.negative_image_embeds)
    assert float((ours.image_embeds - neg).abs().max()) > 0.1


@STEPS
@BATCH
def test_prior_with_linked_negative_matches_pipeline_negative_prompt(k22_handles, close, steps,
                                                                    batch):
    """A negative prompt is sampled alongside the prompts and becomes the negative embedding.
    One negative for every prompt, and (batch 2) one negative per prompt."""
    h = k22_handles
    prompts = PROMPTS[:batch]
    text = clip.clip_text_encode(h["clip_text"], "\n".join(prompts))
    pipe = prior_pipeline(h["clip_text"], h["clip_vision"], h["prior"])
    cases = {"shared": NEGATIVES[:1]}
    if batch == 2:
        cases["per_prompt"] = NEGATIVES[:2]
    for kind, negatives in cases.items():
        negative = clip.clip_text_encode(h["clip_text"], "\n".join(negatives))
        ours = prior.prior_node(h["prior"], text, negative, steps=steps,
                                guidance_scale=GUIDANCE, seed=12, candidates=1)
        # diffusers wants one negative prompt per prompt
        ref = pipe(prompts, negative_prompt=negatives * (batch // len(negatives)),
                   num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generator(12))
        assert ours.negative_image_embeds.shape == (batch, DIM)
        close(f"{kind}.image_embeds", ours.image_embeds, ref.image_embeds)
        close(f"{kind}.negative_image_embeds", ours.negative_image_embeds,
              ref.negative_image_embeds)


# --- the decoders ---------------------------------------------------------------------------------

@STEPS
@BATCH
def test_text_to_image_decoder_matches_pipeline(k22_handles, close, steps, batch):
    dec = k22_handles["decoder"]
    embeds = random_embeds(batch, seed=100 + batch)
    ours = decode(dec, embeds, steps=steps, seed=21)
    ref = decoder_reference(text_to_image_pipeline(dec), embeds, steps=steps, seed=21)
    assert ours.shape == (batch, SIZE, SIZE, 3)
    close("image", ours, ref)
    assert_a_picture(ours)


@STEPS
@BATCH
def test_images_per_embedding_matches_num_images_per_prompt(k22_handles, close, steps, batch):
    dec = k22_handles["decoder"]
    embeds = random_embeds(batch, seed=110 + batch)
    ours = decode(dec, embeds, steps=steps, seed=22, per=2)
    ref = decoder_reference(text_to_image_pipeline(dec), embeds, steps=steps, seed=22,
                            num_images_per_prompt=2)
    assert ours.shape == (2 * batch, SIZE, SIZE, 3)
    close("image", ours, ref)
    assert max_diff(ours[0], ours[1]) > 0.01  # each image has its own noise


@pytest.mark.parametrize("steps, strength", [(5, 0.4), (2, 0.75), (5, 0.75)])
@BATCH
def test_image_to_image_matches_img2img_pipeline(k22_handles, close, steps, strength, batch):
    dec = k22_handles["decoder"]
    embeds = random_embeds(batch, seed=120 + batch)
    image = smooth_images(batch, SIZE, seed=7)
    ours = decode(dec, embeds, steps=steps, seed=23, image=image, strength=strength)
    ref = decoder_reference(img2img_pipeline(dec), embeds, steps=steps, seed=23,
                            image=nchw(image), strength=strength)
    assert ours.shape == (batch, SIZE, SIZE, 3)
    close("image", ours, ref)
    assert_a_picture(ours)


def _mask(batch: int, boxes) -> torch.Tensor:
    """MASK [batch, SIZE, SIZE]: 1 inside each row's (top, bottom, left, right) box."""
    m = torch.zeros(batch, SIZE, SIZE)
    for row, (t, b, l, r) in enumerate(boxes):
        m[row, t:b, l:r] = 1
    return m


def raw_inpaint(dec, embeds: ImageEmbeds, image, mask, *, steps, seed, guidance=GUIDANCE):
    """Our inpainting loop's own result (before the node pastes the kept pixels back), as an
    IMAGE; the same call the Inpaint node makes for an inpainting decoder."""
    from unclip_nodes.nodes.families.kandinsky22 import inpaint_latents
    cond = dec.conditioning(embeds, None, 1)
    with torch.inference_mode():
        x = inpaint_latents(dec, cond, dec.fit_image(image), mask[:, None], steps=steps,
                            guidance_scale=guidance, seed=seed,
                            sampler=dec.sampler("unclip", 0.0))
    return decoder.to_image(x)


def inpaint_reference(pipe, embeds, image, mask, *, steps, seed):
    return decoder_reference(pipe, embeds, steps=steps, seed=seed,
                             image=nchw(image) * 2 - 1, mask_image=mask.clone())


@STEPS
@BATCH
def test_inpaint_matches_inpaint_pipeline(k22_handles, close, steps, batch):
    """Rows share one image and mask here, the one case diffusers batches correctly."""
    dec = k22_handles["inpaint"]
    embeds = random_embeds(batch, seed=130 + batch)
    image = smooth_images(1, SIZE, seed=8).expand(batch, -1, -1, -1).contiguous()
    mask = _mask(batch, [(16, 48, 8, 40)] * batch)
    ours = inpaint.inpaint_node(dec, image, mask, embeds, steps=steps, guidance_scale=GUIDANCE,
                                seed=24)
    raw = raw_inpaint(dec, embeds, image, mask, steps=steps, seed=24)
    ref = torch.from_numpy(inpaint_reference(inpaint_pipeline(dec), embeds, image, mask,
                                             steps=steps, seed=24))
    assert ours.shape == ref.shape == (batch, SIZE, SIZE, 3)
    close("raw", raw, ref)
    inside = mask.bool()
    close("node_inside_mask", ours[inside], ref[inside])
    assert torch.equal(ours[~inside], image[~inside])  # kept pixels untouched
    assert max_diff(ours[inside], image[inside]) > 0.05  # the hole was repainted


@STEPS
@BATCH
def test_controlnet_decoder_matches_controlnet_pipeline(k22_handles, close, steps, batch):
    dec = k22_handles["controlnet"]
    embeds = random_embeds(batch, seed=140 + batch)
    hint = smooth_images(batch, SIZE, seed=9)
    ours = decode(dec, embeds, steps=steps, seed=25, hint=hint)
    ref = decoder_reference(controlnet_pipeline(dec), embeds, steps=steps, seed=25,
                            hint=nchw(hint))
    assert ours.shape == (batch, SIZE, SIZE, 3)
    close("image", ours, ref)
    other = decode(dec, embeds, steps=steps, seed=25, hint=1 - hint)
    assert max_diff(ours, other) > 1e-3  # the hint really steers the output


# --- chained --------------------------------------------------------------------------------------

@STEPS
@BATCH
def test_text_prior_decoder_chain_matches_prior_then_decoder_pipeline(k22_handles, close, steps,
                                                                      batch):
    h = k22_handles
    prompts = PROMPTS[:batch]
    text = clip.clip_text_encode(h["clip_text"], "\n".join(prompts))
    z = prior.prior_node(h["prior"], text, None, steps=steps, guidance_scale=GUIDANCE, seed=31,
                         candidates=1)
    ours = decode(h["decoder"], z, steps=steps, seed=32)

    pri = prior_pipeline(h["clip_text"], h["clip_vision"], h["prior"])(
        prompts, num_inference_steps=steps, guidance_scale=GUIDANCE, generator=generator(31))
    ref = text_to_image_pipeline(h["decoder"])(
        image_embeds=pri.image_embeds, negative_image_embeds=pri.negative_image_embeds,
        height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=GUIDANCE,
        generator=generator(32), output_type="np").images
    close("image", ours, ref)
    assert_a_picture(ours)


# --- where diffusers batches wrongly and we do not ---------------------------------------------

@STEPS
@BATCH
def test_unguided_images_per_embedding_match_pipeline_on_repeated_embeddings(k22_handles, close,
                                                                            request, steps,
                                                                            batch):
    """guidance 1 with two images per embedding: diffusers forgets to repeat the embeddings
    when it does not guide, and crashes; ours equals it fed the repeated embeddings."""
    dec = k22_handles["decoder"]
    embeds = random_embeds(batch, seed=150 + batch)
    pipe = text_to_image_pipeline(dec)
    ours = decode(dec, embeds, steps=steps, seed=41, guidance=1.0, per=2)
    repeated = ImageEmbeds(embeds.image_embeds.repeat_interleave(2, 0),
                           embeds.negative_image_embeds.repeat_interleave(2, 0))
    ref = decoder_reference(pipe, repeated, steps=steps, seed=41, guidance=1.0)
    assert ours.shape == (2 * batch, SIZE, SIZE, 3)
    close("image", ours, ref)
    assert max_diff(ours[0], ours[1]) > 0.01
    # diffusers' own batch (#13596, issue 2): in 0.42 it raises; should a release fix it, it
    # has to agree with us
    try:
        native = decoder_reference(pipe, embeds, steps=steps, seed=41, guidance=1.0,
                                   num_images_per_prompt=2)
    except RuntimeError:
        request.node.user_properties.append(("diffusers_native", "raises RuntimeError"))
    else:
        close("diffusers_native", ours, native)


@STEPS
@BATCH
def test_unguided_prior_and_decoder_match_pipelines(k22_handles, close, steps, batch):
    """Embeddings from an unguided Prior, decoded unguided with two images each."""
    h = k22_handles
    prompts = PROMPTS[:batch]
    text = clip.clip_text_encode(h["clip_text"], "\n".join(prompts))
    z = prior.prior_node(h["prior"], text, None, steps=steps, guidance_scale=1.0, seed=42,
                         candidates=1)
    ours = decode(h["decoder"], z, steps=steps, seed=43, guidance=1.0, per=2)

    pri = prior_pipeline(h["clip_text"], h["clip_vision"], h["prior"])(
        prompts, num_inference_steps=steps, guidance_scale=1.0, generator=generator(42))
    close("image_embeds", z.image_embeds, pri.image_embeds)
    ref = text_to_image_pipeline(h["decoder"])(
        image_embeds=pri.image_embeds.repeat_interleave(2, 0),
        negative_image_embeds=pri.negative_image_embeds.repeat_interleave(2, 0), height=SIZE,
        width=SIZE, num_inference_steps=steps, guidance_scale=1.0, generator=generator(43),
        output_type="np").images
    close("image", ours, ref)
    assert_a_picture(ours)


@STEPS
def test_inpaint_batch_uses_each_rows_own_image_and_mask(k22_handles, close, steps):
    """Two different images and masks: our row k is diffusers' row k on a batch made of image k
    and mask k twice (diffusers itself would inpaint every row into the first image)."""
    dec = k22_handles["inpaint"]
    pipe = inpaint_pipeline(dec)
    embeds = random_embeds(2, seed=160)
    image = smooth_images(2, SIZE, seed=10)
    mask = _mask(2, [(16, 48, 8, 40), (0, 24, 24, 64)])
    ours = inpaint.inpaint_node(dec, image, mask, embeds, steps=steps, guidance_scale=GUIDANCE,
                                seed=44)
    raw = raw_inpaint(dec, embeds, image, mask, steps=steps, seed=44)
    refs = []
    for k in range(2):
        same = image[k:k + 1].expand(2, -1, -1, -1).contiguous()
        same_mask = mask[k:k + 1].expand(2, -1, -1).contiguous()
        refs.append(torch.from_numpy(inpaint_reference(pipe, embeds, same, same_mask,
                                                       steps=steps, seed=44)))
        close(f"row{k}.raw", raw[k], refs[k][k])
        inside = mask[k].bool()
        close(f"row{k}.node_inside_mask", ours[k][inside], refs[k][k][inside])
        assert torch.equal(ours[k][~inside], image[k][~inside])
    # row 1 inpainted into image 0 with mask 0 (what diffusers' own batch does, #13596 issue 3)
    # is far from ours: the comparison above tells the two apart
    assert max_diff(raw[1], refs[0][1]) > 0.05


def test_zero_image_negative_is_image_encoder_of_zeros(k22_handles, close):
    """Without a negative prompt, the Prior's negative and CLIPImageEncode's negative are the
    image encoder's embedding of an all-zero (normalised) input, as diffusers' get_zero_embed."""
    h = k22_handles
    encoder = h["clip_vision"].image_encoder
    with torch.no_grad():
        zero = encoder(torch.zeros(1, 3, 224, 224)).image_embeds
    text = clip.clip_text_encode(h["clip_text"], PROMPTS[0])
    from_prior = prior.prior_node(h["prior"], text, None, steps=2, guidance_scale=GUIDANCE,
                                  seed=51, candidates=1).negative_image_embeds
    from_images = clip.clip_image_encode(h["clip_vision"],
                                         smooth_images(2, 96, seed=11)).negative_image_embeds
    assert from_prior.shape == from_images.shape == (1, DIM)
    close("prior_negative", from_prior, zero)
    close("clip_image_encode_negative", from_images, zero)
    pipe = prior_pipeline(h["clip_text"], h["clip_vision"], h["prior"])
    close("pipeline_get_zero_embed", from_prior, pipe.get_zero_embed(1))
    assert float(zero.abs().max()) > 0.1  # a real vector, not zeros
