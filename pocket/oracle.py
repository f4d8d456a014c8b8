"""Read a shapes-world picture back into (colour, shape, background) from pixel statistics.

No learned model is involved, so it can judge the pocket model without sharing its mistakes:

* background: the median colour of the border pixels, named by the nearest background colour;
* object colour: the median of the pixels far from the background, named by the nearest object colour;
* shape: each pixel's coverage (its position on the line from the background to the object colour)
  is summed around the largest connected blob and divided by the blob's extent (widest row times
  tallest column, both in summed coverage, so the estimate is sub-pixel).  An upright
  triangle fills half its box, a circle pi/4 of it, a square all of it.

Works at any resolution (32, 64, 256 ...).  Anything it cannot see (no object) reads as "none".
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .world import BACKGROUNDS, OBJECT_COLOURS

_BG_NAMES = list(BACKGROUNDS)
_BG = np.array([BACKGROUNDS[n] for n in _BG_NAMES], dtype=np.float32)
_OBJ_NAMES = list(OBJECT_COLOURS)
_OBJ = np.array([OBJECT_COLOURS[n] for n in _OBJ_NAMES], dtype=np.float32)

MIN_CONTRAST = 45.0          # a pixel this far (RGB, 0..255) from the background may be object
SQUARE_FILL = 0.89           # fill ratio above: square; between: circle; below CIRCLE_FILL: triangle
CIRCLE_FILL = 0.69


@dataclass(frozen=True)
class Reading:
    colour: str
    shape: str
    background: str
    fill: float              # coverage / bounding-box area (nan when no object)
    object_pixels: float     # summed coverage, in pixels

    @property
    def label(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.background)


def _as_uint_scale(image) -> np.ndarray:
    """Any [H,W,3] image (uint8, float 0..1, torch tensor) as float32 0..255."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an [H, W, 3] image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    return np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best: list[tuple[int, int]] = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        comp, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(comp) > len(best):
            best = comp
    out = np.zeros_like(mask)
    if best:
        ys, xs = zip(*best)
        out[list(ys), list(xs)] = True
    return out


def read(image) -> Reading:
    """Name the colour, shape and background of one picture."""
    img = _as_uint_scale(image)
    h, w, _ = img.shape
    ring = max(1, min(h, w) // 32)
    border = np.concatenate([img[:ring].reshape(-1, 3), img[-ring:].reshape(-1, 3),
                             img[:, :ring].reshape(-1, 3), img[:, -ring:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    background = _BG_NAMES[int(np.argmin(((_BG - bg) ** 2).sum(1)))]

    dist = np.sqrt(((img - bg) ** 2).sum(-1))
    far = dist > max(MIN_CONTRAST, 0.6 * float(dist.max()))
    if dist.max() < MIN_CONTRAST or far.sum() == 0:
        return Reading("none", "none", background, float("nan"), 0.0)
    obj = np.median(img[far], axis=0)
    colour = _OBJ_NAMES[int(np.argmin(((_OBJ - obj) ** 2).sum(1)))]

    axis = obj - bg
    coverage = np.clip(((img - bg) @ axis) / float(axis @ axis), 0.0, 1.0)
    blob = _largest_blob(coverage > 0.5)
    ys, xs = np.nonzero(blob)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    # sub-pixel extent: the widest row and the tallest column of summed coverage (anti-aliased
    # edge pixels count by their coverage), within a 1-px margin around the blob
    cov = coverage[max(0, y0 - 1):y1 + 2, max(0, x0 - 1):x1 + 2]
    area = float(cov.sum())
    width, height = float(cov.sum(1).max()), float(cov.sum(0).max())
    fill = area / max(width * height, 1e-6)
    shape = "square" if fill > SQUARE_FILL else "circle" if fill > CIRCLE_FILL else "triangle"
    return Reading(colour, shape, background, fill, area)


def read_batch(images) -> list[Reading]:
    """``read`` over a batch [B, H, W, 3]."""
    return [read(im) for im in images]
