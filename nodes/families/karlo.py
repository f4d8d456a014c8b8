"""The Karlo family: diffusers' unCLIP layout (kakaobrain/karlo-v1-alpha, and the pocket model).

One directory holds ``model_index.json`` (``UnCLIPPipeline`` or ``UnCLIPImageVariationPipeline``)
and one subfolder per component: text_encoder, tokenizer, prior, text_proj, decoder,
super_res_first, super_res_last and their three schedulers; an image-variation checkpoint adds
image_encoder + feature_extractor (and may lack the prior).  The decoder is a 64 px pixel-space
UNet conditioned GLIDE-style through text_proj; the upsampler raises it to 256 px.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


from ..checkpoint import (LOCK, Checkpoint, ClipTextModel, ClipVisionModel, ModelHandle,
                          PriorModel, err, existing_dir, hash_file, memo, mismatch_collector,
                          read_json, scan_weights, text_config, vision_config)
from ..errors import UserError, UserErrors
from .. import decoder as dec

NAME = "karlo"
LABEL = "Karlo unCLIP"
PIPELINES = ("UnCLIPPipeline", "UnCLIPImageVariationPipeline")

# component subfolder -> (file that marks it, what it is)
PARTS: dict[str, tuple[str, str]] = {
    "text_encoder": ("config.json", "CLIPTextModelWithProjection"),
    "tokenizer": ("tokenizer_config.json", "CLIPTokenizer"),
    "image_encoder": ("config.json", "CLIPVisionModelWithProjection"),
    "feature_extractor": ("preprocessor_config.json", "CLIPImageProcessor"),
    "prior": ("config.json", "PriorTransformer"),
    "prior_scheduler": ("scheduler_config.json", "UnCLIPScheduler"),
    "text_proj": ("config.json", "UnCLIPTextProjModel"),
    "decoder": ("config.json", "UNet2DConditionModel"),
    "decoder_scheduler": ("scheduler_config.json", "UnCLIPScheduler"),
    "super_res_first": ("config.json", "UNet2DModel"),
    "super_res_last": ("config.json", "UNet2DModel"),
    "super_res_scheduler": ("scheduler_config.json", "UnCLIPScheduler"),
}
CLASSES: dict[str, tuple[str, str]] = {
    "text_encoder": ("transformers", "CLIPTextModelWithProjection"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "image_encoder": ("transformers", "CLIPVisionModelWithProjection"),
    "feature_extractor": ("transformers", "CLIPImageProcessor"),
    "prior": ("diffusers", "PriorTransformer"),
    "text_proj": ("unclip", "UnCLIPTextProjModel"),
    "decoder": ("diffusers", "UNet2DConditionModel"),
    "super_res_first": ("diffusers", "UNet2DModel"),
    "super_res_last": ("diffusers", "UNet2DModel"),
    "prior_scheduler": ("diffusers", "UnCLIPScheduler"),
    "decoder_scheduler": ("diffusers", "UnCLIPScheduler"),
    "super_res_scheduler": ("diffusers", "UnCLIPScheduler"),
}
WEIGHTED = ("text_encoder", "image_encoder", "prior", "text_proj", "decoder",
            "super_res_first", "super_res_last")
_DIFFUSERS_CLASS = {"prior": "PriorTransformer", "text_proj": "UnCLIPTextProjModel",
                    "decoder": "UNet2DConditionModel", "super_res_first": "UNet2DModel",
                    "super_res_last": "UNet2DModel"}

# stage -> (required parts, optional parts it uses when present)
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "clip_text": (("text_encoder", "tokenizer"), ()),
    "clip_vision": (("image_encoder", "feature_extractor"), ()),
    "prior": (("prior", "prior_scheduler"), ()),
    # the decoder encodes the empty prompt with the checkpoint's text encoder when no text is given
    "decoder": (("decoder", "text_proj", "decoder_scheduler"), ("text_encoder", "tokenizer")),
    "upsampler": (("super_res_first", "super_res_last", "super_res_scheduler"), ()),
}


# --- the checkpoint on disk ---------------------------------------------------------------------

def _part_present(root: Path, part: str) -> bool:
    d = root / part
    if not d.is_dir():
        return False
    if part == "tokenizer":
        return ((d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()
                or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()))
    return (d / PARTS[part][0]).is_file()


def _other_layout(root: Path) -> str:
    """A hint for a folder of another family that lost its model_index.json."""
    if (root / "unet").is_dir() and (root / "movq").is_dir() or (root / "prior").is_dir() and \
            (root / "image_processor").is_dir():
        return ("; its unet/, movq/ or image_processor/ look like a Kandinsky 2.2 folder, which "
                "needs its model_index.json (it names the pipeline and so the family)")
    return ""


def open_checkpoint(path: str, stages: tuple[str, ...], *, layout: bool,
                    allow_pickle: bool = False, prior_path: str = "",
                    config_only: bool = False) -> Checkpoint:
    """Check a checkpoint directory for ``stages`` and read its configs, reading no weights.

    ``layout``: require the full Karlo layout (``model_index.json`` and everything a text-to-image
    or an image-variation checkpoint holds), as ``LoadUnCLIP`` does; the per-stage loaders only
    need their own components.  Raises UserError (field ``path``) saying what is wrong.
    """
    root = existing_dir(path)
    if prior_path and prior_path.strip():
        raise err("prior_path is for Kandinsky 2.2, whose prior ships in a folder of its own; a "
                  "Karlo checkpoint holds its prior: leave prior_path empty", "prior_path")

    present = {p for p in PARTS if _part_present(root, p)}
    missing: list[str] = []
    index = None
    if layout:
        if not (root / "model_index.json").is_file():
            found = ", ".join(sorted(present)) or "no component subfolders"
            raise err(f"{root} is not a Karlo-layout unCLIP checkpoint: model_index.json is "
                       f"missing (found {found}){_other_layout(root)}")
        index = read_json(root / "model_index.json")
        listed = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
                  and v and v[0] is not None}
        variation = "image_encoder" in present or "image_encoder" in listed
        need = ["text_encoder", "tokenizer", "text_proj", "decoder", "decoder_scheduler",
                "super_res_first", "super_res_last", "super_res_scheduler"]
        if not variation or "prior" in present or "prior" in listed:
            need += ["prior", "prior_scheduler"]
        if variation:
            need += ["image_encoder", "feature_extractor"]
        need += [p for p in listed if p in PARTS and p not in need]
        missing = [p for p in need if p not in present]
    else:
        for stage in stages:
            missing += [p for p in STAGES[stage][0] if p not in present and p not in missing]
    if missing:
        what = ", ".join(f"{p}/ ({PARTS[p][1]}, {PARTS[p][0] if p != 'tokenizer' else 'tokenizer files'})"
                         for p in missing)
        kind = "a Karlo-layout unCLIP checkpoint" if layout else "a usable checkpoint for this loader"
        hint = _other_layout(root)
        if any((root / f).is_file() for f in ("config.json", "scheduler_config.json")):
            hint = f"; {root.name}/ looks like one component folder, give its parent directory"
        raise err(f"{root} is not {kind}: missing {what}{hint}")

    if layout:
        wanted = set(present)  # the full loader checks every component it finds
    else:
        wanted = set()
        for stage in stages:
            req, opt = STAGES[stage]
            wanted.update(req)
            wanted.update(p for p in opt if p in present)

    parts: dict[str, dict] = {}
    files: dict[str, list] = {}
    problems: list[UserError] = []
    if index is not None:
        files["model_index.json"] = hash_file(root / "model_index.json")
    for part in sorted(wanted):
        d = root / part
        if part == "tokenizer":
            cfg_file = d / "tokenizer_config.json"
            parts[part] = read_json(cfg_file) if cfg_file.is_file() else {}
        else:
            parts[part] = read_json(d / PARTS[part][0])
        expected = _DIFFUSERS_CLASS.get(part)
        got = parts[part].get("_class_name")
        if expected and got and got != expected:
            problems.append(err(f"{part}/{PARTS[part][0]} describes a {got}, expected {expected}"))
        problems += scan_weights(d, part, files, weighted=part in WEIGHTED and not config_only,
                                 allow_pickle=allow_pickle)
    problems += _fit_problems(parts)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise UserErrors(problems)
    return Checkpoint(root=root, parts=parts, files=files, family=NAME,
                      classes={p: CLASSES[p] for p in parts})


def _fit_problems(cfg: dict[str, dict]) -> list[UserError]:
    """Components that would fail (or silently misbehave) together, from their configs alone."""
    out, mismatch = mismatch_collector()

    te, ie, tok = cfg.get("text_encoder"), cfg.get("image_encoder"), cfg.get("tokenizer")
    pr, tp, dec = cfg.get("prior"), cfg.get("text_proj"), cfg.get("decoder")
    fe = cfg.get("feature_extractor")
    te = text_config(te) if te else None
    ie = vision_config(ie) if ie else None
    if pr:
        p_dim = pr.get("embedding_dim", 768)
        p_proj = pr.get("embedding_proj_dim") or p_dim
        p_out = pr.get("clip_embed_dim") or p_dim
        if te:
            mismatch("prior embedding_proj_dim", p_proj, "text_encoder projection_dim",
                     te.get("projection_dim", 512))
            if pr.get("encoder_hid_proj_type", "linear") is not None:
                mismatch("prior embedding_dim", p_dim, "text_encoder hidden_size",
                         te.get("hidden_size", 512), "the prior reads the text hidden states")
        if tok:
            mismatch("tokenizer model_max_length", tok.get("model_max_length"),
                     "prior num_embeddings", pr.get("num_embeddings", 77))
        if tp:
            mismatch("prior clip_embed_dim", p_out, "text_proj clip_embeddings_dim",
                     tp.get("clip_embeddings_dim", 768))
    if te and tok and tok.get("model_max_length") is not None:
        n = tok["model_max_length"]
        if isinstance(n, (int, float)) and n > te.get("max_position_embeddings", 77):
            out.append(err(f"components do not fit together: tokenizer model_max_length {n} > "
                            f"text_encoder max_position_embeddings "
                            f"{te.get('max_position_embeddings', 77)}"))
    if tp and te:
        mismatch("text_proj clip_embeddings_dim", tp.get("clip_embeddings_dim", 768),
                 "text_encoder projection_dim", te.get("projection_dim", 512))
        mismatch("text_proj clip_embeddings_dim", tp.get("clip_embeddings_dim", 768),
                 "text_encoder hidden_size", te.get("hidden_size", 512),
                 "text_proj projects the text hidden states")
    if tp and ie:
        mismatch("text_proj clip_embeddings_dim", tp.get("clip_embeddings_dim", 768),
                 "image_encoder projection_dim", ie.get("projection_dim", 512))
    if ie and fe:
        crop = fe.get("crop_size")
        crop = crop.get("height") if isinstance(crop, dict) else crop
        if fe.get("do_center_crop", True):
            mismatch("feature_extractor crop_size", crop, "image_encoder image_size",
                     ie.get("image_size", 224))
    if tp and dec:
        mismatch("text_proj cross_attention_dim", tp.get("cross_attention_dim"),
                 "decoder cross_attention_dim", dec.get("cross_attention_dim"))
        blocks = dec.get("block_out_channels") or [320]
        mismatch("text_proj time_embed_dim", tp.get("time_embed_dim"),
                 "decoder time embedding size", dec.get("time_embedding_dim") or blocks[0] * 4)
    if dec:
        if dec.get("class_embed_type") != "identity":
            out.append(err(f"decoder class_embed_type is {dec.get('class_embed_type')!r}; an unCLIP "
                            f"decoder takes the CLIP embedding as class_embed_type 'identity'"))
        cin, cout = dec.get("in_channels", 4), dec.get("out_channels", 4)
        if cout not in (cin, 2 * cin):
            out.append(err(f"decoder out_channels {cout} is neither in_channels {cin} nor twice it"))
        sched = cfg.get("decoder_scheduler")
        if sched and sched.get("variance_type") == "learned_range" and cout != 2 * cin:
            out.append(err("decoder_scheduler uses variance_type learned_range but the decoder "
                            f"predicts no variance (out_channels {cout})"))
    first, last = cfg.get("super_res_first"), cfg.get("super_res_last")
    if first and last:
        for k in ("in_channels", "out_channels", "sample_size"):
            mismatch(f"super_res_first {k}", first.get(k), f"super_res_last {k}", last.get(k))
    if first:
        cin, cout = first.get("in_channels", 3), first.get("out_channels", 3)
        if cin % 2:
            out.append(err(f"super_res_first in_channels {cin} is odd; an upsampler takes noise and "
                            f"the low-resolution image stacked (2 x image channels)"))
        if dec:
            mismatch("super_res_first in_channels", cin, "2 x decoder in_channels",
                     2 * dec.get("in_channels", 4))
    return out




def used_parts(ck: Checkpoint, stages, layout: bool) -> set[str]:
    """The components whose files make up the identity of ``stages``."""
    used = set()
    for s in stages:
        used.update(STAGES[s][0])
        used.update(STAGES[s][1])
    if layout:
        used |= set(ck.parts)
    return used


# --- handles ------------------------------------------------------------------------------------

_EMPTY_TEXT: dict[tuple, Any] = memo()


class DecoderModel(ModelHandle):
    """Karlo's 64 px pixel-space decoder + text_proj: the DecoderBackend of this family."""

    variant = "text2img"

    @property
    def decoder(self):
        return self.part("decoder")

    @property
    def text_proj(self):
        return self.part("text_proj")

    @property
    def scheduler_config(self) -> dict:
        return self.config("decoder_scheduler")

    @property
    def sample_size(self) -> int:
        return int(self.config("decoder").get("sample_size", 64))

    @property
    def clip_dim(self) -> int:
        return int(self.config("text_proj").get("clip_embeddings_dim", 768))

    # --- DecoderBackend (see decoder.py) ---

    def conditioning(self, image_embeds, text, images_per_embedding: int):
        z, cond, uncond = dec.prepare_decoder_inputs(self, image_embeds, text,
                                                     images_per_embedding)
        return dec.Conditioning(image_embeds=z, text=cond, uncond=uncond)

    def check_guidance(self, cond, guidance_scale: float) -> None:
        if guidance_scale != 1.0 and cond.uncond is None:
            raise UserError("guidance needs the unconditional branch; these text embeddings have "
                            "none (use CLIPTextEncode) or set guidance_scale 1", field="text")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        s = self.sample_size
        for name, v in (("width", width), ("height", height)):
            if v not in (0, s):
                raise UserError(f"Karlo's decoder draws {s} x {s} px only; leave {name} 0 and "
                                f"raise the resolution with Upsample", field=name)
        return s, s

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return int(self.config("decoder").get("in_channels", 3)), height, width

    def size_of(self, latent) -> tuple[int, int]:
        return self.sample_size, self.sample_size

    def model(self, cond, guidance_scale: float, hint=None):
        return dec.decoder_model(self.decoder, self.text_proj, cond.image_embeds, cond.text,
                                 cond.uncond, guidance_scale=guidance_scale)

    def sampler(self, name: str, eta: float):
        return dec.make_sampler(self.scheduler_config, name, eta)

    def decode(self, x):
        return x.clamp(-1, 1)

    def encode(self, pixels):
        return pixels.float()

    def fit_image(self, image):
        """An IMAGE centre-cropped and resized to the decoder's square -> pixels in [-1, 1]."""
        from ..image import resize
        size = self.sample_size
        return dec.from_image(resize(image.float(), size, size, "bicubic", "center"))

    def empty_text(self, rows: int = 1):
        """The empty prompt encoded ``rows`` times by this checkpoint's text encoder (what image
        variations condition on), or None when the checkpoint has no text encoder.  Memoised."""
        ck = self.checkpoint
        if not (ck.has("text_encoder") and ck.has("tokenizer")):
            return None
        key = (str(ck.root), str(self.device), str(self.dtype), ck.stamp("text_encoder"),
               ck.stamp("tokenizer"), rows)
        with LOCK:
            if key not in _EMPTY_TEXT:
                from ..clip import encode_prompts
                clip = ClipTextModel(ck, self.device, self.dtype, self.allow_pickle)
                _EMPTY_TEXT[key] = encode_prompts(clip, [""] * rows)
            return _EMPTY_TEXT[key]


class UpsamplerModel(ModelHandle):
    @property
    def first(self):
        """The UNet for every step but the last."""
        return self.part("super_res_first")

    @property
    def last(self):
        """The UNet for the last step (Karlo trains a separate one for it)."""
        return self.part("super_res_last")

    @property
    def scheduler_config(self) -> dict:
        return self.config("super_res_scheduler")

    @property
    def sample_size(self) -> int:
        return int(self.config("super_res_first").get("sample_size", 256))


HANDLES = {"clip_text": ClipTextModel, "clip_vision": ClipVisionModel, "prior": PriorModel,
           "decoder": DecoderModel, "upsampler": UpsamplerModel}


def handles(ck: Checkpoint, stages, device, dtype, allow_pickle=False) -> tuple:
    """One handle per stage, None for a stage the checkpoint lacks."""
    out = []
    for stage in stages:
        ok = all(ck.has(p) for p in STAGES[stage][0])
        out.append(HANDLES[stage](ck, device, dtype, allow_pickle) if ok else None)
    return tuple(out)


def facts(ck: Checkpoint, stages) -> dict[str, dict | None]:
    """What validation may know of each stage's handle without loading it."""
    cfg = ck.parts
    out: dict[str, dict | None] = {}
    for stage in stages:
        if not all(ck.has(p) for p in STAGES[stage][0]):
            out[stage] = None
            continue
        f = {"family": NAME, "label": LABEL}
        if stage == "clip_text":
            f["clip_dim"] = text_config(cfg["text_encoder"]).get("projection_dim", 512)
        elif stage == "clip_vision":
            f["clip_dim"] = vision_config(cfg["image_encoder"]).get("projection_dim", 512)
        elif stage == "prior":
            p = cfg["prior"]
            f["clip_dim"] = p.get("clip_embed_dim") or p.get("embedding_dim", 768)
        elif stage == "decoder":
            f["clip_dim"] = cfg["text_proj"].get("clip_embeddings_dim", 768)
            f["takes_text"] = True
            f["variant"] = "text2img"
        out[stage] = f
    return out
