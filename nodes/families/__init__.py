"""Model families, one file each, and the one line that registers them.

A family is a ``core.family.Family`` subclass in ``families/<name>.py``: tables of its parts and
stages, its handles (the backends the stage nodes call, its own inpainting included), its fit
checks, and ``open`` for its folder layout.  Nothing outside this folder names a family; the
loaders ask the registry (``detect``, ``open_checkpoint``).

Adding a family: write ``families/<name>.py`` (karlo.py is the smallest, with a single folder
layout) ending in ``FAMILY = <Name>()``, then add it to the line below.
"""
from __future__ import annotations

from ..core.family import FAMILIES, by_name, detect, open_checkpoint, register  # noqa: F401
from . import kandinsky22, karlo, stable_unclip

register(karlo.FAMILY, kandinsky22.FAMILY, stable_unclip.FAMILY)
