"""The Python API's entry points, where the executor meets the file formats it records.

``run.execute`` knows nothing of ComfyUI; the PNG metadata that makes a saved image a runnable
workflow (ComfyUI's prompt and workflow JSON, our YAML and inputs) comes from ``comfy`` and is
handed in here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from ..nodes.runtime import Host
from .cache import Cache
from .comfy import png_metadata
from .run import RunInterrupted, RunResult, execute, write_report
from .validate import load


def run_workflow(source: str | Path | Mapping, overrides: Mapping[str, Any] | None = None, *,
                 values: Mapping[str, Any] | None = None, out_dir: str | Path | None = None,
                 device: str = "auto", cache: Cache | None = None,
                 report: str | Path | None = None, progress: bool = False,
                 interrupted: Callable[[], bool] | None = None, host: Host | None = None,
                 batch: int = 1, release: bool = False) -> RunResult:
    """Validate and run a workflow (a YAML path or a mapping).

    ``values``: Python values for socket-typed workflow inputs (``{"image": tensor}``), keyed
    in the cache by their content; an IMAGE input also takes a file path in ``overrides``.
    ``cache``: None = the default cache (shared memory tier + user cache dir), ``Cache.off()``
    for none.  ``report``: also write the run report there as JSON.  ``progress``: tqdm bars.
    ``host``: run under this host's device, output folder, PNG metadata, progress and
    interruption (ComfyUI's, for a preset node) instead of the executor's own.
    ``batch``: run up to this many nodes that differ only in their batch parameter (the seeds of
    a sweep) in one model call (see ``execute``).  ``release``: let go of each model's weights
    after its last use in this run (what ``unclip run`` does; off by default, so that a loop of
    calls keeps its models).
    Raises UserError(s) for mistakes, RunInterrupted when ``interrupted()`` turns true.
    """
    resolved = load(source, overrides, values=values)
    try:
        result = execute(resolved, out_dir=out_dir, device=device, cache=cache,
                         progress=progress, interrupted=interrupted, host=host, batch=batch,
                         metadata=None if host is not None else png_metadata, release=release)
    except RunInterrupted as e:
        if report:
            write_report(e.result, report)
        raise
    if report:
        write_report(result, report)
    return result
