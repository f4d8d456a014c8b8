"""The family contract: what a model family declares and what the stage nodes may ask of it.

A family is one file under ``nodes/families/``: a ``Family`` subclass that declares its parts and
stages as tables and implements its handles (the backends of ``core/backends.py``), its fit checks
and, where its folders are laid out in its own way, ``locate``.  Everything that is the same in
every family (reading configs, identities, weights checks, handles per stage, facts for
validation) is done here once, from those tables.  The registry (``register``, ``detect``)
is what the loaders ask; nothing outside ``families/`` names a family.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ..errors import UserError, UserErrors
from .checkpoint import (Checkpoint, err, existing_dir, hash_file, open_once, pipeline_class,
                         read_json, resolve_path, scan_weights, tokenizer_problems)
from .facts import Facts


@dataclass(frozen=True)
class Part:
    """One component: where it lies in its folder, the file that marks it, the class that reads
    it, whether it has weights, and whether it runs once per sampling step (worth compiling)."""

    folder: str
    marker: str
    cls: tuple[str, str]           # (library, class name): "transformers", "diffusers" or "unclip"
    weighted: bool = True
    stepped: bool = False
    expect: bool = False           # check the config's _class_name against cls

    def present(self, d: Path) -> bool:
        if not d.is_dir():
            return False
        if self.marker == "tokenizer_config.json":  # a tokenizer may come as any of these
            return ((d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()
                    or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()))
        return (d / self.marker).is_file()

    @property
    def what(self) -> str:
        marker = "tokenizer files" if self.marker == "tokenizer_config.json" else self.marker
        return f"{self.folder}/ ({self.cls[1]}, {marker})"


@dataclass(frozen=True)
class Stage:
    """A stage a handle serves: the parts it needs and those it uses when present."""

    handle: type
    needs: tuple[str, ...]
    uses: tuple[str, ...] = ()


STAGES = ("clip_text", "clip_vision", "prior", "decoder", "upsampler")
"""Every stage a loader can ask for, in the order LoadUnCLIP outputs them."""


class Family:
    """Base of every family.  Subclasses fill the tables and write ``open``."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    pipelines: ClassVar[tuple[str, ...]] = ()
    """``model_index.json`` ``_class_name`` values this family reads"""
    reads_bare_folders: ClassVar[bool] = False
    """whether a folder without model_index.json is read as this family's per-component layout"""
    parts: ClassVar[dict[str, Part]] = {}
    stages: ClassVar[dict[str, Stage]] = {}
    absent: ClassVar[dict[str, str]] = {}
    """stage -> why this family has none (validation says so where it is linked)"""
    layouts: ClassVar[dict[str, tuple[str, ...]]] = {}
    """pipeline class -> the stages a folder of that class holds, where not all of the
    family's (the per-stage loaders' drop-downs list only folders that hold their stage)"""

    def holds(self, pipeline: str) -> tuple[str, ...]:
        return self.layouts.get(pipeline, tuple(self.stages))

    # --- opening a checkpoint -------------------------------------------------------------------

    def open(self, root: Path, stages: tuple[str, ...], *, layout: bool, allow_pickle: bool,
             prior_path: str, config_only: bool) -> Checkpoint:
        """Check the folder(s) for ``stages`` and read the configs; no weights.  ``layout``:
        require the family's full layout (LoadUnCLIP).  UserError saying what is wrong."""
        raise NotImplementedError

    def fit_problems(self, cfg: dict[str, dict]) -> list[UserError]:
        """Components that would fail (or silently misbehave) together, from configs alone."""
        return []

    def read(self, root: Path, found: dict[str, Path], wanted, *, allow_pickle: bool,
             config_only: bool, index: dict[str, Path] | None = None,
             roots: dict[str, str] | None = None) -> Checkpoint:
        """The common end of ``open``: read the configs of ``wanted`` parts (``found`` maps each
        to its folder), record their files' identity, check weights and fit, and build the
        Checkpoint.  ``index``: identity key -> model_index.json files that enter it."""
        parts: dict[str, dict] = {}
        files: dict[str, list] = {}
        problems: list[UserError] = []
        for key, path in (index or {}).items():
            files[key] = hash_file(path)
        for part in sorted(wanted):
            spec, d = self.parts[part], found[part]
            cfg_file = d / spec.marker
            parts[part] = read_json(cfg_file) if cfg_file.is_file() else {}
            got = parts[part].get("_class_name")
            if spec.expect and got and got != spec.cls[1]:
                problems.append(err(f"{part}/{spec.marker} describes a {got}, expected "
                                    f"{spec.cls[1]}"))
            if spec.cls[1].endswith(("Tokenizer", "TokenizerFast")):
                problems += tokenizer_problems(d)
            problems += scan_weights(d, part, files, weighted=spec.weighted and not config_only,
                                     allow_pickle=allow_pickle)
        problems += self.fit_problems(parts)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise UserErrors(problems)
        return Checkpoint(root=root, parts=parts, files=files, family=self.name, label=self.label,
                          dirs={p: found[p] for p in parts},
                          classes={p: self.parts[p].cls for p in parts},
                          roots=dict(roots or {}),
                          stepped=frozenset(p for p in parts if self.parts[p].stepped))

    # --- what the loaders ask -------------------------------------------------------------------

    def used_parts(self, ck: Checkpoint, stages, layout: bool) -> set[str]:
        """The components whose files make up the identity of ``stages``."""
        used: set[str] = set()
        for s in stages:
            if s in self.stages:
                used.update(self.stages[s].needs)
                used.update(p for p in self.stages[s].uses if ck.has(p))
        if layout:
            used |= set(ck.parts)
        return used

    def serves(self, ck: Checkpoint, stage: str) -> bool:
        return stage in self.stages and all(ck.has(p) for p in self.stages[stage].needs)

    def handles(self, ck: Checkpoint, stages, device: torch.device, dtype: torch.dtype,
                allow_pickle: bool = False) -> tuple:
        """One handle per stage, None for a stage the checkpoint (or the family) lacks."""
        return tuple(self.stages[s].handle(ck, device, dtype, allow_pickle,
                                           frozenset(self.stages[s].needs + self.stages[s].uses))
                     if self.serves(ck, s) else None for s in stages)

    def facts(self, ck: Checkpoint, stages) -> dict[str, Facts | None]:
        """What validation may know of each stage's handle, from its configs alone: the
        handle's own properties, read from a handle that never loads anything."""
        out: dict[str, Facts | None] = {}
        for s in stages:
            if s in self.absent:
                out[s] = Facts(self.name, self.label, absent=self.absent[s])
            elif not self.serves(ck, s):
                out[s] = None
            else:
                h = self.stages[s].handle(ck, torch.device("cpu"), torch.float32)
                out[s] = Facts(self.name, self.label, clip_dim=getattr(h, "clip_dim", None),
                               space=getattr(h, "space", None),
                               takes_text=getattr(h, "takes_text", None),
                               variant=getattr(h, "variant", None),
                               cannot_inpaint=getattr(h, "cannot_inpaint", None),
                               settings=getattr(h, "settings", None))
        return out


# --- the registry ----------------------------------------------------------------------------------

FAMILIES: list[Family] = []


def register(*families: Family) -> list[Family]:
    """Add families to the registry (``families/__init__.py`` does, one line)."""
    for f in families:
        if all(f.name != g.name for g in FAMILIES):
            FAMILIES.append(f)
    return FAMILIES


def stages_held(pipeline: str | None) -> tuple[str, ...]:
    """The stages a folder whose model_index.json names ``pipeline`` holds; every stage for a
    pipeline no family reads (its loader says what is wrong with it)."""
    for f in FAMILIES:
        if pipeline in f.pipelines:
            return f.holds(pipeline)
    return STAGES


def by_name(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def detect(root: Path, field: str = "path") -> Family:
    """The family of the checkpoint folder ``root``, from its ``model_index.json``; a folder
    without one is read by the family that reads bare folders.  An unknown pipeline class is a
    UserError listing the known ones."""
    name = pipeline_class(root, field)
    if name is None:
        bare = next((f for f in FAMILIES if f.reads_bare_folders), None)
        if bare is None:
            raise err(f"{root} has no model_index.json, which says what a folder holds", field)
        return bare
    family = next((f for f in FAMILIES if name in f.pipelines), None)
    if family is None:
        known = ", ".join(p for f in FAMILIES for p in f.pipelines)
        raise err(f"{root}/model_index.json describes a {name}, which unclip-nodes cannot load; "
                  f"it reads: {known}", field)
    return family


def open_checkpoint(path: str, stages: tuple[str, ...], *, layout: bool,
                    allow_pickle: bool = False, prior_path: str = "",
                    config_only: bool = False) -> Checkpoint:
    """Check a checkpoint for ``stages`` and read its configs, reading no weights.

    ``layout``: require the family's full layout (as ``LoadUnCLIP`` does); the per-stage loaders
    only need their own components.  ``prior_path``: a second folder holding the prior (for
    families that ship it apart).  ``config_only``: a folder of configs without weights is fine
    (to build components on the meta device or with random weights).  Opened once while its
    files stay as they are (``open_once``).  Raises UserError saying what is wrong."""
    root = existing_dir(path)
    extra = resolve_path(prior_path) if prior_path and prior_path.strip() else None
    extra = extra if extra is not None and extra.is_dir() else None  # the family says why not
    key = (str(root), prior_path, str(extra), tuple(stages), layout, allow_pickle, config_only)

    def opener() -> Checkpoint:
        return detect(root).open(root, tuple(stages), layout=layout, allow_pickle=allow_pickle,
                                 prior_path=prior_path, config_only=config_only)
    return open_once(key, [root] + ([extra] if extra else []), opener)
