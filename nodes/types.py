"""Socket types: what flows along links, and how the cache stores it.

IMAGE and MASK follow ComfyUI (IMAGE float32 [B, H, W, C] in 0..1; MASK float32 [B, H, W], 1 = the
area to change) so our nodes plug into ComfyUI's own.  Embeddings are small frozen records of
tensors.  Model handles are registered by the loaders with no codec: they live in the process-wide
model cache and are never written to disk.

A codec turns a value into ``(tensors, meta)`` -- a flat dict of tensors for safetensors and a
JSON-able dict -- and back.  Images are stored as float32 safetensors rather than PNG: PNG's 8 bits
would make a disk hit differ from a fresh run, and the upsampler would then see other input.
"""
from __future__ import annotations

import dataclasses
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


IMAGE = socket_type("IMAGE", "images, float32 [B, H, W, C] in 0..1", *_tensor_codec())
MASK = socket_type("MASK", "masks, float32 [B, H, W], 1 = change", *_tensor_codec())
TEXT_EMBEDS = socket_type("UNCLIP_TEXT_EMBEDS", "CLIP text embeddings (pooled, hidden states, mask)",
                          *_record_codec(TextEmbeds))
IMAGE_EMBEDS = socket_type("UNCLIP_IMAGE_EMBEDS", "CLIP image embeddings z_i",
                           *_record_codec(ImageEmbeds))
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
