"""Interop with ComfyUI's CLIP_VISION_OUTPUT (nodes/clipvision.py), without ComfyUI.

What ComfyUI does with a CLIP_VISION_OUTPUT is modelled here in our own words from ComfyUI
0.3.64's source: ``CLIPVisionEncode`` returns a ``comfy.clip_vision.Output`` (attributes, also
read by item) holding ``image_embeds`` [B, D] and hidden states; ``unCLIPConditioning`` appends
``{clip_vision_output, strength, noise_augmentation}`` to the conditioning's
``unclip_conditioning`` list; the model's ``unclip_adm`` walks the rows of each output's
``image_embeds``, noise-augments each row at level round(999 x noise_augmentation) with
``CLIPEmbeddingNoiseAugmentation`` (mean 0, std 1: ComfyUI loads no CLIP statistics; a
squaredcos_cap_v2 schedule of 1000 steps; noise from ``manual_seed(seed)``), concatenates the
level's sinusoidal embedding, multiplies by strength, and when there is more than one row sums
them and augments the sum again at ``unclip_noise_augment_merge``.  SD 2.1 unCLIP's adm is that
[1, 2D]; SDXL (Revision) keeps its first 1280 columns as the pooled vector.
"""
from __future__ import annotations

import json
import math
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from comfy_validator import validate_prompt, with_core
from kandinsky_util import load_text_to_image, tiny_kandinsky  # noqa: F401  (fixture)
from stages_util import load, tiny_checkpoint  # noqa: F401  (fixture)
from test_comfy_contract import comfy_import, object_info  # noqa: F401  (fixtures)
from unclip_nodes.graph import Cache, comfy, run_workflow
from unclip_nodes.graph.comfy_prompt import problems
from unclip_nodes.graph.validate import load as load_workflow
from unclip_nodes.nodes import clip, clipvision, decoder, interpolate, prior, runtime
from unclip_nodes.nodes.declare import REGISTRY, comfy_class
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.types import (SOCKET_TYPES, ClipVisionOutput, ImageEmbeds,
                                      TextEmbeds, clip_vision_output)

to_comfy = clipvision.image_embeds_to_clip_vision
from_comfy = clipvision.clip_vision_to_image_embeds


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a model of ComfyUI's side -------------------------------------------------------------------

class ComfyOutput:
    """As comfy.clip_vision.Output: a bag of attributes, items are attributes."""

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)


def clip_vision_encode(image_embeds: torch.Tensor, tokens: int = 5) -> ComfyOutput:
    """What ComfyUI's CLIPVisionEncode hands on: image_embeds and the hidden states beside it."""
    out = ComfyOutput()
    b, d = image_embeds.shape
    out["last_hidden_state"] = torch.randn(b, tokens, 48)
    out["image_embeds"] = image_embeds
    out["penultimate_hidden_states"] = torch.randn(b, tokens, 48)
    out["mm_projected"] = None
    return out


def alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    """squaredcos_cap_v2 discretised as ComfyUI does (betas capped at 0.999), float32."""
    bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - bar((i + 1) / steps) / bar(i / steps), 0.999) for i in range(steps)]
    ac = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)
    return ac


class NoiseAugmentor:
    """CLIPEmbeddingNoiseAugmentation with ComfyUI's defaults (data mean 0, std 1)."""

    max_noise_level = 1000

    def __init__(self, dim: int):
        self.dim = dim
        ac = alphas_cumprod()
        self.keep = ac.sqrt().float()
        self.mix = (1 - ac).sqrt().float()
        self.inputs: list[torch.Tensor] = []  # what reached it, for the tests to look at

    def level_embedding(self, level: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = level[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def __call__(self, x: torch.Tensor, level: torch.Tensor, seed: int):
        self.inputs.append(x)
        mean, std = torch.zeros(1, self.dim), torch.ones(1, self.dim)
        x = (x - mean) / std  # [D] -> [1, D] by broadcasting, as in ComfyUI
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.randn(x.size(), dtype=x.dtype, generator=g)  # None: the global RNG
        z = self.keep[level].reshape(-1, 1) * x + self.mix[level].reshape(-1, 1) * noise
        return z * std + mean, self.level_embedding(level)


def unclip_conditioning(conditioning, clip_vision_output, strength=1.0, noise_augmentation=0.0):
    """ComfyUI's unCLIPConditioning node: the output is appended, not read."""
    if strength == 0:
        return conditioning
    out = []
    for cond, opts in conditioning:
        opts = dict(opts)
        opts["unclip_conditioning"] = list(opts.get("unclip_conditioning", [])) + [{
            "clip_vision_output": clip_vision_output, "strength": strength,
            "noise_augmentation": noise_augmentation}]
        out.append([cond, opts])
    return out


def unclip_adm(entries, augmentor: NoiseAugmentor, merge: float, seed: int) -> torch.Tensor:
    """The model side: every row of every output, noised, weighted, and summed when several."""
    outs, levels = [], []
    for entry in entries:
        for row in entry["clip_vision_output"].image_embeds:  # rows of [B, D]: each a [D]
            level = round((augmentor.max_noise_level - 1) * entry["noise_augmentation"])
            c, emb = augmentor(row, torch.tensor([level]), seed)
            outs.append(torch.cat((c, emb), 1) * entry["strength"])
            levels.append(level)
    if len(outs) == 1:
        return outs[0]
    total = torch.stack(outs).sum(0)
    level = round((augmentor.max_noise_level - 1) * merge)
    c, emb = augmentor(total[:, :augmentor.dim], torch.tensor([level]), None)  # no seed here
    return torch.cat((c, emb), 1)


def sd21_unclip_adm(conditioning, augmentor, seed=100):
    """SD21UNCLIP.encode_adm for the first conditioning entry (merge level 0.05)."""
    return unclip_adm(conditioning[0][1]["unclip_conditioning"], augmentor, 0.05, seed - 10)


def sdxl_pooled(conditioning, augmentor, seed=100):
    """SDXL's pooled vector with unCLIP conditioning (Revision): merge level 0, 1280 columns."""
    return unclip_adm(conditioning[0][1]["unclip_conditioning"], augmentor, 0.0,
                      seed - 10)[:, :1280]


def empty_conditioning(width: int = 16):
    return [[torch.zeros(1, 77, width), {"pooled_output": torch.zeros(1, width)}]]


# --- our side ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def karlo(tiny_checkpoint):
    return load(tiny_checkpoint)


@pytest.fixture(scope="module")
def kandinsky(tiny_kandinsky):
    return load_text_to_image(tiny_kandinsky)


def prior_embeds(handles, prompts: str, seed: int = 1) -> ImageEmbeds:
    clip_text, _, pri, _, _ = handles
    text = clip.clip_text_encode(clip_text, prompts)
    return prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=seed, candidates=1)


def image(seed: int = 0, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, size, size, 3, generator=g)


def decode(dec, embeds, text=None, **kw):
    params = dict(steps=2, guidance_scale=4.0, seed=5, images_per_embedding=1)
    params.update(kw)
    return decoder.decoder_node(dec, embeds, text, **params)


# --- the value -----------------------------------------------------------------------------------

def test_clip_vision_output_reads_like_comfyuis_output_by_attribute_and_item_and_is_read_only():
    z = torch.randn(2, 8)
    out = ClipVisionOutput(image_embeds=z, last_hidden_state=None)
    assert out.image_embeds is z and out["image_embeds"] is z
    assert "image_embeds" in out and "last_hidden_state" not in out  # None = never set
    with pytest.raises(AttributeError, match="has no 'last_hidden_state'"):
        out.last_hidden_state
    with pytest.raises(AttributeError):
        out["mm_projected"]
    assert not hasattr(out, "penultimate_hidden_states")
    with pytest.raises(TypeError, match="read-only"):
        out.image_embeds = z
    with pytest.raises(TypeError, match="read-only"):
        out["image_embeds"] = z
    again = pickle.loads(pickle.dumps(out))
    assert torch.equal(again.image_embeds, z) and again.keys() == ("image_embeds",)
    # the executor sees its tensors: their bytes for the memory budget, their in-place changes
    from unclip_nodes.graph.cache import tensors_in, versions
    from unclip_nodes.nodes.types import nbytes
    assert tensors_in(out) == [z] and nbytes(out) == 2 * 8 * 4
    before = versions(out)
    z.add_(1)
    assert versions(out) != before


def test_the_codec_stores_ours_and_comfyuis_outputs_exactly_and_the_cache_keeps_them(tmp_path):
    stype = SOCKET_TYPES["CLIP_VISION_OUTPUT"]
    assert stype.storable
    z = torch.randn(3, 8)
    comfy_out = clip_vision_encode(z)
    for value in (ClipVisionOutput(image_embeds=z), comfy_out):
        tensors, meta = stype.encode(value)
        back = stype.decode(tensors, meta)
        assert isinstance(back, ClipVisionOutput)
        assert torch.equal(back.image_embeds, z)
    assert set(stype.encode(comfy_out)[0]) == {"image_embeds", "last_hidden_state",
                                                "penultimate_hidden_states"}
    cache = Cache(tmp_path / "cache")
    key = "ab" + "3" * 62
    cache.disk.put(key, stype, ClipVisionOutput(image_embeds=z))
    assert torch.equal(cache.disk.get(key, stype).image_embeds, z)
    with pytest.raises(ValueError, match="no image_embeds"):
        stype.encode(types.SimpleNamespace(last_hidden_state=z))


# --- round trips ---------------------------------------------------------------------------------

def test_round_trip_through_clip_vision_output_is_exact_with_the_negative_carried(karlo,
                                                                                   kandinsky):
    ours = prior_embeds(karlo, "a red cat\na blue dog")
    out = to_comfy(ours)
    assert isinstance(out, ClipVisionOutput)
    assert out.image_embeds.shape == (2, 32) and out.image_embeds.dtype == torch.float32
    back = from_comfy(out)
    assert torch.equal(back.image_embeds, ours.image_embeds)
    assert back.negative_image_embeds is None
    k = prior_embeds(kandinsky, "a red cat\na blue dog")
    assert k.negative_image_embeds is not None  # Kandinsky's zero-image negative
    back = from_comfy(to_comfy(k))
    assert torch.equal(back.image_embeds, k.image_embeds)
    assert torch.equal(back.negative_image_embeds, k.negative_image_embeds)
    one = from_comfy(to_comfy(k, row=1))
    assert torch.equal(one.image_embeds, k.image_embeds[1:2])
    with pytest.raises(UserError, match="row 2 does not exist: image_embeds has 2 rows") as e:
        to_comfy(k, row=2)
    assert e.value.field == "row"


# --- into ComfyUI's native unCLIP models ---------------------------------------------------------

def test_karlo_prior_embedding_reaches_sd21_unclip_adm_unchanged_through_unclip_conditioning(
        karlo):
    ours = prior_embeds(karlo, "a red cat")
    out = to_comfy(ours)
    cond = unclip_conditioning(empty_conditioning(), out, strength=1.0, noise_augmentation=0.0)
    aug = NoiseAugmentor(dim=32)  # SD 2.1 unCLIP -l: 768, the width of the Karlo prior's CLIP
    adm = sd21_unclip_adm(cond, aug, seed=100)
    (row,) = aug.inputs
    assert torch.equal(row, ours.image_embeds[0])  # bit-identical into the noise augmentor
    assert adm.shape == (1, 64)  # [1, 2D]: the embedding then its level-0 embedding
    # level 0 is not the identity in ComfyUI: x sqrt(abar_0) + noise sqrt(1 - abar_0)
    z = ours.image_embeds
    noise = torch.randn(1, 32, generator=torch.Generator().manual_seed(90))
    keep, mix = aug.keep[0].item(), aug.mix[0].item()
    assert torch.equal(adm[:, :32], keep * z + mix * noise)
    assert 1 - keep < 2.1e-5 and 0.0064 < mix < 0.0065  # level 0: 0.64 % of unit noise
    assert (adm[:, :32] - z).abs().max() < 0.03
    assert torch.equal(adm[:, 32:], aug.level_embedding(torch.tensor([0])))


def test_several_rows_are_summed_into_one_conditioning_not_a_batch_and_row_picks_one(karlo):
    ours = prior_embeds(karlo, "a red cat\na blue dog")
    aug = NoiseAugmentor(dim=32)
    adm = sd21_unclip_adm(unclip_conditioning(empty_conditioning(), to_comfy(ours)), aug)
    assert adm.shape == (1, 64)  # one conditioning for every image of the latent batch
    assert len(aug.inputs) == 3  # row 0, row 1, then their sum noised again (level 50)
    assert torch.equal(aug.inputs[0], ours.image_embeds[0])
    assert torch.equal(aug.inputs[1], ours.image_embeds[1])
    summed = aug.inputs[2]
    assert (summed - ours.image_embeds.sum(0)).abs().max() < 0.05  # rows added, lightly noised
    aug1 = NoiseAugmentor(dim=32)
    sd21_unclip_adm(unclip_conditioning(empty_conditioning(), to_comfy(ours, row=1)), aug1)
    (row,) = aug1.inputs
    assert torch.equal(row, ours.image_embeds[1])


def test_kandinsky_prior_embedding_reaches_sdxl_revisions_pooled_vector(kandinsky):
    ours = prior_embeds(kandinsky, "a red cat")
    aug = NoiseAugmentor(dim=32)  # SDXL's augmentor is 1280-d: the width of Kandinsky's bigG
    pooled = sdxl_pooled(unclip_conditioning(empty_conditioning(), to_comfy(ours)), aug)
    assert torch.equal(aug.inputs[0], ours.image_embeds[0])
    assert pooled.shape == (1, 64)  # [:, :1280] of a [1, 2 x 32]: all of it at this width
    assert (pooled[:, :32] - ours.image_embeds).abs().max() < 0.03
    # at the real width: a 1280-d embedding (what the full Kandinsky 2.2 prior gives)
    big = ImageEmbeds(torch.randn(1, 1280), negative_image_embeds=torch.randn(1, 1280))
    aug = NoiseAugmentor(dim=1280)
    pooled = sdxl_pooled(unclip_conditioning(empty_conditioning(), to_comfy(big)), aug)
    assert torch.equal(aug.inputs[0], big.image_embeds[0])
    assert pooled.shape == (1, 1280)
    assert (pooled - big.image_embeds).abs().max() < 0.03


# --- from ComfyUI's CLIPVisionEncode into our nodes ----------------------------------------------

def test_comfyui_clip_vision_encode_output_decodes_like_our_clip_image_encode(karlo):
    clip_text, clip_vision, _, dec, _ = karlo
    ours = clip.clip_image_encode(clip_vision, image(0))
    comfy_out = clip_vision_encode(ours.image_embeds.clone())
    theirs = from_comfy(comfy_out)
    assert torch.equal(theirs.image_embeds, ours.image_embeds)
    a, b = decode(dec, ours), decode(dec, theirs)
    assert a.shape == (1, 32, 32, 3) and float(a.std()) > 0.01
    assert torch.equal(a, b)


def comfy_clip_preprocess(image: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """ComfyUI's clip_preprocess with crop: short side to ``size`` (rounded), bicubic with
    antialiasing, centre crop, then *quantised to 8 bits* before normalising."""
    x = image[..., :3].movedim(-1, 1)
    h, w = x.shape[2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        x = torch.nn.functional.interpolate(x, size=(round(scale * h), round(scale * w)),
                                            mode="bicubic", antialias=True)
        top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_comfyuis_own_preprocessing_gives_nearly_our_clip_image_encode_embedding(karlo, request):
    """Not the converter (that is exact) but what a user sees: ComfyUI's CLIPVisionEncode on the
    same tower differs from CLIPImageEncode only by its 8-bit rounding after the resize."""
    _, clip_vision, _, _, _ = karlo
    g = torch.Generator().manual_seed(7)
    picture = torch.randint(0, 256, (1, 48, 40, 3), generator=g).float() / 255  # an 8-bit image
    ours = clip.clip_image_encode(clip_vision, picture)
    cfg = clip_vision.preprocess
    pixels = comfy_clip_preprocess(picture, 32, cfg["image_mean"], cfg["image_std"])
    with torch.no_grad():
        theirs = from_comfy(clip_vision_encode(
            clip_vision.image_encoder(pixels).image_embeds))
    diff = (theirs.image_embeds - ours.image_embeds).abs().max().item()
    cos = torch.nn.functional.cosine_similarity(theirs.image_embeds, ours.image_embeds).item()
    request.node.user_properties += [("max_abs_diff", diff), ("cosine", cos)]
    assert 0 < diff < 1e-3 and cos > 0.99999, (diff, cos)  # measured: 2.4e-4, 1.0


def test_comfyui_output_drives_slerp_textdiff_and_mixembeds_like_our_embeddings(karlo):
    clip_text, clip_vision, _, dec, _ = karlo
    e0 = clip.clip_image_encode(clip_vision, image(1))
    e1 = clip.clip_image_encode(clip_vision, image(2))
    c0 = from_comfy(clip_vision_encode(e0.image_embeds.clone()))
    c1 = from_comfy(clip_vision_encode(e1.image_embeds.clone()))
    caption = clip.clip_text_encode(clip_text, "a photo")
    target = clip.clip_text_encode(clip_text, "a red cat")
    pairs = [
        (interpolate.slerp_node(a=e0, b=e1, frames=3)[0],
         interpolate.slerp_node(a=c0, b=c1, frames=3)[0]),
        (interpolate.text_diff_node(e0, caption, target, thetas="0,0.3")[0],
         interpolate.text_diff_node(c0, caption, target, thetas="0,0.3")[0]),
        (interpolate.mix_embeds_node(embeds_1=e0, embeds_2=e1, weight_1=0.7, weight_2=0.3),
         interpolate.mix_embeds_node(embeds_1=c0, embeds_2=c1, weight_1=0.7, weight_2=0.3)),
    ]
    for ours, theirs in pairs:
        assert torch.equal(ours.image_embeds, theirs.image_embeds)
        assert torch.equal(decode(dec, ours), decode(dec, theirs))


def test_kandinsky_decoder_refuses_to_guide_without_a_negative_and_takes_clip_visions(
        kandinsky):
    _, clip_vision, _, dec, _ = kandinsky
    ours = clip.clip_image_encode(clip_vision, image(3))
    comfy_out = clip_vision_encode(ours.image_embeds.clone())
    bare = from_comfy(comfy_out)
    assert bare.negative_image_embeds is None
    with pytest.raises(UserError, match="guidance needs a negative image embedding") as e:
        decode(dec, bare, width=64, height=64)
    assert e.value.field == "image_embeds"
    assert ("link the decoder's clip_vision (or a negative) to ClipVisionToImageEmbeds"
            in e.value.message)  # where a ComfyUI user gets the negative from
    # guidance off needs none
    assert decode(dec, bare, width=64, height=64, guidance_scale=1.0).shape == (1, 64, 64, 3)
    # linking our CLIP vision attaches Kandinsky's own negative: the same as CLIPImageEncode's
    full = from_comfy(comfy_out, clip_vision=clip_vision)
    assert torch.equal(full.image_embeds, ours.image_embeds)
    assert torch.equal(full.negative_image_embeds, ours.negative_image_embeds)
    a, b = decode(dec, ours, width=64, height=64), decode(dec, full, width=64, height=64)
    assert float(a.std()) > 0.01 and torch.equal(a, b)
    # or a negative from ComfyUI (an encoded image), one row for all
    neg = clip_vision_encode(ours.negative_image_embeds.clone())
    given = from_comfy(comfy_out, negative=neg)
    assert torch.equal(given.negative_image_embeds, ours.negative_image_embeds)


# --- which CLIP ----------------------------------------------------------------------------------

class KarloSizedDecoder:
    """A decoder handle with a real Karlo decoder's facts (768-d, ViT-L/14) and no weights: the
    width check comes before anything is computed."""

    family, label, variant = "karlo", "Karlo unCLIP", "text2img"
    clip_dim, space = 768, "OpenAI CLIP ViT-L/14"

    def sampler(self, name, eta):
        return None


def test_a_vit_h_output_into_a_vit_l_decoder_says_which_clip_each_is_and_what_to_load():
    vit_h = from_comfy(clip_vision_encode(torch.randn(1, 1024)))  # ComfyUI's clip_vision_h
    with pytest.raises(UserError) as e:
        decode(KarloSizedDecoder(), vit_h)
    assert e.value.field == "image_embeds"
    assert e.value.message == (
        "image_embeds holds 1024-d CLIP image embeddings, the width of OpenCLIP ViT-H/14 "
        "(ComfyUI's clip_vision_h.safetensors), but this Karlo unCLIP decoder takes 768-d ones "
        "(OpenAI CLIP ViT-L/14); encode the image with OpenAI CLIP ViT-L/14 instead: in "
        "ComfyUI, CLIPVisionLoader with clip_vision_l.safetensors into CLIPVisionEncode; or "
        "CLIPImageEncode with the checkpoint's own image encoder")


def test_an_edit_of_a_vit_h_output_with_vit_l_captions_says_which_clip_each_is():
    vit_h = from_comfy(clip_vision_encode(torch.randn(1, 1024)))

    def text(seed):
        g = torch.Generator().manual_seed(seed)
        return TextEmbeds(torch.randn(1, 768, generator=g), torch.randn(1, 4, 768, generator=g),
                          torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(UserError) as e:
        interpolate.text_diff_node(vit_h, text(1), text(2))
    assert e.value.field == "caption"
    assert e.value.message == (
        "caption has 768 dimensions (the width of OpenAI CLIP ViT-L/14, ComfyUI's "
        "clip_vision_l.safetensors) but image_embeds has 1024 (the width of OpenCLIP ViT-H/14, "
        "ComfyUI's clip_vision_h.safetensors); both must come from the same CLIP")
    with pytest.raises(UserError, match="b has 768 dimensions .* but a has 1024"):
        interpolate.slerp_node(a=vit_h, b=ImageEmbeds(torch.randn(1, 768)))


def test_a_mismatched_output_names_the_node_and_field_when_run(tmp_path):
    wf = {
        "inputs": {"vision": {"type": "CLIP_VISION_OUTPUT"}},
        "nodes": {
            "model": {"type": "LoadUnCLIP", "params": {"path": "pocket", "device": "cpu"}},
            "embeds": {"type": "ClipVisionToImageEmbeds",
                       "links": {"clip_vision_output": "$vision"}},
            "decode": {"type": "Decoder", "links": {"decoder": "model.decoder",
                                                    "image_embeds": "embeds.image_embeds"},
                       "params": {"steps": 2, "seed": 0}},
        },
        "outputs": {"image": "decode.image"},
    }
    value = clip_vision_encode(torch.randn(1, 1024))
    with pytest.raises(UserError) as e:
        run_workflow(wf, values={"vision": value}, cache=Cache.off(), out_dir=tmp_path)
    text = str(e.value)
    assert "node 'decode', field 'image_embeds': image_embeds holds 1024-d CLIP image " \
           "embeddings, the width of OpenCLIP ViT-H/14 (ComfyUI's clip_vision_h.safetensors), " \
           "but this Karlo unCLIP decoder takes 64-d ones; encode the image with the " \
           "checkpoint's own image encoder (CLIPImageEncode), or with a CLIP vision model whose " \
           "embeddings have 64 dimensions" in text, text
    # the same output at the decoder's width runs
    good = clip_vision_encode(torch.randn(1, 64))
    r = run_workflow(wf, values={"vision": good}, cache=Cache.off(), out_dir=tmp_path)
    assert r.outputs["image"].shape == (1, 32, 32, 3)


def test_a_headless_workflow_converts_both_ways_and_reads_the_outputs_back_from_disk(tmp_path):
    wf = {
        "nodes": {
            "model": {"type": "LoadUnCLIP", "params": {"path": "pocket", "device": "cpu"}},
            "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                     "params": {"text": "a red circle on a white background"}},
            "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"},
                      "params": {"steps": 2, "seed": 0}},
            "out": {"type": "ImageEmbedsToClipVision",
                    "links": {"image_embeds": "prior.image_embeds"}},
            "back": {"type": "ClipVisionToImageEmbeds",
                     "links": {"clip_vision_output": "out.clip_vision_output"}},
        },
        "outputs": {"vision": "out.clip_vision_output", "embeds": "back.image_embeds",
                    "z": "prior.image_embeds"},
    }
    from unclip_nodes.graph.cache import MemoryTier
    first = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier(0)), out_dir=tmp_path)
    again = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier(0)), out_dir=tmp_path)
    assert again.status()["out"] == again.status()["back"] == "disk hit"
    for r in (first, again):
        assert isinstance(r.outputs["vision"], ClipVisionOutput)
        assert torch.equal(r.outputs["vision"].image_embeds, first.outputs["z"].image_embeds)
        assert torch.equal(r.outputs["embeds"].image_embeds, first.outputs["z"].image_embeds)


def test_our_embeddings_keep_their_width_through_clip_vision_output_at_validation(
        tiny_kandinsky):
    wf = {
        "nodes": {
            "pocket": {"type": "LoadUnCLIP", "params": {"path": "pocket"}},
            "k22": {"type": "LoadUnCLIP", "params": {"path": str(tiny_kandinsky / "decoder"),
                                                      "prior_path": str(tiny_kandinsky / "prior")}},
            "text": {"type": "CLIPTextEncode", "links": {"clip": "pocket.clip_text"},
                     "params": {"text": "a red circle"}},
            "prior": {"type": "Prior", "links": {"prior": "pocket.prior", "text": "text.text"}},
            "out": {"type": "ImageEmbedsToClipVision",
                    "links": {"image_embeds": "prior.image_embeds"}},
            "back": {"type": "ClipVisionToImageEmbeds",
                     "links": {"clip_vision_output": "out.clip_vision_output"}},
            "decode": {"type": "Decoder", "links": {"decoder": "k22.decoder",
                                                    "image_embeds": "back.image_embeds"}},
        },
        "outputs": {"image": "decode.image"},
    }
    with pytest.raises(UserError) as e:
        load_workflow(wf)
    text = str(e.value)
    assert "node 'decode', field 'image_embeds': image_embeds holds 64-d CLIP embeddings " \
           "(Karlo unCLIP) but this decoder takes 32-d ones (Kandinsky 2.2" in text, text
    # linking the Kandinsky CLIP vision to the converter says it there instead
    wf["nodes"]["back"]["links"]["clip_vision"] = "k22.clip_vision"
    with pytest.raises(UserError) as e:
        load_workflow(wf)
    assert "node 'back', field 'clip_vision_output': clip_vision_output holds 64-d CLIP " \
           "embeddings (Karlo unCLIP) but this clip_vision takes 32-d ones" in str(e.value)


def test_a_linked_clip_vision_of_another_width_is_refused_at_run_time(kandinsky):
    _, clip_vision, _, _, _ = kandinsky
    with pytest.raises(UserError) as e:
        from_comfy(clip_vision_encode(torch.randn(1, 768)), clip_vision=clip_vision)
    assert e.value.field == "clip_vision_output"
    assert e.value.message.startswith(
        "clip_vision_output holds 768-d CLIP image embeddings, the width of OpenAI CLIP "
        "ViT-L/14 (ComfyUI's clip_vision_l.safetensors), but the linked clip_vision (Kandinsky "
        "2.2) takes 32-d ones")
    with pytest.raises(UserError, match="expected a CLIP vision output"):
        from_comfy(types.SimpleNamespace(pooled=torch.randn(1, 32)))
    with pytest.raises(UserError, match=r"expected image embeddings \[B, D\]"):
        from_comfy(types.SimpleNamespace(image_embeds=torch.randn(32)))


# --- inside ComfyUI ------------------------------------------------------------------------------

@pytest.fixture
def inside_comfyui(monkeypatch):
    """Stand-ins for the ComfyUI modules loaded in ComfyUI's process: its clip_vision (with
    Output) and model management (devices)."""
    cv = types.ModuleType("comfy.clip_vision")
    cv.Output = type("Output", (ComfyOutput,), {"__module__": "comfy.clip_vision"})
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.intermediate_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.throw_exception_if_processing_interrupted = lambda: None
    comfy = types.ModuleType("comfy")
    comfy.clip_vision, comfy.model_management = cv, mm
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_output_directory = lambda: "/tmp/unclip-fake-comfy-output"
    for name, module in {"comfy": comfy, "comfy.clip_vision": cv, "comfy.model_management": mm,
                         "folder_paths": folder_paths}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(runtime, "_COMFY_MEMORY", [])
    return cv


def test_inside_comfyui_the_node_returns_comfyuis_own_output_class(inside_comfyui, karlo):
    ours = prior_embeds(karlo, "a red cat")
    node = comfy_class(REGISTRY["ImageEmbedsToClipVision"])()
    (out,) = node.run(image_embeds=ours, row=-1)
    assert type(out) is inside_comfyui.Output
    assert torch.equal(out.image_embeds, ours.image_embeds)
    assert torch.equal(out["image_embeds"], ours.image_embeds)
    assert not hasattr(out, "last_hidden_state")  # only what we have is set
    adm = sd21_unclip_adm(unclip_conditioning(empty_conditioning(), out), NoiseAugmentor(32))
    assert adm.shape == (1, 64)
    # and back: ComfyUI's Output into our decoders' embeddings
    back = comfy_class(REGISTRY["ClipVisionToImageEmbeds"])()
    (embeds,) = back.run(clip_vision_output=out)
    assert torch.equal(embeds.image_embeds, ours.image_embeds)
    # a value decoded from the cache inside ComfyUI is ComfyUI's class too
    stype = SOCKET_TYPES["CLIP_VISION_OUTPUT"]
    assert type(stype.decode(*stype.encode(out))) is inside_comfyui.Output
    assert type(clip_vision_output(image_embeds=ours.image_embeds)) is inside_comfyui.Output


def test_headless_the_node_returns_our_class():
    assert "comfy.clip_vision" not in sys.modules
    out = to_comfy(ImageEmbeds(torch.randn(1, 8)))
    assert type(out) is ClipVisionOutput


# --- the interop templates (ComfyUI's own nodes with ours) ----------------------------------------

TEMPLATES = Path(__file__).resolve().parent.parent / "workflows" / "comfyui"


def template_sets(name: str, karlo: Path, k22: Path) -> dict:
    return {"karlo_prior_to_sd21_unclip": {"karlo": str(karlo)},
            "kandinsky_prior_to_sdxl_revision": {"prior": str(k22 / "prior")},
            "clip_vision_encode_to_decoder": {"model": str(karlo)}}[name]


@pytest.mark.parametrize("name", ["karlo_prior_to_sd21_unclip",
                                  "kandinsky_prior_to_sdxl_revision",
                                  "clip_vision_encode_to_decoder"])
def test_interop_templates_export_to_prompts_comfyui_accepts_and_refuse_to_run_headless(
        name, object_info, tiny_checkpoint, tiny_kandinsky, tmp_path):
    rs = load_workflow(TEMPLATES / f"{name}.yaml",
                       template_sets(name, tiny_checkpoint, tiny_kandinsky))
    api = comfy.to_api(rs)
    classes = with_core(object_info, api)
    assert validate_prompt(api, classes) == {}
    by_title = {n["_meta"]["title"]: (k, n) for k, n in api.items()}
    if name == "clip_vision_encode_to_decoder":  # ComfyUI's encoder into our converter
        enc_id, enc = by_title["encode"]
        _, emb = by_title["embedding"]
        assert enc["class_type"] == "CLIPVisionEncode"
        assert (emb["class_type"], emb["inputs"]["clip_vision_output"]) == (
            "unCLIP ClipVisionToImageEmbeds", [enc_id, 0])
    else:  # our converter into ComfyUI's unCLIPConditioning
        emb_id, emb = by_title["embedding"]
        key = "unclip" if name.startswith("karlo") else "revision"
        _, cond = by_title[key]
        assert emb["class_type"] == "unCLIP ImageEmbedsToClipVision"
        assert (cond["class_type"], cond["inputs"]["clip_vision_output"]) == (
            "unCLIPConditioning", [emb_id, 0])
        # the validator checks the type: our embeddings socket is no CLIP_VISION_OUTPUT
        prior_id, _ = by_title["prior" if name.startswith("karlo") else "embed"]
        wrong = json.loads(json.dumps(api))
        wrong[by_title[key][0]]["inputs"]["clip_vision_output"] = [prior_id, 0]
        assert [e["type"] for e in validate_prompt(wrong, classes)[by_title[key][0]]] == [
            "return_type_mismatch"]
    assert problems(api) == {}  # and our own check of a prompt inside ComfyUI finds nothing
    ui = comfy.to_ui(rs)
    assert any(link[-1] == "CLIP_VISION_OUTPUT" for link in ui["links"])
    with pytest.raises(UserError, match="it runs only inside ComfyUI"):
        run_workflow(TEMPLATES / f"{name}.yaml", template_sets(name, tiny_checkpoint,
                                                               tiny_kandinsky),
                     cache=Cache.off(), out_dir=tmp_path)


def test_inpaint_and_ddim_invert_say_which_clip_an_outside_embedding_is(karlo):
    """The same run-time width check as the Decoder's, for the other nodes that decode."""
    vit_h = from_comfy(clip_vision_encode(torch.randn(1, 1024)))
    dec = karlo[3]
    picture = image(0, 32)
    mask = torch.zeros(1, 32, 32)
    mask[:, 8:24, 8:24] = 1
    with pytest.raises(UserError) as e:
        REGISTRY["Inpaint"].call(decoder=dec, image=picture, mask=mask, image_embeds=vit_h,
                                 text=None, upsampler=None, steps=2)
    assert e.value.field == "image_embeds"
    assert e.value.message.startswith("image_embeds holds 1024-d CLIP image embeddings, the "
                                      "width of OpenCLIP ViT-H/14")
    with pytest.raises(UserError) as e:
        REGISTRY["DDIMInvert"].call(decoder=dec, image=picture, image_embeds=vit_h, text=None,
                                    steps=2)
    assert e.value.field == "image_embeds" and "ViT-H/14" in e.value.message
