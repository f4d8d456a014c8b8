"""The editing nodes on the tiny random checkpoint: what they keep, the shapes they make, the
Decoder's new options, and the mistakes they report.  (What they paint is tested on the pocket
model, test_edit_pocket.py.)"""
from __future__ import annotations

import pytest
import torch

from stages_util import load, one_thread, tiny_checkpoint  # noqa: F401
from unclip_nodes.nodes import clip, decoder, inpaint, invert
from unclip_nodes.nodes import mask as masks
from unclip_nodes.nodes.declare import REGISTRY
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.types import ImageEmbeds

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def handles(tiny_checkpoint):
    return load(tiny_checkpoint)


@pytest.fixture(scope="module")
def picture():
    return torch.rand(1, 40, 56, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def z(handles, picture):
    return clip.clip_image_encode(handles[1], picture)


def run_inpaint(handles, image, mask, z, upsampler=None, **kw):
    params = dict(steps=2, guidance_scale=8.0, seed=0, resample=1, feather=0, upsample_steps=2)
    params.update(kw)
    return inpaint.inpaint_node(handles[3], image, mask, z, None, upsampler, **params)


def assert_kept(out, image, mask):
    keep = (mask == 0).expand(image.shape[:3])
    assert out.shape == image.shape
    assert torch.equal(out[keep], image.float()[keep])


def test_inpaint_keeps_every_unmasked_pixel_bit_identical_and_changes_the_masked_ones(
        handles, picture, z):
    mask = masks.rectangle_mask(like=picture, x=10, y=5, w=20, h=25)
    out = run_inpaint(handles, picture, mask, z, upsampler=handles[4], resample=2, feather=3)
    assert_kept(out, picture, mask)
    changed = (out - picture).abs().amax(-1)[mask > 0]
    assert (changed > 1e-3).float().mean() > 0.9


def test_inpaint_with_a_soft_mask_of_another_size_keeps_its_zero_pixels(handles, picture, z):
    small = masks.feather_mask(masks.ellipse_mask(width=28, height=20, x=4, y=4, w=14, h=10), 2)
    out = run_inpaint(handles, picture, small, z, feather=2)
    assert_kept(out, picture, masks.fit_mask(small, picture))


def test_inpaint_is_deterministic_for_a_seed(handles, picture, z):
    mask = masks.rectangle_mask(like=picture, x=0, y=0, w=20, h=20)
    a = run_inpaint(handles, picture, mask, z, seed=4)
    b = run_inpaint(handles, picture, mask, z, seed=4)
    c = run_inpaint(handles, picture, mask, z, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_outpainting_keeps_the_original_and_fills_the_border(handles, picture, z):
    padded, mask = masks.outpaint_pad(picture, left=8, top=0, right=8, bottom=4, fill="grey")
    out = run_inpaint(handles, padded, mask, z, upsampler=handles[4])
    assert out.shape == (1, 44, 72, 3)
    assert torch.equal(out[:, 0:40, 8:64], picture)
    assert (out[:, :, :8] - 0.5).abs().max() > 0.05  # the grey border was painted over


def test_inpaint_pairs_one_image_with_several_embeddings(handles, picture, z):
    two = ImageEmbeds(image_embeds=torch.cat([z.image_embeds, 0.5 * z.image_embeds]))
    mask = masks.rectangle_mask(like=picture, x=0, y=0, w=10, h=10)
    out = run_inpaint(handles, picture, mask, two)
    assert out.shape == (2, 40, 56, 3)
    assert_kept(out[:1], picture, mask)


def test_inpaint_count_gives_several_results_per_image(handles, picture, z):
    two = torch.cat([picture, picture.flip(2)])
    mask = masks.rectangle_mask(like=two, x=0, y=0, w=12, h=12)
    out = run_inpaint(handles, two, mask, z, count=2)
    assert out.shape == (4, 40, 56, 3)
    assert_kept(out[:2], picture.expand(2, -1, -1, -1), mask[:1])
    assert_kept(out[2:], picture.flip(2).expand(2, -1, -1, -1), mask[:1])
    assert not torch.equal(out[0], out[1])


def test_inpaint_mask_of_another_shape_is_a_user_error_naming_the_mask(handles, picture, z):
    with pytest.raises(UserError) as e:
        run_inpaint(handles, picture, torch.zeros(1, 40, 40), z)
    assert e.value.field == "mask" and "40x40" in e.value.message
    with pytest.raises(UserError) as e:
        run_inpaint(handles, picture, torch.zeros(3, 40, 56), z)
    assert e.value.field == "mask"
    with pytest.raises(UserError) as e:
        run_inpaint(handles, picture, torch.full((1, 40, 56), 2.0), z)
    assert e.value.field == "mask"


def test_inpaint_embeddings_of_another_clip_are_a_user_error(handles, picture):
    wrong = ImageEmbeds(image_embeds=torch.zeros(1, 7))
    with pytest.raises(UserError) as e:
        run_inpaint(handles, picture, torch.zeros(1, 40, 56), wrong)
    assert e.value.field == "image_embeds"


# --- Decoder options ------------------------------------------------------------------------------

def decode(handles, z, **kw):
    params = dict(steps=3, guidance_scale=8.0, seed=0, images_per_embedding=1)
    params.update(kw)
    return decoder.decoder_node(handles[3], z, None, **params)


def test_same_noise_draws_one_x_T_for_every_image(handles, z):
    rows = ImageEmbeds(image_embeds=z.image_embeds.expand(3, -1))
    same = decode(handles, rows, sampler="ddim", same_noise=True)
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])
    own = decode(handles, rows, sampler="ddim")
    assert not torch.equal(own[0], own[1])


def test_explicit_noise_is_used_as_x_T_and_one_row_serves_every_image(handles, z):
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    a = decode(handles, z, noise=x_T, sampler="ddim", seed=1, images_per_embedding=2)
    b = decode(handles, z, noise=x_T, sampler="ddim", seed=2)
    assert torch.equal(a[0], a[1])
    assert torch.allclose(a[0], b[0], atol=1e-5)  # eta 0: the seed plays no part (batch of 2
    # vs 1 may differ in the last bits of the convolutions)


def test_ddim_eta_gives_seed_dependent_variations(handles, z):
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    a = decode(handles, z, noise=x_T, sampler="ddim", eta=0.8, seed=1)
    b = decode(handles, z, noise=x_T, sampler="ddim", eta=0.8, seed=2)
    assert not torch.equal(a, b)


def test_decoder_noise_of_the_wrong_shape_is_a_user_error(handles, z):
    with pytest.raises(UserError) as e:
        decode(handles, z, noise=torch.zeros(1, 3, 16, 16))
    assert e.value.field == "noise" and "3, 32, 32]" in e.value.message
    with pytest.raises(UserError) as e:
        decode(handles, z, noise=torch.zeros(2, 3, 32, 32), images_per_embedding=3)
    assert e.value.field == "noise"


def test_eta_without_the_ddim_sampler_is_a_user_error():
    spec = REGISTRY["Decoder"]
    with pytest.raises(UserError) as e:
        spec.check({"sampler": "unclip", "eta": 0.5})
    assert e.value.field == "eta"
    spec.check({"sampler": "ddim", "eta": 0.5})
    spec.check({"sampler": "unclip", "eta": 0.0})


def test_decoder_defaults_keep_karlos_sampler():
    params = {p.name: p.default for p in REGISTRY["Decoder"].params}
    assert params["sampler"] == "unclip" and params["eta"] == 0.0 and params["same_noise"] is False


# --- DDIMInvert -----------------------------------------------------------------------------------

def test_ddim_invert_gives_one_decoder_noise_per_image(handles, picture, z):
    two = torch.cat([picture, picture.flip(1)])
    z2 = clip.clip_image_encode(handles[1], two)
    lat = invert.ddim_invert_node(handles[3], two, z2, None, steps=3, guidance_scale=1.0)
    assert lat.shape == (2, 3, 32, 32) and torch.isfinite(lat).all()
    assert not torch.equal(lat[0], lat[1])
    again = invert.ddim_invert_node(handles[3], two, z2, None, steps=3, guidance_scale=1.0)
    assert torch.equal(lat, again)


def test_ddim_invert_needs_one_embedding_per_image(handles, picture):
    three = ImageEmbeds(image_embeds=torch.zeros(3, 32))
    with pytest.raises(UserError) as e:
        invert.ddim_invert_node(handles[3], torch.cat([picture, picture]), three, None, steps=3)
    assert e.value.field == "image_embeds"
