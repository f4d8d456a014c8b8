"""Widgets the sampling nodes share, declared once so their ranges and tooltips cannot drift
apart (the core declares no node, so they live here, with the stage nodes)."""
from __future__ import annotations

from .declare import SEED_MAX, Param

SEED_PARAM = Param("seed", "INT", default=0, min=0, max=SEED_MAX,
                   tooltip="Seed of the sampling noise; the same seed and settings repeat a result, "
                           "another seed gives another variation.")


def guidance_param(default: float, usual: str = "") -> Param:
    return Param("guidance_scale", "FLOAT", default=default, min=0.0, max=100.0, step=0.1,
                 tooltip="Classifier-free guidance strength: higher follows the conditioning more "
                         "closely, with less variety; 1 = no guidance (skips the unconditional "
                         "half)." + (f" {usual}" if usual else ""))


DECODER_GUIDANCE = ("The default suits the bundled pocket model; real checkpoints want more: "
                    "Karlo 8, Kandinsky 2.2 4, Stable unCLIP 10.")


CONDITIONING_PARAMS = (
    Param("noise_level", "INT", default=0, min=0, max=999,
          tooltip="Stable unCLIP: how much noise is added to the image embedding before the "
                  "decoder sees it (0-999; more = looser variations). 0 for other models."),
    Param("prompt", "STRING", default="", multiline=True,
          tooltip="Stable unCLIP: the SD prompt its decoder reads, one per line (paired with the "
                  "embeddings row by row); empty = the prompts of the linked text, else the "
                  "empty prompt. Leave empty for other models."),
    Param("negative_prompt", "STRING", default="",
          tooltip="Stable unCLIP: what the decoder's guidance pushes away from (one, or one per "
                  "prompt line). Leave empty for other models."),
    Param("per_image_noise", "BOOLEAN", default=False,
          tooltip="Stable unCLIP: draw the embedding noise per image rather than once per "
                  "embedding (diffusers' behaviour), so images of one embedding differ more."),
)
"""Decoder settings only some families read, appended after a node's own widgets (ComfyUI maps
saved widget values by position).  They reach the decoder as ``conditioning`` options only when
they differ from their defaults, so a family that reads none of them refuses a changed one."""


def conditioning_options(**values) -> dict:
    """The ``CONDITIONING_PARAMS`` values that differ from their defaults."""
    defaults = {p.name: p.default for p in CONDITIONING_PARAMS}
    return {k: v for k, v in values.items() if k in defaults and v != defaults[k]}
