"""Widgets the sampling nodes share, declared once so their ranges and tooltips cannot drift
apart (the core declares no node, so they live here, with the stage nodes)."""
from __future__ import annotations

from .declare import SEED_MAX, Param

SEED_PARAM = Param("seed", "INT", default=0, min=0, max=SEED_MAX,
                   tooltip="Seed of the sampling noise; the same seed and settings repeat a result, "
                           "another seed gives another variation.")


def guidance_param(default: float) -> Param:
    return Param("guidance_scale", "FLOAT", default=default, min=0.0, max=100.0, step=0.1,
                 tooltip="Classifier-free guidance strength: higher follows the conditioning more "
                         "closely, with less variety; 1 = no guidance (skips the unconditional half).")
