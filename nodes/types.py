"""Socket types: what flows along links, and how the cache stores it.

IMAGE and MASK follow ComfyUI (IMAGE float32 [B, H, W, C] in 0..1; MASK float32 [B, H, W], 1 = the
area to change) so our nodes plug into ComfyUI's own; so does CLIP_VISION_OUTPUT (ComfyUI's
type name, what its CLIPVisionEncode gives and unCLIPConditioning reads).  Embeddings are small
frozen records of tensors.  Model handles are registered by the loaders with no codec: they live
in the process-wide model cache and are never written to disk.

A codec turns a value into ``(tensors, meta)`` -- a flat dict of tensors for safetensors and a
JSON-able dict -- and back.  Images are stored as float32 safetensors rather than PNG: PNG's 8 bits
would make a disk hit differ from a fresh run, and the upsampler would then see other input.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SocketType:
    name: str
    description: str
    encode: Callable[[Any], tuple[Tensors, dict]] | None = None
    decode: Callable[[Tensors, dict], Any] | None = None

    @property
    def storable(self) -> bool:
        """Whether values of this type can go to the disk cache."""
        return self.encode is not None


SOCKET_TYPES: dict[str, SocketType] = {}


def socket_type(name: str, description: str, encode=None, decode=None) -> SocketType:
    t = SocketType(name, description, encode, decode)
    SOCKET_TYPES[name] = t
    return t


def nbytes(value: Any) -> int:
    """Bytes of tensor memory a value holds (for the memory tier's budget)."""
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, str):
        return len(value)
    return 8


# --- codecs -----------------------------------------------------------------------------------

def _tensor_codec():
    def encode(t: torch.Tensor):
        return {"value": t.detach().cpu().contiguous()}, {}

    def decode(tensors: Tensors, meta: dict):
        return tensors["value"]
    return encode, decode


def _record_codec(cls):
    """Codec for a frozen dataclass whose fields are tensors (or None) and JSON-able values."""
    def encode(rec):
        tensors, meta = {}, {}
        for f in dataclasses.fields(rec):
            v = getattr(rec, f.name)
            if isinstance(v, torch.Tensor):
                tensors[f.name] = v.detach().cpu().contiguous()
            else:
                meta[f.name] = list(v) if isinstance(v, tuple) else v
        return tensors, meta

    def decode(tensors: Tensors, meta: dict):
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in tensors:
                kw[f.name] = tensors[f.name]
            else:
                v = meta.get(f.name)
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)
    return encode, decode


def _json_codec():
    def encode(v):
        return {}, {"value": v}

    def decode(tensors: Tensors, meta: dict):
        v = meta["value"]
        return tuple(v) if isinstance(v, list) else v
    return encode, decode


# --- values -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextEmbeds:
    """CLIP text encoding of a batch of prompts.

    text_embeds: [B, D] pooled, projected embedding (z_t in the paper).
    hidden_states: [B, L, W] last hidden state of the text encoder.
    attention_mask: [B, L] bool, True for real tokens.
    prompts: the prompts, for metadata and error messages.
    uncond_*: optional unconditional branch for classifier-free guidance (the empty prompt as
    CLIPTextEncode encodes it), one row that serves every prompt, or one row per prompt.
    """

    text_embeds: torch.Tensor
    hidden_states: torch.Tensor
    attention_mask: torch.Tensor
    prompts: tuple[str, ...] = ()
    uncond_text_embeds: torch.Tensor | None = None
    uncond_hidden_states: torch.Tensor | None = None
    uncond_attention_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class ImageEmbeds:
    """CLIP image embeddings z_i, [B, D] (from the prior, the image encoder or a manipulation).

    negative_image_embeds: [1 or B, D], what a decoder that guides against an image embedding
    (Kandinsky 2.2) pushes away from; None for families whose decoder has its own (Karlo).
    """

    image_embeds: torch.Tensor
    negative_image_embeds: torch.Tensor | None = None


@dataclass(init=False, repr=False, eq=False)
class ClipVisionOutput:
    """ComfyUI's ``CLIP_VISION_OUTPUT`` as our headless value.

    ComfyUI's ``comfy.clip_vision.Output`` is a bag of attributes that is also read by item
    (``out.image_embeds`` and ``out["image_embeds"]``): ``image_embeds`` [B, D] (the projected,
    pooled embedding, z_i), and from ``CLIPVisionEncode`` also ``last_hidden_state``,
    ``penultimate_hidden_states``, ``mm_projected``...  An attribute that was never set is
    missing (AttributeError), not None.  This class reads the same way; it is read-only, since a
    value may be a cached one that several nodes share.  Inside ComfyUI the nodes hand ComfyUI
    its own class instead (``clip_vision_output``).

    ``unclip_negative_image_embeds``: the negative image embedding of the ImageEmbeds it was
    made from (Kandinsky 2.2's), carried so that converting back loses nothing; ComfyUI's
    nodes never read it.

    A dataclass of one field (the dict of what is set), so that the executor's walks over a
    value (its tensors' bytes, their in-place-change check) see the tensors.
    """

    _values: dict[str, Any]

    def __init__(self, **values: Any):
        object.__setattr__(self, "_values", {k: v for k, v in values.items() if v is not None})

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_values":
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"this CLIP_VISION_OUTPUT has no {name!r} (it holds "
                                 f"{', '.join(self._values) or 'nothing'})") from None

    def __getitem__(self, key: str):
        return getattr(self, key)  # as ComfyUI's Output: an item is the attribute

    def __setattr__(self, name, value):
        raise TypeError("a CLIP_VISION_OUTPUT value is read-only (it may be a cached value other "
                        "nodes share); make a new one")

    __setitem__ = __setattr__

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def keys(self) -> tuple[str, ...]:
        return tuple(self._values)

    def values(self) -> tuple[Any, ...]:
        return tuple(self._values.values())

    def __reduce__(self):
        return _rebuild_clip_vision_output, (dict(self._values),)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape) if isinstance(v, torch.Tensor) else v!r}"
                           for k, v in self._values.items())
        return f"ClipVisionOutput({shapes})"


def _rebuild_clip_vision_output(values: dict) -> ClipVisionOutput:
    return ClipVisionOutput(**values)


CLIP_VISION_KEYS = ("image_embeds", "last_hidden_state", "penultimate_hidden_states",
                    "all_hidden_states", "mm_projected")
"""What ComfyUI's CLIPVisionEncode sets on its Output (0.3.x); a value may hold any of them."""
NEGATIVE_KEY = "unclip_negative_image_embeds"


def comfy_clip_vision():
    """ComfyUI's ``comfy.clip_vision`` module when we run inside ComfyUI, else None.

    Inside ComfyUI it is always loaded before any custom node (ComfyUI's own nodes.py imports
    it); we never import it ourselves, since importing ComfyUI's modules outside ComfyUI parses
    its command line and picks its devices."""
    module = sys.modules.get("comfy.clip_vision")
    return module if isinstance(getattr(module, "Output", None), type) else None


def clip_vision_output(**values: Any):
    """A CLIP_VISION_OUTPUT holding ``values`` (tensors; None = not set): an instance of
    ComfyUI's own ``comfy.clip_vision.Output`` inside ComfyUI, with its tensors on ComfyUI's
    intermediate device (where its CLIPVisionEncode leaves them), else a ClipVisionOutput."""
    values = {k: v for k, v in values.items() if v is not None}
    module = comfy_clip_vision()
    if module is None:
        return ClipVisionOutput(**values)
    mm = sys.modules.get("comfy.model_management")
    device = mm.intermediate_device() if hasattr(mm, "intermediate_device") else None
    out = module.Output()
    for k, v in values.items():
        if device is not None and isinstance(v, torch.Tensor):
            v = v.to(device)
        setattr(out, k, v)
    return out


def clip_vision_values(value: Any) -> dict[str, Any]:
    """The tensors a CLIP_VISION_OUTPUT holds, by name, whichever class it is (ours, ComfyUI's
    Output, any object with an ``image_embeds`` attribute); ValueError when it has none."""
    if isinstance(value, ClipVisionOutput):
        found = dict(zip(value.keys(), value.values()))
    else:
        found = dict(getattr(value, "__dict__", None) or {})
        for k in CLIP_VISION_KEYS + (NEGATIVE_KEY,):  # attributes a class may keep elsewhere
            if k not in found:
                try:
                    v = getattr(value, k)
                except (AttributeError, KeyError, TypeError):
                    continue
                found[k] = v
    found = {k: v for k, v in found.items()
             if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if "image_embeds" not in found:
        raise ValueError(f"a {type(value).__name__} with no image_embeds tensor is not a "
                         f"CLIP vision output")
    return found


def _clip_vision_codec():
    def encode(value):
        values = clip_vision_values(value)
        return {k: v.detach().cpu().contiguous() for k, v in values.items()}, {}

    def decode(tensors: Tensors, meta: dict):
        return clip_vision_output(**tensors)
    return encode, decode


IMAGE = socket_type("IMAGE", "images, float32 [B, H, W, C] in 0..1", *_tensor_codec())
MASK = socket_type("MASK", "masks, float32 [B, H, W], 1 = change", *_tensor_codec())
TEXT_EMBEDS = socket_type("UNCLIP_TEXT_EMBEDS", "CLIP text embeddings (pooled, hidden states, mask)",
                          *_record_codec(TextEmbeds))
IMAGE_EMBEDS = socket_type("UNCLIP_IMAGE_EMBEDS", "CLIP image embeddings z_i",
                           *_record_codec(ImageEmbeds))
CLIP_VISION_OUTPUT = socket_type(
    "CLIP_VISION_OUTPUT", "ComfyUI's CLIP vision output (image_embeds [B, D], ...), the type "
    "ComfyUI's CLIPVisionEncode gives and unCLIPConditioning takes", *_clip_vision_codec())
STRING = socket_type("STRING", "text", *_json_codec())
INT = socket_type("INT", "an integer", *_json_codec())
FLOAT = socket_type("FLOAT", "a number", *_json_codec())


SOCKET_COLORS = {
    "UNCLIP_CLIP_TEXT": "#FFD500", "UNCLIP_CLIP_VISION": "#A8DADC", "UNCLIP_PRIOR": "#9575CD",
    "UNCLIP_DECODER": "#B39DDB", "UNCLIP_UPSAMPLER": "#D1C4E9", "UNCLIP_TEXT_EMBEDS": "#FFA931",
    "UNCLIP_IMAGE_EMBEDS": "#AD7452", "UNCLIP_LATENT": "#FF9CF9", "UNCLIP_PCA": "#4DB6AC",
}
"""Inside ComfyUI, the colour of each of our socket types (web/unclip.js sets them): in the
family of the ComfyUI type it is like, rather than the grey of an unknown type."""
