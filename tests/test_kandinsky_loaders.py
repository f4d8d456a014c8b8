"""Kandinsky 2.2 through the shared loader nodes: family detection by model_index.json, the
prior/decoder folder pair and the combined folder, per-stage loaders, pickle refusal,
fingerprints and the model cache, fit checks, the real checkpoints' sizes, and validation of
workflows that mix families or decoder variants."""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

import unclip_nodes.nodes  # noqa: F401  (registers every node type)
from unclip_nodes.graph.validate import load as validate
from unclip_nodes.nodes import loaders
from unclip_nodes.nodes.core import checkpoint, handles
from unclip_nodes.nodes.declare import REGISTRY
from unclip_nodes.nodes.errors import UserError, UserErrors
from unclip_nodes.nodes.families import kandinsky22

PARAMS = dict(device="cpu", dtype="fp32", allow_pickle=False)
BENCH = Path(__file__).resolve().parent.parent / "bench" / "configs" / "kandinsky22"
DECODERS = ("decoder", "decoder-inpaint", "controlnet-depth")
PRIOR_PARTS = {"prior": "prior_prior", "text_encoder": "prior_text_encoder",
               "tokenizer": "prior_tokenizer", "image_encoder": "prior_image_encoder",
               "image_processor": "prior_image_processor", "scheduler": "prior_scheduler"}


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def k22(tmp_path_factory):
    """The tiny Kandinsky 2.2 checkpoint: DIR/prior, DIR/decoder, DIR/decoder-inpaint,
    DIR/controlnet-depth, written once for this module (tests copy before they damage)."""
    from unclip_nodes.nodes.tiny_kandinsky import save_tiny_kandinsky
    return save_tiny_kandinsky(tmp_path_factory.mktemp("k22") / "tiny")


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """A KandinskyV22CombinedPipeline folder: the decoder's unet/movq/scheduler beside the
    prior's parts under prior_<name>, saved from the tiny components."""
    import diffusers
    from unclip_nodes.nodes.tiny_kandinsky import build_tiny_kandinsky_components

    parts = build_tiny_kandinsky_components()
    root = tmp_path_factory.mktemp("k22_combined") / "kandinsky-2-2-combined"
    root.mkdir()
    index = {"_class_name": "KandinskyV22CombinedPipeline",
             "_diffusers_version": diffusers.__version__}
    entries = [(name, obj) for name, obj in parts["decoder"].items()]
    entries += [(PRIOR_PARTS[name], obj) for name, obj in parts["prior"].items()]
    for name, obj in entries:
        if name.endswith("scheduler"):
            obj.save_config(str(root / name))
            index[name] = ["diffusers", type(obj).__name__]
        else:
            obj.save_pretrained(str(root / name))
            library = type(obj).__module__.split(".")[0]  # diffusers or transformers
            index[name] = [library, type(obj).__name__]
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def node(node_type: str, **params):
    """Run a loader node's function with the CPU defaults."""
    return REGISTRY[node_type].fn(**dict(PARAMS, **params))


def fingerprint(node_type: str, **params):
    return REGISTRY[node_type].fingerprint(dict(PARAMS, **params))


def infer(node_type: str, **params):
    return REGISTRY[node_type].infer(dict(PARAMS, **params), {})


def raised(call) -> UserError:
    with pytest.raises(UserError) as info:
        call()
    return info.value


def messages(e: UserError) -> list[str]:
    return [x.message for x in e.errors] if isinstance(e, UserErrors) else [e.message]


def edit_json(path: Path, **changes) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def copy_of(src: Path, dest: Path) -> Path:
    return Path(shutil.copytree(src, dest))


def touch_later(f: Path) -> None:
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- 1. family detection ------------------------------------------------------------------------

def test_family_comes_from_model_index_class_name_not_from_the_folder_name(k22, tmp_path):
    disguised = copy_of(k22 / "decoder", tmp_path / "karlo")
    dec = node("LoadUnCLIPDecoder", path=str(disguised))
    assert dec.family == "kandinsky22" and isinstance(dec, kandinsky22.Decoder)
    assert dec.variant == "text2img"
    out = node("LoadUnCLIP", path=str(disguised), prior_path=str(k22 / "prior"))
    assert all(h is None or h.family == "kandinsky22" for h in out)


def test_unknown_pipeline_class_is_refused_listing_the_known_ones(tmp_path):
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    for node_type in ("LoadUnCLIP", "LoadUnCLIPDecoder", "LoadUnCLIPPrior"):
        e = raised(lambda: node(node_type, path=str(folder)))
        assert e.field == "path"
        assert "StableDiffusionPipeline" in e.message and "cannot load" in e.message
        for known in ("UnCLIPPipeline", "KandinskyV22PriorPipeline", "KandinskyV22Pipeline",
                      "KandinskyV22InpaintPipeline", "KandinskyV22ControlnetPipeline",
                      "KandinskyV22CombinedPipeline"):
            assert known in e.message


# --- 2. LoadUnCLIP on the folder pair -------------------------------------------------------------

def test_decoder_folder_with_prior_path_gives_five_outputs(k22):
    clip_text, clip_vision, pri, dec, up = node("LoadUnCLIP", path=str(k22 / "decoder"),
                                                prior_path=str(k22 / "prior"))
    assert isinstance(clip_text, handles.ClipTextModel)
    assert isinstance(clip_vision, kandinsky22.VisionModel)
    assert isinstance(pri, kandinsky22.Prior)
    assert isinstance(dec, kandinsky22.Decoder) and dec.variant == "text2img"
    assert up is None
    assert dec.clip_dim == pri.clip_dim == clip_text.clip_dim == clip_vision.clip_dim == 32
    assert dec.checkpoint.dir("decoder") == k22.resolve() / "decoder" / "unet"
    assert dec.checkpoint.dir("prior") == k22.resolve() / "prior" / "prior"


def test_prior_folder_as_path_and_decoder_as_prior_path_is_read_by_the_class_names(k22):
    straight = dict(path=str(k22 / "decoder"), prior_path=str(k22 / "prior"))
    swapped = dict(path=str(k22 / "prior"), prior_path=str(k22 / "decoder"))
    *_, dec, up = node("LoadUnCLIP", **swapped)
    assert isinstance(dec, kandinsky22.Decoder) and up is None
    assert dec.checkpoint.root == (k22 / "decoder").resolve()
    assert dec.checkpoint.dir("prior") == (k22 / "prior" / "prior").resolve()
    assert fingerprint("LoadUnCLIP", **swapped) == fingerprint("LoadUnCLIP", **straight)


def test_decoder_folder_without_prior_path_asks_for_prior_path(k22):
    e = raised(lambda: node("LoadUnCLIP", path=str(k22 / "decoder")))
    assert e.field == "prior_path"
    assert "set prior_path" in e.message and "kandinsky-2-2-prior" in e.message


def test_two_decoder_folders_are_refused(k22):
    e = raised(lambda: node("LoadUnCLIP", path=str(k22 / "decoder"),
                            prior_path=str(k22 / "decoder-inpaint")))
    assert e.field == "prior_path"
    assert "both Kandinsky 2.2 decoder folders" in e.message


def test_prior_folder_alone_is_refused_as_holding_no_decoder(k22):
    e = raised(lambda: node("LoadUnCLIP", path=str(k22 / "prior")))
    assert e.field == "path"
    assert "holds no decoder" in e.message and "as prior_path" in e.message


def test_karlo_checkpoint_with_prior_path_is_refused(k22):
    e = raised(lambda: node("LoadUnCLIP", path="pocket", prior_path=str(k22 / "prior")))
    assert e.field == "prior_path" and "leave prior_path empty" in e.message
    e = raised(lambda: node("LoadUnCLIP", path=str(k22 / "decoder"), prior_path="pocket"))
    assert e.field == "prior_path" and "UnCLIPPipeline" in e.message


# --- 3. the combined folder -------------------------------------------------------------------

def test_combined_folder_loads_with_loadunclip_alone_and_samples(combined):
    from unclip_nodes.nodes import clip, decoder, prior

    clip_text, clip_vision, pri, dec, up = node("LoadUnCLIP", path=str(combined))
    assert up is None and dec.variant == "text2img" and pri is not None
    ck = dec.checkpoint
    assert ck.dir("decoder") == combined.resolve() / "unet"
    assert ck.dir("prior") == combined.resolve() / "prior_prior"
    assert ck.dir("tokenizer") == combined.resolve() / "prior_tokenizer"
    assert ck.dir("feature_extractor") == combined.resolve() / "prior_image_processor"
    text = clip.clip_text_encode(clip_text, "a red cat")
    z = prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=0, candidates=1)
    assert z.image_embeds.shape == (1, 32) and z.negative_image_embeds.shape == (1, 32)
    img = decoder.decoder_node(dec, z, None, steps=2, guidance_scale=4.0, seed=0,
                               images_per_embedding=1, width=64, height=64)
    assert img.shape == (1, 64, 64, 3) and torch.isfinite(img).all()


def test_per_stage_loaders_read_a_combined_folder(combined):
    assert node("LoadUnCLIPDecoder", path=str(combined)).variant == "text2img"
    assert node("LoadUnCLIPPrior", path=str(combined)).clip_dim == 32
    assert node("LoadUnCLIPClipText", path=str(combined)).clip_dim == 32
    assert node("LoadUnCLIPClipVision", path=str(combined)).clip_dim == 32
    e = raised(lambda: node("LoadUnCLIPUpsampler", path=str(combined)))
    assert e.message == kandinsky22.NO_UPSAMPLER


# --- 4. per-stage loaders ------------------------------------------------------------------------

def test_per_stage_loaders_on_the_prior_folder(k22):
    path = str(k22 / "prior")
    assert isinstance(node("LoadUnCLIPClipText", path=path), handles.ClipTextModel)
    assert isinstance(node("LoadUnCLIPClipVision", path=path), kandinsky22.VisionModel)
    assert isinstance(node("LoadUnCLIPPrior", path=path), kandinsky22.Prior)
    assert infer("LoadUnCLIPPrior", path=path)["prior"]["clip_dim"] == 32


@pytest.mark.parametrize("folder,variant", [("decoder", "text2img"),
                                            ("decoder-inpaint", "inpaint"),
                                            ("controlnet-depth", "controlnet")])
def test_decoder_loader_names_each_folders_variant(k22, folder, variant):
    dec = node("LoadUnCLIPDecoder", path=str(k22 / folder))
    assert isinstance(dec, kandinsky22.Decoder) and dec.variant == variant
    facts = infer("LoadUnCLIPDecoder", path=str(k22 / folder))["decoder"]
    assert (facts.family, facts.label, facts.clip_dim, facts.takes_text, facts.variant) == \
        ("kandinsky22", "Kandinsky 2.2", 32, False, variant)
    assert (facts.cannot_inpaint is None) == (variant == "inpaint")


def test_decoder_loader_on_the_prior_folder_names_unet_and_where_decoders_live(k22):
    e = raised(lambda: node("LoadUnCLIPDecoder", path=str(k22 / "prior")))
    assert e.field == "path"
    assert "prior folder" in e.message
    assert "unet/ (UNet2DConditionModel)" in e.message and "movq/ (VQModel)" in e.message
    assert "live in a decoder folder" in e.message and "kandinsky-2-2-decoder" in e.message


@pytest.mark.parametrize("node_type,missing", [
    ("LoadUnCLIPPrior", "prior/ (PriorTransformer)"),
    ("LoadUnCLIPClipText", "text_encoder/ (CLIPTextModelWithProjection)"),
    ("LoadUnCLIPClipVision", "image_encoder/ (CLIPVisionModelWithProjection)")])
def test_prior_stage_loaders_on_a_decoder_folder_point_to_the_prior_folder(k22, node_type,
                                                                              missing):
    e = raised(lambda: node(node_type, path=str(k22 / "decoder")))
    assert e.field == "path"
    assert missing in e.message and "live in the prior folder" in e.message


@pytest.mark.parametrize("folder", ["prior", *DECODERS])
def test_upsampler_loader_on_any_kandinsky_folder_says_there_is_none(k22, folder):
    e = raised(lambda: node("LoadUnCLIPUpsampler", path=str(k22 / folder)))
    assert e.field == "path" and e.message == kandinsky22.NO_UPSAMPLER
    assert "no upsampler" in e.message


def test_loadunclip_upsampler_facts_carry_the_no_upsampler_reason(k22):
    facts = infer("LoadUnCLIP", path=str(k22 / "decoder"), prior_path=str(k22 / "prior"))
    assert facts["upsampler"]["absent"] == kandinsky22.NO_UPSAMPLER
    assert facts["decoder"]["variant"] == "text2img"


# --- 5. pickle, fingerprints, the model cache -----------------------------------------------

def _unet_to_pickle(folder: Path) -> None:
    from safetensors.torch import load_file
    for f in (folder / "unet").glob("*.safetensors"):
        torch.save(load_file(str(f)), f.with_suffix(".bin"))
        f.unlink()


def test_pickle_only_unet_needs_allow_pickle(k22, tmp_path):
    root = copy_of(k22 / "decoder", tmp_path / "decoder")
    _unet_to_pickle(root)
    for call in (lambda: node("LoadUnCLIPDecoder", path=str(root)),
                 lambda: fingerprint("LoadUnCLIP", path=str(root), prior_path=str(k22 / "prior"))):
        e = raised(call)
        assert e.field == "path"
        assert "unet/ has only pickle weights (diffusion_pytorch_model.bin)" in e.message
        assert "allow_pickle: true" in e.message
    loaders.clear_model_cache()
    dec = node("LoadUnCLIPDecoder", path=str(root), allow_pickle=True)
    assert dec.unet.config.in_channels == 4


def test_fingerprint_follows_weights_and_configs_and_nothing_else(k22, tmp_path):
    dec_dir = copy_of(k22 / "decoder", tmp_path / "decoder")
    prior_dir = copy_of(k22 / "prior", tmp_path / "prior")
    both = dict(path=str(dec_dir), prior_path=str(prior_dir))

    first = fingerprint("LoadUnCLIP", **both)
    dec_fp = fingerprint("LoadUnCLIPDecoder", path=str(dec_dir))
    text_fp = fingerprint("LoadUnCLIPClipText", path=str(prior_dir))
    assert fingerprint("LoadUnCLIP", **both) == first  # nothing changed: equal
    assert fingerprint("LoadUnCLIPDecoder", path=str(dec_dir)) == dec_fp

    touch_later(dec_dir / "unet" / "diffusion_pytorch_model.safetensors")  # mtime
    after_mtime = fingerprint("LoadUnCLIP", **both)
    assert after_mtime != first
    assert fingerprint("LoadUnCLIPDecoder", path=str(dec_dir)) != dec_fp
    assert fingerprint("LoadUnCLIPClipText", path=str(prior_dir)) == text_fp

    with open(prior_dir / "prior" / "diffusion_pytorch_model.safetensors", "ab") as f:
        f.write(b"\0" * 8)  # size (the fingerprint never reads the weights)
    after_size = fingerprint("LoadUnCLIP", **both)
    assert after_size != after_mtime
    assert fingerprint("LoadUnCLIPClipText", path=str(prior_dir)) == text_fp  # not its part

    dec_fp = fingerprint("LoadUnCLIPDecoder", path=str(dec_dir))
    edit_json(dec_dir / "movq" / "config.json", scaling_factor=0.5)  # a config
    assert fingerprint("LoadUnCLIPDecoder", path=str(dec_dir)) != dec_fp
    assert fingerprint("LoadUnCLIP", **both) != after_size
    edit_json(prior_dir / "text_encoder" / "config.json", layer_norm_eps=1e-6)
    changed = fingerprint("LoadUnCLIPClipText", path=str(prior_dir))
    assert changed != text_fp
    assert fingerprint("LoadUnCLIPClipText", path=str(prior_dir)) == changed


def test_model_cache_reads_each_component_once(k22):
    loaders.clear_model_cache()
    start = len(loaders.LOADED)
    pair = dict(path=str(k22 / "decoder"), prior_path=str(k22 / "prior"))
    a = node("LoadUnCLIP", **pair)
    b = node("LoadUnCLIP", **pair)
    c = node("LoadUnCLIP", path=str(k22 / "prior"), prior_path=str(k22 / "decoder"))
    for i, part in ((0, "text_encoder"), (0, "tokenizer"), (2, "prior"), (3, "unet"),
                    (3, "movq")):
        assert getattr(a[i], part) is getattr(b[i], part) is getattr(c[i], part)
    assert node("LoadUnCLIPDecoder", path=str(k22 / "decoder")).unet is a[3].unet
    assert node("LoadUnCLIPClipText", path=str(k22 / "prior")).text_encoder is a[0].text_encoder
    read = sorted(part for _, part in loaders.LOADED[start:])
    assert read == ["decoder", "movq", "prior", "text_encoder", "tokenizer"]


def test_prior_read_by_loadunclip_is_shared_with_loadunclipprior(k22):
    loaders.clear_model_cache()
    start = len(loaders.LOADED)
    pri = node("LoadUnCLIP", path=str(k22 / "decoder"), prior_path=str(k22 / "prior"))[2]
    assert node("LoadUnCLIPPrior", path=str(k22 / "prior")).prior is pri.prior
    assert [part for _, part in loaders.LOADED[start:]] == ["prior"]


# --- 6. fit checks -------------------------------------------------------------------------------

def test_prior_width_unlike_the_unets_encoder_hid_dim_is_reported_with_both(k22, tmp_path):
    dec_dir = copy_of(k22 / "decoder", tmp_path / "decoder")
    edit_json(dec_dir / "unet" / "config.json", encoder_hid_dim=48)
    e = raised(lambda: node("LoadUnCLIP", path=str(dec_dir), prior_path=str(k22 / "prior")))
    assert messages(e) == ["components do not fit together: prior clip_embed_dim 32 != decoder "
                           "(unet) encoder_hid_dim 48 (the decoder takes the prior's embeddings)"]
    assert e.field == "path"
    # alone, the decoder is consistent: its width is what validation compares links with
    assert infer("LoadUnCLIPDecoder", path=str(dec_dir))["decoder"]["clip_dim"] == 48


def test_unet_in_channels_that_fit_no_variant_are_reported(k22, tmp_path):
    dec_dir = copy_of(k22 / "decoder", tmp_path / "decoder")
    edit_json(dec_dir / "unet" / "config.json", in_channels=5)
    e = raised(lambda: node("LoadUnCLIPDecoder", path=str(dec_dir)))
    assert e.field == "path"
    assert "unet in_channels 5 does not fit movq latent_channels 4" in e.message
    assert "(text-to-image 4, inpaint 9)" in e.message


def test_a_unet_that_is_not_kandinsky_22s_is_reported(k22, tmp_path):
    dec_dir = copy_of(k22 / "decoder", tmp_path / "decoder")
    edit_json(dec_dir / "unet" / "config.json", addition_embed_type="text")
    e = raised(lambda: node("LoadUnCLIPDecoder", path=str(dec_dir)))
    assert "is not a Kandinsky 2.2 decoder UNet" in e.message and "'text'" in e.message


# --- 7. the real checkpoints' sizes -----------------------------------------------------------

PUBLISHED = {"prior": 1_026_225_920, "image_encoder": 1_844_907_264,
             "text_encoder": 694_659_840, "movq": 67_832_495,
             "decoder": 1_253_057_288, "decoder-inpaint": 1_253_074_568,
             "controlnet-depth": 1_253_429_212}


def test_real_prior_configs_give_the_published_parameter_counts():
    ck = loaders.open_checkpoint(str(BENCH / "prior"), ("clip_vision", "prior"), layout=False,
                                 config_only=True)
    assert ck.family == "kandinsky22"
    assert n_params(checkpoint.instantiate(ck, "prior")) == PUBLISHED["prior"]
    assert n_params(checkpoint.instantiate(ck, "image_encoder")) == PUBLISHED["image_encoder"]


def test_real_prior_folder_without_tokenizer_cannot_open_the_text_stage():
    """The reference configs ship no tokenizer/, and clip_text is the only stage that holds the
    text encoder, so the text encoder is out of reach from the folder as it is."""
    e = raised(lambda: loaders.open_checkpoint(str(BENCH / "prior"), ("clip_text",),
                                               layout=False, config_only=True))
    assert "lacks tokenizer/ (CLIPTokenizer)" in e.message


def test_real_text_encoder_config_gives_the_published_count_once_a_tokenizer_is_beside_it(
        tmp_path):
    from unclip_nodes.nodes.tiny_kandinsky import WORDS
    from unclip_nodes.nodes.tokenizer import save_clip_tokenizer

    prior_dir = copy_of(BENCH / "prior", tmp_path / "prior")
    save_clip_tokenizer(prior_dir / "tokenizer", WORDS, model_max_length=77)
    ck = loaders.open_checkpoint(str(prior_dir), ("clip_text",), layout=False, config_only=True)
    assert n_params(checkpoint.instantiate(ck, "text_encoder")) == PUBLISHED["text_encoder"]
    # the full real layout, decoder + prior, passes every fit check on its configs
    full = loaders.open_checkpoint(str(BENCH / "decoder"), loaders._ALL, layout=True,
                                   prior_path=str(prior_dir), config_only=True)
    assert {"decoder", "movq", "prior", "text_encoder", "image_encoder"} <= set(full.parts)


@pytest.mark.parametrize("folder", DECODERS)
def test_real_decoder_configs_give_the_published_parameter_counts(folder):
    ck = loaders.open_checkpoint(str(BENCH / folder), ("decoder",), layout=False,
                                 config_only=True)
    assert n_params(checkpoint.instantiate(ck, "decoder")) == PUBLISHED[folder]
    assert n_params(checkpoint.instantiate(ck, "movq")) == PUBLISHED["movq"]
    expected = {"decoder": "text2img", "decoder-inpaint": "inpaint",
                "controlnet-depth": "controlnet"}[folder]
    assert kandinsky22.variant(ck.config("decoder")) == expected


def test_real_configs_without_weights_need_config_only():
    e = raised(lambda: loaders.open_checkpoint(str(BENCH / "decoder"), ("decoder",),
                                               layout=False))
    assert sorted(messages(e)) == ["movq/ has no weights (no .safetensors file)",
                                   "unet/ has no weights (no .safetensors file)"]


# --- 8. validation across links ----------------------------------------------------------------

def check(workflow, outputs=None) -> list[UserError]:
    """Validate a workflow (dict, or YAML file path) and return its errors ([] when valid)."""
    if isinstance(workflow, dict) and outputs:
        workflow = {**workflow, "outputs": outputs}
    try:
        validate(workflow)
    except UserError as e:
        return list(getattr(e, "errors", [e]))
    return []


def only_error(workflow, outputs=None) -> UserError:
    errors = check(workflow, outputs)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def k22_text(k22) -> dict:
    """LoadUnCLIP (tiny decoder + prior) -> CLIPTextEncode -> Prior."""
    return {
        "model": {"type": "LoadUnCLIP",
                  "params": {"path": str(k22 / "decoder"), "prior_path": str(k22 / "prior")}},
        "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                 "params": {"prompt": "a red cat"}},
        "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"}},
    }


IMAGE = {  # an IMAGE and a MASK from parameters alone (no file to read)
    "canvas": {"type": "RectangleMask", "params": {"width": 64, "height": 64, "w": 32, "h": 32}},
    "picture": {"type": "MaskToImage", "links": {"mask": "canvas.mask"}},
}


def decode(decoder: str, **links) -> dict:
    return {"type": "Decoder",
            "links": {"decoder": decoder, "image_embeds": "prior.image_embeds", **links}}


def loader(path) -> dict:
    return {"type": "LoadUnCLIPDecoder", "params": {"path": str(path)}}


def test_valid_kandinsky_workflows_validate(k22):
    nodes = {**k22_text(k22), "decode": decode("model.decoder")}
    assert check({"nodes": nodes}, {"image": "decode.image"}) == []
    saved = {**nodes, "save": {"type": "SaveImage", "links": {"images": "decode.image"},
                               "params": {"prefix": "k22"}}}
    assert check({"nodes": saved}) == []
    hinted = {**k22_text(k22), **IMAGE, "cn": loader(k22 / "controlnet-depth"),
              "decode": decode("cn.decoder", hint="picture.image")}
    assert check({"nodes": hinted}, {"image": "decode.image"}) == []
    inpaint = {**k22_text(k22), **IMAGE, "dec": loader(k22 / "decoder-inpaint"),
               "fill": {"type": "Inpaint",
                        "links": {"decoder": "dec.decoder", "image": "picture.image",
                                  "mask": "canvas.mask", "image_embeds": "prior.image_embeds"}}}
    assert check({"nodes": inpaint}, {"image": "fill.image"}) == []


def test_karlo_embeddings_into_a_kandinsky_decoder_name_both_widths_at_their_line(k22,
                                                                                  tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(textwrap.dedent(f"""\
        nodes:
          karlo:
            type: LoadUnCLIP
            params: {{path: pocket}}
          text:
            type: CLIPTextEncode
            links: {{clip: karlo.clip_text}}
            params: {{text: a red circle}}
          prior:
            type: Prior
            links: {{prior: karlo.prior, text: text.text}}
          k22:
            type: LoadUnCLIPDecoder
            params: {{path: {k22 / 'decoder'}}}
          decode:
            type: Decoder
            links:
              decoder: k22.decoder
              image_embeds: prior.image_embeds
        outputs:
          image: decode.image
        """))
    line = path.read_text().splitlines().index("      image_embeds: prior.image_embeds") + 1
    e = only_error(path)
    assert (e.file, e.line, e.node, e.field) == (str(path), line, "decode", "image_embeds")
    assert "64-d" in e.message and "32-d" in e.message
    assert "Karlo" in e.message and "Kandinsky 2.2" in e.message
    assert str(e).startswith(f"{path}:{line}:")


def test_kandinsky_embeddings_into_a_karlo_decoder_are_refused(k22):
    nodes = {**k22_text(k22), "karlo": loader("pocket"), "decode": decode("karlo.decoder")}
    e = only_error({"nodes": nodes}, {"image": "decode.image"})
    assert (e.node, e.field) == ("decode", "image_embeds")
    assert "32-d" in e.message and "64-d" in e.message


def test_karlo_text_into_a_kandinsky_prior_is_refused(k22):
    nodes = {"karlo": {"type": "LoadUnCLIP", "params": {"path": "pocket"}},
             "text": {"type": "CLIPTextEncode", "links": {"clip": "karlo.clip_text"},
                      "params": {"prompt": "a cat"}},
             "k22": {"type": "LoadUnCLIPPrior", "params": {"path": str(k22 / "prior")}},
             "prior": {"type": "Prior", "links": {"prior": "k22.prior", "text": "text.text"}}}
    e = only_error({"nodes": nodes}, {"z": "prior.image_embeds"})
    assert (e.node, e.field) == ("prior", "text")
    assert "64-d" in e.message and "32-d" in e.message


def test_upsample_on_kandinskys_upsampler_output_gives_the_no_upsampler_reason(k22):
    nodes = {**k22_text(k22), "decode": decode("model.decoder"),
             "up": {"type": "Upsample",
                    "links": {"upsampler": "model.upsampler", "image": "decode.image"}}}
    e = only_error({"nodes": nodes}, {"image": "up.image"})
    assert (e.node, e.field) == ("up", "upsampler")
    assert e.message == kandinsky22.NO_UPSAMPLER


def test_text_linked_into_a_kandinsky_decoder_is_refused(k22):
    nodes = {**k22_text(k22), "decode": decode("model.decoder", text="text.text")}
    e = only_error({"nodes": nodes}, {"image": "decode.image"})
    assert (e.node, e.field) == ("decode", "text")
    assert "reads no text" in e.message and "unlink text" in e.message


def test_controlnet_decoder_without_a_hint_is_refused_on_hint(k22):
    nodes = {**k22_text(k22), "cn": loader(k22 / "controlnet-depth"),
             "decode": decode("cn.decoder")}
    e = only_error({"nodes": nodes}, {"image": "decode.image"})
    assert (e.node, e.field) == ("decode", "hint")
    assert "ControlNet" in e.message and "link a hint" in e.message


def test_hint_on_a_text2img_decoder_is_refused(k22):
    nodes = {**k22_text(k22), **IMAGE, "decode": decode("model.decoder", hint="picture.image")}
    e = only_error({"nodes": nodes}, {"image": "decode.image"})
    assert (e.node, e.field) == ("decode", "hint")
    assert "only a ControlNet decoder takes a hint" in e.message and "text2img" in e.message


@pytest.mark.parametrize("folder,kind", [("decoder", "text2img"),
                                         ("controlnet-depth", "controlnet")])
def test_inpaint_with_a_non_inpainting_kandinsky_decoder_asks_for_decoder_inpaint(k22, folder,
                                                                                  kind):
    nodes = {**k22_text(k22), **IMAGE, "dec": loader(k22 / folder),
             "fill": {"type": "Inpaint",
                      "links": {"decoder": "dec.decoder", "image": "picture.image",
                                "mask": "canvas.mask", "image_embeds": "prior.image_embeds"}}}
    e = only_error({"nodes": nodes}, {"image": "fill.image"})
    assert (e.node, e.field) == ("fill", "decoder")
    assert "decoder-inpaint" in e.message and f"this one is {kind}" in e.message


def test_decoder_node_with_an_inpainting_decoder_asks_for_inpaint(k22):
    nodes = {**k22_text(k22), "dec": loader(k22 / "decoder-inpaint"),
             "decode": decode("dec.decoder")}
    e = only_error({"nodes": nodes}, {"image": "decode.image"})
    assert (e.node, e.field) == ("decode", "decoder")
    assert "inpainting decoder" in e.message and "use the Inpaint node" in e.message


def test_loader_problems_surface_in_validation_at_the_loader(k22):
    nodes = {"model": {"type": "LoadUnCLIP", "params": {"path": str(k22 / "decoder")}}}
    e = only_error({"nodes": nodes}, {"d": "model.decoder"})
    assert (e.node, e.field) == ("model", "prior_path")
    assert "set prior_path" in e.message
