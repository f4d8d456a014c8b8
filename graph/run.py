"""Run a validated workflow: plan backwards from what is asked, then execute forwards.

Planning walks the needed nodes in reverse topological order.  A node is run only when one of
its outputs is demanded (by a requested workflow output or by a node that runs) and not every
demanded output is in the cache; a node that runs demands all of its inputs.  So cached values
cut the graph: upstream of a hit nothing runs, and a fully cached re-run loads no model.
Uncacheable nodes (savers) always run.  Each finished node's outputs go to the cache at once, so
a run stopped by Ctrl-C keeps what it finished.

Nodes with the same cache key compute the same thing (a preset used twice with the same model
loads it twice otherwise): the first in run order stands for the others, which the report lists
as ``same as <id>``.  Uncacheable nodes (savers) are never merged: each writes its own files.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import networkx as nx
import torch
from tqdm import tqdm

from ..nodes import declare, runtime
from ..nodes.errors import UserError, UserErrors, excerpt
from ..nodes.runtime import Host, Interrupted, Progress
from ..nodes.types import SOCKET_TYPES
from . import dag
from .cache import MISS, Cache, compute_keys, output_key, versions, write_output
from .validate import Resolved

RAN, MEMORY_HIT, DISK_HIT, NOT_NEEDED = "ran", "memory hit", "disk hit", "not needed"
INTERRUPTED, NOT_RUN = "interrupted", "not run"  # only after Ctrl-C
SAME_AS = "same as "  # + the node id that computes it (an identical node: same cache key)


@dataclass
class NodeRecord:
    node: str
    type: str
    status: str = NOT_NEEDED
    seconds: float = 0.0
    key: str | None = None
    files: list[str] = field(default_factory=list)
    batched: int = 0
    """How many nodes ran in the one batched call this one ran in (``--batch``); 0 alone."""
    load_seconds: float = 0.0
    """The part of ``seconds`` spent reading model weights (a handle loads on first use)."""


@dataclass
class RunResult:
    outputs: dict[str, Any]
    report: list[NodeRecord]
    inputs: dict[str, Any]
    seconds: float
    interrupted: bool = False
    extra: dict = field(default_factory=dict)  # more report sections (e.g. "sweep")

    @property
    def files(self) -> list[str]:
        return [f for r in self.report for f in r.files]

    def status(self) -> dict[str, str]:
        return {r.node: r.status for r in self.report}

    def breakdown(self) -> dict[str, float]:
        """Where the run's time went: loading weights, computing, saving files, and the rest
        (validation, cache look-ups, the executor itself)."""
        load = sum(r.load_seconds for r in self.report)
        save = sum(r.seconds for r in self.report if r.files)
        compute = sum(r.seconds for r in self.report if not r.files) - load
        return {"load": round(load, 4), "compute": round(compute, 4), "save": round(save, 4),
                "other": round(max(0.0, self.seconds - load - compute - save), 4)}

    def to_json(self) -> dict:
        return {"status": INTERRUPTED if self.interrupted else "finished",
                "seconds": round(self.seconds, 4), "inputs": self.inputs,
                "nodes": [asdict(r) | {"seconds": round(r.seconds, 4),
                                       "load_seconds": round(r.load_seconds, 4)}
                          for r in self.report],
                "time": self.breakdown(),
                "files": self.files,
                "outputs": {k: describe(v) for k, v in self.outputs.items()}, **self.extra}


class RunInterrupted(Interrupted):
    """The run was stopped; ``result`` tells what finished (and is cached)."""

    def __init__(self, result: RunResult):
        super().__init__("interrupted")
        self.result = result


def check_device(device: str, here: bool = True) -> None:
    """Only the devices this pack runs on (cpu, cuda, cuda:N), said before anything loads: torch
    knows more names (meta, mps, xpu, ...) on which a run would fail late or compute nothing.
    ``here``: the run is on this machine, so CUDA must be available here (not so for --ray)."""
    try:
        dev = runtime.resolve_device(device) if device != "auto" else None
    except (RuntimeError, ValueError):
        raise UserError(f"--device {excerpt(device)}: not a device (use auto, cpu or cuda)",
                        field="device") from None
    if dev is not None and dev.type not in ("cpu", "cuda"):
        raise UserError(f"--device {excerpt(device)}: this pack runs on cpu or cuda (also "
                        "cuda:N), not on this device type; use auto, cpu or cuda",
                        field="device")
    if here and dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available here", field="device")


def execute(rs: Resolved, *, out_dir=None, device="auto", cache: Cache | None = None,
            progress: bool = False, interrupted: Callable[[], bool] | None = None,
            host: Host | None = None, batch: int = 1,
            metadata: Callable[[Resolved], dict[str, str]] | None = None,
            release: bool = False) -> RunResult:
    """Run a resolved workflow.  ``batch`` > 1: nodes that declare a batch parameter and differ
    only in it (a sweep's seeds) run up to ``batch`` at a time in one model call; each still
    draws from its own seed, but the batched arithmetic differs in the last bits, so such runs
    are cached apart (see ``compute_keys``).  Default 1: bit-exact.

    ``metadata(run)``: the text chunks savers write into their files for a run (the caller's:
    the executor does not know what a host records; ``api.run_workflow`` gives ComfyUI's prompt
    and workflow plus our own); for a sweep's combined graph it is asked once per combination.
    None: no metadata (a ``host`` brings its own).

    ``release``: stage-wise residency, for one-shot runs: when the last node that uses a value
    has run, a value that holds model weights (one with ``release_weights``) lets go of them, so
    one stage's weights are resident at a time.  Off where models should stay for later runs
    (a session inside ComfyUI, Ray workers, a Python caller's loop)."""
    if rs.unbound:
        names = ", ".join(f"'{n}' ({rs.workflow.inputs[n].type})" for n in rs.unbound)
        raise UserError(f"cannot run: the socket input(s) {names} have no value; it is a preset "
                        "definition (use it as a node, or give values)", file=rs.workflow.file)
    foreign = [rn for rn in rs.nodes.values() if declare.is_foreign(rn.spec)]
    if foreign:
        names = ", ".join(f"'{rn.id}' ({rn.spec.type})" for rn in foreign[:4])
        more = f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        raise UserError(f"this workflow uses ComfyUI's own nodes ({names}{more}): it runs only "
                        "inside ComfyUI; open it there (`unclip export --comfy-ui`)",
                        **foreign[0].where(rs.workflow.file, "type"))
    check_device(device)
    cache = cache if cache is not None else Cache()
    interrupted = interrupted or (host.interrupted if host is not None else (lambda: False))
    t_start = time.perf_counter()
    written = rs
    targets = {n for n, _ in rs.outputs.values()}
    targets |= {nid for nid, rn in rs.nodes.items() if rn.spec.output_node}
    order = dag.order(rs.graph, dag.needed(rs.graph, targets))
    keys = compute_keys(rs.nodes, order, batched=batch > 1)
    records = {nid: NodeRecord(nid, rs.nodes[nid].spec.type, key=keys.get(nid))
               for nid in dag.order(rs.graph)}
    same = same_as(order, keys)
    if same:
        for nid, first in same.items():
            records[nid].status = SAME_AS + first
        rs = merged(rs, same)
        order = [nid for nid in order if nid not in same]
    values: dict[tuple[str, str], Any] = {}
    to_run = _plan(rs, order, keys, cache, values, records)
    groups = batch_groups(rs, to_run, batch) if batch > 1 else {}
    ordered = batch_order(rs, to_run, groups) if groups else None
    if ordered is None:
        groups = {}
    else:
        to_run = ordered
    grouped = {m for members in groups.values() for m in members[1:]}

    def finish(stopped: bool) -> RunResult:
        outs = {name: values[ref] for name, ref in rs.outputs.items() if ref in values}
        return RunResult(outs, list(records.values()), dict(rs.inputs),
                         time.perf_counter() - t_start, stopped)

    uses: dict[tuple[str, str], int] = {}
    for nid in to_run:
        for ref in rs.nodes[nid].links.values():
            uses[ref] = uses.get(ref, 0) + 1
    pinned = set(rs.outputs.values())
    metas: dict[int, dict] = {}

    def part_meta(part: Resolved) -> dict:
        if id(part) not in metas:
            metas[id(part)] = metadata(part) if metadata is not None else {}
        return metas[id(part)]

    current = [""]
    if host is None:
        host = Host(device=device, output_dir=Path(out_dir) if out_dir else Path.cwd() / "output",
                    metadata={} if rs.parts or metadata is None else metadata(written),
                    progress=lambda: _Bar(current[0], progress), interrupted=interrupted,
                    store=cache.constants())
    check_output_places(rs, to_run, Path(host.output_dir))
    bar = tqdm(total=len(to_run), desc="nodes", unit="node", file=sys.stderr, leave=False,
               disable=None if progress else True)
    try:
        base = runtime.workflow_folder(rs.workflow.file)  # for relative file parameters
        with runtime.use_host(host), runtime.use_base_dir(base):
            for nid in to_run:
                if interrupted():
                    raise Interrupted()
                current[0] = nid
                bar.set_postfix_str(nid)
                if nid in rs.parts and rs.nodes[nid].spec.output_node and metadata is not None:
                    host.metadata = part_meta(rs.parts[nid])  # a sweep: each file, its own run
                if nid in groups:
                    _run_group(rs, groups[nid], keys, cache, values, records)
                elif nid not in grouped:  # a batched node has run with its group's first
                    _run_node(rs, nid, keys, cache, values, records[nid])
                bar.update()
                for ref in rs.nodes[nid].links.values():
                    uses[ref] -= 1
                    if uses[ref] == 0 and ref not in pinned:
                        gone = values.pop(ref, None)
                        if release and callable(getattr(gone, "release_weights", None)):
                            gone.release_weights(list(values.values()))
    except (Interrupted, KeyboardInterrupt):
        raise RunInterrupted(finish(True)) from None
    finally:
        bar.close()
    return finish(False)


def sheet_prefix(file: str | None) -> str:
    """The saver prefix of a sweep's contact sheet: ``<workflow>_sweep``."""
    return f"{Path(file).stem if file else 'workflow'}_sweep"


def check_output_places(rs: Resolved, to_run: list[str], root: Path) -> None:
    """Before anything runs: raise every reason why the output folder or a saver's prefix
    cannot take files (a file in the way, read-only, a name too long), so that no work is lost
    at the end.  The output folder is checked only when something will write there: a saver
    runs, or a sweep with an IMAGE output writes its contact sheet.  Creates nothing."""
    from ..nodes.image import folder_problem, output_place_problem
    savers = [nid for nid in to_run if rs.nodes[nid].spec.prefix is not None
              and isinstance(rs.nodes[nid].params.get(rs.nodes[nid].spec.prefix), str)]
    sheet = bool(rs.parts) and any(rs.nodes[src].spec.output(out).type == "IMAGE"
                                   for src, out in rs.outputs.values())
    if not savers and not sheet:
        return
    why = folder_problem(root)
    if why:
        raise UserError(f"output folder {root} {why}; give another with --out (out_dir= from "
                        "Python)", field="out")
    errors = []
    if sheet:  # the contact sheet is written after every combination: its name is checked now
        why = output_place_problem(root, sheet_prefix(rs.workflow.file))
        if why:
            errors.append(UserError(f"cannot write the sweep's contact sheet: {why}; give the "
                                    "workflow file a shorter name", field="out"))
    for nid in savers:
        rn = rs.nodes[nid]
        name = rn.spec.prefix
        try:
            why = output_place_problem(root, rn.params[name])
        except UserError as e:  # a bad prefix: validation has said so already
            why = e.message
        if why:
            errors.append(rn.locate(UserError(
                f"cannot save {excerpt(rn.params[name])} there: {why}", field=name),
                rs.workflow.file))
    if errors:
        raise errors[0] if len(errors) == 1 else UserErrors(errors)


def same_as(order: list[str], keys: dict[str, str | None]) -> dict[str, str]:
    """Node id -> the earlier node (in run order) with the same cache key, for every node that
    has one: it would compute exactly that node's outputs again."""
    first: dict[str, str] = {}
    same: dict[str, str] = {}
    for nid in order:
        key = keys.get(nid)
        if key is None:
            continue
        if key in first:
            same[nid] = first[key]
        else:
            first[key] = nid
    return same


def merged(rs: Resolved, same: dict[str, str]) -> Resolved:
    """``rs`` without the nodes in ``same``: links and outputs go to the node standing for them."""
    nodes = {}
    for nid, rn in rs.nodes.items():
        if nid in same:
            continue
        links = {k: (same.get(src, src), out) for k, (src, out) in rn.links.items()}
        nodes[nid] = rn if links == rn.links else replace(rn, links=links)
    outputs = {k: (same.get(src, src), out) for k, (src, out) in rs.outputs.items()}
    edges = [(src, nid) for nid, rn in nodes.items() for src, _ in rn.links.values()]
    return replace(rs, nodes=nodes, outputs=outputs, graph=dag.build(nodes, edges))


def _plan(rs: Resolved, order: list[str], keys: dict, cache: Cache, values: dict,
          records: dict[str, NodeRecord]) -> list[str]:
    """Decide which nodes run; load the demanded outputs of the others from the cache."""
    demand: dict[str, set[str]] = {nid: set() for nid in order}
    for nid, out in rs.outputs.values():
        demand[nid].add(out)
    run: list[str] = []
    for nid in reversed(order):
        rn, rec = rs.nodes[nid], records[nid]
        wanted = demand[nid] | ({o.name for o in rn.spec.outputs} if rn.spec.output_node else set())
        if not wanted and not rn.spec.output_node:
            continue  # NOT_NEEDED
        if wanted and keys[nid] is not None:
            t0, tiers, found = time.perf_counter(), set(), {}
            for out in sorted(wanted):
                stype = SOCKET_TYPES[rn.spec.output(out).type]
                value, tier = cache.get(output_key(keys[nid], out), stype,
                                        disk=rn.spec.disk_cache)
                if value is MISS:
                    break
                found[(nid, out)] = value
                tiers.add(tier)
            else:
                values.update(found)
                rec.status = DISK_HIT if "disk" in tiers else MEMORY_HIT
                rec.seconds = time.perf_counter() - t0
                continue
        run.append(nid)
        rec.status = NOT_RUN
        for src, out in rn.links.values():
            demand[src].add(out)
    return run[::-1]


def _run_node(rs: Resolved, nid: str, keys: dict, cache: Cache, values: dict,
              rec: NodeRecord) -> None:
    rn = rs.nodes[nid]
    linked = {name: values[ref] for name, ref in rn.links.items()}
    kwargs = {s.name: None for s in rn.spec.inputs} | linked | rn.params
    before = {name: versions(v) for name, v in linked.items()}
    rec.status = INTERRUPTED
    t0 = time.perf_counter()
    try:
        with runtime.account() as acct:
            result = rn.spec.call(**kwargs)
        rec.load_seconds = acct.get("load", 0.0)
    except UserError as e:
        raise rn.locate(e, rs.workflow.file) from e
    except OSError as e:
        if not rn.spec.output_node:
            raise
        raise rn.locate(write_error(e, rn), rs.workflow.file) from None
    finally:
        rec.seconds = time.perf_counter() - t0
    changed = [name for name, v in linked.items() if versions(v) != before[name]]
    if changed:
        for name in changed:  # the shared value is spoiled: never serve it again
            src, out = rn.links[name]
            if keys[src] is not None:
                cache.memory.drop(output_key(keys[src], out))
        raise RuntimeError(f"node '{nid}' ({rn.spec.type}) changed its input(s) "
                           f"{', '.join(changed)} in place; node functions must not mutate "
                           "their inputs (cached values are shared)")
    rec.status = RAN
    key = keys[nid]
    for out, value in zip(rn.spec.outputs, result):
        values[(nid, out.name)] = value
        if key is not None:
            cache.put(output_key(key, out.name), SOCKET_TYPES[out.type], value,
                      disk=rn.spec.disk_cache)
        if out.name == rn.spec.files and isinstance(value, str):
            rec.files += [line for line in value.splitlines() if line.strip()]


def write_error(e: OSError, rn) -> UserError:
    """A saver's failed write (disk full, permissions taken away mid-run) as a UserError naming
    the file; what ran before it is cached already."""
    what = f"cannot write {e.filename}" if e.filename else "cannot write its files"
    return UserError(f"{what}: {e.strerror or e}", field=rn.spec.prefix)


def batch_groups(rs: Resolved, to_run: list[str], size: int) -> dict[str, list[str]]:
    """First node id -> the ids run with it in one call: nodes whose type declares a batch
    parameter and that share the type, the model handles they are linked to and every other
    parameter, at most ``size`` together.  Their other inputs may differ (each member's own
    embeddings, images).  A group whose members depend on one another is not formed."""
    by_sig: dict[str, list[str]] = {}
    for nid in to_run:
        rn = rs.nodes[nid]
        if not rn.spec.batch:
            continue
        others = {k: v for k, v in rn.params.items() if k != rn.spec.batch}
        handles = {k: v for k, v in rn.links.items()
                   if not SOCKET_TYPES[rn.spec.input(k).type].storable}
        sig = json.dumps([rn.spec.type, sorted(rn.links), sorted(handles.items()), others],
                         sort_keys=True, default=str)
        by_sig.setdefault(sig, []).append(nid)
    groups = {}
    for members in by_sig.values():
        for i in range(0, len(members), size):
            chunk = members[i:i + size]
            if len(chunk) > 1 and not any(nx.has_path(rs.graph, a, b) for a in chunk
                                          for b in chunk if a != b):
                groups[chunk[0]] = chunk
    return groups


def batch_order(rs: Resolved, to_run: list[str], groups: dict[str, list[str]]) -> list[str]:
    """``to_run`` reordered so that each group's members come together, after everything any
    of them needs; None when the groups cannot be ordered so (then run without them)."""
    leader = {m: first for first, members in groups.items() for m in members}
    g = nx.DiGraph()
    g.add_nodes_from(leader.get(n, n) for n in to_run)
    wanted = set(to_run)
    for nid in to_run:
        for src, _ in rs.nodes[nid].links.values():
            if src in wanted and leader.get(src, src) != leader.get(nid, nid):
                g.add_edge(leader.get(src, src), leader.get(nid, nid))
    try:
        order = list(nx.lexicographical_topological_sort(
            g, key=lambda n: to_run.index(n)))
    except nx.NetworkXUnfeasible:
        return None
    return [m for n in order for m in groups.get(n, [n])]


def _run_group(rs: Resolved, members: list[str], keys: dict, cache: Cache, values: dict,
               records: dict[str, NodeRecord]) -> None:
    """One call for ``members``: the batch parameter as a tuple of their values, and each input
    that differs between them as a tuple of their values (identical ones as they are)."""
    first = rs.nodes[members[0]]
    spec = first.spec
    linked = {}
    for name in first.links:
        refs = [rs.nodes[m].links[name] for m in members]
        linked[name] = values[refs[0]] if len(set(refs)) == 1 else tuple(values[r] for r in refs)
    kwargs = {s.name: None for s in spec.inputs} | linked | {
        k: v for k, v in first.params.items() if k != spec.batch}
    for nid in members:
        records[nid].status = INTERRUPTED
    t0 = time.perf_counter()
    try:
        results = spec.call_batch([rs.nodes[n].params[spec.batch] for n in members], **kwargs)
    except UserError as e:
        raise first.locate(e, rs.workflow.file) from e
    seconds = time.perf_counter() - t0
    for nid, result in zip(members, results):
        rec = records[nid]
        rec.status, rec.seconds = RAN, seconds / len(members)
        rec.batched = len(members)
        key = keys[nid]
        for out, value in zip(spec.outputs, result):
            values[(nid, out.name)] = value
            if key is not None:
                cache.put(output_key(key, out.name), SOCKET_TYPES[out.type], value,
                          disk=spec.disk_cache)


class _Bar(Progress):
    """tqdm bar for runtime.steps loops inside a node."""

    def __init__(self, node: str, enabled: bool):
        self.node, self.enabled, self.bar = node, enabled, None

    def start(self, total: int, desc: str) -> None:
        self.bar = tqdm(total=total, desc=f"{self.node}: {desc}" if desc else self.node,
                        unit="step", leave=False, file=sys.stderr, position=1,
                        disable=None if self.enabled else True)

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe(value: Any) -> Any:
    """A short JSON-able account of an output value (for reports)."""
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return type(value).__name__


def write_report(result: RunResult, path: str | Path) -> None:
    path = Path(path)
    text = json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n"
    try:
        write_output(path, text.encode())
    except OSError as e:
        raise UserError(f"--report {path}: cannot write it ({e.strerror or e})",
                        field="report") from None
