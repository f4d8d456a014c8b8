"""Model families: one module each, registered here.

A family module knows one kind of checkpoint: which ``model_index.json`` ``_class_name`` values
it accepts (``PIPELINES``), where its components live and whether they fit together
(``open_checkpoint``), which handle serves each stage (``handles``) and what validation may know
of those handles before anything loads (``facts``).  Nothing outside the family modules knows a
family by name; the loaders ask ``detect``.

Adding a family: write ``families/<name>.py`` with NAME, LABEL, PIPELINES, open_checkpoint,
handles, facts and used_parts (see karlo.py, the smallest), then add it to ``FAMILIES`` below.
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import err, pipeline_class
from . import kandinsky22, karlo

FAMILIES = (karlo, kandinsky22)


def by_pipeline(name: str):
    return next((f for f in FAMILIES if name in f.PIPELINES), None)


def detect(root: Path, field: str = "path"):
    """The family of the checkpoint folder ``root``, from its ``model_index.json``.  A folder
    without one is read as Karlo's per-component layout (what the per-stage loaders always
    accepted); an unknown pipeline class is a UserError listing the known ones."""
    name = pipeline_class(root, field)
    if name is None:
        return karlo
    family = by_pipeline(name)
    if family is None:
        known = ", ".join(p for f in FAMILIES for p in f.PIPELINES)
        raise err(f"{root}/model_index.json describes a {name}, which unclip-nodes cannot load; "
                  f"it reads: {known}", field)
    return family
