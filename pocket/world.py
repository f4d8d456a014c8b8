"""The pocket model's synthetic world: one flat shape on a plain background.

Every scene is drawn from three independent attributes (object colour, shape, background colour)
plus a random size and position, and is described by a caption such as
"a red circle on a white background".  Colours are chosen far apart so that a pixel-statistics
oracle (``oracle.py``) can read any generated picture back.  Scenes are drawn at 4x the asked size
and reduced with a box filter (exact area averaging), which gives clean anti-aliased edges without
the ringing a sharper filter would add.  Everything is deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (150, 40, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# (colour, shape, background) combinations never shown in training; each attribute value still
# appears in training in other combinations, so these measure compositional generalisation.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset({
    ("red", "triangle", "black"),
    ("green", "circle", "grey"),
    ("blue", "square", "white"),
    ("yellow", "circle", "black"),
    ("purple", "square", "grey"),
})

ALL_COMBOS: tuple[tuple[str, str, str], ...] = tuple(
    (c, s, b) for c in OBJECT_COLOURS for s in SHAPES for b in BACKGROUNDS)
TRAIN_COMBOS: tuple[tuple[str, str, str], ...] = tuple(x for x in ALL_COMBOS if x not in HELD_OUT)
HELD_OUT_COMBOS: tuple[tuple[str, str, str], ...] = tuple(x for x in ALL_COMBOS if x in HELD_OUT)

SUPERSAMPLE = 4
MIN_EXTENT, MAX_EXTENT = 0.30, 0.55   # object bounding-box side, as a fraction of the image side
MARGIN = 0.06                         # keep the object this far (fraction of the side) from the border


def caption(colour: str, shape: str, background: str) -> str:
    """The fixed caption template the text tower is trained on."""
    return f"a {colour} {shape} on a {background} background"


def vocabulary() -> list[str]:
    """Every word any caption uses (the tokenizer gives each its own token)."""
    words = {"a", "on", "background", *OBJECT_COLOURS, *BACKGROUNDS, *SHAPES}
    return sorted(words)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    cx: float      # centre, as a fraction of the side
    cy: float
    extent: float  # bounding-box side, as a fraction of the side

    @property
    def label(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.background)

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.background)


def _rng(seed_or_rng) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def _combos(split: str) -> tuple[tuple[str, str, str], ...]:
    if split == "train":
        return TRAIN_COMBOS
    if split == "heldout":
        return HELD_OUT_COMBOS
    if split == "all":
        return ALL_COMBOS
    raise ValueError(f"split must be 'train', 'heldout' or 'all', not {split!r}")


def sample_scenes(seed_or_rng, n: int, split: str = "train",
                  combos: list[tuple[str, str, str]] | None = None) -> list[Scene]:
    """``n`` random scenes from a split (or from the given combinations)."""
    rng = _rng(seed_or_rng)
    pool = list(combos) if combos is not None else list(_combos(split))
    scenes = []
    for _ in range(n):
        colour, shape, background = pool[int(rng.integers(len(pool)))]
        extent = float(rng.uniform(MIN_EXTENT, MAX_EXTENT))
        lo, hi = MARGIN + extent / 2, 1 - MARGIN - extent / 2
        cx, cy = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
        scenes.append(Scene(colour, shape, background, cx, cy, extent))
    return scenes


def render(scene: Scene, size: int) -> np.ndarray:
    """Draw one scene as a uint8 [size, size, 3] array."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    fill = OBJECT_COLOURS[scene.colour]
    cx, cy, half = scene.cx * big, scene.cy * big, scene.extent * big / 2
    x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
    if scene.shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=fill)
    elif scene.shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=fill)
    elif scene.shape == "triangle":  # upright, apex at the top centre: fills half its bounding box
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {scene.shape!r}")
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def sample(seed_or_rng, n: int, size: int = 32, split: str = "train", as_float: bool = False,
           combos: list[tuple[str, str, str]] | None = None):
    """Draw ``n`` scenes: (images [n, size, size, 3] uint8 or float 0..1, captions, labels).

    ``labels`` are (colour, shape, background) tuples.  ``split`` picks the training combinations,
    the held-out ones, or all of them.
    """
    scenes = sample_scenes(seed_or_rng, n, split, combos)
    images = np.stack([render(s, size) for s in scenes]) if scenes else np.zeros((0, size, size, 3), np.uint8)
    if as_float:
        images = images.astype(np.float32) / 255.0
    return images, [s.caption for s in scenes], [s.label for s in scenes]
