"""Cache keys and the two cache tiers (memory LRU bounded in bytes; content-checked files on disk).

Keys are Merkle style and computed before anything runs: a node's key hashes its type, version,
checked parameters, fingerprint and the keys of the upstream outputs it links to, so a change
anywhere upstream changes every key below it.  A node that is not cacheable (a saver) has no key,
and neither has anything downstream of it: its output may differ from run to run.

Disk entries are safetensors files named ``<output key>.<sha256 of the file>.safetensors``: the
name carries the checksum, so one atomic rename publishes a complete, verifiable entry.  A file
whose bytes do not match its name, or that does not decode, is reported, deleted and recomputed.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load as st_load, save as st_save

from ..nodes import runtime
from ..nodes.types import SocketType, nbytes

KEY_FORMAT = "unclip-nodes cache 1"
DEFAULT_MEMORY_BYTES = 1 << 30
SUFFIX = ".safetensors"
MISS = object()


class CacheWarning(UserWarning):
    """A cache entry could not be used or written; the run goes on without it."""


# --- keys ---------------------------------------------------------------------------------------

def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output_key(node_key: str, output: str) -> str:
    return sha256(f"{node_key}/{output}".encode())


def compute_keys(nodes: dict, order: Iterable[str], batched: bool = False
                 ) -> dict[str, str | None]:
    """Key per node id (None when the node or anything it depends on is not cacheable).

    ``nodes`` maps id -> validate.ResolvedNode; ``order`` is topological.  ``batched``: the run
    batches nodes that declare a batch parameter (``--batch``); their results differ from
    unbatched ones in the last bits, so they (and all that follows from them) get keys of their
    own and never stand in for unbatched results, nor the reverse.
    """
    keys: dict[str, str | None] = {}
    for nid in order:
        rn = nodes[nid]
        upstream = {name: keys[src] and output_key(keys[src], out)
                    for name, (src, out) in rn.links.items()}
        if not rn.spec.cacheable or any(v is None for v in upstream.values()):
            keys[nid] = None
            continue
        material = {"format": KEY_FORMAT, "type": rn.spec.type, "version": rn.spec.version,
                    "params": rn.params, "inputs": upstream}
        if rn.spec.fingerprint is not None:
            material["fingerprint"] = rn.fingerprint
        if batched and rn.spec.batch:
            material["batched"] = True
        keys[nid] = sha256(canonical(material))
    return keys


# --- memory -------------------------------------------------------------------------------------

def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors a value holds (records, tuples, lists, dicts), for mutation checks."""
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in tensors_in(getattr(value, f.name))]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


def versions(value: Any) -> tuple[int, ...]:
    """torch bumps a tensor's ``_version`` on every in-place change: equal tuples = untouched."""
    return tuple(t._version for t in tensors_in(value))


class MemoryTier:
    """Least-recently-used values, bounded by the bytes of tensor memory they hold.

    A value whose tensors were changed in place since it was stored is dropped, never served.
    """

    def __init__(self, budget_bytes: int = DEFAULT_MEMORY_BYTES):
        self.budget = budget_bytes
        self._items: collections.OrderedDict[str, tuple[Any, int, tuple]] = \
            collections.OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Any:
        item = self._items.get(key)
        if item is None:
            return MISS
        value, size, vers = item
        if versions(value) != vers:
            self.drop(key)
            warnings.warn(f"a cached value ({key[:12]}) was changed in place after it was "
                          "stored; it is recomputed", CacheWarning, stacklevel=2)
            return MISS
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        self.drop(key)
        size = nbytes(value)
        if size > self.budget:
            return
        self._items[key] = (value, size, versions(value))
        self.bytes += size
        while self.bytes > self.budget:
            self.drop(next(iter(self._items)))

    def drop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


# --- disk ---------------------------------------------------------------------------------------

def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unclip-nodes"


class DiskTier:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.objects = self.root / "objects"

    def _entries(self, key: str) -> list[Path]:
        shard = self.objects / key[:2]
        try:
            names = os.listdir(shard)
        except OSError:
            return []
        return [shard / n for n in sorted(names) if n.startswith(key + ".") and n.endswith(SUFFIX)]

    def get(self, key: str, stype: SocketType) -> Any:
        for path in self._entries(key):
            try:
                value = _read_entry(path, stype)
            except Exception as e:  # noqa: BLE001 -- whatever is wrong, the entry is not trusted
                warnings.warn(f"cache entry {path} is damaged ({e}); it is deleted and "
                              "recomputed", CacheWarning, stacklevel=2)
                path.unlink(missing_ok=True)
                continue
            return value
        return MISS

    def put(self, key: str, stype: SocketType, value: Any) -> Path | None:
        tensors, meta = stype.encode(value)
        tensors = {k: _own(t) for k, t in tensors.items()}
        header = json.dumps({"type": stype.name, "meta": meta}, ensure_ascii=False)
        data = st_save(tensors, metadata={"unclip": header})
        path = self.objects / key[:2] / f"{key}.{sha256(data)}{SUFFIX}"
        try:
            others = self._entries(key)
            if path not in others:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, data)
            for old in others:
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as e:
            warnings.warn(f"could not write cache entry {path}: {e}", CacheWarning, stacklevel=2)
            return None
        return path

    def info(self) -> tuple[int, int]:
        """(entries, bytes) on disk."""
        files = list(self.objects.glob(f"*/*{SUFFIX}")) if self.objects.is_dir() else []
        return len(files), sum(f.stat().st_size for f in files)

    def clear(self) -> int:
        """Delete every entry (and leftover temp files); only our own files are touched."""
        n = 0
        if not self.objects.is_dir():
            return 0
        for shard in self.objects.iterdir():
            if not shard.is_dir():
                continue
            for f in shard.iterdir():
                if f.name.endswith(SUFFIX) or f.name.startswith(".tmp-"):
                    f.unlink(missing_ok=True)
                    n += f.name.endswith(SUFFIX)
            try:
                shard.rmdir()
            except OSError:
                pass
        return n


def _own(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor that owns its storage (safetensors refuses shared memory)."""
    t = t.detach().cpu().contiguous()
    return t if t.untyped_storage().nbytes() == t.nbytes else t.clone()


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, runtime.normal_mode())  # mkstemp's 0600 would make every file private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_entry(path: Path, stype: SocketType) -> Any:
    data = path.read_bytes()
    if sha256(data) != path.name.split(".")[1]:
        raise ValueError("checksum mismatch")
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    info = json.loads(header["__metadata__"]["unclip"])
    if info["type"] != stype.name:
        raise ValueError(f"holds {info['type']}, expected {stype.name}")
    return stype.decode(st_load(data), info["meta"])


# --- both ---------------------------------------------------------------------------------------

_SHARED_MEMORY = MemoryTier()


class Cache:
    """The memory tier in front of an optional disk tier.

    ``Cache()`` uses this process's shared memory tier and the user cache directory;
    ``Cache(dir)`` another directory; ``Cache(disk=False)`` memory only; ``Cache.off()`` nothing.
    """

    def __init__(self, dir: str | Path | None = None, *, memory: MemoryTier | None = None,
                 disk: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.memory = memory if memory is not None else _SHARED_MEMORY
        self.disk = DiskTier(dir or default_dir()) if disk and enabled else None

    @classmethod
    def off(cls) -> "Cache":
        return cls(enabled=False, memory=MemoryTier(0))

    def get(self, key: str | None, stype: SocketType) -> tuple[Any, str | None]:
        """(value, "memory" | "disk") or (MISS, None)."""
        if not self.enabled or key is None:
            return MISS, None
        value = self.memory.get(key)
        if value is not MISS:
            return value, "memory"
        if self.disk is not None and stype.storable:
            value = self.disk.get(key, stype)
            if value is not MISS:
                self.memory.put(key, value)
                return value, "disk"
        return MISS, None

    def put(self, key: str | None, stype: SocketType, value: Any) -> None:
        if not self.enabled or key is None:
            return
        self.memory.put(key, value)
        if self.disk is not None and stype.storable:
            self.disk.put(key, stype, value)
