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
    memory: Any = None
    """The host's own memory management (``ComfyMemory`` inside ComfyUI), or None: then our
    model manager's budgets alone decide what stays loaded."""
    store: Any = None
    """Where values that depend only on a checkpoint's files (an empty prompt's encoding, a
    zero image's embedding) are kept across runs: the executor's cache (``get(key, stype)`` /
    ``put(key, stype, value)``), or None: this process's memory only."""


@dataclass
class Options:
    """Process-wide run options that change numerics, so they enter the loaders' fingerprints
    (and so every cache key downstream)."""

    compile: bool = False
    """torch.compile the denoisers (prior, decoder, upsampler UNets), shapes static per stage:
    faster steps after a compile per shape, results equal to eager only up to rounding."""
    compile_backend: str = "inductor"


OPTIONS = Options()


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


_ACCOUNT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("unclip_account",
                                                                      default=None)


def charge(what: str, seconds: float) -> None:
    """Add ``seconds`` to ``what`` (e.g. "load") in the running node's account, if any: the
    executor's report splits a node's time into loading and computing."""
    acct = _ACCOUNT.get()
    if acct is not None:
        acct[what] = acct.get(what, 0.0) + seconds


@contextlib.contextmanager
def account() -> Iterator[dict]:
    """Collect ``charge``s made while the block runs."""
    acct: dict = {}
    token = _ACCOUNT.set(acct)
    try:
        yield acct
    finally:
        _ACCOUNT.reset(token)


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


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot name a file here, or None: empty, a NUL character, a character the
    file system cannot encode (a lone surrogate), a name or a path longer than the system
    allows.  Said before any ``stat``, which would fail with an OSError instead."""
    import os
    if not isinstance(text, str) or not text.strip():
        return "is empty; give a path"
    if "\0" in text:
        return "holds a NUL character, which no file name can"
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        return "holds characters no file name here can (a lone surrogate)"
    name_max, path_max = 255, 4096
    try:
        name_max = os.pathconf("/", "PC_NAME_MAX")
        path_max = os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        pass
    if len(raw) >= path_max:
        return f"is too long: {len(raw):,} bytes, more than the system allows ({path_max - 1})"
    longest = max((len(part) for part in raw.split(os.sep.encode())), default=0)
    if longest > name_max:
        return (f"is too long: one of its names has {longest:,} bytes, more than the file "
                f"system allows ({name_max})")
    return None


def read_bounded(path: str | Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a file: what a size check said may be wrong (a sparse
    file, a device, a file still growing, /proc), so the read itself is bounded; the caller
    compares the length with ``limit``."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


def normal_mode() -> int:
    """The mode a plain ``open()`` gives a new file, 0666 less the umask: what files we write
    through a private temporary file (mkstemp's 0600) get before they are renamed into place."""
    import os
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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
             metadata=meta, progress=_ComfyProgress, interrupted=_comfy_interrupted,
             memory=comfy_memory())
    with use_host(h):
        yield h


class _Holder(torch.nn.Module):
    """Our component inside a ModelPatcher: ComfyUI sets ``model.device`` as it moves a model,
    which diffusers' and transformers' modules only have as a read-only property."""

    def __init__(self, inner: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = inner
        self.device = device


class ComfyMemory:
    """Our components under ComfyUI's memory management (``comfy.model_management``): before a
    component loads, ComfyUI frees room on the device; each use registers it with ComfyUI as a
    ModelPatcher (``load_models_gpu``), so ComfyUI counts it and can move it off the GPU when
    its own models need room.  When ComfyUI unloads one for good (``/free``, "unload models",
    making room: its ``detach`` with ``unpatch_all``), we drop it from our cache too, so its RAM
    is freed and it is read again when next needed.

    That drop waits for our next use of the manager: ComfyUI unloads models inside a loop over
    its own list, and freeing the model there would fire ComfyUI's finalizer, which edits that
    list under the loop.  ``detach`` without ``unpatch_all`` (ComfyUI re-registering a patcher
    it already holds, or a patcher being collected) is not an unload."""

    def __init__(self, mm, patcher_class):
        self.mm = mm
        self.patchers: dict = {}
        self.unloaded: list = []
        unloaded = self.unloaded

        class Patcher(patcher_class):
            def detach(self, unpatch_all=True):
                out = super().detach(unpatch_all)
                if unpatch_all:
                    unloaded.append(self)
                return out

        self.Patcher = Patcher

    def dtype(self, device: torch.device) -> torch.dtype:
        """ComfyUI's choice of weight dtype for a diffusion model on ``device``."""
        return self.mm.unet_dtype(device)

    def before_load(self, size: int, device: torch.device) -> None:
        if device.type != "cpu":
            self.mm.free_memory(size, device)

    def settle(self, forget: Callable[[Any], None]) -> None:
        """Drop from our cache what ComfyUI unloaded since we last looked: ``forget(key)``
        is the model manager's (it calls this; the host does not know the manager)."""
        while self.unloaded:
            patcher = self.unloaded.pop()
            key = getattr(patcher, "unclip_key", None)
            if self.patchers.get(key) is patcher:
                del self.patchers[key]
                forget(key)

    def use(self, key, module, device: torch.device) -> None:
        if not isinstance(module, torch.nn.Module):
            return
        p = self.patchers.get(key)
        if p is None or p.model.inner is not module:
            p = self.Patcher(_Holder(module, device), load_device=device,
                             offload_device=self.mm.unet_offload_device())
            p.unclip_key = key
            self.patchers[key] = p
        self.mm.load_models_gpu([p], force_full_load=True)


_COMFY_MEMORY: list = []


def comfy_memory() -> ComfyMemory | None:
    """The process's ComfyMemory (one, so ComfyUI's bookkeeping sees each component once), or
    None when ComfyUI's memory management cannot be imported."""
    if not _COMFY_MEMORY:
        try:
            import comfy.model_management as mm  # type: ignore[import-not-found]
            from comfy.model_patcher import ModelPatcher  # type: ignore[import-not-found]
        except ImportError:
            return None
        _COMFY_MEMORY.append(ComfyMemory(mm, ModelPatcher))
    return _COMFY_MEMORY[0]
