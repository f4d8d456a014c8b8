"""Stable unCLIP on the family seam: both layouts read (real configs and tiny checkpoints), what
each node does with them, and what validation refuses and why."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stable_unclip_util import load, single_thread, smooth_images, tiny_stable_unclip  # noqa: F401
import unclip_nodes.nodes  # noqa: F401  (registers every node type)
from unclip_nodes.graph.validate import load as validate
from unclip_nodes.nodes import decoder, families, inpaint, invert, loaders
from unclip_nodes.nodes.core.facts import Facts
from unclip_nodes.nodes.core.pixels import to_image
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.types import ImageEmbeds

BENCH = Path(__file__).resolve().parent.parent / "bench" / "configs"
REAL = BENCH / "stable_unclip"
VIT_H, VIT_L = "OpenCLIP ViT-H/14", "OpenAI CLIP ViT-L/14"


def facts(path, stages, layout=True):
    ck = loaders.open_checkpoint(str(path), stages, layout=layout, config_only=True)
    return families.by_name(ck.family).facts(ck, stages)


def raised(fn) -> UserError:
    with pytest.raises(UserError) as e:
        fn()
    return e.value


def errors_of(nodes: dict, outputs: dict) -> list[UserError]:
    try:
        validate({"nodes": nodes, "outputs": outputs})
    except UserError as e:
        return list(getattr(e, "errors", [e]))
    return []


# --- reading both layouts ---------------------------------------------------------------------------

@pytest.mark.parametrize("folder, dim, space", [("h", 1024, VIT_H), ("l/img2img", 768, VIT_L),
                                                ("l/txt2img", 768, VIT_L)])
def test_real_configs_give_the_decoder_its_clip_space_from_the_class_embedding_width(
        folder, dim, space):
    f = facts(REAL / folder, loaders._ALL)
    dec = f["decoder"]
    assert (dec.family, dec.label, dec.clip_dim, dec.space) == ("stable_unclip", "Stable unCLIP",
                                                                dim, space)
    assert (dec.takes_text, dec.variant, dec.cannot_inpaint) == (True, "text2img", None)
    assert "no upsampler" in f["upsampler"].absent


def test_real_text_to_image_layout_serves_the_prior_and_its_clip_in_vit_l_space():
    f = facts(REAL / "l" / "txt2img", loaders._ALL)
    assert (f["prior"].clip_dim, f["clip_text"].clip_dim, f["clip_text"].space) == (768, 768, VIT_L)
    assert f["clip_vision"] is None


@pytest.mark.parametrize("folder", ["h", "l/img2img"])
def test_image_variation_layout_says_why_it_has_no_text_tower_nor_prior(folder):
    f = facts(REAL / folder, loaders._ALL)
    assert f["clip_vision"].clip_dim == f["decoder"].clip_dim
    for stage in ("clip_text", "prior"):
        assert "no CLIP text tower in its image space" in f[stage].absent
    e = raised(lambda: loaders.open_checkpoint(str(REAL / folder), ("prior",), layout=False,
                                               config_only=True))
    assert "StableUnCLIPImg2ImgPipeline" in e.message and "no prior" in e.message


def test_text_to_image_folder_has_no_image_encoder_for_the_vision_loader():
    e = raised(lambda: loaders.open_checkpoint(str(REAL / "l" / "txt2img"), ("clip_vision",),
                                               layout=False, config_only=True))
    assert "has no image encoder" in e.message


def test_prior_path_is_refused_for_a_stable_unclip_folder():
    e = raised(lambda: loaders.open_checkpoint(str(REAL / "h"), loaders._ALL, layout=True,
                                               prior_path=str(REAL / "l" / "txt2img"),
                                               config_only=True))
    assert e.field == "prior_path"


# --- cross-family links, decided by CLIP space -------------------------------------------------------

def test_a_karlo_prior_in_vit_l_space_may_feed_the_small_decoder_but_not_the_h_one():
    karlo = Facts("karlo", "Karlo unCLIP", 768, VIT_L)
    small = facts(REAL / "l" / "img2img", ("decoder",), layout=False)["decoder"]
    decoder.check_links({"decoder": small, "image_embeds": karlo})  # no error
    big = facts(REAL / "h", ("decoder",), layout=False)["decoder"]
    e = raised(lambda: decoder.check_links({"decoder": big, "image_embeds": karlo}))
    assert e.field == "image_embeds"
    assert "768-d" in e.message and "Karlo unCLIP" in e.message and VIT_L in e.message
    assert "1024-d" in e.message and "Stable unCLIP" in e.message and VIT_H in e.message


def test_same_width_in_another_clip_is_refused_naming_both_spaces():
    big = facts(REAL / "h", ("decoder",), layout=False)["decoder"]
    other = Facts("kandinsky22", "Kandinsky 2.2", 1024, "OpenCLIP ViT-bigG/14")
    e = raised(lambda: decoder.check_links({"decoder": big, "image_embeds": other}))
    assert "ViT-bigG/14" in e.message and VIT_H in e.message


def test_a_kandinsky_prior_in_vit_big_g_space_may_not_feed_a_stable_unclip_decoder():
    k22 = facts(BENCH / "kandinsky22" / "prior", ("prior",), layout=False)["prior"]
    small = facts(REAL / "l" / "txt2img", ("decoder",), layout=False)["decoder"]
    e = raised(lambda: decoder.check_links({"decoder": small, "image_embeds": k22.embedding()}))
    assert "1280-d" in e.message and "Kandinsky 2.2" in e.message
    assert "768-d" in e.message and "Stable unCLIP" in e.message and VIT_L in e.message


def test_workflow_linking_the_pocket_karlo_prior_to_a_tiny_stable_unclip_decoder_is_refused(
        tiny_stable_unclip):
    wf = {
        "model": {"type": "LoadUnCLIP", "params": {"path": "pocket"}},
        "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                 "params": {"prompt": "a red cat"}},
        "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"}},
        "su": {"type": "LoadUnCLIPDecoder",
               "params": {"path": str(tiny_stable_unclip["img2img"])}},
        "decode": {"type": "Decoder", "links": {"decoder": "su.decoder",
                                                "image_embeds": "prior.image_embeds"}},
    }
    (e,) = errors_of(wf, {"image": "decode.image"})
    assert e.node == "decode" and e.field == "image_embeds"
    assert "64-d" in e.message and "Karlo unCLIP" in e.message
    assert "32-d" in e.message and "Stable unCLIP" in e.message


def test_workflow_encoding_text_with_the_image_variation_layout_says_why_not(tiny_stable_unclip):
    wf = {
        "model": {"type": "LoadUnCLIP", "params": {"path": str(tiny_stable_unclip["img2img"])}},
        "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                 "params": {"prompt": "a red cat"}},
    }
    (e,) = errors_of(wf, {"text": "text.text"})
    assert (e.node, e.field) == ("text", "clip")
    assert "no CLIP text tower in its image space" in e.message


def test_upsample_is_refused_with_the_reason(tiny_stable_unclip):
    wf = {
        "model": {"type": "LoadUnCLIP", "params": {"path": str(tiny_stable_unclip["txt2img"])}},
        "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                 "params": {"prompt": "a red cat"}},
        "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"}},
        "decode": {"type": "Decoder", "links": {"decoder": "model.decoder",
                                                "image_embeds": "prior.image_embeds"}},
        "up": {"type": "Upsample", "links": {"upsampler": "model.upsampler",
                                             "image": "decode.image"}},
    }
    errors = errors_of(wf, {"image": "up.image"})
    assert [e.node for e in errors] == ["up"]
    assert "Stable unCLIP has no upsampler" in errors[0].message


# --- the Decoder's family settings ------------------------------------------------------------------

def test_other_families_refuse_a_changed_stable_unclip_setting_by_field():
    dec = load("pocket")["decoder"]
    embeds = ImageEmbeds(image_embeds=torch.zeros(1, dec.clip_dim))
    for name, value in (("noise_level", 5), ("prompt", "a cat"), ("per_image_noise", True)):
        e = raised(lambda: decoder.decoder_node(dec, embeds, None, steps=2, guidance_scale=1.0,
                                                seed=0, images_per_embedding=1,
                                                **{name: value}))
        assert e.field == name and f"takes no {name}" in e.message


@pytest.fixture(scope="module")
def variation(tiny_stable_unclip):
    h = load(tiny_stable_unclip["img2img"])
    images = smooth_images(2, 32, seed=1)
    from unclip_nodes.nodes import clip
    return h, images, clip.clip_image_encode(h["clip_vision"], images)


def test_noise_level_above_999_and_sizes_off_the_8_grid_are_user_errors(variation):
    h, _, embeds = variation
    dec = h["decoder"]
    e = raised(lambda: dec.conditioning(embeds, None, 1, noise_level=1000))
    assert e.field == "noise_level"
    e = raised(lambda: decoder.decoder_node(dec, embeds, None, steps=2, guidance_scale=1.0,
                                            seed=0, images_per_embedding=1, width=36))
    assert e.field == "width" and "multiple of 8" in e.message


def test_prompts_that_do_not_pair_with_the_embeddings_name_the_prompt(variation):
    h, _, embeds = variation
    e = raised(lambda: h["decoder"].conditioning(embeds, None, 1, prompt="a\nb\nc"))
    assert e.field == "prompt"
    e = raised(lambda: h["decoder"].conditioning(embeds, None, 1, prompt="a\nb",
                                                 negative_prompt="x\ny\nz"))
    assert e.field == "negative_prompt"


@pytest.mark.usefixtures("single_thread")
def test_width_and_height_set_the_output_size_and_strength_starts_from_the_image(variation):
    h, images, embeds = variation
    out = decoder.decoder_node(h["decoder"], embeds, None, steps=4, guidance_scale=3.0, seed=2,
                               images_per_embedding=1, width=40, height=24)
    assert out.shape == (2, 24, 40, 3)
    near = decoder.decoder_node(h["decoder"], embeds, None, steps=4, guidance_scale=1.0, seed=2,
                                images_per_embedding=1, image=images, strength=0.25)
    far = decoder.decoder_node(h["decoder"], embeds, None, steps=4, guidance_scale=1.0, seed=2,
                               images_per_embedding=1, image=images, strength=1.0)
    assert float((near - images).abs().mean()) < float((far - images).abs().mean())


@pytest.mark.usefixtures("single_thread")
def test_inpaint_changes_only_the_masked_pixels(variation):
    h, images, embeds = variation
    mask = torch.zeros(2, 32, 32)
    mask[:, 8:20, 10:24] = 1
    out = inpaint.inpaint_node(h["decoder"], images, mask, embeds, steps=3, guidance_scale=4.0,
                               seed=3, noise_level=100, prompt="a red circle")
    keep = mask == 0
    assert torch.equal(out[keep], images[keep])
    assert float((out - images)[~keep].abs().max()) > 0.05


def test_v_prediction_ddim_inverts_and_retraces_a_perfect_model(variation):
    """DDIMInvert's and the ddim sampler's v-prediction arithmetic: with a model that predicts
    the true v of one clean latent, inverting it and sampling back gives that latent again."""
    from unclip_nodes.nodes.core.sampling import sample
    dec = variation[0]["decoder"]
    rule = dec.sampler("ddim", 0.0)
    assert rule.prediction_type == "v_prediction"
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def perfect(x, t):
        a = float(rule.alphas_cumprod[t])
        eps = (x - a ** 0.5 * x0) / (1 - a) ** 0.5
        return a ** 0.5 * eps - (1 - a) ** 0.5 * x0
    x_T = invert.ddim_invert(perfect, rule, x0, 10)
    assert float((x_T - x0).abs().max()) > 0.5  # it went up the schedule
    back = sample(perfect, rule, rule.timesteps(10), x_T, torch.Generator())
    assert float((back - x0).abs().max()) < 1e-3


@pytest.mark.usefixtures("single_thread")
def test_ddim_invert_seeds_the_embedding_noise_as_the_decoder_does(variation):
    h, images, embeds = variation
    dec = h["decoder"]
    one = invert.ddim_invert_node(dec, images, embeds, steps=3, seed=4, noise_level=500)
    same = invert.ddim_invert_node(dec, images, embeds, steps=3, seed=4, noise_level=500)
    other = invert.ddim_invert_node(dec, images, embeds, steps=3, seed=5, noise_level=500)
    assert one.shape == (2, 4, 32, 32) and torch.equal(one, same)
    assert float((one - other).abs().max()) > 1e-4


@pytest.mark.usefixtures("single_thread")
def test_batched_seeds_draw_each_runs_embedding_noise_from_its_own_seed(variation):
    """--batch: several seeds in one model call give each run what it gives alone."""
    h, _, embeds = variation
    kw = dict(steps=2, guidance_scale=3.0, images_per_embedding=2, noise_level=300)
    runs = decoder.decoder_node(h["decoder"], embeds, None, seed=(3, 4), **kw)
    for seed, (image,) in zip((3, 4), runs):
        alone = decoder.decoder_node(h["decoder"], embeds, None, seed=seed, **kw)
        assert float((image - alone).abs().max()) < 1e-5


@pytest.mark.parametrize("node", ["Decoder", "Inpaint", "DDIMInvert"])
def test_validation_refuses_a_stable_unclip_setting_on_a_decoder_that_reads_none(node):
    """Before anything runs: the Karlo decoder reads no noise_level, so a changed one is an
    error at its field; left at its default it is fine."""
    nodes = {
        "model": {"type": "LoadUnCLIP", "params": {"path": "pocket"}},
        "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                 "params": {"prompt": "a red cat"}},
        "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"}},
        "canvas": {"type": "RectangleMask", "params": {"width": 64, "height": 64, "w": 32,
                                                      "h": 32}},
        "picture": {"type": "MaskToImage", "links": {"mask": "canvas.mask"}},
    }
    links = {"decoder": "model.decoder", "image_embeds": "prior.image_embeds"}
    if node != "Decoder":
        links["image"] = "picture.image"
    if node == "Inpaint":
        links["mask"] = "canvas.mask"
    out = "noise" if node == "DDIMInvert" else "image"
    nodes["use"] = {"type": node, "links": links, "params": {"noise_level": 10}}
    (e,) = errors_of(nodes, {"out": f"use.{out}"})
    assert (e.node, e.field) == ("use", "noise_level")
    assert "the Karlo unCLIP decoder takes no noise_level" in e.message
    nodes["use"]["params"] = {"noise_level": 0}
    assert errors_of(nodes, {"out": f"use.{out}"}) == []
