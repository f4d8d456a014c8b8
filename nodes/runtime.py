"""Services a node gets from whichever host runs it: device, progress, interruption, output folder.

The headless executor installs a ``Host`` for each run; inside ComfyUI ``comfy_host`` builds one
from ComfyUI's own modules.  Stage code only calls ``device()``, ``steps()``, ``check_interrupt()``,
``output_dir()`` and ``metadata()`` and never imports a host.
"""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


class Interrupted(Exception):
    """The user asked the run to stop (Ctrl-C in the CLI, the cancel button in ComfyUI)."""


class Progress:
    """Per-node step progress.  Hosts subclass it; the default reports nothing."""

    def start(self, total: int, desc: str) -> None:
        pass

    def update(self, done: int, total: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Host:
    device: str = "auto"                      # "auto" | "cpu" | "cuda" | "cuda:N"
    output_dir: Path = field(default_factory=lambda: Path.cwd() / "output")
    metadata: dict[str, str] = field(default_factory=dict)   # PNG text chunks for savers
    progress: Callable[[], Progress] = Progress
    interrupted: Callable[[], bool] = lambda: False
    ui: dict[str, Any] = field(default_factory=dict)         # what savers show in ComfyUI


_HOST: contextvars.ContextVar[Host | None] = contextvars.ContextVar("unclip_host", default=None)


def host() -> Host:
    h = _HOST.get()
    if h is None:
        h = Host()
        _HOST.set(h)
    return h


@contextlib.contextmanager
def use_host(h: Host) -> Iterator[Host]:
    token = _HOST.set(h)
    try:
        yield h
    finally:
        _HOST.reset(token)


def resolve_device(choice: str = "auto") -> torch.device:
    """'auto' follows the host's device, which itself defaults to cuda when available."""
    if choice == "auto":
        choice = host().device
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def device() -> torch.device:
    return resolve_device("auto")


def output_dir() -> Path:
    return Path(host().output_dir)


def metadata() -> dict[str, str]:
    return dict(host().metadata)


def check_interrupt() -> None:
    if host().interrupted():
        raise Interrupted()


def steps(total: int, desc: str = "") -> Iterator[int]:
    """``range(total)`` that reports progress and stops when the host is interrupted."""
    bar = host().progress()
    bar.start(total, desc)
    try:
        for i in range(total):
            check_interrupt()
            yield i
            bar.update(i + 1, total)
    finally:
        bar.close()


_BASE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("unclip_base_dir",
                                                                       default=None)


def base_dir() -> Path | None:
    """The folder of the workflow file being validated or run (None for a workflow given as a
    mapping, and inside ComfyUI): where file parameters look when a relative path is not found
    from the current directory, so shipped workflows find their sample files from anywhere."""
    return _BASE_DIR.get()


@contextlib.contextmanager
def use_base_dir(folder: str | Path | None) -> Iterator[None]:
    token = _BASE_DIR.set(Path(folder) if folder is not None else None)
    try:
        yield
    finally:
        _BASE_DIR.reset(token)


def workflow_folder(file: str | None) -> Path | None:
    """The folder of a workflow file, or None when ``file`` names no file on disk."""
    if not file:
        return None
    p = Path(file)
    return p.resolve().parent if p.is_file() else None


def take_ui() -> dict:
    h = host()
    ui, h.ui = h.ui, {}
    return ui


# --- ComfyUI ------------------------------------------------------------------------------------

class _ComfyProgress(Progress):
    def start(self, total, desc):
        import comfy.utils  # type: ignore[import-not-found]
        self._bar = comfy.utils.ProgressBar(total)

    def update(self, done, total):
        self._bar.update_absolute(done, total)


def _comfy_interrupted() -> bool:
    import comfy.model_management as mm  # type: ignore[import-not-found]
    mm.throw_exception_if_processing_interrupted()  # raises ComfyUI's own InterruptProcessingException
    return False


def _comfy_metadata_disabled() -> bool:
    """ComfyUI's --disable-metadata: its savers then write no text chunks, nor do ours."""
    try:
        from comfy.cli_args import args  # type: ignore[import-not-found]
    except ImportError:
        return False
    return bool(getattr(args, "disable_metadata", False))


@contextlib.contextmanager
def comfy_host(prompt=None, extra_pnginfo=None) -> Iterator[Host]:
    """A Host backed by ComfyUI when it is importable, else the default one (tests, scripts)."""
    try:
        import comfy.model_management as mm  # type: ignore[import-not-found]
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        with use_host(Host()) as h:
            yield h
        return
    import json
    meta = {}
    if not _comfy_metadata_disabled():  # what ComfyUI's SaveImage writes: prompt, then workflow
        if prompt is not None:
            meta["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            meta[k] = json.dumps(v)
    h = Host(device=str(mm.get_torch_device()), output_dir=Path(folder_paths.get_output_directory()),
             metadata=meta, progress=_ComfyProgress, interrupted=_comfy_interrupted)
    with use_host(h):
        yield h
