"""The editing maths without any model: slerp, text diffs, mixes, theta lists, RePaint blending
and feathering, DDIM and its inversion."""
from __future__ import annotations

import math

import pytest
import torch

from unclip_nodes.nodes import inpaint, interpolate
from unclip_nodes.nodes.core import sampling
from unclip_nodes.nodes.families import karlo
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.interpolate import parse_thetas, slerp, text_diff
from unclip_nodes.nodes.invert import ddim_invert
from unclip_nodes.nodes.core.sampling import DDIMSampler, make_generator
from unclip_nodes.nodes.types import ImageEmbeds, TextEmbeds

SCHED = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": True,
         "prediction_type": "epsilon", "variance_type": "learned_range"}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def angle(a, b):
    a, b = a.double(), b.double()
    return torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1)).item()


def emb(v):
    return ImageEmbeds(image_embeds=v)


def text_emb(v):
    b, d = v.shape
    return TextEmbeds(text_embeds=v, hidden_states=torch.zeros(b, 3, d),
                      attention_mask=torch.ones(b, 3, dtype=torch.bool))


# --- slerp ----------------------------------------------------------------------------------------

def test_slerp_endpoints_are_exactly_the_inputs():
    a, b = rand(8, seed=1), rand(8, seed=2)
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.equal(slerp(a, b, 1.0), b)


def test_slerp_keeps_unit_vectors_on_the_sphere_and_moves_at_constant_angular_speed():
    a, b = rand(16, seed=3), rand(16, seed=4)
    a, b = a / a.norm(), b / b.norm()
    omega = angle(a, b)
    for t in (0.1, 0.25, 0.5, 0.9):
        v = slerp(a, b, t)
        assert v.norm().item() == pytest.approx(1.0, abs=1e-6)
        assert angle(a, v) == pytest.approx(t * omega, abs=1e-5)
        assert angle(v, b) == pytest.approx((1 - t) * omega, abs=1e-5)


def test_slerp_of_equal_length_vectors_keeps_their_length_unlike_lerp():
    a, b = rand(16, seed=5), rand(16, seed=6)
    b = b / b.norm() * a.norm()
    mid = slerp(a, b, 0.5)
    assert mid.norm().item() == pytest.approx(a.norm().item(), rel=1e-5)
    assert ((a + b) / 2).norm().item() < 0.9 * a.norm().item()  # what a straight line would do


def test_slerp_is_symmetric():
    a, b = rand(12, seed=7), rand(12, seed=8) * 3
    for t in (0.0, 0.3, 0.5, 0.8):
        assert torch.allclose(slerp(a, b, t), slerp(b, a, 1 - t), atol=1e-6)


def test_slerp_is_the_whole_vector_formula_not_an_element_wise_one():
    a, b = rand(6, seed=9), rand(6, seed=10)
    t = 0.3
    omega = math.acos(float(a @ b / (a.norm() * b.norm())))
    s = math.sin(omega)
    expected = math.sin((1 - t) * omega) / s * a + math.sin(t * omega) / s * b
    assert torch.allclose(slerp(a, b, t), expected, atol=1e-6)


def test_slerp_of_nearly_parallel_vectors_falls_back_to_linear_interpolation():
    a = rand(10, seed=11)
    b = 2 * a + 1e-7 * rand(10, seed=12)
    v = slerp(a, b, 0.25)
    assert torch.isfinite(v).all()
    assert torch.allclose(v, 0.75 * a + 0.25 * b, atol=1e-5)
    opposite = slerp(a, -a, 0.5)  # undefined plane: linear, through the origin, still finite
    assert torch.isfinite(opposite).all()


def test_slerp_works_row_by_row_on_batches():
    a, b = rand(3, 8, seed=13), rand(3, 8, seed=14)
    v = slerp(a, b, 0.4)
    for i in range(3):
        assert torch.allclose(v[i], slerp(a[i], b[i], 0.4), atol=1e-6)


# --- thetas ---------------------------------------------------------------------------------------

def test_theta_list_or_evenly_spaced_frames():
    assert parse_thetas("0, 0.25,0.5", 9) == [0.0, 0.25, 0.5]
    assert parse_thetas("", 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_thetas("  ", 3, end=0.5) == [0.0, 0.25, 0.5]
    assert parse_thetas("", 1) == [0.0]


@pytest.mark.parametrize("text", ["0,1.5", "-0.1", "0,abc"])
def test_bad_thetas_are_user_errors_naming_the_field(text):
    with pytest.raises(UserError) as e:
        interpolate.slerp_node(a=emb(rand(1, 4)), b=emb(rand(1, 4, seed=1)), thetas=text)
    assert e.value.field == "thetas"


# --- Slerp node ---------------------------------------------------------------------------------

def test_slerp_node_gives_one_embedding_per_theta_and_the_thetas_as_text():
    a, b = rand(1, 8, seed=1), rand(1, 8, seed=2)
    out, thetas = interpolate.slerp_node(a=emb(a), b=emb(b), thetas="0,0.5,1")
    assert thetas == "0,0.5,1"
    z = out.image_embeds
    assert z.shape == (3, 8)
    assert torch.equal(z[0], a[0]) and torch.equal(z[2], b[0])
    assert torch.allclose(z[1], slerp(a[0], b[0], 0.5))


def test_slerp_node_takes_a_text_embedding_pooled_vector_for_either_end():
    a, t = rand(1, 8, seed=1), rand(1, 8, seed=2)
    out, _ = interpolate.slerp_node(a=emb(a), text_b=text_emb(t), frames=3)
    assert torch.equal(out.image_embeds[2], t[0])


def test_slerp_node_errors_name_the_field():
    a = emb(rand(1, 8))
    with pytest.raises(UserError) as e:
        interpolate.slerp_node(a=a, b=emb(rand(1, 6)), frames=3)
    assert e.value.field == "b" and "dimensions" in e.value.message
    with pytest.raises(UserError) as e:
        interpolate.slerp_node(a=a, b=a, text_b=text_emb(rand(1, 8)), frames=3)
    assert e.value.field == "text_b"
    with pytest.raises(UserError) as e:
        interpolate.slerp_node(b=a, frames=3)
    assert e.value.field == "a"


def test_slerp_noise_interpolates_latents_and_keeps_their_shape():
    a, b = rand(1, 3, 4, 4, seed=1), rand(1, 3, 4, 4, seed=2)
    out, thetas = interpolate.slerp_noise_node(a, b, thetas="0,0.5,1")
    assert out.shape == (3, 3, 4, 4) and thetas == "0,0.5,1"
    assert torch.equal(out[0], a[0]) and torch.equal(out[2], b[0])
    assert out[1].norm() > 0.9 * min(a.norm(), b.norm())  # on the sphere, not towards 0
    with pytest.raises(UserError) as e:
        interpolate.slerp_noise_node(a, rand(1, 3, 8, 8), thetas="0")
    assert e.value.field == "b"


# --- text diff ------------------------------------------------------------------------------------

def test_text_diff_follows_the_paper_formula():
    z_i, z_t0, z_t = rand(1, 8, seed=1), rand(1, 8, seed=2), rand(1, 8, seed=3)
    z_d = (z_t - z_t0) / (z_t - z_t0).norm()
    out = text_diff(z_i, z_t0, z_t, [0.0, 0.3, 1.0], match_norm=False)
    assert torch.allclose(out[0], z_i, atol=1e-6)
    assert torch.allclose(out[1], slerp(z_i, z_d, 0.3), atol=1e-6)
    assert torch.allclose(out[2], z_d, atol=1e-6)
    assert out[2].norm().item() == pytest.approx(1.0, abs=1e-6)


def test_text_diff_with_matched_norm_stays_on_the_image_embedding_sphere():
    z_i, z_t0, z_t = 5 * rand(1, 8, seed=1), rand(1, 8, seed=2), rand(1, 8, seed=3)
    out, thetas = interpolate.text_diff_node(emb(z_i), text_emb(z_t0), text_emb(z_t),
                                             thetas="0,0.25,0.5")
    assert thetas == "0,0.25,0.5"
    z = out.image_embeds
    assert torch.allclose(z.norm(dim=-1), z_i.norm().expand(3), rtol=1e-5)
    d = z_t - z_t0
    # moving toward the text direction: the cosine with z_d grows along the path
    cos = [float(torch.nn.functional.cosine_similarity(r, d[0], dim=0)) for r in z]
    assert cos[0] < cos[1] < cos[2]


def test_text_diff_errors_name_the_field():
    z = rand(1, 8)
    with pytest.raises(UserError) as e:
        interpolate.text_diff_node(emb(z), text_emb(z), text_emb(z), thetas="0,0.5")
    assert e.value.field == "target"
    with pytest.raises(UserError) as e:
        interpolate.text_diff_node(emb(rand(1, 6)), text_emb(z), text_emb(rand(1, 8, seed=4)))
    assert e.value.field == "caption"
    with pytest.raises(UserError) as e:
        interpolate.text_diff_node(emb(z), text_emb(z), text_emb(rand(1, 8, seed=4)), thetas="2")
    assert e.value.field == "thetas"


# --- mix ------------------------------------------------------------------------------------------

def test_mix_is_the_plain_weighted_sum_of_any_linked_slots():
    a, b, c = rand(1, 8, seed=1), rand(1, 8, seed=2), rand(1, 8, seed=3)
    out = interpolate.mix_embeds_node(embeds_1=emb(a), text_3=text_emb(b), embeds_4=emb(c),
                                      weight_1=0.7, weight_2=9.0, weight_3=0.6, weight_4=-0.2)
    assert torch.allclose(out.image_embeds, 0.7 * a + 0.6 * b - 0.2 * c, atol=1e-6)
    same = interpolate.mix_embeds_node(embeds_2=emb(a), weight_2=1.0)
    assert torch.equal(same.image_embeds, a)  # weight 1, one input: no normalisation


def test_mix_errors_name_the_field():
    with pytest.raises(UserError) as e:
        interpolate.mix_embeds_node()
    assert e.value.field == "embeds_1"
    with pytest.raises(UserError) as e:
        interpolate.mix_embeds_node(embeds_1=emb(rand(1, 8)), embeds_2=emb(rand(1, 4)))
    assert e.value.field == "embeds_2"
    with pytest.raises(UserError) as e:
        interpolate.mix_embeds_node(embeds_1=emb(rand(1, 8)), text_1=text_emb(rand(1, 8)))
    assert e.value.field == "text_1"


# --- inpainting helpers --------------------------------------------------------------------------

def test_feather_ramps_inside_the_mask_only():
    mask = torch.zeros(1, 20, 20)
    mask[:, 5:15, 5:15] = 1
    w = inpaint.feather_weights(mask, 3)
    assert torch.equal(w[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert w[0, 5, 10].item() == pytest.approx(1 / 4)   # on the edge
    assert w[0, 6, 10].item() == pytest.approx(2 / 4)
    assert w[0, 10, 10].item() == 1.0                   # deep inside


def test_composite_keeps_every_unmasked_pixel_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    original = torch.rand(2, 16, 12, 4, generator=g)
    generated = torch.rand(2, 16, 12, 3, generator=g)
    mask = (torch.rand(2, 16, 12, generator=g) > 0.6).float() * torch.rand(2, 16, 12, generator=g)
    out = inpaint.composite(original, generated, mask, pixels=2)
    keep = mask == 0
    assert torch.equal(out[keep], original[keep])
    assert torch.equal(out[..., 3], original[..., 3])  # alpha is carried over
    assert not torch.equal(out[~keep], original[~keep])


def test_square_canvas_centres_the_image_and_masks_the_margin():
    img = torch.rand(1, 6, 10, 3)
    mask = torch.zeros(1, 6, 10)
    canvas, m, (top, left, h, w) = karlo.square_canvas(img, mask)
    assert canvas.shape == (1, 10, 10, 3) and (top, left, h, w) == (2, 0, 6, 10)
    assert torch.equal(canvas[:, 2:8], img)
    assert m[:, :2].eq(1).all() and m[:, 8:].eq(1).all() and m[:, 2:8].eq(0).all()


def test_shrinking_a_mask_marks_a_pixel_when_any_pixel_it_covers_changes():
    mask = torch.zeros(1, 8, 8)
    mask[0, 3, 3] = 1
    small = karlo.resize_mask(mask, 4)
    assert small.shape == (1, 1, 4, 4) and small.sum() == 1 and small[0, 0, 1, 1] == 1


def test_repaint_callback_puts_the_known_region_back_noised_to_the_step():
    sampler = DDIMSampler(SCHED)
    known = torch.rand(1, 3, 4, 4) * 2 - 1
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2] = 1
    x = torch.randn(1, 3, 4, 4)
    cb = sampling.repaint_callback(sampler, known, keep, make_generator(0))
    last = cb(9, 0, None, x)
    assert torch.equal(last[..., :2], known[..., :2]) and torch.equal(last[..., 2:], x[..., 2:])
    mid = cb(0, 500, 400, x)
    eps = torch.randn(known.shape, generator=make_generator(0))
    assert torch.allclose(mid[..., :2], sampler.add_noise(known, eps, 400)[..., :2])


# --- DDIM ---------------------------------------------------------------------------------------

def test_ddim_timesteps_avoid_the_degenerate_last_training_step():
    ts = DDIMSampler(SCHED).timesteps(25)
    assert ts[0] == 960 and ts[-1] == 0 and len(ts) == 25
    with pytest.raises(UserError) as e:
        DDIMSampler(SCHED).timesteps(1)
    assert e.value.field == "steps"


def test_ddim_inversion_is_the_exact_inverse_for_a_model_that_is_consistent_along_the_path():
    """With a noise prediction that does not depend on x or t, DDIM's deterministic path is a
    straight line and inversion retraces it exactly; what remains in real models is their
    error between neighbouring steps."""
    sampler = DDIMSampler(SCHED, eta=0.0)
    e = rand(1, 3, 8, 8, seed=1)
    out = torch.cat([e, torch.zeros_like(e)], dim=1)  # + a (ignored) predicted-variance half
    x0 = (rand(1, 3, 8, 8, seed=2) * 0.4).clamp(-1, 1)
    x_T = ddim_invert(lambda x, t: out, sampler, x0, 20)
    x = x_T
    ts = sampler.timesteps(20)
    for i, t in enumerate(ts):
        x = sampler.step(out, t, ts[i + 1] if i + 1 < len(ts) else None, x, make_generator(0))
    assert (x - x0).abs().max() < 1e-4


def test_ddim_eta_adds_more_noise_as_it_grows():
    out = torch.zeros(4, 6, 8, 8)
    x = rand(4, 3, 8, 8)
    spread = []
    for eta in (0.0, 0.5, 1.0):
        s = DDIMSampler(SCHED, eta=eta)
        a = s.step(out, 500, 460, x, make_generator(1))
        b = s.step(out, 500, 460, x, make_generator(2))
        spread.append(float((a - b).abs().mean()))
    assert spread[0] == 0.0 < spread[1] < spread[2]
