"""Sweeps: run a workflow for many values of its inputs as ONE combined graph.

``unclip run WF --sweep seed=0..7 --sweep prompt=@prompts.txt`` makes one run per combination
(the cartesian product; ``--zip`` pairs the lists instead).  Each combination is validated as
its own run would be, then all of them are merged into a single graph in which nodes with the
same cache key are one node: when only the decoder seed varies, the model is loaded and the text
encoder and the prior run once, and only the decoder (and what follows it) runs per seed.  The
executor then runs that graph as usual (cache, report, Ctrl-C).

Node ids in the combined graph name the swept values a node depends on: ``seed-3/decode``;
shared nodes keep their own id.  Savers write ``<prefix>_seed-3_...`` files, each PNG recording
its own single run, and a contact sheet of every combination's image is written at the end.

Why there is no batching of model calls across combinations: on the CPU, convolutions and
matrix products give last-bit different results for a sample computed in a batch of 8 than
alone (measured, about 2e-6), so batched seeds would not reproduce the separate runs bit for
bit -- which the seed contract (and the cache) promise.  Sharing by cache key loses nothing.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import re
from builtins import zip as zip_  # plan_sweep's ``zip`` flag hides the builtin there
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..nodes.declare import Param, parse_literal
from ..nodes.errors import UserError, UserErrors
from ..nodes.errors import env_limit, excerpt, over_limit
from . import dag
from .cache import Cache, compute_keys
from .comfy import png_metadata
from .run import RunInterrupted, RunResult, execute, sheet_prefix, write_report
from .validate import Resolved, ResolvedNode, read_expanded, resolve
from .workflow import Problems, Workflow, read_text, suggest

MAX_COMBINATIONS = 4096
"""The most combinations one sweep runs (also with --zip), unless UNCLIP_MAX_COMBINATIONS or
the ``max_combinations`` argument says otherwise."""
_RANGE = re.compile(r"\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*\Z")
_SAFE_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,23}\Z")


@dataclass
class Sweep:
    """One ``--sweep NAME=VALUES``: the raw values (text from the command line, or Python
    values from the API) and how the user wrote it, for messages."""

    name: str
    values: list[Any]
    text: str = ""


def parse_sweep(text: str, base: Path | None = None) -> Sweep:
    """``name=a,b,c`` / ``name=0..7`` (integers, both ends included) / ``name=@file`` (one value
    per line; blank lines skipped; relative to ``base``, default the current folder)."""
    name, eq, rest = text.partition("=")
    name = name.strip()
    if not eq or not name:
        raise UserError(f"--sweep {excerpt(text)}: write --sweep NAME=a,b,c, NAME=0..7 or "
                        "NAME=@file", field="sweep")
    if rest.startswith("@"):
        path = Path(rest[1:]).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        try:
            lines = read_text(path, f"--sweep {name}=@{rest[1:]}: value file").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--sweep {name}=@{rest[1:]}: cannot read {path} "
                            f"({getattr(e, 'strerror', None) or e})", field=name) from None
        values = [line for line in lines if line.strip()]
        if not values:
            raise UserError(f"--sweep {name}=@{rest[1:]}: {path} has no values (one per line)",
                            field=name)
        return Sweep(name, values, text)
    values = [v.strip() for v in rest.split(",")]
    if any(v == "" for v in values):
        raise UserError(f"--sweep {excerpt(text)}: an empty value; separate values with single "
                        "commas (values with commas go in a file: NAME=@values.txt)", field=name)
    return Sweep(name, values, text)


def as_sweeps(sweeps: Sequence[str | Sweep] | Mapping[str, Sequence[Any]]) -> list[Sweep]:
    """The API takes ``{"seed": range(8)}``, Sweep objects or the command line's texts."""
    if isinstance(sweeps, Mapping):
        return [Sweep(k, list(v), f"{k}=...") for k, v in sweeps.items()]
    return [s if isinstance(s, Sweep) else parse_sweep(s) for s in sweeps]


# --- the plan -----------------------------------------------------------------------------------

@dataclass
class Combination:
    inputs: dict[str, Any]        # the swept values
    labels: dict[str, str]        # how names show them: {'seed': '3', 'prompt': '2'}
    run: Resolved                 # the single run it stands for

    def tag_of(self, names) -> str:
        return "_".join(f"{n}-{self.labels[n]}" for n in names)

    @property
    def tag(self) -> str:
        """'seed-3_prompt-2': names the combination's outputs and files."""
        return self.tag_of(self.labels)


@dataclass
class SweepPlan:
    resolved: Resolved            # the combined graph (what the executor runs)
    sweeps: list[Sweep]
    combinations: list[Combination]
    zip: bool
    grid_output: str | None       # the workflow output the contact sheet shows
    shared: dict[str, int] = field(default_factory=dict)  # node id -> combinations using it
    members: list[list[str]] = field(default_factory=list)
    """Per combination, the ids of the combined graph's nodes its single run is made of."""

    def output_name(self, combo: Combination, name: str) -> str:
        return f"{combo.tag}/{name}"

    def combination_graph(self, index: int) -> Resolved:
        """The combined graph cut down to one combination: its nodes (under their combined ids,
        so cache keys, file prefixes and PNG metadata are the sweep's) and its outputs.  A saver
        that several combinations share is kept by the first of them only, so that spreading
        the combinations over workers (``--ray``) writes its files once, as a local sweep does."""
        rs, tag = self.resolved, self.combinations[index].tag + "/"
        owner = self._saver_owners()
        keep = [mid for mid in self.members[index]
                if not rs.nodes[mid].spec.output_node or owner[mid] == index]
        nodes = {mid: rs.nodes[mid] for mid in keep}
        outputs = {k: v for k, v in rs.outputs.items() if k.startswith(tag)}
        edges = [(src, mid) for mid, rn in nodes.items() for src, _ in rn.links.values()]
        return replace(rs, nodes=nodes, outputs=outputs, graph=dag.build(nodes, edges),
                       parts={mid: rs.parts[mid] for mid in keep if mid in rs.parts})

    def _saver_owners(self) -> dict[str, int]:
        if not hasattr(self, "_owners"):
            owners: dict[str, int] = {}
            for ci, ids in enumerate(self.members):
                for mid in ids:
                    owners.setdefault(mid, ci)
            self._owners = owners
        return self._owners


def combination_limit(max_combinations: int | None = None) -> int:
    """The argument if given, else UNCLIP_MAX_COMBINATIONS, else MAX_COMBINATIONS."""
    if max_combinations is None:
        return env_limit("COMBINATIONS", MAX_COMBINATIONS)
    if not isinstance(max_combinations, int) or max_combinations < 1:
        raise UserError(f"max_combinations={max_combinations!r}: give a whole number of at "
                        "least 1", field="max_combinations")
    return max_combinations


def plan_sweep(source: str | Path | Mapping, sweeps, *, zip: bool = False,
               overrides: Mapping[str, Any] | None = None,
               max_combinations: int | None = None) -> SweepPlan:
    """Validate every combination and merge them into one graph; raise every problem.
    ``max_combinations``: the most combinations allowed (default: ``combination_limit()``)."""
    limit = combination_limit(max_combinations)
    sweeps = as_sweeps(sweeps)
    overrides = dict(overrides or {})
    wf, p = read_expanded(source)
    p.raise_any()
    typed = _typed_values(wf, sweeps, overrides, limit)
    if zip:
        lengths = {s.name: len(v) for s, v in zip_(sweeps, typed)}
        if len(set(lengths.values())) > 1:
            raise UserError("--zip pairs values by position, so the lists must be equally long: "
                            + ", ".join(f"{k} has {n}" for k, n in lengths.items()), field="sweep")
        count = len(typed[0]) if typed else 0
    else:
        count = math.prod(len(v) for v in typed)
    if count > limit:
        advice = "split it" + ("" if zip or len(typed) < 2 else ", or pair lists with --zip")
        raise over_limit(f"the sweep makes {count:,} combinations ({advice})", count, limit,
                         "COMBINATIONS", "--max-combinations", field="sweep")
    rows = list(zip_(*typed)) if zip else list(itertools.product(*typed))
    labels = [_labels(s, v) for s, v in zip_(sweeps, typed)]
    where = [_positions(v) for v in typed]
    combos: list[Combination] = []
    problems: dict[str, tuple[UserError, list[str]]] = {}
    for row in rows:
        inputs = {s.name: v for s, v in zip_(sweeps, row)}
        shown = {s.name: labels[i][where[i][_same(v)]]
                 for i, (s, v) in enumerate(zip_(sweeps, row))}
        try:
            run = resolve(wf, Problems(wf.file), {**overrides, **inputs})
        except UserError as e:
            tag = Combination(inputs, shown, None).tag
            for err in getattr(e, "errors", [e]):
                problems.setdefault(str(err), (err, []))[1].append(tag)
            continue
        combos.append(Combination(inputs, shown, run))
    if problems:
        raise _combined(problems, len(rows))
    merged, users = _merge(wf, combos, [s.name for s in sweeps])
    members: list[list[str]] = [[] for _ in combos]
    for mid in merged.nodes:  # in the combined graph's order
        for ci in users[mid]:
            members[ci].append(mid)
    return SweepPlan(merged, sweeps, combos, zip, _grid_output(combos[0].run),
                     {mid: len(u) for mid, u in users.items()}, members)


def _typed_values(wf: Workflow, sweeps: list[Sweep], overrides: dict,
                  limit: int = MAX_COMBINATIONS) -> list[list[Any]]:
    errors: list[UserError] = []
    typed: list[list[Any]] = []
    seen: set[str] = set()
    value_inputs = [n for n, i in wf.inputs.items() if not i.socket]
    for s in sweeps:
        wi = wf.inputs.get(s.name)
        where = f"--sweep {s.name}"
        if s.name in seen:
            errors.append(UserError(f"{where}: swept twice; give all its values in one --sweep",
                                    field=s.name))
        elif wi is None or wi.socket:
            errors.append(UserError(f"{where}: the workflow has no input '{s.name}'"
                                    f"{suggest(s.name, value_inputs)}; its inputs: "
                                    f"{', '.join(value_inputs) or 'none'}", field=s.name))
        elif s.name in overrides:
            errors.append(UserError(f"{where}: also given with --set; keep one of them",
                                    field=s.name))
        if s.name in seen or wi is None or wi.socket or s.name in overrides:
            seen.add(s.name)
            typed.append([])
            continue
        seen.add(s.name)
        values = []
        for raw in s.values:
            m = _RANGE.match(raw) if isinstance(raw, str) and wi.type == "INT" else None
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                if abs(b - a) >= limit:
                    n = abs(b - a) + 1
                    errors.append(over_limit(f"{where}={raw}: {n:,} values is too many", n,
                                             limit, "COMBINATIONS", "--max-combinations",
                                             field=s.name))
                    break
                values += list(range(a, b + 1) if a <= b else range(a, b - 1, -1))
                continue
            try:
                v = parse_literal(wi.type, raw) if isinstance(raw, str) else raw
                values.append(Param(s.name, wi.type).check(v))
            except ValueError as e:
                errors.append(UserError(f"{where}={raw}: {e}", field=s.name))
        if not values and not errors:
            errors.append(UserError(f"{where}: no values", field=s.name))
        seen_values: set = set()
        twice: set[str] = set()
        for v in values:  # linear: a file of 50,000 lines is checked at once
            if v in seen_values:
                twice.add(repr(v))
            seen_values.add(v)
        twice = sorted(twice)
        if twice:
            errors.append(UserError(f"{where}: {', '.join(twice)} given more than once",
                                    field=s.name))
        typed.append(values)
    if errors:
        raise errors[0] if len(errors) == 1 else UserErrors(errors)
    return typed


def _same(v: Any) -> Any:
    """What two swept values must share to count as the same value: equal and of one type
    (so True is not 1).  Values are checked scalars, so they can be hashed."""
    return type(v), v


def _positions(values: list) -> dict:
    """Each value's first position in ``values``."""
    first: dict = {}
    for i, v in enumerate(values):
        first.setdefault(_same(v), i)
    return first


def _labels(s: Sweep, values: list) -> list[str]:
    """How file names and node ids show each value: numbers as they are, short plain words as
    they are, other text by its position in the list (1 = first line of a file)."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool):
            out.append(str(v).lower())
        elif isinstance(v, int):
            out.append(str(v))
        elif isinstance(v, float):  # 2.0 -> '2', 0.25 -> '0.25' (repr: never two values alike)
            out.append(repr(v)[:-2] if repr(v).endswith(".0") else repr(v))
        else:
            out.append(v)
    texts = [v for v in values if isinstance(v, str)]
    if texts and not all(_SAFE_LABEL.match(t) for t in texts):
        return [str(i + 1) for i in range(len(values))]
    return out


def _combined(problems: dict[str, tuple[UserError, list[str]]], total: int) -> UserError:
    """Each problem once; those that only some combinations have say which."""
    errs = []
    for err, tags in problems.values():
        if len(tags) < total:
            more = f" and {len(tags) - 3} more" if len(tags) > 3 else ""
            err = copy.copy(err)
            err.message = f"{err.message} (in the sweep's {', '.join(tags[:3])}{more})"
        errs.append(err)
    return errs[0] if len(errs) == 1 else UserErrors(errs)


def _depends(wf: Workflow, run: Resolved, swept: list[str]) -> dict[str, list[str]]:
    """Per node, the swept inputs it depends on (through its parameters or upstream), in the
    order of the sweeps."""
    deps: dict[str, set[str]] = {}
    for nid in dag.order(run.graph):
        decl = wf.nodes.get(nid)  # None: the source of a socket input ('$image')
        refs = {v[1:] for v in (a.value for a in (decl.params.values() if decl else ()))
                if isinstance(v, str) and v.startswith("$") and not v.startswith("$$")}
        for src, _ in run.nodes[nid].links.values():
            refs |= deps[src]
        deps[nid] = refs & set(swept)
    return {nid: [s for s in swept if s in d] for nid, d in deps.items()}


def _merge(wf: Workflow, combos: list[Combination], swept: list[str]
           ) -> tuple[Resolved, dict[str, set[int]]]:
    """One graph for all combinations; a node whose cache key another already has is that node.
    Also returns, per node, the combinations that use it."""
    deps = _depends(wf, combos[0].run, swept)
    nodes: dict[str, ResolvedNode] = {}
    parts: dict[str, Resolved] = {}
    users: dict[str, set[int]] = {}
    by_key: dict[str, str] = {}
    outputs: dict[str, tuple[str, str]] = {}
    for ci, combo in enumerate(combos):
        run = combo.run
        keys = compute_keys(run.nodes, dag.order(run.graph))
        alias: dict[str, str] = {}
        for nid in dag.order(run.graph):
            rn, key = run.nodes[nid], keys[nid]
            if key is not None and key in by_key:
                alias[nid] = by_key[key]
                users[alias[nid]].add(ci)
                continue
            tag = combo.tag_of(deps[nid])
            mid = f"{tag}/{nid}" if tag else nid
            links = {k: (alias[src], out) for k, (src, out) in rn.links.items()}
            params = dict(rn.params)
            prefix = rn.spec.prefix
            if tag and prefix is not None and isinstance(params.get(prefix), str):
                params[prefix] = f"{params[prefix]}_{tag}"
            same = nodes.get(mid)
            if same is not None and same.spec is rn.spec and same.params == params \
                    and same.links == links:
                alias[nid] = mid  # an uncacheable node (a saver) of work the runs share
                users[mid].add(ci)
                continue
            n = 2
            while mid in nodes:  # not expected: equal tags mean equal inputs
                mid, n = f"{tag}/{nid}#{n}", n + 1
            nodes[mid] = replace(rn, id=mid, params=params, links=links)
            parts[mid] = run
            users[mid] = {ci}
            alias[nid] = mid
            if key is not None:
                by_key[key] = mid
        for name, (src, out) in run.outputs.items():
            outputs[f"{combo.tag}/{name}"] = (alias[src], out)
    edges = [(src, mid) for mid, rn in nodes.items() for src, _ in rn.links.values()]
    base = {k: v for k, v in combos[0].run.inputs.items() if k not in swept}
    merged = Resolved(combos[0].run.workflow, base, nodes, outputs, dag.build(nodes, edges),
                      parts=parts)
    return merged, users


def score_outputs(run: Resolved) -> list[str]:
    """The workflow's FLOAT outputs (a CLIPScore's ``score``, say): what a sweep reports per
    combination, in the report, on the contact sheet and in the command's table."""
    return [name for name, (src, out) in run.outputs.items()
            if run.nodes[src].spec.output(out).type == "FLOAT"]


def scores_of(plan: SweepPlan, outputs: Mapping[str, Any], combo: Combination
              ) -> dict[str, float]:
    """One combination's score outputs, by their names in the workflow (those it has)."""
    out = {}
    for name in score_outputs(plan.combinations[0].run):
        v = outputs.get(plan.output_name(combo, name))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
    return out


def score_table(plan: SweepPlan, outputs: Mapping[str, Any]) -> str:
    """The scores as a plain text table, a row per combination and a column per swept input and
    per score output; "" when the workflow has no score output."""
    names = score_outputs(plan.combinations[0].run)
    if not names:
        return ""
    swept = [s.name for s in plan.sweeps]
    rows = [[c.labels[n] for n in swept]
            + [f"{v:.4f}" if (v := scores_of(plan, outputs, c).get(n)) is not None else "-"
               for n in names] for c in plan.combinations]
    header = swept + names
    widths = [max(len(str(x)) for x in col) for col in zip_(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip_(row, widths)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def _grid_output(run: Resolved) -> str | None:
    """The first IMAGE output of the workflow (text_to_image: the upsampled image)."""
    for name, (src, out) in run.outputs.items():
        if run.nodes[src].spec.output(out).type == "IMAGE":
            return name
    return None


# --- running ------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    plan: SweepPlan
    result: RunResult
    grid: Path | None

    def outputs(self, combo: Combination) -> dict[str, Any]:
        """The workflow outputs of one combination, by their names in the workflow."""
        pre = combo.tag + "/"
        return {k[len(pre):]: v for k, v in self.result.outputs.items() if k.startswith(pre)}

    def scores(self, combo: Combination) -> dict[str, float]:
        """The combination's FLOAT outputs (scores), by their names in the workflow."""
        return scores_of(self.plan, self.result.outputs, combo)


def run_sweep(source: str | Path | Mapping, sweeps, *, zip: bool = False,
              overrides: Mapping[str, Any] | None = None, out_dir: str | Path | None = None,
              device: str = "auto", cache: Cache | None = None,
              report: str | Path | None = None, progress: bool = False, grid: bool = True,
              interrupted: Callable[[], bool] | None = None, batch: int = 1,
              max_combinations: int | None = None) -> SweepResult:
    """Run every combination of ``sweeps`` (``{"seed": range(8)}`` or ``["seed=0..7"]``) as
    one graph; returns the run and the contact sheet's path.  ``batch``: as ``execute``'s;
    ``max_combinations``: as ``plan_sweep``'s."""
    plan = plan_sweep(source, sweeps, zip=zip, overrides=overrides,
                      max_combinations=max_combinations)
    out = Path(out_dir) if out_dir is not None else Path.cwd() / "output"
    try:
        result = execute(plan.resolved, out_dir=out, device=device, cache=cache,
                         progress=progress, interrupted=interrupted, batch=batch,
                         metadata=png_metadata)
    except RunInterrupted as e:
        e.result.extra["sweep"] = describe(plan, None)
        if report:
            write_report(e.result, report)
        raise
    sheet = contact_sheet(plan, result, out) if grid else None
    result.extra["sweep"] = describe(plan, sheet, result.outputs)
    if report:
        write_report(result, report)
    return SweepResult(plan, result, sheet)


def describe(plan: SweepPlan, sheet: Path | None, outputs: Mapping[str, Any] | None = None
             ) -> dict:
    """The report's "sweep" section; given the run's ``outputs``, each combination's scores
    (the workflow's FLOAT outputs) too."""
    names = score_outputs(plan.combinations[0].run) if outputs is not None else []
    out = {"mode": "zip" if plan.zip else "product",
           "inputs": [s.name for s in plan.sweeps],
           "combinations": [{"tag": c.tag, "inputs": c.inputs} for c in plan.combinations],
           "shared_nodes": {k: v for k, v in plan.shared.items() if v > 1},
           "grid": str(sheet) if sheet else None}
    if names:
        out["scores"] = names
        for entry, c in zip_(out["combinations"], plan.combinations):
            entry["scores"] = scores_of(plan, outputs, c)
    return out


# --- the contact sheet --------------------------------------------------------------------------

LABEL_HEIGHT = 12
MIN_CELL = 96
"""Smaller images are enlarged (nearest, whole factors) so that labels fit under them."""


def contact_sheet(plan: SweepPlan, result: RunResult, out_dir: Path) -> Path | None:
    """One image with every combination's ``grid_output`` image, labelled with its values;
    rows and columns follow the last two sweeps (product), else about square.  None when the
    workflow has no IMAGE output."""
    if plan.grid_output is None:
        return None
    cells = []
    for c in plan.combinations:
        img = result.outputs.get(plan.output_name(c, plan.grid_output))
        frames = cell_frames(img)
        if frames:
            cells.append((cell_label(c.tag, scores_of(plan, result.outputs, c)), frames))
    return write_contact_sheet(plan, cells, out_dir)


def cell_label(tag: str, scores: Mapping[str, float]) -> str:
    """A cell's label: its combination, then one line per score."""
    return "\n".join([tag] + [f"{name} {value:.3f}" for name, value in scores.items()])


def cell_frames(img: Any) -> list:
    """A combination's grid image as the 8-bit RGB pictures its cell shows (a batch side by
    side); [] when it is not an image.  Pictures, not tensors: what a worker sends back
    (``--ray``) and what a resumed sweep reads from disk give the same sheet."""
    if not (isinstance(img, torch.Tensor) and img.dim() == 4 and img.shape[0] > 0):
        return []
    from ..nodes.image import tensor_to_pil
    return [tensor_to_pil(f[..., :3] if f.shape[-1] >= 3 else f.expand(*f.shape[:-1], 3))
            .convert("RGB") for f in img]


def write_contact_sheet(plan: SweepPlan, cells: list[tuple[str, list]], out_dir: Path
                        ) -> Path | None:
    """The contact sheet of ``cells`` (tag, pictures), numbered like a saver's files."""
    if not cells:
        return None
    n = len(cells)
    if not plan.zip and len(plan.sweeps) >= 2:
        columns = len(set(c.inputs[plan.sweeps[-1].name] for c in plan.combinations))
    else:
        columns = n if n <= 8 else math.ceil(math.sqrt(n))
    sheet = _compose(cells, columns)
    from ..nodes import image as image_nodes
    from ..nodes import runtime
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("unclip_sweep", json.dumps(describe(plan, None), default=str))
    with runtime.use_host(runtime.Host(output_dir=out_dir)):
        (path,) = image_nodes.write_outputs(
            sheet_prefix(plan.resolved.workflow.file), "png",
            [lambda f: sheet.save(f, format="PNG", pnginfo=info, compress_level=4)])
    return path


def _compose(cells: list[tuple[str, list]], columns: int):
    """Cells (each a batch, shown side by side) on a white sheet with a label strip under each."""
    from PIL import Image, ImageDraw

    frames = [pictures for _, pictures in cells]
    small = max(max(fr.width for fr in row) for row in frames)
    if small < MIN_CELL:
        k = math.ceil(MIN_CELL / small)
        frames = [[fr.resize((fr.width * k, fr.height * k), Image.NEAREST) for fr in row]
                  for row in frames]
    lines = max(tag.count("\n") + 1 for tag, _ in cells)  # scores add lines
    label = LABEL_HEIGHT * lines + 2 * (lines - 1)
    cw = max(sum(fr.width for fr in row) for row in frames)
    ch = max(max(fr.height for fr in row) for row in frames) + label
    columns = max(1, min(columns, len(cells)))
    rows = math.ceil(len(cells) / columns)
    pad = 2
    sheet = Image.new("RGB", (columns * cw + (columns - 1) * pad, rows * ch + (rows - 1) * pad),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, ((tag, _), row) in enumerate(zip_(cells, frames)):
        x, y = (i % columns) * (cw + pad), (i // columns) * (ch + pad)
        for fr in row:
            sheet.paste(fr, (x, y))
            x += fr.width
        draw.multiline_text(((i % columns) * (cw + pad) + 1, y + ch - label), tag,
                            fill=(0, 0, 0), spacing=2)
    return sheet
