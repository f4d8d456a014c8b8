"""Cache keys and the two cache tiers (memory LRU bounded in bytes; content-checked files on disk).

Keys are Merkle style and computed before anything runs: a node's key hashes its type, version,
checked parameters, fingerprint and the keys of the upstream outputs it links to, so a change
anywhere upstream changes every key below it.  A node that is not cacheable (a saver) has no key,
and neither has anything downstream of it: its output may differ from run to run.

The key material also holds this package's version (``PACKAGE_VERSION``): a new release never
serves results computed by an older one, even where a node forgot to bump its ``version``.

Disk entries are safetensors files named ``<output key>.<sha256 of the file>.safetensors``: the
name carries the checksum, so one atomic rename publishes a complete, verifiable entry.  A file
whose bytes do not match its name, or that does not decode, is reported, deleted and recomputed
(in a read-only folder: reported and recomputed, the file stays).

The disk tier is bounded (``DEFAULT_DISK_BYTES``, ``UNCLIP_CACHE_MAX_BYTES``, ``max_bytes=``).
An entry's mtime is its "last used" time: set when written, and again on every hit.  When a write
takes the folder over its budget, the least recently used entries are deleted (never the one
just written) until it is at ``LOW_WATER`` of the budget, so the folder is not listed again on
every following write.  Several processes may share a folder: entries are immutable files that
appear by an atomic rename and go by an unlink, so a reader that loses a race to an eviction
simply misses.  Each process counts the folder once (on its first write) and then adds what it
writes; it counts again when it evicts, or after ``RESCAN_SECONDS``.

Nodes declared ``disk_cache=False`` (LoadImage: the file it reads is the source of truth, and its
decoded float tensors are ~16 bytes per pixel, 1.6 GB for a 10000 x 10000 image) keep their
outputs in memory only: the executor passes ``disk=False`` to ``Cache.get`` and ``put``.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load as st_load, save as st_save

from ..nodes import runtime
from ..nodes.errors import UserError, excerpt
from ..nodes.types import SocketType, nbytes

KEY_FORMAT = "unclip-nodes cache 1"
DEFAULT_MEMORY_BYTES = 1 << 30
DEFAULT_DISK_BYTES = 10 << 30
"""The disk tier's budget unless ``UNCLIP_CACHE_MAX_BYTES`` (or ``max_bytes=``) says otherwise."""
DISK_BYTES_ENV = "UNCLIP_CACHE_MAX_BYTES"
LOW_WATER = 0.9
"""A write over the budget evicts down to this fraction of it (``prune`` down to the budget)."""
RESCAN_SECONDS = 600.0
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 3600.0
"""Temporary files this old are left over from a writer that died (a live one takes seconds)."""
PRUNE_TMP_SECONDS = 60.0
SUFFIX = ".safetensors"
MISS = object()
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _package_version() -> str:
    """This package's version: ``pyproject.toml`` beside it (a checkout or a ComfyUI pack, which
    may differ from whatever ``unclip-nodes`` is installed), else the installed metadata, else
    "unknown"."""
    try:
        text = (_PACKAGE_ROOT / "pyproject.toml").read_text(encoding="utf-8")
        section = re.search(r"(?ms)^\[project\]\s*$(.*?)(?=^\[|\Z)", text)
        found = section and re.search(r'(?m)^version\s*=\s*["\']([^"\']+)["\']', section.group(1))
        if found:
            return found.group(1)
    except OSError:
        pass
    from importlib import metadata
    try:
        return metadata.version("unclip-nodes")
    except Exception:  # noqa: BLE001 -- not installed, or broken metadata
        return "unknown"


PACKAGE_VERSION = _package_version()
"""Part of every key: results of one release are never served to another."""


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
        material = {"format": KEY_FORMAT, "package": PACKAGE_VERSION, "type": rn.spec.type,
                    "version": rn.spec.version, "params": rn.params, "inputs": upstream}
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
    """torch bumps a tensor's ``_version`` on every in-place change: equal tuples = untouched.
    Tensors made under ``torch.inference_mode()`` (ComfyUI runs every node so) keep no counter
    and cannot be changed in place outside it: they count as -1, unchecked."""
    return tuple(-1 if t.is_inference() else t._version for t in tensors_in(value))


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


def default_max_bytes() -> int:
    """``UNCLIP_CACHE_MAX_BYTES`` (a size: 500MB, 2GiB, ...), else ``DEFAULT_DISK_BYTES``."""
    raw = os.environ.get(DISK_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_DISK_BYTES
    from ..nodes.core.manager import parse_bytes
    try:
        return parse_bytes(raw)
    except ValueError as e:
        raise UserError(f"{DISK_BYTES_ENV}={excerpt(raw)}: {e}") from None


class _Usage:
    """What this process knows of one cache folder's size; shared by the DiskTiers on it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bytes = 0
        self.counted_at: float | None = None  # time.monotonic() of the last full count


_USAGE: dict[str, _Usage] = {}
_USAGE_LOCK = threading.Lock()

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class DiskTier:
    """Checksummed entries under ``root/objects/<2 hex>/``, at most ``max_bytes`` of them
    (roughly, when several processes write: each keeps to the budget as it last counted)."""

    def __init__(self, root: str | Path, max_bytes: int | None = None):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        with _USAGE_LOCK:
            self._usage = _USAGE.setdefault(os.path.abspath(self.root), _Usage())
        self._write_warned = False
        self._writable = True

    def _shards(self) -> list[os.DirEntry]:
        """The shard folders, never through a link: a link in the cache (``objects`` or a
        shard) may point anywhere, and what it points at is not ours to list or delete."""
        if not _real_dir(self.objects):
            return []
        try:
            return [d for d in os.scandir(self.objects) if d.is_dir(follow_symlinks=False)]
        except OSError:
            return []

    def _entries(self, key: str) -> list[Path]:
        shard = self.objects / key[:2]
        if not (_real_dir(self.objects) and _real_dir(shard)):
            return []
        try:
            names = os.listdir(shard)
        except OSError:
            return []
        return [shard / n for n in sorted(names) if n.startswith(key + ".") and n.endswith(SUFFIX)]

    def get(self, key: str, stype: SocketType) -> Any:
        for path in self._entries(key):
            if not _regular(path):
                warnings.warn(f"cache entry {path} is not a file (a folder or a link); it is not "
                              "used, and left alone: remove it yourself", CacheWarning,
                              stacklevel=3)
                continue
            try:
                value = _read_entry(path, stype)
            except FileNotFoundError:
                continue  # evicted (by another process) since it was listed: a plain miss
            except Exception as e:  # noqa: BLE001 -- whatever is wrong, the entry is not trusted
                self._damaged(path, e)
                continue
            try:
                os.utime(path)  # "last used" (atime is not reliably updated by reading)
            except OSError:
                pass  # read-only folder, or just evicted: the value is good either way
            return value
        return MISS

    def _damaged(self, path: Path, e: Exception) -> None:
        try:
            size = path.stat().st_size
            path.unlink(missing_ok=True)
        except FileNotFoundError:
            return  # someone else removed it meanwhile
        except OSError as err:
            why = ("the cache folder is read-only" if err.errno in _READ_ONLY
                   else "the file could not be removed")
            warnings.warn(f"cache entry {path} is damaged ({e}); it is recomputed in memory, but "
                          f"could not be deleted: {why} ({err.strerror or err})", CacheWarning,
                          stacklevel=3)
            return
        with self._usage.lock:
            self._usage.bytes = max(0, self._usage.bytes - size)
        warnings.warn(f"cache entry {path} is damaged ({e}); it is deleted and recomputed",
                      CacheWarning, stacklevel=3)

    def put(self, key: str, stype: SocketType, value: Any) -> Path | None:
        if not self._writable:
            return None
        tensors, meta = stype.encode(value)
        tensors = {k: _own(t) for k, t in tensors.items()}
        header = json.dumps({"type": stype.name, "meta": meta}, ensure_ascii=False)
        data = st_save(tensors, metadata={"unclip": header})
        if len(data) > self.max_bytes:
            return None  # more than the whole budget: kept in memory only
        path = self.objects / key[:2] / f"{key}.{sha256(data)}{SUFFIX}"
        try:
            self._count()
            others = self._entries(key)
            added = 0
            if path not in others:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, data)
                added = len(data)
            for old in others:
                if old != path and _regular(old):
                    added -= _size(old)
                    old.unlink(missing_ok=True)
        except OSError as e:
            self._write_failed(path, e)
            return None
        with self._usage.lock:
            self._usage.bytes += added
            over = self._usage.bytes > self.max_bytes
        if over:
            self.evict(int(self.max_bytes * LOW_WATER), keep=path)
        return path

    def _write_failed(self, path: Path, e: OSError) -> None:
        """Warn once per tier (a run), not once per entry; a read-only folder is not tried again."""
        read_only = isinstance(e, PermissionError) or e.errno in _READ_ONLY
        if read_only:
            self._writable = False
        if self._write_warned:
            return
        self._write_warned = True
        if read_only:
            text = (f"the cache folder {self.root} is read-only ({e.strerror or e}): results are "
                    "not stored there (choose another with --cache-dir, or use --no-cache)")
        else:
            text = (f"could not write cache entry {path}: {e} (further write problems of this "
                    "run are not reported)")
        warnings.warn(text, CacheWarning, stacklevel=4)

    # --- the budget -----------------------------------------------------------------------------

    def _scan(self) -> tuple[list[tuple[float, int, Path]], list[tuple[float, int, Path]]]:
        """(entries, temporary files), each as (mtime, size, path); what vanishes meanwhile
        (another process evicting) is left out."""
        entries: list = []
        temps: list = []
        for shard in self._shards():
            try:
                files = list(os.scandir(shard.path))
            except OSError:
                continue
            for f in files:
                if f.name.startswith(TMP_PREFIX):
                    bucket = temps
                elif f.name.endswith(SUFFIX):
                    bucket = entries
                else:
                    continue
                try:
                    st = f.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):  # a folder or a link there is not ours to delete
                    bucket.append((st.st_mtime, st.st_size, Path(f.path)))
        return entries, temps

    def _count(self) -> None:
        """Count the folder once per process (and again after RESCAN_SECONDS), removing the
        temporary files that a writer which died left behind."""
        u = self._usage
        if u.counted_at is not None and time.monotonic() - u.counted_at < RESCAN_SECONDS:
            return
        entries, temps = self._scan()
        _remove_temps(temps, STALE_TMP_SECONDS)
        with u.lock:
            u.bytes, u.counted_at = sum(s for _, s, _ in entries), time.monotonic()

    def used_bytes(self) -> int:
        """The bytes of entries as this process counts them."""
        self._count()
        return self._usage.bytes

    def evict(self, target: int, keep: Path | None = None) -> list[tuple[Path, int]]:
        """Delete the least recently used entries (oldest mtime first) until at most ``target``
        bytes remain; ``keep`` (the entry just written) is never deleted.  Returns the
        (path, size) of what was deleted."""
        entries, _ = self._scan()
        total = sum(s for _, s, _ in entries)
        removed = []
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= target:
                break
            if path == keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass  # another process evicted it first
            except OSError:
                continue  # cannot delete here (read-only): it still counts
            else:
                removed.append((path, size))
            total -= size
        with self._usage.lock:
            self._usage.bytes, self._usage.counted_at = total, time.monotonic()
        return removed

    def prune(self, max_bytes: int | None = None, temp_age: float = PRUNE_TMP_SECONDS
              ) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
        """Evict down to ``max_bytes`` (default: this tier's budget) and delete temporary files
        older than ``temp_age`` seconds.  Returns (entries removed, temporary files removed)."""
        removed = self.evict(self.max_bytes if max_bytes is None else max_bytes)
        return removed, _remove_temps(self._scan()[1], temp_age)

    def info(self) -> tuple[int, int]:
        """(entries, bytes) on disk."""
        entries, _ = self._scan()
        return len(entries), sum(s for _, s, _ in entries)

    def temporary(self) -> tuple[int, int]:
        """(count, bytes) of temporary files: writes under way, or left over by a writer that
        died (the first write of a run removes those older than an hour, ``prune`` those older
        than a minute)."""
        temps = self._scan()[1]
        return len(temps), sum(s for _, s, _ in temps)

    def clear(self) -> int:
        """Delete every entry (and leftover temp files); only our own files are touched: regular
        files in real shard folders, never what a link points at.  A folder that refuses
        (read-only) is a UserError naming it."""
        entries, temps = self._scan()
        n = 0
        for _, _, f in entries + temps:
            try:
                f.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise UserError(f"cannot delete cache entries in {f.parent}: {e.strerror or e}"
                                f"{' (a read-only folder)' if e.errno in _READ_ONLY else ''}; "
                                f"{n} entries were deleted before it", field="cache_dir") from None
            n += f.name.endswith(SUFFIX)
        for shard in self._shards():
            try:
                os.rmdir(shard.path)
            except OSError:
                pass  # not empty (something not ours is in it), or read-only
        with self._usage.lock:
            self._usage.counted_at = None  # count again at the next write
        return n


def _real_dir(path: Path) -> bool:
    """A folder, and not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _regular(path: Path) -> bool:
    """A regular file, and not a link to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove_temps(temps: list[tuple[float, int, Path]], older_than: float
                  ) -> list[tuple[Path, int]]:
    """Delete the temporary files last written more than ``older_than`` seconds ago (a younger
    one may belong to a writer still at work); what cannot be deleted stays."""
    cutoff = time.time() - older_than
    removed = []
    for mtime, size, path in temps:
        if mtime < cutoff:
            try:
                path.unlink()
            except OSError:
                continue
            removed.append((path, size))
    return removed


def _own(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor that owns its storage (safetensors refuses shared memory)."""
    t = t.detach().cpu().contiguous()
    return t if t.untyped_storage().nbytes() == t.nbytes else t.clone()


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the whole new one, never a part (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, runtime.normal_mode())  # mkstemp's 0600 would make every file private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_output(path: Path, data: bytes) -> Path:
    """A file the user named (``-o``, ``--report``): a regular file, new or old, through temp
    file + rename as ``write_atomic`` (readers never see half of it); through a link, the file
    it points at (the link stays); a terminal, ``/dev/null`` or a pipe in place, as a shell's
    ``>`` would (a pipe with no reader fails instead of waiting).  Never renames over anything
    that is not a regular file.  Returns the path written; OSError says why not."""
    try:
        info = os.stat(path)  # what a link points at
    except FileNotFoundError:
        info = None
    if info is None or stat.S_ISREG(info.st_mode):
        target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
        return target
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "it is a folder; give a file name")
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise OSError(errno.EINVAL, "it is not a regular file, a terminal or a pipe (a socket "
                                    "or a disk device); give a file name")
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "it is a pipe that nothing reads") from None
        raise
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(path)


def _read_entry(path: Path, stype: SocketType) -> Any:
    size = os.lstat(path).st_size
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # swapped for a link: refused
    with os.fdopen(fd, "rb") as f:
        data = f.read(size + 1)  # bounded: the entry is the size its folder listing says
    if len(data) != size:
        raise ValueError("its size changed while it was read")
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
    ``max_bytes``: the disk tier's budget (default ``UNCLIP_CACHE_MAX_BYTES``, else 10 GiB).
    Outputs of nodes declared ``disk_cache=False`` (see ``compute_keys``) skip the disk tier.
    """

    def __init__(self, dir: str | Path | None = None, *, memory: MemoryTier | None = None,
                 disk: bool = True, enabled: bool = True, max_bytes: int | None = None):
        self.enabled = enabled
        self.memory = memory if memory is not None else _SHARED_MEMORY
        self.disk = (DiskTier(dir or default_dir(), max_bytes=max_bytes)
                     if disk and enabled else None)

    @classmethod
    def off(cls) -> "Cache":
        return cls(enabled=False, memory=MemoryTier(0))

    def get(self, key: str | None, stype: SocketType, disk: bool = True
            ) -> tuple[Any, str | None]:
        """(value, "memory" | "disk") or (MISS, None).  ``disk=False``: the memory tier only
        (the node is declared ``disk_cache=False``)."""
        if not self.enabled or key is None:
            return MISS, None
        value = self.memory.get(key)
        if value is not MISS:
            return value, "memory"
        if disk and self.disk is not None and stype.storable:
            value = self.disk.get(key, stype)
            if value is not MISS:
                self.memory.put(key, value)
                return value, "disk"
        return MISS, None

    def put(self, key: str | None, stype: SocketType, value: Any, disk: bool = True) -> None:
        if not self.enabled or key is None:
            return
        self.memory.put(key, value)
        if disk and self.disk is not None and stype.storable:
            self.disk.put(key, stype, value)

    def constants(self) -> "ConstantStore | None":
        """This cache as the host's store for checkpoint constants (``runtime.Host.store``)."""
        return ConstantStore(self) if self.enabled else None


class ConstantStore:
    """A checkpoint constant (``nodes.core.constants``) kept in the cache under its own key,
    with this package's version mixed in as in every node key."""

    def __init__(self, cache: Cache):
        self.cache = cache

    def _key(self, key: str) -> str:
        return hashlib.sha256(f"{PACKAGE_VERSION}\0{key}".encode()).hexdigest()

    def get(self, key: str, stype: SocketType) -> Any:
        value, _ = self.cache.get(self._key(key), stype)
        return None if value is MISS else value

    def put(self, key: str, stype: SocketType, value: Any) -> None:
        self.cache.put(self._key(key), stype, value)
