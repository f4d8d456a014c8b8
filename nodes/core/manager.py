"""One model manager for every component a handle loads: byte budgets per device, least recently
used first out.

Our stages run one after another and their results are cached, so only the running stage's
weights need to be resident.  Every component goes through ``MANAGER.get``: it is loaded on first
use, counted against its device's budget, and when a new one would not fit, the least recently
used others make room -- a GPU component is moved to the CPU (its CPU copy counts against the RAM
budget), a CPU component is dropped (it is read from disk again when next needed).  A component
whose files changed replaces the old copy, which is freed.

A component still referenced outside the manager (a loop running with it, a pipeline a test
built from it) is never moved or dropped: that would not free its memory and could pull weights
from under a running forward.  The budget is then exceeded until the reference goes; the
manager says so in ``events``.

Budgets default to what the machine has free when first needed (90 % of available RAM; 90 % of a
GPU's free memory); ``set_budgets`` (the CLI's ``--ram-budget`` / ``--vram-budget``) overrides
them.  Inside ComfyUI, GPU residency is ComfyUI's to decide (``comfy_memory``).
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch

RAM_SHARE = 0.9
VRAM_SHARE = 0.9


def module_bytes(obj: Any) -> int:
    """Bytes of a module's parameters and buffers (each storage counted once); 0 for anything
    that is not a torch module (a tokenizer)."""
    if not isinstance(obj, torch.nn.Module):
        return 0
    seen, total = set(), 0
    for t in list(obj.parameters()) + list(obj.buffers()):
        if t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.device.type)
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def available_ram() -> int:
    """What the OS says a new allocation can get (MemAvailable), else total RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def free_vram(device: torch.device) -> int:
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return 1 << 62


def parse_bytes(text: str) -> int:
    """'12GB', '500 MiB', '8g', '1e9' -> bytes (decimal and binary units).  Only finite sizes
    (``inf``, ``nan`` and ``1e400`` say nothing a budget can use); the text is quoted cut short,
    since it may be anything a user or a file gave."""
    import math
    from ..errors import excerpt
    s = str(text).strip().lower().replace(" ", "")
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
             "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12, "b": 1}
    for unit in sorted(units, key=len, reverse=True):
        if s.endswith(unit):
            number, scale = s[: -len(unit)], units[unit]
            break
    else:
        number, scale = s, 1
    try:
        value = float(number) * scale
    except ValueError:
        raise ValueError(f"expected a size such as 12GB or 500MiB, got {excerpt(text)}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite size such as 12GB or 500MiB, got {excerpt(text)}")
    if value < 0:
        raise ValueError(f"a size cannot be negative: {excerpt(text)}")
    return int(value)


@dataclass
class Entry:
    obj: Any
    nbytes: int
    home: torch.device          # where it was asked for
    where: torch.device         # where it is now
    component: tuple            # (folder, part, device, dtype): a changed file replaces it
    name: str
    compiled: dict = None       # backend -> its torch.compile wrapper, made on first request


class ModelManager:
    def __init__(self):
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()
        self._budgets: dict[str, int] = {}
        self.lock = threading.RLock()
        self.events: list[tuple[str, str]] = []
        """(what, component name): load, reload, offload, drop, release, over-budget (tests
        look)."""
        self.host_memory: Any = None
        """ComfyUI's memory management when running inside it (see comfy_memory)."""

    # --- budgets ---

    def set_budgets(self, ram: int | None = None, vram: int | None = None) -> None:
        with self.lock:
            if ram is not None:
                self._budgets["cpu"] = int(ram)
            if vram is not None:
                self._budgets["cuda"] = int(vram)
        self.settle()

    def budget(self, device: torch.device) -> int:
        kind = device.type
        if kind not in self._budgets:
            free = available_ram() if kind == "cpu" else free_vram(device)
            self._budgets[kind] = int(free * (RAM_SHARE if kind == "cpu" else VRAM_SHARE)) + \
                self.used(kind)
        return self._budgets[kind]

    def used(self, kind: str) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.where.type == kind)

    # --- the cache ---

    def get(self, key: tuple, component: tuple, device: torch.device, load: Callable[[], Any],
            size: int, name: str = "") -> Any:
        """The component under ``key``, loaded with ``load()`` if need be (``size``: its
        estimated bytes, to make room before loading)."""
        from .. import runtime
        host = runtime.host().memory
        with self.lock:
            if host is not None:
                host.settle(self.forget)
            obj = self._get(key, component, device, load, size, name, host)
            if host is not None:
                host.use(key, obj, device)
            return obj

    def _get(self, key, component, device, load, size, name, host):
        e = self._entries.get(key)
        if e is not None:
            self._entries.move_to_end(key)
            if e.where != e.home:
                self._fit(e.home.type, e.nbytes, keep=key)
                e.obj.to(e.home)
                e.where = e.home
                self.events.append(("reload", name))
                self._fit("cpu", 0, keep=key)
            return e.obj
        for k in [k for k, old in self._entries.items() if old.component == component]:
            self._drop(k, "replaced")
        if host is not None:
            host.before_load(size, device)
        self._fit(device.type, size, keep=None, host=host)
        from .. import runtime
        t0 = time.perf_counter()
        obj = load()
        runtime.charge("load", time.perf_counter() - t0)
        nbytes = module_bytes(obj)
        self._entries[key] = Entry(obj, nbytes, device, device, component, name)
        self.events.append(("load", name))
        self._fit(device.type, 0, keep=key, host=host)
        return obj

    def compiled(self, key, obj, backend: str):
        """``torch.compile(obj)`` for the component under ``key``, made once; shapes are static
        (``dynamic=False``): each stage samples one shape, recompiled if a run asks another."""
        with self.lock:
            e = self._entries.get(key)
            if e is None or e.obj is not obj:
                return torch.compile(obj, dynamic=False, backend=backend)
            if e.compiled is None:
                e.compiled = {}
            if backend not in e.compiled:
                e.compiled[backend] = torch.compile(obj, dynamic=False, backend=backend)
            return e.compiled[backend]

    def forget(self, key) -> None:
        """Drop ``key`` whoever holds it (the host unloaded it: ComfyUI's /free)."""
        with self.lock:
            if key in self._entries:
                self._drop(key, "unloaded")

    def release(self, key) -> bool:
        """Drop ``key`` because its last user in this run has finished (stage-wise residency);
        a component something else still holds stays.  True when it went."""
        with self.lock:
            if key not in self._entries or self._held_elsewhere(key):
                return False
            self._drop(key, "release")
            return True

    def settle(self) -> None:
        """Bring every device back within its budget, now that components held during the last
        stage may be free."""
        with self.lock:
            for kind in ("cuda", "cpu"):
                self._fit(kind, 0, keep=None)

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self._collect()

    def free(self, device_kind: str | None = None) -> None:
        """Give back everything that nothing else holds: GPU components go to the CPU first,
        CPU ones are dropped (what ComfyUI's /free and "unload models" ask)."""
        with self.lock:
            for kind in ("cuda", "cpu"):
                if device_kind in (None, kind):
                    self._fit(kind, 1 << 62, keep=None, hard=True)

    def resident(self) -> dict[str, str]:
        """name -> device type, in least recently used order (for tests and reports)."""
        return {e.name: e.where.type for e in self._entries.values()}

    # --- making room ---

    def _fit(self, kind: str, size: int, keep, hard: bool = False, host=None) -> None:
        """Move or drop least recently used components of device ``kind`` until ``size`` more
        bytes fit its budget (``hard``: all that can go).  Inside a host with its own memory
        management (ComfyUI) the GPU is the host's to manage."""
        if host is not None and kind != "cpu":
            return
        budget = 0 if hard else self.budget(torch.device(kind))
        if not hard and self.used(kind) + size <= budget:
            return
        self._collect()
        for k in list(self._entries):
            if self.used(kind) + size <= budget and not hard:
                return
            e = self._entries.get(k)
            if e is None or k == keep or e.where.type != kind:
                continue
            if self._held_elsewhere(k):
                continue
            if kind == "cpu":
                self._drop(k, "drop")
            else:
                cpu = torch.device("cpu")
                self._fit("cpu", e.nbytes, keep=k)
                e.obj.to(cpu)
                e.where = cpu
                self.events.append(("offload", e.name))
                if e.where.type == "cuda":
                    torch.cuda.empty_cache()
        if not hard and self.used(kind) + size > budget:
            self.events.append(("over-budget", kind))

    def _held_elsewhere(self, key) -> bool:
        # the Entry's field and getrefcount's own argument are the only references we expect
        return sys.getrefcount(self._entries[key].obj) > 2

    def _drop(self, key, what: str) -> None:
        e = self._entries.pop(key)
        self.events.append((what, e.name))
        del e
        self._collect()

    @staticmethod
    def _collect() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


MANAGER = ModelManager()
