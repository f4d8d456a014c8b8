"""Sweeps on a Ray cluster: ``unclip run WF --sweep ... --ray [auto|ADDRESS]``.

We do not schedule anything ourselves beyond choosing which worker gets which combination: Ray
starts the workers (actors), places them on machines with the CPUs and GPUs asked for, and
restarts one that dies.  What stays ours is what makes a local sweep good:

* **Validation first, on the driver.**  ``plan_sweep`` checks every combination exactly as a
  local sweep does before any worker starts.
* **Shared work once per worker.**  Each worker holds the plan, the model manager and a memory
  cache across the combinations it runs, so models load once per worker.  Combinations that
  share upstream work (one prompt's text embedding and prior under many seeds) are given to the
  same worker where the load allows, so that work runs once there.
* **Same results.**  A worker runs a combination's own part of the combined graph
  (``SweepPlan.combination_graph``) with the ordinary executor, so its images are bit-identical
  to a local run of that combination on the same device -- on the CPU, with the same number of
  torch threads (workers use ``--cpus-per-worker`` threads, default 1).
* **Files written by the driver only.**  A worker saves into a private staging folder and sends
  the files back; the driver gives them the names a local sweep would (``<prefix>_<tag>_00001_.png``)
  and moves each complete file into place with one rename, so no half-written file ever appears
  in the output folder, and no worker needs to see it.
* **A journal makes the sweep resumable.**  ``OUT/.unclip-sweep/<plan id>/journal.jsonl``
  records each combination's file names before they are moved into place and again once they
  are; the contact-sheet cell is kept beside it.  The same command started again skips what is
  done and writes an interrupted combination's files under the names it had reserved, so nothing
  is written twice.  The folder is removed when the sweep completes.

Ray is an optional dependency (``pip install 'unclip-nodes[ray]'``): this module imports it only
when a sweep runs on it.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..nodes.errors import UserError, UserErrors
from .cache import Cache, MemoryTier, canonical, compute_keys, write_atomic
from . import dag
from .run import NodeRecord, RunInterrupted, RunResult, check_output_places, write_report
from .sweep import SweepPlan, cell_frames, describe, write_contact_sheet

STATE_DIR = ".unclip-sweep"
_NUMBERED = re.compile(r"(?P<stem>.+)_(?P<n>\d+)_\.(?P<ext>[A-Za-z0-9]+)\Z")  # write_outputs' names


@dataclass
class RayOptions:
    """How to reach the cluster and what each worker gets."""

    address: str = "auto"
    """"auto": the cluster this machine belongs to (``ray start``, RAY_ADDRESS), else a Ray
    instance started here; "local": always one started here; else a cluster's address."""
    workers: int | None = None
    """None: as many as the cluster's CPUs (or GPUs, with ``gpus_per_worker``) allow, at most
    one per combination."""
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    retries: int = 3
    """How often a combination is tried again after its worker died (and how often Ray restarts
    a dead worker)."""
    memory_cache_bytes: int = 1 << 30
    """Each worker's memory cache (models, embeddings) kept across combinations."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray: pip install 'unclip-nodes[ray]' (or pip install ray)",
                        field="ray") from None
    return ray


def connect(options: RayOptions) -> str:
    """Join or start Ray (unless this process has already); returns the cluster's address."""
    ray = import_ray()
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "include_dashboard": False,
                 "configure_logging": True, "logging_level": "warning"}
        address = options.address
        if address == "auto":
            try:
                ray.init(address="auto", **quiet)
            except (ConnectionError, RuntimeError, ValueError):
                print("ray: no running cluster found; starting one on this machine",
                      file=sys.stderr)
                ray.init(**quiet)
        elif address == "local":
            ray.init(**quiet)
        else:
            why = _unreachable(address)
            if why:
                raise UserError(f"--ray {address}: no Ray cluster answers there ({why}); start "
                                "one with `ray start --head` or give its address as host:port",
                                field="ray")
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"--ray {address}: cannot connect to a Ray cluster there ({e})",
                                field="ray") from None
    return ray.get_runtime_context().gcs_address


def _unreachable(address: str, timeout: float = 3.0) -> str | None:
    """Why nothing listens at ``host:port`` (``ray://host:port`` too), or None.  Ray itself
    would retry for minutes before saying so."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        host, port = rest, "6379"
    try:
        port_number = int(port)
        if not 0 < port_number < 65536:
            return f"port {port_number} is out of range"
        conn = socket.create_connection((host, port_number), timeout=timeout)
    except (OSError, ValueError, OverflowError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__
    with conn:
        return _silent(conn, timeout)


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
"""What an HTTP/2 (gRPC) client sends first: the preface and an empty SETTINGS frame."""


def _silent(conn: socket.socket, timeout: float) -> str | None:
    """Why what listens is not a Ray endpoint, or None: Ray's GCS and its client server speak
    gRPC, whose server answers a client's HTTP/2 preface with a SETTINGS frame at once.  A
    listener that says nothing would keep ``ray.init`` waiting for minutes."""
    try:
        conn.settimeout(timeout)
        conn.sendall(HTTP2_PREFACE)
        head = conn.recv(9)
    except socket.timeout:
        return f"something listens there but does not answer within {timeout:g} s"
    except OSError as e:
        return f"the connection failed ({e.strerror or e})"
    if len(head) < 4:
        return "something listens there but closed the connection without an answer"
    if head[3] != 4:  # frame type 4: SETTINGS
        return "something listens there, but it does not speak gRPC as Ray does"
    return None


def worker_count(options: RayOptions, combinations: int) -> int:
    ray = import_ray()
    if options.workers is not None:
        if options.workers < 1:
            raise UserError(f"--workers {options.workers}: give 1 or more", field="workers")
        return min(options.workers, combinations)
    have = ray.cluster_resources()
    if options.gpus_per_worker > 0:
        fit = int(have.get("GPU", 0) // options.gpus_per_worker)
    else:
        fit = int(have.get("CPU", 1) // max(options.cpus_per_worker, 1e-9))
    if fit < 1:
        raise UserError(f"the Ray cluster has {have.get('CPU', 0):g} CPUs and "
                        f"{have.get('GPU', 0):g} GPUs: not enough for one worker with "
                        f"{options.cpus_per_worker:g} CPUs and {options.gpus_per_worker:g} GPUs",
                        field="workers")
    return max(1, min(fit, combinations))


# --- which worker gets what ---------------------------------------------------------------------

def affinity_groups(plan: SweepPlan) -> list[list[int]]:
    """Combinations that share computed work (a node some but not all of them use: one prompt's
    embedding under many seeds), as groups in plan order.  Work that every combination shares
    (the model) ties nobody: each worker needs it anyway."""
    n = len(plan.combinations)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    keys = compute_keys(plan.resolved.nodes, dag.order(plan.resolved.graph))
    for ci, ids in enumerate(plan.members):
        for mid in ids:
            if keys.get(mid) is None or plan.shared.get(mid, 1) in (1, n):
                continue
            if mid in first:
                parent[root(ci)] = root(first[mid])
            else:
                first[mid] = ci
    groups: dict[int, list[int]] = {}
    for ci in range(n):
        groups.setdefault(root(ci), []).append(ci)
    return list(groups.values())


def assign(groups: list[list[int]], workers: int) -> list[collections.deque]:
    """A queue of combinations per worker: whole groups where the load allows (a group bigger
    than a fair share is cut into fair shares), biggest first onto the least loaded worker."""
    total = sum(len(g) for g in groups)
    share = max(1, -(-total // workers))
    pieces = [g[i:i + share] for g in groups for i in range(0, len(g), share)]
    queues = [collections.deque() for _ in range(workers)]
    for piece in sorted(pieces, key=len, reverse=True):  # stable: plan order among equals
        min(queues, key=len).extend(piece)
    return queues


# --- the worker ---------------------------------------------------------------------------------

@dataclass
class WorkerConfig:
    device: str
    cache_dir: str | None        # None: memory only (--no-cache)
    cache_max_bytes: int | None
    memory_bytes: int
    threads: int
    budgets: dict[str, int] = field(default_factory=dict)
    compile: bool = False


class Worker:
    """One Ray actor: runs combinations of one plan, keeping models and shared results."""

    def __init__(self, name: str, config: WorkerConfig):
        torch.set_num_threads(config.threads)
        from ..nodes import runtime
        from ..nodes.core.manager import MANAGER
        if config.budgets:
            MANAGER.set_budgets(**config.budgets)
        runtime.OPTIONS.compile = config.compile
        self.name, self.config, self.plan = name, config, None
        memory = MemoryTier(config.memory_bytes)
        self.cache = (Cache(config.cache_dir, memory=memory, max_bytes=config.cache_max_bytes)
                      if config.cache_dir else Cache(disk=False, memory=memory))

    def where(self) -> dict:
        return {"worker": self.name, "host": socket.gethostname(), "pid": os.getpid()}

    def run(self, plan_box: list, index: int) -> dict:
        """Run one combination; return its files (bytes), contact-sheet cell, node records and
        described outputs, or the user error it ran into.  ``plan_box``: [the plan's object
        reference], fetched once per worker (a restarted worker fetches it again)."""
        from .comfy import png_metadata
        from .run import describe as describe_value, execute
        if self.plan is None:
            import ray
            self.plan = ray.get(plan_box[0])
        plan = self.plan
        combo = plan.combinations[index]
        part = plan.combination_graph(index)
        with tempfile.TemporaryDirectory(prefix="unclip-ray-") as stage:
            try:
                result = execute(part, out_dir=stage, device=self.config.device,
                                 cache=self.cache, metadata=png_metadata)
            except UserError as e:
                return {"errors": [{k: getattr(err, k) for k in
                                    ("message", "file", "line", "column", "node", "field")}
                                   for err in getattr(e, "errors", [e])]}
            root = Path(stage)
            files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                           if p.is_file())
            staged = [(rel, (root / rel).read_bytes()) for rel in files]
            real = {str((root / rel).resolve()): rel for rel in files}
            records = [dict(asdict(r), files=[real.get(str(Path(f).resolve()), f)
                                              for f in r.files])
                       for r in result.report if r.node in part.nodes]
        frames = []
        if plan.grid_output is not None:
            img = result.outputs.get(plan.output_name(combo, plan.grid_output))
            frames = [np_array(f) for f in cell_frames(img)]
        return {"files": staged, "cell": frames, "images": max(1, len(frames)),
                "records": records, "where": self.where(),
                "outputs": {k: describe_value(v) for k, v in result.outputs.items()}}


def np_array(picture):
    import numpy as np
    return np.asarray(picture, dtype=np.uint8)


# --- the driver ---------------------------------------------------------------------------------

@dataclass
class ClusterResult:
    plan: SweepPlan
    result: RunResult
    grid: Path | None
    workers: dict[str, str]      # combination tag -> the worker that ran it
    resumed: int                 # combinations found complete from an earlier run

    def outputs(self, combo) -> dict[str, Any]:
        pre = combo.tag + "/"
        return {k[len(pre):]: v for k, v in self.result.outputs.items() if k.startswith(pre)}


def plan_id(plan: SweepPlan) -> str:
    """Names a sweep's journal: the same command on the same inputs and models, the same id."""
    rs = plan.resolved
    keys = compute_keys(rs.nodes, dag.order(rs.graph))
    savers = {mid: rn.params for mid, rn in rs.nodes.items() if rn.spec.output_node}
    material = {"keys": sorted(k for k in keys.values() if k), "savers": savers,
                "combinations": [c.tag for c in plan.combinations], "zip": plan.zip}
    return hashlib.sha256(canonical(material)).hexdigest()[:16]


def safe_name(name: Any) -> bool:
    """A file name a journal may hold: relative, normalised, inside the output folder (no
    '..', no absolute path, no empty or '.' part), numbered as a saver numbers its files."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    return (not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)
            and _NUMBERED.match(parts[-1]) is not None)


def _entry_problem(entry: Any, tags: set[str] | None) -> str | None:
    """Why a journal line is not one this sweep's driver writes, or None.  A journal is read
    back from the output folder, which anyone may have edited: its names decide where files
    go, so only names of the right shape, for combinations of this plan, are believed."""
    if not isinstance(entry, dict):
        return "not an object"
    tag, state = entry.get("tag"), entry.get("state")
    if not isinstance(tag, str) or (tags is not None and tag not in tags):
        return "not a combination of this sweep"
    if state not in ("writing", "done"):
        return "an unknown state"
    files = entry.get("files")
    if not isinstance(files, list) or not all(safe_name(f) for f in files):
        return "file names outside the output folder, or not a saver's"
    if state == "done":
        cell = entry.get("cell")
        if cell is not None and (not isinstance(cell, str)
                                 or not re.fullmatch(r"cell-\d+\.png", cell)):
            return "a contact-sheet cell of another name"
        records = entry.get("records", [])
        if not isinstance(records, list) or not all(_record_ok(r) for r in records):
            return "node records of another shape"
        outputs = entry.get("outputs", {})
        if not isinstance(outputs, dict) or not all(_described_ok(v) for v in outputs.values()) \
                or not isinstance(entry.get("worker", ""), str):
            return "outputs of another shape"
    return None


def _record_ok(r: Any) -> bool:
    from dataclasses import fields
    names = {f.name for f in fields(NodeRecord)}
    return (isinstance(r, dict) and set(r) <= names and isinstance(r.get("node"), str)
            and isinstance(r.get("type"), str) and isinstance(r.get("status", ""), str)
            and isinstance(r.get("files", []), list)
            and all(isinstance(f, str) for f in r.get("files", [])))


def _described_ok(d: Any) -> bool:
    """A described output (``run.describe``) that ``_outputs_back`` can turn into a meta tensor."""
    if not (isinstance(d, dict) and "tensor" in d):
        return True
    shape = d["tensor"]
    return (isinstance(shape, list) and len(shape) <= 8
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 40
                    for n in shape)
            and isinstance(d.get("dtype"), str)
            and isinstance(getattr(torch, d["dtype"], None), torch.dtype))


class Journal:
    """What a sweep has written so far, one JSON line per event, flushed to disk each time.
    ``tags``: the plan's combinations; lines about others, or of another shape, are ignored
    (and said so), as is the last line of a driver killed while writing it."""

    def __init__(self, out_dir: Path, pid: str, tags: set[str] | None = None):
        self.dir = out_dir / STATE_DIR / pid
        self.path = self.dir / "journal.jsonl"
        self.tmp = self.dir / "tmp"
        self.done: dict[str, dict] = {}
        self.reserved: dict[str, list[str]] = {}
        self.ignored: list[str] = []
        if self.path.is_file():
            try:
                text = self.path.read_text(encoding="utf-8", errors="replace")
            except OSError as e:
                raise UserError(f"cannot read the sweep journal {self.path}: "
                                f"{e.strerror or e}", field="out") from None
            for n, line in enumerate(text.splitlines(), 1):
                try:
                    entry = json.loads(line)
                except (ValueError, RecursionError):  # a killed driver's last line
                    continue
                why = _entry_problem(entry, tags)
                if why:
                    self.ignored.append(f"line {n}: {why}")
                elif entry["state"] == "done":
                    self.done[entry["tag"]] = entry
                else:
                    self.reserved[entry["tag"]] = entry["files"]
        if self.ignored:
            print(f"warning: {self.path}: ignored {len(self.ignored)} line(s) that this sweep "
                  f"did not write ({self.ignored[0]}); their combinations run again",
                  file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)  # partial files of a killed driver

    def append(self, entry: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if entry["state"] == "done":
            self.done[entry["tag"]] = entry

    def complete(self, out_dir: Path, tag: str, cell: bool = False) -> bool:
        """Done, its files all still there, and with ``cell`` its contact-sheet cell a PNG
        that reads back.  Not complete: it runs again, under the names it had."""
        entry = self.done.get(tag)
        if entry is None:
            return False
        ok = all((out_dir / f).is_file() for f in entry["files"])
        if ok and cell and entry.get("cell"):
            ok = _readable_png(self.dir / entry["cell"])
        if not ok:
            del self.done[tag]
            self.reserved[tag] = entry["files"]
        return ok

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            self.dir.parent.rmdir()  # .unclip-sweep, when no other sweep is under way here
        except OSError:
            pass


class _Numbers:
    """The next free number per file stem, as ``write_outputs`` numbers a local run's files
    (``stem_00001_.png``), from one listing per folder: asking the file system for every file
    would make a sweep of N images cost N listings of a folder of up to N files.  The output
    folder is the driver's alone while the sweep runs."""

    def __init__(self):
        self.used: dict[Path, dict[str, int]] = {}

    def next(self, folder: Path, stem: str) -> int:
        if folder not in self.used:
            used: dict[str, int] = {}
            names = os.listdir(folder) if folder.is_dir() else []
            for name in names:
                m = _NUMBERED.match(name)
                if m:
                    used[m["stem"]] = max(used.get(m["stem"], 0), int(m["n"]))
            self.used[folder] = used
        number = self.used[folder].get(stem, 0) + 1
        self.used[folder][stem] = number
        return number


def _readable_png(path: Path) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 -- damaged, truncated, missing: not a cell to use
        return False


def _same_saver_file(reserved: str, staged: str) -> bool:
    """Whether a reserved name is ``staged`` renumbered: the same folder, stem and extension
    (so a journal cannot send a file anywhere the plan's own saver would not)."""
    if not safe_name(reserved):
        return False
    r_sub, _, r_name = reserved.rpartition("/")
    s_sub, _, s_name = staged.rpartition("/")
    r, s = _NUMBERED.match(r_name), _NUMBERED.match(s_name)
    return bool(r and s and r_sub == s_sub and r["stem"] == s["stem"] and r["ext"] == s["ext"])


def _targets(out_dir: Path, staged: list[str], reserved: list[str] | None,
             numbers: _Numbers) -> list[str]:
    """Final names for a combination's staged files: those reserved by an earlier, interrupted
    driver when they are the staged files renumbered, else the next free numbers."""
    if reserved is not None and len(reserved) == len(staged) and all(
            _same_saver_file(r, s) for r, s in zip(reserved, staged)):
        return reserved
    names = []
    for rel in staged:
        sub, _, name = rel.rpartition("/")
        m = _NUMBERED.match(name)
        if not m:
            names.append(rel)
            continue
        number = numbers.next(out_dir / sub if sub else out_dir, m["stem"])
        names.append(f"{sub + '/' if sub else ''}{m['stem']}_{number:05d}_.{m['ext']}")
    return names


def run_on_ray(plan: SweepPlan, *, out_dir: str | Path, options: RayOptions | None = None,
               device: str = "auto", cache_dir: str | Path | None = None,
               cache_max_bytes: int | None = None, progress: bool = False, interrupted: Callable[[], bool] | None = None,
               report: str | Path | None = None, budgets: dict[str, int] | None = None,
               on_result: Callable[[str, dict], None] | None = None) -> ClusterResult:
    """Run ``plan``'s combinations on Ray workers; write files, contact sheet and report as a
    local sweep does.  ``cache_dir``: the disk cache folder every worker uses (the same path on
    each machine; shared storage lets them share entries), None for memory only;
    ``cache_max_bytes``: its budget (None: the default).
    ``on_result(tag, worker)``: called as each combination's files are in place.
    Raises UserError(s), RunInterrupted (what finished is kept; run again to resume)."""
    options = options or RayOptions()
    interrupted = interrupted or (lambda: False)
    out = Path(out_dir).absolute()
    check_output_places(plan.resolved, list(plan.resolved.nodes), out)
    worker_device = _worker_device(device, options)
    ray = import_ray()
    address = connect(options)
    t0 = time.perf_counter()
    journal = Journal(out, plan_id(plan), {c.tag for c in plan.combinations})
    cells = plan.grid_output is not None
    todo = [i for i, c in enumerate(plan.combinations)
            if not journal.complete(out, c.tag, cell=cells)]
    resumed = len(plan.combinations) - len(todo)
    state = _Driver(plan, out, journal)
    waiting = set(todo)
    for i, c in enumerate(plan.combinations):
        if i not in waiting:
            state.adopt(i, journal.done[c.tag])
    bar = _bar(len(plan.combinations), resumed, progress)
    stopped = False
    actors = []
    try:
        if todo:
            n = worker_count(options, len(todo))
            config = WorkerConfig(device=worker_device, cache_max_bytes=cache_max_bytes,
                                  cache_dir=str(cache_dir) if cache_dir else None,
                                  memory_bytes=options.memory_cache_bytes,
                                  threads=max(1, int(options.cpus_per_worker)),
                                  budgets=dict(budgets or {}), compile=_compiling())
            remote = ray.remote(num_cpus=options.cpus_per_worker,
                                num_gpus=options.gpus_per_worker,
                                max_restarts=options.retries, max_task_retries=0)(Worker)
            plan_box = [ray.put(plan)]  # in a list: the workers fetch it, not the constructor
            actors = [remote.remote(f"worker-{k}", config) for k in range(n)]
            groups = affinity_groups(_only(plan, todo))
            queues = assign([[todo[i] for i in g] for g in groups], n)
            stopped = _drive(ray, actors, plan_box, queues, state, options, bar, interrupted,
                             on_result)
    except KeyboardInterrupt:
        stopped = True
    finally:
        bar.close()
        for a in actors:
            ray.kill(a, no_restart=True)
    result = state.result(time.perf_counter() - t0, stopped, address, resumed)
    if stopped:
        result.extra["sweep"] = describe(plan, None)
        if report:
            write_report(result, report)
        raise RunInterrupted(result)
    grid = write_contact_sheet(plan, state.cells(), out) if plan.grid_output else None
    result.extra["sweep"] = describe(plan, grid)
    if report:
        write_report(result, report)
    journal.remove()
    return ClusterResult(plan, result, grid, dict(state.workers), resumed)


def _worker_device(device: str, options: RayOptions) -> str:
    """What a worker runs on: its GPU when it takes one, else the CPU (a worker without a GPU
    share must not use a GPU that Ray gave to another)."""
    gpu = options.gpus_per_worker > 0
    if device == "auto":
        return "cuda" if gpu else "cpu"
    if device.startswith("cuda") and not gpu:
        raise UserError(f"--device {device} with --ray: give the workers GPUs with "
                        "--gpus-per-worker (1, or 0.5 for two workers per GPU)", field="device")
    if device.startswith("cuda:"):
        raise UserError(f"--device {device}: with --ray each worker gets its GPUs from Ray; "
                        "say --device cuda", field="device")
    return device


def _compiling() -> bool:
    from ..nodes import runtime
    return runtime.OPTIONS.compile


def _only(plan: SweepPlan, todo: list[int]) -> SweepPlan:
    """The plan seen through the combinations still to run (for grouping them)."""
    from dataclasses import replace
    keep = set(todo)
    members = [plan.members[i] for i in todo]
    shared: dict[str, int] = collections.Counter(m for ids in members for m in ids)
    return replace(plan, combinations=[c for i, c in enumerate(plan.combinations) if i in keep],
                   members=members, shared=dict(shared))


def _bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=done, desc="combinations", unit="comb", file=sys.stderr,
                disable=None if enabled else True, dynamic_ncols=True,
                bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}"
                           "{postfix}")


def _drive(ray, actors, plan_box, queues, state: "_Driver", options: RayOptions, bar,
           interrupted, on_result) -> bool:
    """Keep every worker busy with two combinations (one running, one waiting, so that no
    worker idles on the driver), write each result as it comes, move work from a dead worker
    to the others.  Returns True when stopped by ``interrupted``."""
    in_flight: dict[Any, tuple[int, int, int]] = {}  # ObjectRef -> (worker, combination, life)
    attempts: collections.Counter = collections.Counter()  # deaths per combination
    deaths: collections.Counter = collections.Counter()    # per worker
    life: collections.Counter = collections.Counter()      # a worker's calls since its last death
    alive = set(range(len(actors)))
    images, t_start = 0, time.perf_counter()

    def refill(w: int) -> None:
        while sum(1 for ww, _, _ in in_flight.values() if ww == w) < 2:
            if not queues[w]:  # steal from the tail of the longest queue
                donor = max((q for k, q in enumerate(queues) if k in alive), key=len,
                            default=None)
                if donor is None or len(donor) < 2:
                    return
                queues[w].append(donor.pop())
            ci = queues[w].popleft()
            in_flight[actors[w].run.remote(plan_box, ci)] = (w, ci, life[w])

    for w in alive:
        refill(w)
    while in_flight:
        if interrupted():
            return True
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.2)
        if not ready:
            continue
        ref = ready[0]
        w, ci, lived = in_flight.pop(ref)
        try:
            out = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError):
            attempts[ci] += 1
            tag = state.plan.combinations[ci].tag
            if attempts[ci] > options.retries:
                raise UserError(f"combination {tag}: its worker died {attempts[ci]} times "
                                "(out of memory?); what finished is kept, the same command "
                                "resumes", field="ray") from None
            print(f"ray: worker-{w} died while running {tag}; it goes to another worker",
                  file=sys.stderr)
            if lived == life[w]:  # its first failed call since it (re)started: one death
                deaths[w] += 1
                life[w] += 1
            if deaths[w] > options.retries:  # Ray has stopped restarting it too
                alive.discard(w)
                if not alive:
                    raise UserError("every Ray worker died; what finished is kept, the same "
                                    "command resumes", field="ray") from None
                while queues[w]:
                    _least(queues, alive).append(queues[w].popleft())
            others = [k for k in alive if k != w] or list(alive)
            queues[min(others, key=lambda k: len(queues[k]))].appendleft(ci)
            for k in alive:
                refill(k)
            continue
        if "errors" in out:
            raise _user_error(out["errors"])
        state.write(ci, out)
        images += out["images"]
        bar.update()
        rate = images / max(time.perf_counter() - t_start, 1e-9)
        bar.set_postfix_str(f"{rate:.2f} images/s", refresh=True)
        if on_result is not None:
            on_result(state.plan.combinations[ci].tag, out["where"])
        if w in alive:
            refill(w)
    return False


def _least(queues, alive):
    return queues[min(alive, key=lambda k: len(queues[k]))] if alive else collections.deque()


def _user_error(errors: list[dict]) -> UserError:
    errs = [UserError(e.pop("message"), **e) for e in errors]
    return errs[0] if len(errs) == 1 else UserErrors(errs)


class _Driver:
    """The driver's side of the results: files into place, journal, cells, records."""

    def __init__(self, plan: SweepPlan, out: Path, journal: Journal):
        self.plan, self.out, self.journal = plan, out, journal
        self.records: dict[str, NodeRecord] = {}
        self.outputs: dict[str, Any] = {}
        self.workers: dict[str, str] = {}
        self.numbers = _Numbers()
        self.cell_files: dict[int, str | None] = {}

    def adopt(self, ci: int, entry: dict) -> None:
        """A combination completed by an earlier driver."""
        self.cell_files[ci] = entry.get("cell") if entry.get("cell") == f"cell-{ci}.png" \
            else None
        self.workers[entry["tag"]] = entry.get("worker", "")
        self._merge_records(entry.get("records", []), entry.get("worker", ""))
        self.outputs.update(_outputs_back(entry.get("outputs", {})))

    def write(self, ci: int, out: dict) -> None:
        combo = self.plan.combinations[ci]
        staged = [rel for rel, _ in out["files"]]
        targets = _targets(self.out, staged, self.journal.reserved.get(combo.tag),
                           self.numbers)
        self.journal.append({"tag": combo.tag, "state": "writing", "files": targets})
        self.journal.tmp.mkdir(parents=True, exist_ok=True)
        from ..nodes import runtime
        for (rel, data), target in zip(out["files"], targets):
            path = self.out / target
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.journal.tmp, prefix="file-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, runtime.normal_mode())
                os.replace(tmp, path)
            except OSError as e:
                Path(tmp).unlink(missing_ok=True)
                raise UserError(f"cannot write {path}: {e.strerror or e}", field="out") from None
        cell = None
        if out["cell"]:
            cell = f"cell-{ci}.png"
            _save_cell(out["cell"], self.journal.dir / cell)
        renamed = dict(zip(staged, targets))
        records = [dict(r, files=[str(self.out / renamed.get(f, f)) for f in r["files"]])
                   for r in out["records"]]
        worker = out["where"]["worker"]
        self.journal.append({"tag": combo.tag, "state": "done", "files": targets, "cell": cell,
                             "worker": worker, "records": records,
                             "outputs": out["outputs"]})
        self.adopt(ci, self.journal.done[combo.tag])

    def _merge_records(self, records: list[dict], worker: str) -> None:
        for r in records:
            rec = NodeRecord(**r)
            have = self.records.get(rec.node)
            if have is None or (have.status != "ran" and rec.status == "ran"):
                self.records[rec.node] = rec
            elif rec.files:
                have.files += [f for f in rec.files if f not in have.files]

    def cells(self) -> list[tuple[str, list]]:
        from PIL import Image
        cells = []
        for ci, c in enumerate(self.plan.combinations):
            name = self.cell_files.get(ci)
            if not name:
                continue
            try:
                with Image.open(self.journal.dir / name) as im:
                    strip = im.convert("RGB")
                    count = int(im.info.get("frames", "1"))
                if not 0 < count <= strip.width:
                    raise ValueError(f"says it holds {count} pictures")
            except Exception as e:  # noqa: BLE001 -- damaged since: the sheet goes without it
                print(f"warning: the contact-sheet cell of {c.tag} cannot be read ({e}); the "
                      "sheet leaves it out", file=sys.stderr)
                continue
            width = strip.width // count
            cells.append((c.tag, [strip.crop((k * width, 0, (k + 1) * width, strip.height))
                                  for k in range(count)]))
        return cells

    def result(self, seconds: float, stopped: bool, address: str, resumed: int) -> RunResult:
        order = list(self.plan.resolved.nodes)
        report = [self.records.get(mid) or NodeRecord(mid, self.plan.resolved.nodes[mid].spec.type,
                                                      status="not run" if stopped else
                                                      "not needed")
                  for mid in order]
        result = RunResult(self.outputs, report, dict(self.plan.resolved.inputs), seconds,
                           stopped)
        result.extra["ray"] = {"address": address, "resumed": resumed,
                               "workers": dict(self.workers)}
        return result


def _save_cell(frames: list, path: Path) -> None:
    """The cell's pictures side by side in one lossless PNG (their count in its text)."""
    from PIL import Image, PngImagePlugin
    import numpy as np
    pictures = [Image.fromarray(np.asarray(f, dtype=np.uint8), "RGB") for f in frames]
    strip = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)))
    x = 0
    for p in pictures:
        strip.paste(p, (x, 0))
        x += p.width
    info = PngImagePlugin.PngInfo()
    info.add_text("frames", str(len(pictures)))
    import io
    buf = io.BytesIO()
    strip.save(buf, format="PNG", pnginfo=info, compress_level=1)
    write_atomic(path, buf.getvalue())


def _outputs_back(described: dict) -> dict[str, Any]:
    """A worker's outputs as the report describes them: tensors as meta tensors (shape and
    dtype, no data: the images are in the files), other values as they were described."""
    out = {}
    for name, d in described.items():
        if isinstance(d, dict) and "tensor" in d:
            out[name] = torch.empty(d["tensor"], dtype=getattr(torch, d["dtype"]), device="meta")
        else:
            out[name] = d
    return out
