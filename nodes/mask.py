"""Mask nodes.  MASK follows ComfyUI: float32 [B, H, W], 1 = the area to change, 0 = keep.

Inputs are never changed in place (cached values are shared).

ComfyUI has its own GrowMask, InvertMask and MaskToImage: ours compute exactly what those
compute (for the parameters they have), are not registered inside ComfyUI
(``replaced_by``) and export as ComfyUI's (graph/comfy_map.py).  Two do what ComfyUI's nodes
do not, so they have names of their own: BlurMask (a Gaussian blur of the mask; it was called
FeatherMask, but ComfyUI's FeatherMask fades a mask towards the canvas borders) and
OutpaintBorder (edge or noise fill and a linear feather; it was OutpaintPad, next to ComfyUI's
grey-only, quadratic ImagePadForOutpaint).  The old names still load (``TYPE_ALIASES``).
docs/comfyui_core_nodes.md has the table.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .declare import SEED_MAX, TYPE_ALIASES, Input, Output, Param, node
from .errors import UserError
from .image import SIZE_MAX, check_allocation, check_image

CATEGORY = "unCLIP/mask"


def check_mask(mask: torch.Tensor, field: str = "mask") -> torch.Tensor:
    """A [B, H, W] float mask ([H, W] becomes a batch of one), else a UserError naming ``field``."""
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        mask = mask[None]
    if not isinstance(mask, torch.Tensor) or mask.dim() != 3 or mask.shape[0] == 0:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise UserError(f"expected a mask [B, H, W], got {shape}", field=field)
    return mask.float()


def fit_mask(mask: torch.Tensor, image: torch.Tensor, *, field: str = "mask") -> torch.Tensor:
    """The mask as [B, H, W] matching ``image`` [B, H, W, C], for the inpainting nodes.

    Policy:
    * batch: a mask batch of 1 applies to every image; otherwise the batch sizes must agree.
    * size: a mask of the image's size is used as is; one of the same aspect ratio (within a
      pixel of rounding) is resized with nearest-neighbour, which keeps hard masks hard; any
      other size is a UserError naming both sizes, since stretching would move the area to
      change.
    """
    mask = check_mask(mask, field)
    b, h, w = image.shape[:3]
    mb, mh, mw = mask.shape
    if mb not in (1, b):
        raise UserError(f"the mask batch has {mb} masks but the image batch has {b} images; "
                        f"give one mask or one per image", field=field)
    if (mh, mw) != (h, w):
        if round(mw * h / w) != mh and round(mh * w / h) != mw:
            raise UserError(f"the mask is {mw}x{mh} but the image is {w}x{h}; resize one of them "
                            f"(same aspect ratio is resized automatically)", field=field)
        mask = F.interpolate(mask[:, None], size=(h, w), mode="nearest-exact")[:, 0]
    if mb != b:
        mask = mask.expand(b, h, w)
    return mask.contiguous()


# --- from images ---------------------------------------------------------------------------------

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights


@node("MaskFromImage", category=CATEGORY,
      description="Make a mask from one channel of an image (white = change).",
      inputs=[Input("image", "IMAGE")],
      params=[Param("channel", "COMBO", default="grey",
                    choices=("alpha", "red", "green", "blue", "grey"),
                    tooltip="alpha gives 1 - alpha (transparent = change), like LoadImage's mask; "
                            "the others give the channel's value"),
              Param("threshold", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="0 = keep soft values; above 0, values >= threshold become 1 and "
                            "the rest 0")],
      outputs=[Output("mask", "MASK")])
def mask_from_image(image: torch.Tensor, channel: str = "grey", threshold: float = 0.0):
    check_image(image)
    img = image.float()
    c = img.shape[-1]
    if channel == "alpha":
        if c != 4:
            raise UserError(f"the image has {c} channels and no alpha; use LoadImage's mask "
                            f"output or another channel", field="channel")
        mask = 1.0 - img[..., 3]
    elif channel == "grey":
        if c == 1:
            mask = img[..., 0]
        else:
            mask = sum(wt * img[..., i] for i, wt in enumerate(_LUMA))
    else:
        i = ("red", "green", "blue").index(channel)
        if i >= c:
            raise UserError(f"the image has only {c} channel(s)", field="channel")
        mask = img[..., i]
    mask = mask.clamp(0, 1)
    if threshold > 0:
        mask = (mask >= threshold).float()
    return mask.contiguous()


@node("MaskToImage", category=CATEGORY,
      description="Show a mask as a grey image (white = change), e.g. to save or preview it.",
      inputs=[Input("mask", "MASK")],
      outputs=[Output("image", "IMAGE", "[B, H, W, 3]")], replaced_by="MaskToImage")
def mask_to_image(mask: torch.Tensor):
    """ComfyUI's MaskToImage: the mask's values in all three channels, as they are (no clamp,
    so that both give the same pixels)."""
    mask = check_mask(mask)
    return mask[..., None].expand(*mask.shape, 3).contiguous()


# --- shapes --------------------------------------------------------------------------------------

_SHAPE_PARAMS = [
    Param("width", "INT", default=512, min=1, max=SIZE_MAX, tooltip="canvas width (unless 'like')"),
    Param("height", "INT", default=512, min=1, max=SIZE_MAX,
          tooltip="canvas height (unless 'like')"),
    Param("x", "INT", default=0, min=-SIZE_MAX, max=SIZE_MAX, tooltip="left edge of the shape"),
    Param("y", "INT", default=0, min=-SIZE_MAX, max=SIZE_MAX, tooltip="top edge of the shape"),
    Param("w", "INT", default=256, min=0, max=SIZE_MAX, tooltip="shape width"),
    Param("h", "INT", default=256, min=0, max=SIZE_MAX, tooltip="shape height"),
    Param("batch", "INT", default=1, min=1, max=4096, tooltip="number of masks (unless 'like')"),
]
_LIKE = Input("like", "IMAGE", optional=True,
              tooltip="take width, height and batch size from this image")


def _canvas(width: int, height: int, batch: int, like) -> tuple[int, int, int]:
    if like is not None:
        check_image(like, "like")
        batch, height, width = like.shape[:3]
    return width, height, batch


@node("RectangleMask", category=CATEGORY,
      description="A mask that is 1 inside a rectangle (clipped to the canvas) and 0 elsewhere.",
      inputs=[_LIKE], params=_SHAPE_PARAMS, outputs=[Output("mask", "MASK")])
def rectangle_mask(like=None, width: int = 512, height: int = 512, x: int = 0, y: int = 0,
                   w: int = 256, h: int = 256, batch: int = 1):
    width, height, batch = _canvas(width, height, batch, like)
    check_allocation("the mask", batch, height, width, field="width")
    mask = torch.zeros(batch, height, width)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        mask[:, y0:y1, x0:x1] = 1.0
    return mask


@node("EllipseMask", category=CATEGORY,
      description="A mask that is 1 inside the ellipse inscribed in a rectangle, 0 elsewhere.",
      inputs=[_LIKE], params=_SHAPE_PARAMS, outputs=[Output("mask", "MASK")])
def ellipse_mask(like=None, width: int = 512, height: int = 512, x: int = 0, y: int = 0,
                 w: int = 256, h: int = 256, batch: int = 1):
    """A pixel is inside when its centre is inside the ellipse (hard edge; feather it after)."""
    width, height, batch = _canvas(width, height, batch, like)
    check_allocation("the mask", batch, height, width, field="width")
    if w == 0 or h == 0:
        return torch.zeros(batch, height, width)
    mask = torch.empty(height, width)
    dx = ((torch.arange(width, dtype=torch.float32) + 0.5 - (x + w / 2)) / (w / 2)) ** 2
    for top in range(0, height, ELLIPSE_ROWS):  # a band at a time: no canvas-sized temporaries
        rows = torch.arange(top, min(top + ELLIPSE_ROWS, height), dtype=torch.float32)
        dy = ((rows + 0.5 - (y + h / 2)) / (h / 2)) ** 2
        mask[top:top + len(rows)] = (dx[None, :] + dy[:, None] <= 1.0).float()
    return mask.expand(batch, height, width).contiguous()


ELLIPSE_ROWS = 256
"""Rows of an ellipse mask computed at once (the temporaries are this many rows, not the
canvas: a 16k canvas would need several GiB of them)."""


# --- morphology and edges ---------------------------------------------------------------------


def grow(mask: torch.Tensor, pixels: int, tapered: bool = False) -> torch.Tensor:
    """Dilate (pixels > 0) or erode (pixels < 0) |pixels| times with a 3x3 neighbourhood: the
    full square (a (2|p|+1)² square in all), or with ``tapered`` the plus-shaped one without its
    corners (a diamond of radius |p| in all).  This is ComfyUI's GrowMask (``tapered_corners``).

    Only pixels of the canvas count: a mask touching the border is not eaten from outside it, as
    with SciPy's default mirrored border, where the pixel beyond the edge is the edge pixel
    itself and so never changes a minimum or maximum.  Erosion is dilation of the negated mask
    (exact, where 1 - (1 - m) is not).  The square runs as one row and one column pass.
    """
    if pixels == 0:
        return mask
    r = abs(pixels)
    m = mask.float()[:, None]
    if pixels < 0:
        m = -m
    if tapered:
        for _ in range(r):
            m = torch.maximum(F.max_pool2d(m, (1, 3), stride=1, padding=(0, 1)),
                              F.max_pool2d(m, (3, 1), stride=1, padding=(1, 0)))
    else:
        m = F.max_pool2d(m, (1, 2 * r + 1), stride=1, padding=(0, r))
        m = F.max_pool2d(m, (2 * r + 1, 1), stride=1, padding=(r, 0))
    if pixels < 0:
        m = -m
    return m[:, 0].contiguous()


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Gaussian blur (sigma = pixels / 2, radius = pixels): a hard edge becomes a monotone ramp
    about 2 * pixels wide; the canvas border is extended (not faded)."""
    if pixels <= 0:
        return mask
    sigma = pixels / 2.0
    t = torch.arange(-pixels, pixels + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    m = F.pad(mask.float()[:, None], (pixels, pixels, pixels, pixels), mode="replicate")
    m = F.conv2d(m, k.view(1, 1, 1, -1).to(m.device))
    m = F.conv2d(m, k.view(1, 1, -1, 1).to(m.device))
    return m[:, 0].clamp(0, 1).contiguous()


@node("GrowMask", category=CATEGORY,
      description="Grow the masked area by some pixels (negative = shrink it).",
      inputs=[Input("mask", "MASK")],
      params=[Param("expand", "INT", default=4, min=-SIZE_MAX, max=SIZE_MAX,
                    tooltip="pixels to grow by; negative shrinks"),
              Param("tapered_corners", "BOOLEAN", default=False,
                    tooltip="grow by a diamond (corners cut) instead of a square")],
      outputs=[Output("mask", "MASK")], renamed={"pixels": "expand"}, replaced_by="GrowMask")
def grow_mask(mask: torch.Tensor, expand: int = 4, tapered_corners: bool = False):
    """ComfyUI's GrowMask, same widgets.  The defaults are ours: grow by 4 with square corners
    (what ``pixels`` did before it took ComfyUI's name), where ComfyUI's node starts at 0 with
    tapered corners; exports write both values, so ComfyUI computes the same."""
    return grow(check_mask(mask), expand, tapered_corners)


@node("BlurMask", category=CATEGORY,
      description="Soften the mask's edges with a Gaussian blur; values stay in 0..1.",
      inputs=[Input("mask", "MASK")],
      params=[Param("pixels", "INT", default=8, min=0, max=1024,
                    tooltip="blur radius; the edge ramp is about twice as wide")],
      outputs=[Output("mask", "MASK")])
def feather_mask(mask: torch.Tensor, pixels: int = 8):
    """Was FeatherMask; ComfyUI's FeatherMask is another operation (it fades the mask towards
    the canvas borders), so this one has a name ComfyUI lacks and stays registered there."""
    return feather(check_mask(mask), pixels)


TYPE_ALIASES["FeatherMask"] = "BlurMask"


@node("InvertMask", category=CATEGORY, description="1 - mask: swap what changes and what stays.",
      inputs=[Input("mask", "MASK")], outputs=[Output("mask", "MASK")],
      replaced_by="InvertMask")
def invert_mask(mask: torch.Tensor):
    """ComfyUI's InvertMask."""
    return 1.0 - check_mask(mask)


# --- outpainting ------------------------------------------------------------------------------


@node("OutpaintBorder", category=CATEGORY,
      description="Add a border around an image and a mask marking it, ready for inpainting.",
      inputs=[Input("image", "IMAGE")],
      params=[*(Param(side, "INT", default=0, min=0, max=SIZE_MAX,
                      tooltip=f"Pixels of new border to add on the {side}, marked 1 in the mask "
                              f"for the inpainter; 0 leaves this side as it is.")
                for side in ("left", "top", "right", "bottom")),
              Param("fill", "COMBO", default="edge", choices=("edge", "grey", "noise"),
                    tooltip="what the new border starts as: repeated edge pixels, mid grey, "
                            "or uniform noise"),
              Param("feather", "INT", default=0, min=0, max=SIZE_MAX,
                    tooltip="also let the inpainter touch this many original pixels next to "
                            "the border, fading out"),
              Param("seed", "INT", default=0, min=0, max=SEED_MAX, tooltip="for fill=noise")],
      outputs=[Output("image", "IMAGE", "the padded image; original pixels unchanged"),
               Output("mask", "MASK", "1 on the border, 0 on the original (ramps with feather)")])
def outpaint_pad(image: torch.Tensor, left: int = 0, top: int = 0, right: int = 0,
                 bottom: int = 0, fill: str = "edge", feather: int = 0, seed: int = 0):
    """With feather f > 0, an original pixel d pixels away from a padded side (d = 0 next to
    it) gets mask (f - d) / (f + 1) when d < f: below 1 and fading to 0.

    Was OutpaintPad.  ComfyUI's ImagePadForOutpaint fills with grey only and feathers
    quadratically, so this node keeps a name of its own and stays registered there; with
    fill=grey and feather=0 it computes what ImagePadForOutpaint does with feathering=0 (whose
    mask is one mask for the whole batch) and exports as that."""
    check_image(image)
    img = image.float()
    b, h, w, c = img.shape
    H, W = h + top + bottom, w + left + right
    check_allocation("the padded image", b, H, W, c + 1, field="left")  # the image and its mask
    if fill == "edge":
        out = F.pad(img.movedim(-1, 1), (left, right, top, bottom), mode="replicate").movedim(1, -1)
    elif fill == "grey":
        out = torch.full((b, H, W, c), 0.5, dtype=torch.float32, device=img.device)
    else:
        g = torch.Generator("cpu").manual_seed(seed)
        out = torch.rand((b, H, W, c), generator=g).to(img.device)
    out = out.clone()
    out[:, top:top + h, left:left + w] = img  # the original, bit for bit

    mask = torch.ones(b, H, W, device=img.device)
    inner = torch.zeros(h, w, device=img.device)
    if feather > 0:
        ys = torch.arange(h, dtype=torch.float32, device=img.device)[:, None].expand(h, w)
        xs = torch.arange(w, dtype=torch.float32, device=img.device)[None, :].expand(h, w)
        dist = torch.full((h, w), float("inf"), device=img.device)
        for pad, d in ((left, xs), (right, w - 1 - xs), (top, ys), (bottom, h - 1 - ys)):
            if pad > 0:
                dist = torch.minimum(dist, d)
        inner = ((feather - dist) / (feather + 1)).clamp(min=0)
    mask[:, top:top + h, left:left + w] = inner
    return out.contiguous(), mask


TYPE_ALIASES["OutpaintPad"] = "OutpaintBorder"
