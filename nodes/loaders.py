"""Loading unCLIP checkpoints (diffusers' Karlo layout) as one typed handle per stage.

A Karlo-layout directory holds ``model_index.json`` and one subfolder per component: text_encoder,
tokenizer, prior, text_proj, decoder, super_res_first, super_res_last and their three schedulers;
an image-variation checkpoint adds image_encoder + feature_extractor (and may lack the prior).
We load component by component (diffusers 0.42's own ``UnCLIPPipeline.from_pretrained`` fails on
this layout) and never touch the network.

The loaders themselves are cheap: they check the layout and that the components fit together, and
return handles.  A handle loads its weights on first use through a process-wide model cache, so one
checkpoint is read once per process however many nodes use it, and a stage that a workflow does
not need (the image encoder in text-to-image) is never read.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import runtime
from .declare import Output, Param, node
from .errors import UserError, UserErrors
from .types import socket_type

POCKET = Path(__file__).resolve().parent.parent / "models" / "pocket"
"""The bundled pocket checkpoint, what ``path: pocket`` means."""

CLIP_TEXT = socket_type("UNCLIP_CLIP_TEXT", "CLIP text encoder + tokenizer (model handle)")
CLIP_VISION = socket_type("UNCLIP_CLIP_VISION", "CLIP image encoder + its preprocessing (model handle)")
PRIOR = socket_type("UNCLIP_PRIOR", "unCLIP prior + its scheduler (model handle)")
DECODER = socket_type("UNCLIP_DECODER", "unCLIP decoder + text_proj + scheduler (model handle)")
UPSAMPLER = socket_type("UNCLIP_UPSAMPLER", "unCLIP super-resolution UNets + scheduler (model handle)")

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

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# --- the checkpoint on disk ---------------------------------------------------------------------

def resolve_path(path: str) -> Path:
    """``pocket`` is the bundled model; anything else is a directory (``~`` expanded)."""
    if path.strip() == "pocket":
        return POCKET
    return Path(path).expanduser().resolve()


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checked checkpoint directory: which components it has and their configs."""

    root: Path
    parts: dict[str, dict]                 # component -> its config (JSON)
    files: dict[str, list] = field(repr=False)   # relative path -> [size, mtime_ns] or content hash

    def has(self, part: str) -> bool:
        return part in self.parts

    def config(self, part: str) -> dict:
        return self.parts[part]

    def stamp(self, part: str) -> tuple:
        """Identity of one component's files (a changed file is a new model)."""
        return tuple((k, tuple(v) if isinstance(v, list) else v)
                     for k, v in sorted(self.files.items()) if k.startswith(part + "/"))

    def identity(self, parts) -> dict:
        wanted = tuple(parts) + ("model_index.json",)
        return {"path": str(self.root),
                "files": {k: v for k, v in sorted(self.files.items())
                          if k == "model_index.json" or k.split("/")[0] in wanted}}


def _err(msg: str) -> UserError:
    return UserError(msg, field="path")


def _read_json(p: Path) -> dict:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _err(f"cannot read {p}: {e}") from None
    if not isinstance(data, dict):
        raise _err(f"{p} does not hold a JSON object")
    return data


def _part_present(root: Path, part: str) -> bool:
    d = root / part
    if not d.is_dir():
        return False
    if part == "tokenizer":
        return ((d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()
                or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()))
    return (d / PARTS[part][0]).is_file()


def open_checkpoint(path: str, stages: tuple[str, ...], *, layout: bool,
                    allow_pickle: bool = False) -> Checkpoint:
    """Check a checkpoint directory for ``stages`` and read its configs, reading no weights.

    ``layout``: require the full Karlo layout (``model_index.json`` and everything a text-to-image
    or an image-variation checkpoint holds), as ``LoadUnCLIP`` does; the per-stage loaders only
    need their own components.  Raises UserError (field ``path``) saying what is wrong.
    """
    if not isinstance(path, str) or not path.strip():
        raise _err("give the checkpoint directory (or 'pocket' for the bundled model)")
    root = resolve_path(path)
    if not root.exists():
        hint = (" (the bundled pocket model is missing from this installation)"
                if root == POCKET else "")
        raise _err(f"model directory {root} does not exist{hint}")
    if not root.is_dir():
        raise _err(f"{root} is not a directory; give the checkpoint's root directory "
                   f"(the one holding model_index.json)")

    present = {p for p in PARTS if _part_present(root, p)}
    missing: list[str] = []
    index = None
    if layout:
        if not (root / "model_index.json").is_file():
            found = ", ".join(sorted(present)) or "no component subfolders"
            raise _err(f"{root} is not a Karlo-layout unCLIP checkpoint: model_index.json is "
                       f"missing (found {found})")
        index = _read_json(root / "model_index.json")
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
        hint = ""
        if any((root / f).is_file() for f in ("config.json", "scheduler_config.json")):
            hint = f"; {root.name}/ looks like one component folder, give its parent directory"
        raise _err(f"{root} is not {kind}: missing {what}{hint}")

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
        files["model_index.json"] = _hash_file(root / "model_index.json")
    for part in sorted(wanted):
        d = root / part
        if part == "tokenizer":
            cfg_file = d / "tokenizer_config.json"
            parts[part] = _read_json(cfg_file) if cfg_file.is_file() else {}
        else:
            parts[part] = _read_json(d / PARTS[part][0])
        expected = _DIFFUSERS_CLASS.get(part)
        got = parts[part].get("_class_name")
        if expected and got and got != expected:
            problems.append(_err(f"{part}/{PARTS[part][0]} describes a {got}, expected {expected}"))
        weights = []
        for f in sorted(d.rglob("*")):
            if not f.is_file():
                continue
            rel = f.relative_to(root).as_posix()
            if f.suffix in (".json", ".txt"):
                files[rel] = _hash_file(f)
            elif f.suffix == ".safetensors" or f.suffix in _PICKLE_SUFFIXES:
                st = f.stat()
                files[rel] = [st.st_size, st.st_mtime_ns]
                weights.append(f)
        if part in WEIGHTED:
            safe = [f for f in weights if f.suffix == ".safetensors"]
            pickled = [f for f in weights if f.suffix in _PICKLE_SUFFIXES]
            if not safe and not pickled:
                problems.append(_err(f"{part}/ has no weights (no .safetensors file)"))
            elif not safe and not allow_pickle:
                problems.append(_err(
                    f"{part}/ has only pickle weights ({pickled[0].name}); loading pickle can run "
                    f"code, so it is off by default: convert them to safetensors, or set "
                    f"allow_pickle: true if you trust this checkpoint"))
    problems += _fit_problems(parts)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise UserErrors(problems)
    return Checkpoint(root=root, parts=parts, files=files)


def _hash_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:32]


def _fit_problems(cfg: dict[str, dict]) -> list[UserError]:
    """Components that would fail (or silently misbehave) together, from their configs alone."""
    out: list[UserError] = []

    def mismatch(a: str, av, b: str, bv, why: str = ""):
        if av is not None and bv is not None and av != bv:
            out.append(_err(f"components do not fit together: {a} {av} != {b} {bv}"
                            + (f" ({why})" if why else "")))

    te, ie, tok = cfg.get("text_encoder"), cfg.get("image_encoder"), cfg.get("tokenizer")
    pr, tp, dec = cfg.get("prior"), cfg.get("text_proj"), cfg.get("decoder")
    fe = cfg.get("feature_extractor")
    te = _text_config(te) if te else None
    ie = _vision_config(ie) if ie else None
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
            out.append(_err(f"components do not fit together: tokenizer model_max_length {n} > "
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
            out.append(_err(f"decoder class_embed_type is {dec.get('class_embed_type')!r}; an unCLIP "
                            f"decoder takes the CLIP embedding as class_embed_type 'identity'"))
        cin, cout = dec.get("in_channels", 4), dec.get("out_channels", 4)
        if cout not in (cin, 2 * cin):
            out.append(_err(f"decoder out_channels {cout} is neither in_channels {cin} nor twice it"))
        sched = cfg.get("decoder_scheduler")
        if sched and sched.get("variance_type") == "learned_range" and cout != 2 * cin:
            out.append(_err("decoder_scheduler uses variance_type learned_range but the decoder "
                            f"predicts no variance (out_channels {cout})"))
    first, last = cfg.get("super_res_first"), cfg.get("super_res_last")
    if first and last:
        for k in ("in_channels", "out_channels", "sample_size"):
            mismatch(f"super_res_first {k}", first.get(k), f"super_res_last {k}", last.get(k))
    if first:
        cin, cout = first.get("in_channels", 3), first.get("out_channels", 3)
        if cin % 2:
            out.append(_err(f"super_res_first in_channels {cin} is odd; an upsampler takes noise and "
                            f"the low-resolution image stacked (2 x image channels)"))
        if dec:
            mismatch("super_res_first in_channels", cin, "2 x decoder in_channels",
                     2 * dec.get("in_channels", 4))
    return out


def _text_config(cfg: dict) -> dict:
    return cfg.get("text_config", cfg) if cfg.get("model_type") == "clip" else cfg


def _vision_config(cfg: dict) -> dict:
    return cfg.get("vision_config", cfg) if cfg.get("model_type") == "clip" else cfg


# --- the process-wide model cache -------------------------------------------------------------

_MODELS: dict[tuple, Any] = {}
_LOCK = threading.RLock()
LOADED: list[tuple[str, str]] = []
"""(root, component) each time a component is read from disk, in order (tests and benches look)."""


def clear_model_cache() -> None:
    with _LOCK:
        _MODELS.clear()


def _read_part(ck: Checkpoint, part: str, device: torch.device, dtype: torch.dtype,
               allow_pickle: bool):
    d = ck.root / part
    common = {"local_files_only": True}
    safe = None if allow_pickle else True
    if part == "tokenizer":
        from transformers import CLIPTokenizer
        return CLIPTokenizer.from_pretrained(str(d), **common)
    if part in ("text_encoder", "image_encoder"):
        from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
        from transformers.utils import logging as hf_logging
        cls = CLIPTextModelWithProjection if part == "text_encoder" else CLIPVisionModelWithProjection
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per component would drown the run's own
        try:
            model = cls.from_pretrained(str(d), use_safetensors=safe, dtype=dtype, **common)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
    else:
        from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
        from .textproj import UnCLIPTextProjModel
        cls = {"prior": PriorTransformer, "text_proj": UnCLIPTextProjModel,
               "decoder": UNet2DConditionModel, "super_res_first": UNet2DModel,
               "super_res_last": UNet2DModel}[part]
        from diffusers.utils import is_accelerate_available
        model = cls.from_pretrained(str(d), use_safetensors=safe, dtype=dtype,
                                    low_cpu_mem_usage=is_accelerate_available(), **common)
    return model.to(device).eval().requires_grad_(False)


def load_part(ck: Checkpoint, part: str, device: torch.device, dtype: torch.dtype,
              allow_pickle: bool = False):
    """One component, read from disk at most once per process (per device and dtype)."""
    key = (str(ck.root), part, str(device), str(dtype), ck.stamp(part))
    with _LOCK:
        hit = _MODELS.get(key)
        if hit is not None:
            return hit
        try:
            obj = _read_part(ck, part, device, dtype, allow_pickle)
        except UserError:
            raise
        except Exception as e:  # a corrupt or truncated file is the user's to fix
            raise UserError(f"cannot load {part}/ of {ck.root}: {type(e).__name__}: {e}") from e
        _MODELS[key] = obj
        LOADED.append((str(ck.root), part))
        return obj


# --- handles ------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A stage of a checkpoint on a device: components load on first use, through the cache."""

    checkpoint: Checkpoint
    device: torch.device
    dtype: torch.dtype
    allow_pickle: bool = False

    def part(self, name: str):
        return load_part(self.checkpoint, name, self.device, self.dtype, self.allow_pickle)

    def config(self, name: str) -> dict:
        return self.checkpoint.config(name)

    @property
    def source(self) -> str:
        return str(self.checkpoint.root)


class ClipTextModel(ModelHandle):
    @property
    def text_encoder(self):
        return self.part("text_encoder")

    @property
    def tokenizer(self):
        return self.part("tokenizer")

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)


class ClipVisionModel(ModelHandle):
    @property
    def image_encoder(self):
        return self.part("image_encoder")

    @property
    def preprocess(self) -> dict:
        """The feature_extractor's preprocessor_config.json (applied in torch by CLIPImageEncode)."""
        return self.config("feature_extractor")

    @property
    def image_size(self) -> int:
        return int(_vision_config(self.config("image_encoder")).get("image_size", 224))


class PriorModel(ModelHandle):
    @property
    def prior(self):
        return self.part("prior")

    @property
    def scheduler_config(self) -> dict:
        return self.config("prior_scheduler")

    @property
    def num_embeddings(self) -> int:
        return int(self.config("prior").get("num_embeddings", 77))


_EMPTY_TEXT: dict[tuple, Any] = {}


class DecoderModel(ModelHandle):
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

    def empty_text(self, rows: int = 1):
        """The empty prompt encoded ``rows`` times by this checkpoint's text encoder (what image
        variations condition on), or None when the checkpoint has no text encoder.  Memoised."""
        ck = self.checkpoint
        if not (ck.has("text_encoder") and ck.has("tokenizer")):
            return None
        key = (str(ck.root), str(self.device), str(self.dtype), ck.stamp("text_encoder"),
               ck.stamp("tokenizer"), rows)
        with _LOCK:
            if key not in _EMPTY_TEXT:
                from .clip import encode_prompts
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


# --- nodes --------------------------------------------------------------------------------------

_COMMON_PARAMS = (
    Param("device", "COMBO", default="auto", choices=("auto", "cpu", "cuda"),
          tooltip="auto = the host's device (cuda when available)"),
    Param("dtype", "COMBO", default="fp32", choices=tuple(DTYPES),
          tooltip="weights' precision; sampling arithmetic stays float32"),
    Param("allow_pickle", "BOOLEAN", default=False,
          tooltip="also load pickle weights (.bin); they can run code, use only trusted files"),
)
_PATH_TOOLTIP = "checkpoint directory in diffusers' Karlo layout, or 'pocket' for the bundled model"


def _check_device(params: dict) -> None:
    choice = params.get("device", "auto")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; use device auto or cpu",
                        field="device")


def _fingerprint(stages: tuple[str, ...], layout: bool):
    def fingerprint(params: dict) -> dict:
        ck = open_checkpoint(params["path"], stages, layout=layout,
                             allow_pickle=params.get("allow_pickle", False))
        used = set()
        for s in stages:
            used.update(STAGES[s][0])
            used.update(STAGES[s][1])
        if layout:
            used |= set(ck.parts)
        return {**ck.identity(sorted(used)),
                "device": str(runtime.resolve_device(params.get("device", "auto")))}
    return fingerprint


def _load(params: dict, stages: tuple[str, ...], layout: bool) -> tuple:
    _check_device(params)
    ck = open_checkpoint(params["path"], stages, layout=layout,
                         allow_pickle=params["allow_pickle"])
    device = runtime.resolve_device(params["device"])
    return handles(ck, stages, device, DTYPES[params["dtype"]], params["allow_pickle"])


_ALL = ("clip_text", "clip_vision", "prior", "decoder", "upsampler")


@node("LoadUnCLIP", category="unCLIP/loaders",
      description="Load an unCLIP checkpoint (Karlo layout) as one model handle per stage.",
      params=[Param("path", "STRING", default="pocket", tooltip=_PATH_TOOLTIP), *_COMMON_PARAMS],
      outputs=[Output("clip_text", "UNCLIP_CLIP_TEXT"),
               Output("clip_vision", "UNCLIP_CLIP_VISION",
                      tooltip="None when the checkpoint has no image encoder"),
               Output("prior", "UNCLIP_PRIOR",
                      tooltip="None for an image-variation checkpoint without a prior"),
               Output("decoder", "UNCLIP_DECODER"),
               Output("upsampler", "UNCLIP_UPSAMPLER")],
      fingerprint=_fingerprint(_ALL, True), check=_check_device)
def load_unclip(path: str, device: str, dtype: str, allow_pickle: bool):
    return _load(dict(path=path, device=device, dtype=dtype, allow_pickle=allow_pickle), _ALL, True)


def _stage_loader(type_: str, stage: str, socket: str, what: str):
    @node(type_, category="unCLIP/loaders",
          description=f"Load only the {what} of an unCLIP checkpoint (to combine stages from "
                      f"different checkpoints).",
          params=[Param("path", "STRING", default="pocket", tooltip=_PATH_TOOLTIP), *_COMMON_PARAMS],
          outputs=[Output(stage, socket)],
          fingerprint=_fingerprint((stage,), False), check=_check_device)
    def load_stage(path: str, device: str, dtype: str, allow_pickle: bool):
        return _load(dict(path=path, device=device, dtype=dtype, allow_pickle=allow_pickle),
                     (stage,), False)[0]
    load_stage.__name__ = f"load_{stage}"
    return load_stage


load_clip_text = _stage_loader("LoadUnCLIPClipText", "clip_text", "UNCLIP_CLIP_TEXT",
                               "CLIP text encoder and tokenizer")
load_clip_vision = _stage_loader("LoadUnCLIPClipVision", "clip_vision", "UNCLIP_CLIP_VISION",
                                 "CLIP image encoder")
load_prior = _stage_loader("LoadUnCLIPPrior", "prior", "UNCLIP_PRIOR", "prior")
load_decoder = _stage_loader("LoadUnCLIPDecoder", "decoder", "UNCLIP_DECODER",
                             "decoder (with text_proj)")
load_upsampler = _stage_loader("LoadUnCLIPUpsampler", "upsampler", "UNCLIP_UPSAMPLER",
                               "upsampler (super_res_first + super_res_last)")
