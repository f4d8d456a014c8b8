"""The ``unclip`` command: run / validate workflows, list node types, manage the cache.

User mistakes (UserError) are printed to stderr as ``file:line:col: node, field: message`` and
end with exit code 2 and no traceback; Ctrl-C stops a run cleanly with exit code 130, SIGTERM
the same way with exit code 143.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import warnings
from pathlib import Path

from ..nodes import declare
from ..nodes.errors import UserError, UserErrors
from .cache import Cache, CacheWarning, default_dir, write_output
from .comfy import (describe_reads, is_api, is_ui, load_source, moved_paths, pickle_problems,
                    png_metadata, recorded_file, to_api, to_ui, unnamed_reads,
                    unsaved_outputs)
from .run import RunInterrupted, RunResult, check_device, describe, execute, write_report
from . import sweep
from .preset import SHIPPED, find_preset, list_presets
from .validate import is_source

EXIT_USER, EXIT_INTERRUPTED, EXIT_TERMINATED = 2, 130, 143  # 128 + SIGINT, 128 + SIGTERM
WORKFLOWS = SHIPPED
"""The shipped workflows (``preset.SHIPPED``): where ``unclip run NAME`` looks first."""


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 a user mistake, 130 stopped by Ctrl-C, 143 by SIGTERM (a run
    stops as after Ctrl-C: finished nodes cached, the summary and --report written)."""
    _CtrlC.terminated = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CacheWarning)
            warnings.showwarning = _show_warning
            try:
                args = _parser().parse_args(argv)
                code = args.func(args)
            except UserError as e:
                print(str(e), file=sys.stderr)
                if isinstance(e, UserErrors):
                    print(f"{len(e.errors)} problems found", file=sys.stderr)
                return EXIT_USER
    except KeyboardInterrupt:  # outside a run's own handling (e.g. while validating)
        print("interrupted", file=sys.stderr)
        return EXIT_TERMINATED if _CtrlC.terminated else EXIT_INTERRUPTED
    return EXIT_TERMINATED if code == EXIT_INTERRUPTED and _CtrlC.terminated else code


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="unclip", description="Run unCLIP node workflows.")
    sub = ap.add_subparsers(dest="command", required=True)

    def workflow_args(p):
        p.add_argument("workflow", help="workflow YAML file (or the name of a shipped preset), a "
                       "ComfyUI API-format .json, or a .png saved by SaveImage")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                       help="override a workflow input (repeatable)")

    def cache_dir_arg(p):
        p.add_argument("--cache-dir", default=None, metavar="DIR",
                       help=f"disk cache folder (default {default_dir()})")

    run = sub.add_parser("run", help="validate and run a workflow")
    workflow_args(run)
    run.add_argument("--out", default="output", metavar="DIR",
                     help="output folder (./output)")
    run.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                     help="where the models run (also cuda:N)")
    run.add_argument("--report", metavar="FILE.json",
                     help="also write the run report as JSON here")
    cache_dir_arg(run)
    run.add_argument("--cache-max-bytes", metavar="SIZE",
                     help="most bytes the disk cache keeps (e.g. 500MB, 2GiB); the least recently "
                          "used entries go first (default 10GiB, or UNCLIP_CACHE_MAX_BYTES)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    run.add_argument("--sweep", dest="sweeps", action="append", default=[],
                     metavar="NAME=VALUES",
                     help="run for each value of an input: a,b,c or 0..7 (integers) or @file (one "
                          "value per line); several --sweep make every combination; shared work "
                          "runs once, and a contact sheet is written")
    run.add_argument("--max-combinations", type=int, default=None, metavar="N",
                     help="allow sweeps of up to N combinations (default 4096, or "
                          "UNCLIP_MAX_COMBINATIONS)")
    run.add_argument("--ram-budget", metavar="SIZE",
                     help="most bytes of model weights kept in RAM (e.g. 12GB); the least "
                          "recently used components are dropped first (default: 90%% of the "
                          "RAM free when the first model loads)")
    run.add_argument("--vram-budget", metavar="SIZE",
                     help="most bytes of model weights kept on the GPU; the least recently used "
                          "go to RAM first (default: 90%% of the GPU's free memory)")
    run.add_argument("--batch", type=int, default=1, metavar="N",
                     help="run up to N sampling nodes that differ only in their seed (a sweep's "
                          "seeds) in one model call; each keeps its own seed's noise, results "
                          "differ from unbatched runs in the last bits and are cached apart "
                          "(default 1: bit-exact)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the prior and decoder UNets (faster steps after a "
                          "compile per shape; results differ from eager in the last bits and "
                          "are cached apart)")
    run.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                     help="run the sweep's combinations on a Ray cluster: the one this machine "
                          "joined (ray start), or ADDRESS, or 'local' (one started here); "
                          "needs pip install 'unclip-nodes[ray]'")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="Ray workers (default: as many as the cluster's CPUs or GPUs allow)")
    run.add_argument("--gpus-per-worker", type=float, default=None, metavar="X",
                     help="GPUs each Ray worker takes (default 0; 1 to run on GPUs)")
    run.add_argument("--cpus-per-worker", type=float, default=None, metavar="Y",
                     help="CPUs each Ray worker takes, also its torch threads (default 1)")
    run.add_argument("--zip", action="store_true",
                     help="pair the --sweep lists by position instead of combining them")
    run.add_argument("--allow-pickle", action="store_true",
                     help="let a workflow read from a .png or .json file load pickle weights "
                          "(allow_pickle: true), which can run code; without it such a "
                          "workflow is refused")
    run.add_argument("--trust-inputs", action="store_true",
                     help="let a workflow read from a .png or .json file read the files it "
                          "names; without it, only files given again with --set, files next "
                          "to it and the pack's own are read")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a workflow without running anything")
    workflow_args(val)
    val.set_defaults(func=cmd_validate)

    exp = sub.add_parser("export", help="write a workflow as ComfyUI JSON")
    fmt = exp.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--comfy-api", dest="format", action="store_const", const="api",
                     help="the API format (what ComfyUI's /prompt takes)")
    fmt.add_argument("--comfy-ui", dest="format", action="store_const", const="ui",
                     help="the UI workflow (open it in ComfyUI, or drop it on the canvas)")
    workflow_args(exp)
    exp.add_argument("-o", "--output", metavar="FILE",
                     help="write it there (default: standard output)")
    exp.set_defaults(func=cmd_export)

    nodes = sub.add_parser("nodes", help="list the node types")
    nodes.add_argument("--json", action="store_true", help="machine-readable schemas")
    nodes.set_defaults(func=cmd_nodes)

    cache = sub.add_parser("cache", help="inspect, prune or clear the disk cache")
    cache.add_argument("action", choices=["info", "prune", "clear"],
                       help="info: size and leftovers; prune: evict the least recently used "
                            "entries down to the budget and delete leftover temporary files; "
                            "clear: delete every entry")
    cache.add_argument("--max-bytes", metavar="SIZE",
                       help="prune: the budget to prune down to (default 10GiB, or "
                            "UNCLIP_CACHE_MAX_BYTES)")
    cache_dir_arg(cache)
    cache.set_defaults(func=cmd_cache)
    return ap


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def _path_arg(text: str, flag: str, field: str) -> Path:
    """A path from the command line, refused when no file could have that name (empty, a NUL,
    a lone surrogate, too long): ``--out ""`` would otherwise mean the current folder."""
    from ..nodes.errors import excerpt
    from ..nodes.runtime import path_problem
    why = path_problem(text)
    if why:
        raise UserError(f"{flag} {excerpt(text)}: the path {why}", field=field)
    return Path(text)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.realpath(a) == os.path.realpath(b)


def _output_file_problem(path: Path) -> str | None:
    """Why ``-o``/``--report`` could not be written at ``path``, said before the run (not after
    all of it): a folder there, a link loop, a socket, or a folder that cannot take it."""
    import stat
    from ..nodes.image import folder_problem
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as e:
        return f"cannot be used ({e.strerror or e})"
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            return "is a folder; give a file name"
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISCHR(info.st_mode)
                or stat.S_ISFIFO(info.st_mode)):
            return "is not a regular file, a terminal or a pipe; give a file name"
        if not os.access(path, os.W_OK):
            return "cannot be written (no permission)"
        return None
    folder = Path(os.path.realpath(path)).parent
    why = folder_problem(folder)  # it tries to make a file there: root passes access()
    return f"cannot be written: its folder {folder} {why}" if why else None


def workflow_path(arg: str) -> Path:
    """The file itself, else the workflow that ``preset:NAME`` names (``text_to_image``, also
    ``text_to_image.yaml``): the same lookup, ``preset.find_preset``."""
    path = _path_arg(arg, "workflow", "workflow")
    if path.exists() or path.parent != Path("."):
        return path
    return find_preset(arg, shipped=WORKFLOWS) or path


def parse_sets(sets: list[str]) -> dict[str, str]:
    out = {}
    for item in sets:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise UserError(f"--set {item!r}: write --set NAME=VALUE")
        out[name.strip()] = value
    return out


def cmd_validate(args) -> int:
    """Socket-typed inputs (``image: {type: IMAGE}``) need no value here: such a file checks
    out as a preset definition, and running it needs their values."""
    rs = load_source(workflow_path(args.workflow), parse_sets(args.sets), preset=True)
    count = sum(1 for nid in rs.nodes if not is_source(nid))
    what = "ok as a preset" if rs.unbound else "ok"
    print(f"{rs.workflow.file}: {what} ({count} nodes, outputs: "
          f"{', '.join(rs.outputs) or 'none'})")
    for name, wi in rs.workflow.inputs.items():  # what --set can change
        about = f"  {wi.description}" if wi.description else ""
        if name in rs.unbound:
            how = f"--set {name}=IMAGE_FILE" if wi.type == "IMAGE" else "a value from Python"
            print(f"  {name}: {wi.type}, a socket: linked where the preset is used; to run this "
                  f"file itself, give {how}{about}")
        else:
            print(f"  --set {name}=  {wi.type} = {json.dumps(rs.inputs[name])}{about}")
    if rs.unbound:
        path = Path(rs.workflow.file)
        named = list_presets().get(path.stem)
        ref = path.stem if named is not None and named.resolve() == path.resolve() else str(path)
        print(f"use it as a node: type: preset:{ref}"
              + (f" (in ComfyUI: 'unCLIP preset:{ref}')" if ref == path.stem else ""))
    return 0


def _budgets(args) -> dict[str, int]:
    """Apply --ram-budget / --vram-budget here; returned for the workers of --ray."""
    from ..nodes.core.manager import MANAGER, parse_bytes
    sizes = {}
    for name in ("ram_budget", "vram_budget"):
        text = getattr(args, name, None)
        if text is None:
            continue
        try:
            sizes[name.split("_")[0]] = parse_bytes(text)
        except ValueError as e:
            raise UserError(f"--{name.replace('_', '-')}: {e}", field=name) from None
    if sizes:
        MANAGER.set_budgets(**sizes)
    return sizes


def cmd_run(args) -> int:
    """Every argument is checked before the first node (or combination) runs: the output
    folder, the report's place, the device, the sizes."""
    args.out = _path_arg(args.out, "--out", "out")
    if args.report is not None:
        args.report = _path_arg(args.report, "--report", "report")
        why = _output_file_problem(args.report)
        if why is None and _same_file(args.report, workflow_path(args.workflow)):
            why = "that is the workflow being run; give another file name"
        if why:
            raise UserError(f"--report {args.report}: {why}", field="report")
    if args.cache_dir is not None:
        args.cache_dir = _path_arg(args.cache_dir, "--cache-dir", "cache_dir")
    check_device(args.device, here=args.ray is None)
    budgets = _budgets(args)
    _check_ray_args(args)
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: give 1 (no batching) or more", field="batch")
    if getattr(args, "compile", False):
        from ..nodes import runtime
        runtime.OPTIONS.compile = True
    plan = _sweep_plan(args)
    path = workflow_path(args.workflow)
    rs = plan.resolved if plan else load_source(path, parse_sets(args.sets))
    if not plan and path.suffix.lower() in (".png", ".json") and path.is_file():
        _check_stored(rs, path, args.allow_pickle, args.trust_inputs,
                      set(parse_sets(args.sets)))
    if args.ray is not None:
        return _run_on_ray(args, plan, budgets)
    cache = Cache.off() if args.no_cache else Cache(
        args.cache_dir, max_bytes=_size_arg(args, "cache_max_bytes"))
    stop = _CtrlC()
    try:
        with stop:
            result = execute(rs, out_dir=args.out, device=args.device, cache=cache,
                             progress=True, interrupted=stop.pressed, batch=args.batch,
                             metadata=png_metadata, release=True)
    except RunInterrupted as e:
        print_summary(e.result)
        if plan:
            e.result.extra["sweep"] = sweep.describe(plan, None)
        if args.report:
            write_report(e.result, args.report)
        print("interrupted: finished nodes are cached", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(result)
    if plan:
        sheet = sweep.contact_sheet(plan, result, args.out)
        result.extra["sweep"] = sweep.describe(plan, sheet, result.outputs)
        print(f"sweep: {len(plan.combinations)} runs, "
              f"{sum(r.status == 'ran' for r in result.report)} nodes ran")
        table = sweep.score_table(plan, result.outputs)
        if table:
            print(table)
        if sheet:
            print(f"wrote {sheet}")
    if args.report:
        write_report(result, args.report)
    return 0


def _check_ray_args(args) -> None:
    if args.ray is None:
        given = [f"--{n.replace('_', '-')}" for n in ("workers", "gpus_per_worker",
                                                      "cpus_per_worker")
                 if getattr(args, n) is not None]
        if given:
            raise UserError(f"{', '.join(given)}: only with --ray", field="ray")
        return
    if not args.sweeps:
        raise UserError("--ray spreads a sweep's combinations over workers; give --sweep "
                        "(a single run goes without --ray)", field="ray")
    if args.batch != 1:
        raise UserError("--batch calls the model once for several seeds on one machine; with "
                        "--ray each combination runs on its own worker, so leave --batch out",
                        field="batch")
    for name in ("gpus_per_worker", "cpus_per_worker"):
        value = getattr(args, name)
        if value is not None and not (0 <= value < math.inf):  # also nan
            raise UserError(f"--{name.replace('_', '-')} {value:g}: give a finite number, 0 or "
                            "more", field=name)


def _run_on_ray(args, plan, budgets: dict[str, int]) -> int:
    """``--ray``: the sweep's combinations on Ray workers (``graph/cluster.py``)."""
    from . import cluster
    options = cluster.RayOptions(
        address=args.ray, workers=args.workers,
        gpus_per_worker=args.gpus_per_worker or 0.0,
        cpus_per_worker=args.cpus_per_worker if args.cpus_per_worker is not None else 1.0)
    cache_dir = None if args.no_cache else (args.cache_dir or default_dir()).absolute()
    stop = _CtrlC()
    try:
        with stop:
            done = cluster.run_on_ray(plan, out_dir=args.out, options=options,
                                      device=args.device, cache_dir=cache_dir,
                                      cache_max_bytes=_size_arg(args, "cache_max_bytes"),
                                      progress=True,
                                      interrupted=stop.pressed, report=args.report,
                                      budgets=budgets)
    except RunInterrupted as e:
        print_summary(e.result)
        print("interrupted: finished combinations are kept; the same command resumes",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(done.result)
    workers = sorted(set(done.workers.values()))
    print(f"sweep: {len(plan.combinations)} runs on {len(workers)} Ray worker(s)"
          + (f", {done.resumed} done by an earlier run" if done.resumed else ""))
    if done.grid:
        print(f"wrote {done.grid}")
    return 0


def _check_stored(rs, path: Path, allow_pickle: bool, trust_inputs: bool = False,
                  named: set[str] = frozenset()) -> None:
    """A workflow stored in a PNG or a JSON file may come from anyone: say what it reads, and
    refuse pickle weights (unless ``--allow-pickle``), files the user did not name (unless
    ``--trust-inputs``; ``named``: the inputs given with --set) and stored relative paths that
    here would name another file than where the workflow was recorded."""
    problems = [] if allow_pickle else pickle_problems(rs, str(path))
    if not trust_inputs:
        problems += unnamed_reads(rs, path, named)
    original = recorded_file(path)
    if original is not None:
        problems += moved_paths(rs, original.parent, str(path))
    lines = describe_reads(rs)
    if original is not None:
        lines.append(f"  the workflow file it was made from: {original} (only compared with "
                     "the stored text, never read beyond its length)")
    if lines:
        print(f"{path}: the stored workflow reads these files and folders:", file=sys.stderr)
        for line in lines:
            print(line, file=sys.stderr)
    if problems:
        raise problems[0] if len(problems) == 1 else UserErrors(problems)


def _sweep_plan(args):
    """The combined graph of ``--sweep`` (None without one)."""
    if not args.sweeps:
        if args.zip:
            raise UserError("--zip pairs the values of several --sweep; give them", field="zip")
        return None
    path = workflow_path(args.workflow)
    if path.suffix.lower() in (".png", ".json") and _is_comfy(path):
        raise UserError(f"{path}: --sweep runs our YAML workflows, not ComfyUI's formats or "
                        "images; give this one's inputs with --set", field="sweep")
    sweeps = [sweep.parse_sweep(s) for s in args.sweeps]
    return sweep.plan_sweep(path, sweeps, zip=args.zip, overrides=parse_sets(args.sets),
                            max_combinations=args.max_combinations)


def _is_comfy(path: Path) -> bool:
    if path.suffix.lower() == ".png":
        return path.is_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # not JSON we can read: the YAML reader says why
        return False
    return isinstance(data, dict) and (is_api(data) or is_ui(data) or is_api(data.get("prompt")))


def cmd_export(args) -> int:
    """Validate, then write ComfyUI's JSON; workflow inputs become the values they resolve to."""
    if args.output is not None:
        args.output = _path_arg(args.output, "-o", "output")
    path = workflow_path(args.workflow)
    rs = load_source(path, parse_sets(args.sets))
    doc = to_api(rs) if args.format == "api" else to_ui(rs)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    for out in unsaved_outputs(rs):
        print(f"note: workflow output {out} is not saved by any node; ComfyUI runs only what "
              "its output nodes need", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    if _same_file(args.output, path):
        raise UserError(f"-o {args.output}: that is the workflow being exported; give another "
                        "file name", field="output")
    try:
        write_output(args.output, text.encode())
    except OSError as e:
        raise UserError(f"-o {args.output}: cannot write it ({e.strerror or e})",
                        field="output") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


class _CtrlC:
    """First Ctrl-C (or SIGTERM, as ``kill`` or a job scheduler sends it) asks the run to stop
    at the next step; a second one stops it at once.  ``main`` then exits with 130 after
    Ctrl-C, 143 after SIGTERM."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                    if s is not None)
    terminated = False
    """Whether a SIGTERM stopped this process's run (read by ``main``)."""

    def __init__(self):
        self.flag = False
        self._old: dict = {}

    def pressed(self) -> bool:
        return self.flag

    def _handle(self, signum, frame):
        if signum == getattr(signal, "SIGTERM", None):
            _CtrlC.terminated = True
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if signum == signal.SIGINT:
            print("\nstopping after the current step (Ctrl-C again to stop now)",
                  file=sys.stderr)
        else:
            print("\nterminated: stopping after the current step (Ctrl-C or another SIGTERM "
                  "to stop now)", file=sys.stderr)

    def __enter__(self):
        for s in self.SIGNALS:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except (ValueError, OSError):  # not the main thread, or not allowed here
                pass
        return self

    def __exit__(self, *exc):
        """After a stop the process is on its way out (exit 130 or 143): a late Ctrl-C must not
        raise outside ``main``, where Python would end it by the signal instead of the code,
        so further signals are only noted.  Without one, the previous handlers come back."""
        for s, old in self._old.items():
            signal.signal(s, self._late if self.flag else old)
        self._old = {}

    @staticmethod
    def _late(signum, frame):
        if signum == getattr(signal, "SIGTERM", None):
            _CtrlC.terminated = True



def print_summary(result: RunResult) -> None:
    rows = [("node", "type", "status", "seconds")]
    rows += [(r.node, r.type, r.status, f"{r.seconds:.2f}") for r in result.report]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.rjust(w) if i == 3 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    t = result.breakdown()
    print(f"total {result.seconds:.2f} s (loading models {t['load']:.2f} s, computing "
          f"{t['compute']:.2f} s, saving {t['save']:.2f} s)")
    for name, value in result.outputs.items():
        print(f"output {name}: {json.dumps(describe(value))}")
    for f in result.files:
        print(f"wrote {f}")


def cmd_nodes(args) -> int:
    specs = sorted(declare.REGISTRY.values(), key=lambda s: (s.category, s.type))
    if args.json:
        print(json.dumps({s.type: s.schema() for s in specs}, indent=2))
        return 0
    category = None
    for s in specs:
        if s.category != category:
            category = s.category
            print(f"\n{category}")
        print(f"  {s.type}: {s.description}")
        for label, items in (("inputs", [_input_text(i) for i in s.inputs]),
                             ("params", [_param_text(p) for p in s.params]),
                             ("outputs", [f"{o.name} {o.type}" for o in s.outputs])):
            if items:
                print(f"      {label + ':':9}{', '.join(items)}")
    return 0


def _input_text(i) -> str:
    return f"{i.name} {i.type}" + (" (optional)" if i.optional else "")


def _param_text(p) -> str:
    text = f"{p.name} " + ("|".join(p.choices) if p.choices else p.type)
    if p.min is not None or p.max is not None:
        text += f" [{'' if p.min is None else p.min}..{'' if p.max is None else p.max}]"
    return text + (" (required)" if p.required else f" = {json.dumps(p.default)}")


def _size_arg(args, name: str) -> int | None:
    """``--NAME SIZE`` (500MB, 2GiB, ...) in bytes; None when not given."""
    text = getattr(args, name, None)
    if text is None:
        return None
    from ..nodes.core.manager import parse_bytes
    try:
        return parse_bytes(text)
    except ValueError as e:
        raise UserError(f"--{name.replace('_', '-')}: {e}", field=name) from None


def _counted(files: list, one: str, many: str) -> str:
    """``2 entries (1824 bytes)`` for a list of (path, size)."""
    return f"{len(files)} {one if len(files) == 1 else many} ({sum(s for _, s in files)} bytes)"


def cmd_cache(args) -> int:
    if args.cache_dir is not None:
        args.cache_dir = _path_arg(args.cache_dir, "--cache-dir", "cache_dir")
    max_bytes = _size_arg(args, "max_bytes")
    if max_bytes is not None and args.action != "prune":
        raise UserError("--max-bytes goes with `unclip cache prune`", field="max_bytes")
    cache = Cache(args.cache_dir, max_bytes=max_bytes)
    disk = cache.disk
    if args.action in ("clear", "prune") and args.cache_dir is None \
            and os.path.islink(disk.root):
        raise UserError(f"the cache folder {disk.root} is a link to "
                        f"{os.path.realpath(disk.root)}; `unclip cache {args.action}` deletes "
                        "only in a folder you name when it is a link: add --cache-dir "
                        f"{disk.root}", field="cache_dir")
    if args.action == "clear":
        n = disk.clear()
        print(f"removed {n} entries from {disk.root}")
        return 0
    if args.action == "prune":
        entries, temps = disk.prune()
        print(f"removed {_counted(entries, 'entry', 'entries')}, least recently used first, "
              f"and {_counted(temps, 'temporary file', 'temporary files')} from {disk.root}")
        for path, _ in temps:
            print(f"  {path}")
        left, size = disk.info()
        print(f"now {left} entries, {size} bytes (budget {disk.max_bytes})")
        return 0
    entries, size = disk.info()
    temps, temp_size = disk.temporary()
    print(f"path: {disk.root}\nentries: {entries}\nbytes: {size} ({size / 2**20:.1f} MiB)\n"
          f"budget: {disk.max_bytes} bytes ({disk.max_bytes / 2**30:.1f} GiB)\n"
          f"temporary files: {temps} ({temp_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
