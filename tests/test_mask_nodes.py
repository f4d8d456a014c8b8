"""Mask nodes against hand-computed oracles (ComfyUI convention: 1 = change)."""
from __future__ import annotations

import math

import pytest
import torch

from unclip_nodes.nodes import REGISTRY
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.mask import fit_mask


def call(type_, **kw):
    return REGISTRY[type_].call(**kw)


def one_pixel(h=7, w=7, y=3, x=3):
    m = torch.zeros(1, h, w)
    m[0, y, x] = 1.0
    return m


# --- MaskFromImage / MaskToImage ----------------------------------------------------------------

def test_mask_from_colour_channels_and_grey():
    image = torch.rand(2, 3, 4, 3)
    for i, ch in enumerate(("red", "green", "blue")):
        (m,) = call("MaskFromImage", image=image, channel=ch, threshold=0.0)
        assert torch.equal(m, image[..., i])
    (grey,) = call("MaskFromImage", image=image, channel="grey", threshold=0.0)
    expected = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]
    assert torch.allclose(grey, expected)


def test_mask_from_alpha_is_one_minus_alpha_and_needs_an_alpha_channel():
    image = torch.rand(1, 2, 2, 4)
    (m,) = call("MaskFromImage", image=image, channel="alpha", threshold=0.0)
    assert torch.equal(m, 1.0 - image[..., 3])
    with pytest.raises(UserError) as e:
        call("MaskFromImage", image=torch.rand(1, 2, 2, 3), channel="alpha", threshold=0.0)
    assert e.value.field == "channel"


def test_threshold_binarises_at_or_above():
    image = torch.tensor([0.2, 0.5, 0.7]).view(1, 1, 3, 1).expand(1, 1, 3, 3)
    (m,) = call("MaskFromImage", image=image, channel="red", threshold=0.5)
    assert m.tolist() == [[[0.0, 1.0, 1.0]]]


def test_mask_to_image_is_grey():
    mask = torch.rand(2, 3, 4)
    (img,) = call("MaskToImage", mask=mask)
    assert img.shape == (2, 3, 4, 3) and all(torch.equal(img[..., c], mask) for c in range(3))


# --- shapes ----------------------------------------------------------------------------------------

def test_rectangle_covers_exactly_its_pixels():
    (m,) = call("RectangleMask", like=None, width=10, height=8, x=2, y=1, w=3, h=4, batch=2)
    assert m.shape == (2, 8, 10) and m.sum() == 2 * 12
    assert (m[:, 1:5, 2:5] == 1).all()
    assert set(m.unique().tolist()) == {0.0, 1.0}


def test_rectangle_is_clipped_to_the_canvas():
    (m,) = call("RectangleMask", like=None, width=6, height=4, x=-2, y=3, w=5, h=10, batch=1)
    assert m.sum() == 3 and (m[0, 3, :3] == 1).all()
    (none,) = call("RectangleMask", like=None, width=6, height=4, x=7, y=0, w=5, h=5, batch=1)
    assert none.sum() == 0


def test_like_image_sets_canvas_size_and_batch():
    like = torch.rand(3, 5, 9, 3)
    for kind in ("RectangleMask", "EllipseMask"):
        (m,) = call(kind, like=like, width=100, height=100, x=0, y=0, w=4, h=4, batch=1)
        assert m.shape == (3, 5, 9)


def test_ellipse_stays_in_its_box_is_symmetric_and_has_about_its_area():
    (m,) = call("EllipseMask", like=None, width=40, height=30, x=4, y=5, w=30, h=20, batch=1)
    box = torch.zeros_like(m)
    box[:, 5:25, 4:34] = 1
    assert (m <= box).all()
    inner = m[0, 5:25, 4:34]
    assert torch.equal(inner, inner.flip(0)) and torch.equal(inner, inner.flip(1))
    area = math.pi * 15 * 10
    assert abs(m.sum().item() - area) < 0.05 * area
    assert m[0, 15, 19] == 1 and m[0, 5, 4] == 0  # centre in, corner out
    (empty,) = call("EllipseMask", like=None, width=8, height=8, x=0, y=0, w=0, h=5, batch=1)
    assert empty.sum() == 0


# --- Grow / Feather / Invert ---------------------------------------------------------------------

def test_grow_by_one_turns_a_pixel_into_a_3x3_block():
    (m,) = call("GrowMask", mask=one_pixel(), expand=1)
    expected = torch.zeros(1, 7, 7)
    expected[0, 2:5, 2:5] = 1
    assert torch.equal(m, expected)
    (m2,) = call("GrowMask", mask=one_pixel(), expand=2)
    assert m2.sum() == 25 and (m2[0, 1:6, 1:6] == 1).all()


def test_shrink_by_one_undoes_grow_by_one():
    (grown,) = call("GrowMask", mask=one_pixel(), expand=1)
    (back,) = call("GrowMask", mask=grown, expand=-1)
    assert torch.equal(back, one_pixel())
    (gone,) = call("GrowMask", mask=one_pixel(), expand=-1)
    assert gone.sum() == 0


def test_grow_is_clipped_at_the_border_and_shrink_does_not_eat_from_it():
    (corner,) = call("GrowMask", mask=one_pixel(y=0, x=0), expand=1)
    assert corner.sum() == 4 and (corner[0, :2, :2] == 1).all()
    full = torch.ones(1, 5, 5)
    (still,) = call("GrowMask", mask=full, expand=-2)
    assert torch.equal(still, full)


def test_grow_keeps_the_input_unchanged():
    m = one_pixel()
    before = m.clone()
    call("GrowMask", mask=m, expand=3)
    call("BlurMask", mask=m, pixels=2)
    call("InvertMask", mask=m)
    assert torch.equal(m, before)


def test_invert():
    m = torch.rand(2, 3, 3)
    (inv,) = call("InvertMask", mask=m)
    assert torch.allclose(inv, 1 - m)
    (twice,) = call("InvertMask", mask=inv)
    assert torch.allclose(twice, m)


def test_feather_is_bounded_monotone_across_an_edge_and_leaves_far_pixels():
    step = torch.zeros(1, 6, 40)
    step[:, :, 20:] = 1
    (f,) = call("BlurMask", mask=step, pixels=4)
    assert f.min() >= 0 and f.max() <= 1
    row = f[0, 3]
    assert (row[1:] >= row[:-1]).all()                         # monotone
    assert (row[:15] == 0).all() and (row[25:] == 1).all()     # only the edge moves
    assert 0 < row[19] < 0.5 < row[20] < 1                     # a ramp centred on the edge
    assert torch.allclose(f[0], f[0, :1].expand(6, 40))        # top/bottom borders not faded
    (same,) = call("BlurMask", mask=step, pixels=0)
    assert torch.equal(same, step)


# --- fit_mask ---------------------------------------------------------------------------------------

def test_fit_mask_passes_a_matching_mask_and_broadcasts_a_single_one():
    image = torch.rand(3, 4, 6, 3)
    m = torch.rand(1, 4, 6)
    fitted = fit_mask(m, image)
    assert fitted.shape == (3, 4, 6) and all(torch.equal(fitted[i], m[0]) for i in range(3))
    assert fit_mask(m[0], image).shape == (3, 4, 6)  # [H, W] is a batch of one


def test_fit_mask_resizes_same_aspect_with_nearest():
    small = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    fitted = fit_mask(small, torch.rand(1, 4, 4, 3))
    assert torch.equal(fitted, small.repeat_interleave(2, 1).repeat_interleave(2, 2))


def test_fit_mask_rejects_other_sizes_and_batches_naming_them():
    with pytest.raises(UserError) as e:
        fit_mask(torch.zeros(1, 4, 4), torch.rand(1, 6, 8, 3), field="inpaint_mask")
    assert e.value.field == "inpaint_mask" and "4x4" in e.value.message and "8x6" in e.value.message
    with pytest.raises(UserError) as e:
        fit_mask(torch.zeros(2, 6, 8), torch.rand(3, 6, 8, 3))
    assert e.value.field == "mask"


# --- OutpaintBorder (was OutpaintPad) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fill", ["edge", "grey", "noise"])
def test_outpaint_keeps_the_original_exactly_and_masks_exactly_the_border(fill):
    image = torch.rand(2, 4, 5, 3)
    before = image.clone()
    out, mask = call("OutpaintBorder", image=image, left=2, top=1, right=0, bottom=3, fill=fill,
                     feather=0, seed=0)
    assert out.shape == (2, 8, 7, 3) and mask.shape == (2, 8, 7)
    assert torch.equal(out[:, 1:5, 2:7], image) and torch.equal(image, before)
    expected = torch.ones(2, 8, 7)
    expected[:, 1:5, 2:7] = 0
    assert torch.equal(mask, expected)
    assert out.min() >= 0 and out.max() <= 1


def test_outpaint_fills():
    image = torch.rand(1, 3, 3, 3)
    edge, _ = call("OutpaintBorder", image=image, left=2, top=0, right=0, bottom=1, fill="edge",
                   feather=0, seed=0)
    assert torch.equal(edge[0, :3, 0], image[0, :, 0]) and torch.equal(edge[0, 3, 2:], image[0, 2])
    grey, _ = call("OutpaintBorder", image=image, left=1, top=0, right=0, bottom=0, fill="grey",
                   feather=0, seed=0)
    assert (grey[0, :, 0] == 0.5).all()
    a, _ = call("OutpaintBorder", image=image, left=4, fill="noise", feather=0, seed=1)
    b, _ = call("OutpaintBorder", image=image, left=4, fill="noise", feather=0, seed=1)
    c, _ = call("OutpaintBorder", image=image, left=4, fill="noise", feather=0, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_outpaint_feather_ramps_into_the_original_from_padded_sides_only():
    image = torch.rand(1, 6, 6, 3)
    out, mask = call("OutpaintBorder", image=image, left=2, top=0, right=0, bottom=0, fill="grey",
                     feather=3, seed=0)
    assert torch.equal(out[:, :, 2:], image)
    assert (mask[0, :, :2] == 1).all()
    row = mask[0, 0, 2:]
    assert torch.allclose(row, torch.tensor([3 / 4, 2 / 4, 1 / 4, 0, 0, 0]))
    assert torch.equal(mask[0, 0], mask[0, 5])  # unpadded top/bottom add nothing
