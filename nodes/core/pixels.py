"""Pixels between ComfyUI's IMAGE ([B, H, W, C] in 0..1) and the models' [B, C, H, W] in
[-1, 1], and resizing: what the stage nodes and every family's backends share."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UserError, env_limit, excerpt, over_limit

RESIZE_METHODS = ("bicubic", "bilinear", "nearest", "lanczos", "area")

MAX_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
"""Pillow's decompression-bomb threshold (about 89.5 megapixels) unless UNCLIP_MAX_IMAGE_PIXELS
says otherwise: LoadImage refuses larger images before decoding them."""

MAX_TENSOR_BYTES = 4 << 30
"""The most bytes of one image or mask batch a node makes from its parameters (a mask canvas,
a resize, outpaint padding, a grid) unless UNCLIP_MAX_TENSOR_BYTES says otherwise."""


MAX_SAMPLE_PIXELS = 2048 * 2048
"""The most pixels a decoder samples one image at (its output size, or the size of an image it
inpaints at full resolution) unless UNCLIP_MAX_SAMPLE_PIXELS says otherwise: a 4096 px latent
decoder on a CPU runs for hours per step, and a step cannot be stopped half-way."""


def check_sample_pixels(height: int, width: int, field: str = "width") -> None:
    """Before a decoder samples at ``height`` x ``width`` pixels: within the limit."""
    pixels = height * width
    limit = env_limit("SAMPLE_PIXELS", MAX_SAMPLE_PIXELS)
    if pixels > limit:
        raise over_limit(f"sampling at {width} x {height} = {pixels:,} pixels (each step runs "
                         f"the decoder over all of them)", pixels, limit, "SAMPLE_PIXELS",
                         field=field)


def check_allocation(what: str, batch: int, height: int, width: int, channels: int = 1,
                     field: str | None = None) -> None:
    """Before a node allocates a [batch, height, width, channels] float32 result: each frame
    within the pixel limit (UNCLIP_MAX_IMAGE_PIXELS, as LoadImage's), the whole within the byte
    limit (UNCLIP_MAX_TENSOR_BYTES).  Past them the allocation would fail, or the system would
    end the process, instead of a message."""
    pixels = height * width
    limit = env_limit("IMAGE_PIXELS", MAX_IMAGE_PIXELS)
    if pixels > limit:
        raise over_limit(f"{what} would be {width} x {height} = {pixels:,} pixels", pixels,
                         limit, "IMAGE_PIXELS", field=field)
    size = batch * pixels * channels * 4
    limit = env_limit("TENSOR_BYTES", MAX_TENSOR_BYTES)
    if size > limit:
        raise over_limit(f"{what} would take {size:,} bytes ({batch} x {width} x {height} x "
                         f"{channels} floats)", size, limit, "TENSOR_BYTES", field=field)


def check_image(image: torch.Tensor, field: str = "image") -> torch.Tensor:
    """The tensor if it is a ComfyUI IMAGE batch, else a UserError naming ``field``."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[0] == 0:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"expected an image batch [B, H, W, C], got {shape}", field=field)
    return image


def resize(image: torch.Tensor, width: int, height: int, method: str = "bicubic",
           crop: str = "none") -> torch.Tensor:
    """Resize an IMAGE batch to exactly width x height (float all the way, clamped to 0..1).

    crop="center" first cuts the source to the target's aspect ratio (keeping the middle), so
    nothing is stretched; "none" stretches.
    """
    b, h, w, c = image.shape
    check_allocation("the resized image", b, height, width, c, field="width")
    x = image.float()
    if crop == "center":
        if w * height > h * width:  # source too wide
            cw = max(1, round(h * width / height))
            x0 = (w - cw) // 2
            x = x[:, :, x0:x0 + cw]
        elif w * height < h * width:  # source too tall
            ch = max(1, round(w * height / width))
            y0 = (h - ch) // 2
            x = x[:, y0:y0 + ch]
    if tuple(x.shape[1:3]) == (height, width):
        return x.contiguous()
    x = x.movedim(-1, 1)  # [B, C, h, w]
    if method == "lanczos":
        out = _lanczos(x, width, height)
    elif method in ("bicubic", "bilinear"):
        out = F.interpolate(x, size=(height, width), mode=method, align_corners=False,
                            antialias=True)
    elif method == "nearest":
        out = F.interpolate(x, size=(height, width), mode="nearest-exact")
    elif method == "area":
        out = F.interpolate(x, size=(height, width), mode="area")
    else:
        raise UserError(f"unknown method {excerpt(method)}; one of {', '.join(RESIZE_METHODS)}",
                        field="method")
    return out.clamp(0, 1).movedim(1, -1).contiguous()


def _lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Torch has no Lanczos filter; Pillow's works on float ("F") planes, so use it per plane."""
    b, c = x.shape[:2]
    planes = x.detach().cpu().reshape(b * c, *x.shape[2:]).numpy()
    out = np.stack([np.asarray(Image.fromarray(p).resize((width, height), Image.Resampling.LANCZOS))
                    for p in planes])
    return torch.from_numpy(out).reshape(b, c, height, width).to(x.device)


def to_image(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> IMAGE [B, H, W, C] float32 in 0..1 on the CPU."""
    from .sampling import plain
    return plain((x.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)).contiguous()


def from_image(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> [B, C, H, W] in [-1, 1] (RGB; alpha dropped)."""
    x = image.float()
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x[..., :3].permute(0, 3, 1, 2) * 2 - 1


def pixels_at(image: torch.Tensor, size: tuple[int, int], field: str = "image") -> torch.Tensor:
    """IMAGE [B, H, W, C] -> [B, 3, h, w] in [-1, 1] at ``size`` (antialiased bicubic,
    stretched)."""
    check_image(image, field)
    if image.shape[-1] not in (1, 3, 4):
        raise UserError(f"expected 1, 3 or 4 channels, got {image.shape[-1]}", field=field)
    h, w = size
    if tuple(image.shape[1:3]) != (h, w):
        image = resize(image.float(), w, h, "bicubic", "none")
    return from_image(image).contiguous()
