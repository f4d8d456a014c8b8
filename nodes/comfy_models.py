"""Which CLIP a ComfyUI model file takes, read from its header before a prompt runs.

Inside ComfyUI, our prior's embedding reaches ComfyUI's own unCLIP models through
``unCLIPConditioning`` and ComfyUI's ``CLIPVisionEncode`` output reaches our decoders.  An
embedding of the wrong CLIP fails there only deep inside the run ("The size of tensor a (768)
must match the size of tensor b (1024)").  The files say which CLIP they take in a few shapes:

* an SD 2.x unCLIP checkpoint's ``label_emb`` reads the image embedding and its noise-level
  embedding side by side (1536 inputs: ViT-L/14, 768-d, the "-l"/small one; 2048: ViT-H/14,
  1024-d, the "-h" one);
* SDXL-based checkpoints (``label_emb`` of 2816 or, the refiner, 2560 inputs) take the first 1280
  dimensions of what unCLIPConditioning gives (Revision: ViT-bigG/14);
* a CLIP vision tower, alone (``models/clip_vision/``) or inside an unCLIP checkpoint, has a
  projection [width, hidden] and a number of layers, which name the CLIP (``KNOWN_CLIPS``).

Only shapes are read: a safetensors file's JSON header, or a pickled checkpoint opened with
``torch.load(mmap=True, weights_only=True, map_location="meta")`` (no tensor data is read, no
code runs).  Anything else, or any failure, is "not known", never an error: these facts only
let validation refuse a mismatch early and say why.
"""
from __future__ import annotations

import json
import os
import re
import struct
from functools import lru_cache

from .core.facts import Facts
from .core.handles import KNOWN_CLIPS

FAMILY = "comfyui"
"""The family name facts of ComfyUI's own model files carry."""

ADM_WIDTH = {1536: 768, 2048: 1024, 2816: 1280, 2560: 1280}
"""``label_emb`` inputs of ComfyUI's unCLIP-capable UNets -> the width of the image embedding
their unCLIPConditioning reads (SD 2.1 unCLIP -l and -h; SDXL and its refiner)."""

ADM_SPACE = {768: "OpenAI CLIP ViT-L/14", 1024: "OpenCLIP ViT-H/14",
             1280: "OpenCLIP ViT-bigG/14"}

_LABEL_EMB = "diffusion_model.label_emb.0.0.weight"
_LAYER = re.compile(r"(?:layers|resblocks)\.(\d+)\.")


def shapes(path: str) -> dict[str, tuple[int, ...]] | None:
    """Every tensor's shape in a model file, without reading tensor data; None when unknown."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _shapes(os.path.realpath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=32)
def _shapes(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, ...]] | None:
    """Cached per file version: a prompt is checked each time it is queued."""
    try:
        if path.endswith(".safetensors"):
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if n > min(size - 8, 100 << 20):
                    return None
                header = json.loads(f.read(n))
            return {k: tuple(v["shape"]) for k, v in header.items()
                    if isinstance(v, dict) and "shape" in v}
        import torch
        sd = torch.load(path, mmap=True, weights_only=True, map_location="meta")
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            return None
        return {k: tuple(v.shape) for k, v in sd.items() if isinstance(k, str)
                and isinstance(v, torch.Tensor)}
    except Exception:  # noqa: BLE001 -- an unreadable or unusual file is simply not known
        return None


def vision_facts(sd: dict[str, tuple[int, ...]], label: str, prefix: str = "") -> Facts | None:
    """The CLIP of the vision tower whose keys start with ``prefix`` (transformers' layout or
    open_clip's), or None when there is none."""
    width = hidden = None
    layers = set()
    for key, shape in sd.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        if k.endswith("visual_projection.weight") and len(shape) == 2:
            width, hidden = shape  # nn.Linear(hidden, width)
        elif (k == "visual.proj" or k == "proj") and len(shape) == 2:
            hidden, width = shape  # open_clip: x @ proj
        m = _LAYER.search(k)
        if m and ("vision_model." in key or "visual." in key):  # not a text tower's layers
            layers.add(int(m.group(1)))
    if width is None:
        return None
    space = KNOWN_CLIPS.get((width, hidden, max(layers) + 1 if layers else None))
    return Facts(FAMILY, label, clip_dim=int(width), space=space)


def unclip_facts(sd: dict[str, tuple[int, ...]], label: str) -> Facts | None:
    """What a checkpoint's UNet takes through unCLIPConditioning, or None when it takes no
    image embedding (or one we do not know)."""
    for key, shape in sd.items():
        if key.endswith(_LABEL_EMB) and len(shape) == 2 and shape[1] in ADM_WIDTH:
            width = ADM_WIDTH[shape[1]]
            return Facts(FAMILY, label, clip_dim=width, space=ADM_SPACE[width])
    return None


def _full_path(folder: str, name) -> str | None:
    """A file of ComfyUI's ``folder`` by its drop-down name, inside ComfyUI only."""
    from .folders import comfy_folder_paths
    fp = comfy_folder_paths()
    if fp is None or not isinstance(name, str) or not name or not hasattr(fp, "get_full_path"):
        return None
    try:
        return fp.get_full_path(folder, name)
    except Exception:  # noqa: BLE001 -- an unknown folder or name: not known
        return None


def checkpoint_facts(name) -> tuple[Facts | None, Facts | None]:
    """(the UNet's unCLIP input, the embedded CLIP vision tower) of a ``checkpoints`` file."""
    path = _full_path("checkpoints", name)
    sd = shapes(path) if path else None
    if not sd:
        return None, None
    unet = unclip_facts(sd, name)
    vision = None
    for prefix in ("embedder.model.", "conditioner.embedders.0.open_clip.model.",
                   "cond_stage_model.model."):
        if any(k.startswith(prefix) for k in sd):
            vision = vision_facts(sd, name, prefix)
            if vision is not None:
                break
    return unet, vision


def clip_vision_facts(name) -> Facts | None:
    """The CLIP of a ``clip_vision`` file."""
    path = _full_path("clip_vision", name)
    sd = shapes(path) if path else None
    return vision_facts(sd, name) if sd else None
