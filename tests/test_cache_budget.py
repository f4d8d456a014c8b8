"""Bounded disk cache (issue 12, item 5): the size budget and least-recently-used eviction,
`unclip cache prune`, leftover temporary files, LoadImage kept off the disk, the package and
node versions in the keys, weights re-hashed when their size+mtime cannot be trusted, and a
read-only cache folder (item 2)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import enginenodes  # noqa: F401  -- registers the Test* node types
import networkx as nx
import pytest
import torch
from PIL import Image

from unclip_nodes.graph import Cache, CacheWarning, MemoryTier, load, run_workflow
from unclip_nodes.graph import cache as cache_mod
from unclip_nodes.graph.cache import MISS, DiskTier, compute_keys, output_key
from unclip_nodes.graph.cli import main
from unclip_nodes.nodes import declare
from unclip_nodes.nodes.core import checkpoint
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.types import IMAGE

GiB = 1 << 30


def image(seed: int) -> torch.Tensor:
    return torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(seed))


def key(n: int) -> str:
    return f"{n:02x}" * 32


def entries(root: Path) -> list[Path]:
    return sorted((root / "objects").glob("*/*.safetensors"))


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last used ``seconds`` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


# --- the budget ---------------------------------------------------------------------------------

def test_default_budget_is_10_gib_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("UNCLIP_CACHE_MAX_BYTES", raising=False)
    assert DiskTier(tmp_path).max_bytes == 10 * GiB == cache_mod.DEFAULT_DISK_BYTES
    monkeypatch.setenv("UNCLIP_CACHE_MAX_BYTES", "2GiB")
    assert DiskTier(tmp_path).max_bytes == 2 * GiB
    monkeypatch.setenv("UNCLIP_CACHE_MAX_BYTES", "500MB")
    assert Cache(tmp_path).disk.max_bytes == 500 * 10 ** 6
    assert Cache(tmp_path, max_bytes=1234).disk.max_bytes == 1234  # the argument wins
    monkeypatch.setenv("UNCLIP_CACHE_MAX_BYTES", "lots")
    with pytest.raises(UserError, match="UNCLIP_CACHE_MAX_BYTES='lots'"):
        DiskTier(tmp_path)


def test_a_put_over_the_budget_evicts_the_least_recently_used_never_the_new_entry(tmp_path):
    probe = DiskTier(tmp_path / "probe").put(key(99), IMAGE, image(99))
    size = probe.stat().st_size  # every 8x8 image entry has this size
    disk = DiskTier(tmp_path / "c", max_bytes=3 * size + size // 2)  # room for three
    paths = {n: disk.put(key(n), IMAGE, image(n)) for n in (1, 2, 3)}
    for n, seconds in ((1, 300), (2, 200), (3, 100)):  # written in the order 1, 2, 3
        age(paths[n], seconds)
    before = paths[1].stat().st_mtime
    assert torch.equal(disk.get(key(1), IMAGE), image(1))  # a hit: 1 is now the most recent
    assert paths[1].stat().st_mtime > before + 250
    new = disk.put(key(4), IMAGE, image(4))
    assert set(entries(tmp_path / "c")) == {paths[1], paths[3], new}  # 2 went: least recently used
    assert disk.get(key(2), IMAGE) is MISS and torch.equal(disk.get(key(4), IMAGE), image(4))
    assert disk.info()[1] <= disk.max_bytes


def test_the_entry_just_written_is_kept_even_when_it_alone_fills_the_budget(tmp_path):
    probe = DiskTier(tmp_path / "probe").put(key(99), IMAGE, image(99))
    size = probe.stat().st_size
    disk = DiskTier(tmp_path / "c", max_bytes=size + size // 2)
    first = disk.put(key(1), IMAGE, image(1))
    age(first, 100)
    second = disk.put(key(2), IMAGE, image(2))
    assert entries(tmp_path / "c") == [second]
    # a value larger than the whole budget is not written at all (nor does it evict anything)
    assert disk.put(key(3), IMAGE, torch.rand(1, 32, 32, 3)) is None
    assert entries(tmp_path / "c") == [second]


def test_the_running_total_is_scanned_once_per_process_then_tracked(tmp_path, monkeypatch):
    scans = []
    real = DiskTier._scan
    monkeypatch.setattr(DiskTier, "_scan", lambda self: scans.append(1) or real(self))
    root = tmp_path / "c"
    DiskTier(root).put(key(1), IMAGE, image(1))
    assert len(scans) == 1
    for n in range(2, 6):  # new tiers on the same folder (a new Cache per run) share the total
        DiskTier(root).put(key(n), IMAGE, image(n))
    used = DiskTier(root).used_bytes()
    assert len(scans) == 1
    assert used == DiskTier(root).info()[1] and DiskTier(root).info()[0] == 5


def test_a_reader_that_loses_the_race_to_an_eviction_just_misses(tmp_path, monkeypatch):
    disk = DiskTier(tmp_path)
    path = disk.put(key(1), IMAGE, image(1))
    real = cache_mod._read_entry

    def evicted_meanwhile(p, stype):
        p.unlink()  # another process evicts the entry between listing and reading
        return real(p, stype)
    monkeypatch.setattr(cache_mod, "_read_entry", evicted_meanwhile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert disk.get(key(1), IMAGE) is MISS
    assert not path.exists()


WRITER = textwrap.dedent("""
    import sys, warnings, torch
    from unclip_nodes.graph.cache import CacheWarning, DiskTier, MISS
    warnings.simplefilter("error", CacheWarning)  # losing a race must be a plain miss
    from unclip_nodes.nodes.types import IMAGE
    root, me, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    disk = DiskTier(root, max_bytes=budget)
    hits = 0
    for i in range(40):
        k = f"{me:02x}{i:02x}" * 16
        disk.put(k, IMAGE, torch.rand(1, 8, 8, 3))
        for j in range(max(0, i - 5), i + 1):  # read back (some were evicted by the other)
            other = f"{1 - me:02x}{j:02x}" * 16
            hits += disk.get(other, IMAGE) is not MISS
    print(hits)
""")


def test_two_processes_sharing_a_folder_stay_within_the_budget_without_errors(tmp_path):
    probe = DiskTier(tmp_path / "probe").put(key(99), IMAGE, image(99))
    budget = 10 * probe.stat().st_size
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "c"), str(me),
                               str(budget)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for me in (0, 1)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    # each process keeps to the budget as it sees it; together they are within two budgets
    n, size = DiskTier(tmp_path / "c").info()
    assert 0 < size <= 2 * budget and n <= 20
    assert DiskTier(tmp_path / "c").temporary() == (0, 0)


# --- temporary files, prune, info ---------------------------------------------------------------

def leftover(shard: Path, name: str, seconds_old: float, size: int = 100) -> Path:
    shard.mkdir(parents=True, exist_ok=True)
    tmp = shard / name
    tmp.write_bytes(b"x" * size)
    age(tmp, seconds_old)
    return tmp


def test_the_first_put_of_a_run_removes_temporary_files_older_than_an_hour(tmp_path):
    shard = tmp_path / "objects" / "ab"
    stale = leftover(shard, ".tmp-stale", 2 * 3600)
    fresh = leftover(shard, ".tmp-fresh", 600)  # a concurrent writer may still be at it
    Cache(tmp_path, memory=MemoryTier()).put(key(1), IMAGE, image(1))
    assert not stale.exists() and fresh.exists()


def test_cache_prune_evicts_down_to_the_budget_and_removes_leftover_temporary_files(
        tmp_path, capsys):
    disk = DiskTier(tmp_path)
    paths = [disk.put(key(n), IMAGE, image(n)) for n in range(4)]
    for n, p in enumerate(paths):
        age(p, 1000 - 100 * n)  # 0 is the least recently used
    size = paths[0].stat().st_size
    old = leftover(tmp_path / "objects" / "ab", ".tmp-old", 120, size=50)
    new = leftover(tmp_path / "objects" / "ab", ".tmp-new", 5, size=50)
    assert main(["cache", "info", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "entries: 4" in out and "temporary files: 2 (100 bytes)" in out, out
    assert main(["cache", "prune", "--max-bytes", str(2 * size + 10),
                 "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"removed 2 entries ({2 * size} bytes)" in out, out
    assert "and 1 temporary file (50 bytes)" in out and ".tmp-old" in out, out
    assert set(entries(tmp_path)) == set(paths[2:])  # the two most recently used stay
    assert not old.exists() and new.exists()
    assert main(["cache", "prune", "--max-bytes", "lots", "--cache-dir", str(tmp_path)]) == 2
    assert "--max-bytes" in capsys.readouterr().err


def test_cache_prune_without_max_bytes_uses_the_default_budget(tmp_path, capsys, monkeypatch):
    disk = DiskTier(tmp_path)
    p = disk.put(key(1), IMAGE, image(1))
    monkeypatch.setenv("UNCLIP_CACHE_MAX_BYTES", "1")
    assert main(["cache", "prune", "--cache-dir", str(tmp_path)]) == 0
    assert "removed 1 entry" in capsys.readouterr().out and not p.exists()


WF = """
outputs: {image: scale.image}
nodes:
  noise: {type: TestNoise, params: {seed: 1, size: 4}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: 2.0}}
"""


def test_run_cache_max_bytes_bounds_the_disk_cache(write_workflow, tmp_path, capsys,
                                                   monkeypatch):
    monkeypatch.setattr(cache_mod, "_SHARED_MEMORY", MemoryTier(0))  # every value from disk
    wf = write_workflow(WF)
    args = ["run", str(wf), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]
    assert main(args + ["--cache-max-bytes", "0"]) == 0
    assert DiskTier(tmp_path / "c").info() == (0, 0)  # nothing fits in a budget of 0 bytes
    assert main(args + ["--cache-max-bytes", "1MiB"]) == 0
    assert DiskTier(tmp_path / "c").info()[0] == 2
    capsys.readouterr()
    assert main(args + ["--cache-max-bytes", "much"]) == 2
    assert "--cache-max-bytes" in capsys.readouterr().err


# --- LoadImage: the file is the source of truth ---------------------------------------------------

def test_load_image_output_stays_off_the_disk_cache(write_workflow, tmp_path):
    import unclip_nodes.nodes  # noqa: F401  -- registers LoadImage
    assert declare.get("LoadImage").disk_cache is False
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "in.png")
    wf = write_workflow(f"""
    outputs: {{image: scale.image}}
    nodes:
      load: {{type: LoadImage, params: {{image: {tmp_path / 'in.png'}}}}}
      scale: {{type: TestScale, links: {{image: load.image}}, params: {{factor: 0.5}}}}
    """)
    cache = Cache(tmp_path / "c", memory=MemoryTier())
    first = run_workflow(wf, cache=cache)
    assert first.status() == {"load": "ran", "scale": "ran"}
    assert cache.disk.info()[0] == 1  # scale's image only: not LoadImage's image and mask
    assert len(cache.memory) == 3  # in memory it is kept like any value
    again = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert again.status() == {"load": "not needed", "scale": "disk hit"}
    wf.write_text(wf.read_text().replace("0.5", "0.25"))
    third = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert third.status() == {"load": "ran", "scale": "ran"}  # read again from its file


# --- versions in the keys -------------------------------------------------------------------------

CHAIN = """
outputs: {image: twice.image}
nodes:
  noise: {type: TestNoise, params: {seed: 1, size: 4}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: 2.0}}
  twice: {type: TestScale, links: {image: scale.image}, params: {factor: 3.0}}
  other: {type: TestRange}
"""


def keys_of(path):
    rs = load(path)
    return compute_keys(rs.nodes, nx.topological_sort(rs.graph))


def test_keys_include_the_package_version(write_workflow, monkeypatch):
    wf = write_workflow(CHAIN)
    base = keys_of(wf)
    assert cache_mod.PACKAGE_VERSION not in ("", "unknown")  # pyproject.toml's
    monkeypatch.setattr(cache_mod, "PACKAGE_VERSION", "0.2.0")
    other = keys_of(wf)
    assert all(other[n] != base[n] for n in base)


def test_package_version_falls_back_when_nothing_says_it(monkeypatch, tmp_path):
    monkeypatch.setattr(cache_mod, "_PACKAGE_ROOT", tmp_path)  # no pyproject.toml here
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, "version", missing)
    assert cache_mod._package_version() == "unknown"


def test_bumping_a_node_version_changes_its_key_and_every_key_downstream(write_workflow,
                                                                        monkeypatch):
    wf = write_workflow(CHAIN)
    base = keys_of(wf)
    spec = declare.get("TestNoise")
    fields = {f: getattr(spec, f) for f in spec.__dataclass_fields__ if f != "_by_name"}
    monkeypatch.setitem(declare.REGISTRY, "TestNoise", type(spec)(**fields | {"version": "2"}))
    keys = keys_of(wf)
    assert {n for n in keys if keys[n] != base[n]} == {"noise", "scale", "twice"}


# --- weights: size+mtime, re-hashed when in doubt -----------------------------------------------

def write_weights(path: Path, data: bytes, mtime: float | None) -> None:
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_weights_rewritten_with_the_same_size_and_mtime_are_told_apart(tmp_path, monkeypatch):
    f = tmp_path / "model.safetensors"
    old = time.time() - 3600 + 0.123  # an hour old, sub-second precision
    write_weights(f, b"a" * 1000, old)
    first = checkpoint.weight_identity(f)
    assert first == [1000, f.stat().st_mtime_ns]  # trusted: size and mtime, no hashing
    c0 = f.stat().st_ctime_ns
    write_weights(f, b"b" * 1000, old)  # same size, mtime put back (cp -p, rsync -t, ...)
    while f.stat().st_ctime_ns == c0:  # a write in the same clock tick as the first one
        time.sleep(0.01)
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    second = checkpoint.weight_identity(f)
    assert second[:2] == first and second != first  # the content decided
    assert checkpoint.weight_identity(f) == second  # and goes on deciding for this file state


def test_recently_written_weights_are_hashed_every_time(tmp_path):
    f = tmp_path / "model.safetensors"
    now = float(int(time.time()))  # a file system with whole-second mtimes: same-second writes
    write_weights(f, b"a" * 1000, now)
    first = checkpoint.weight_identity(f)
    write_weights(f, b"b" * 1000, now)  # rewritten within the same second
    second = checkpoint.weight_identity(f)
    assert len(first) == len(second) == 3 and first != second


def test_untouched_old_weights_are_not_hashed(tmp_path, monkeypatch):
    f = tmp_path / "model.safetensors"
    write_weights(f, b"a" * 1000, time.time() - 3600)
    monkeypatch.setattr(checkpoint, "_hash_stream", lambda p: pytest.fail("hashed"))
    assert checkpoint.weight_identity(f) == checkpoint.weight_identity(f)
    files = {}
    checkpoint.scan_weights(tmp_path, "prior", files, weighted=True, allow_pickle=False)
    assert files == {"prior/model.safetensors": [1000, f.stat().st_mtime_ns]}


# --- a read-only cache folder (item 2) ----------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """``read_only(root)``: make the cache folder ``root`` read-only: chmod 0o555 (as root, where
    modes do not stop writes, also creating and deleting files there fails as it would)."""
    made = []

    def make(root: Path) -> None:
        root = root.resolve()
        for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
            d.chmod(0o555)
            made.append(d)
        if os.geteuid() != 0:
            return

        def inside(p) -> bool:
            return Path(os.path.abspath(p)).is_relative_to(root)
        real_unlink, real_mkstemp = Path.unlink, cache_mod.tempfile.mkstemp

        def unlink(self, *a, **kw):
            if inside(self):
                raise PermissionError(13, "Permission denied", str(self))
            return real_unlink(self, *a, **kw)

        def mkstemp(*a, dir=None, **kw):
            if dir is not None and inside(dir):
                raise PermissionError(13, "Permission denied", str(dir))
            return real_mkstemp(*a, dir=dir, **kw)
        monkeypatch.setattr(Path, "unlink", unlink)
        monkeypatch.setattr(cache_mod.tempfile, "mkstemp", mkstemp)
    yield make
    for d in made:
        d.chmod(0o755)


def test_a_damaged_entry_in_a_read_only_cache_is_recomputed_with_a_warning(
        write_workflow, tmp_path, read_only):
    wf = write_workflow(WF)
    first = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    k = output_key(next(r.key for r in first.report if r.node == "scale"), "image")
    (entry,) = (tmp_path / "c" / "objects").glob(f"*/{k}.*.safetensors")
    data = entry.read_bytes()
    entry.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    read_only(tmp_path / "c")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert again.status() == {"noise": "disk hit", "scale": "ran"}
    assert torch.equal(again.outputs["image"], first.outputs["image"])
    texts = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(texts) == 1, texts  # the entry keeps its (right) name: no write is tried
    assert "damaged" in texts[0] and "could not be deleted" in texts[0], texts
    assert "read-only" in texts[0], texts
    assert entry.exists()  # still there: it could not be deleted


def test_puts_into_a_read_only_cache_warn_once(write_workflow, tmp_path, read_only):
    (tmp_path / "c" / "objects" / "00").mkdir(parents=True)
    read_only(tmp_path / "c")
    wf = write_workflow("""
    outputs: {a: a.image, b: b.image, c: c.image}
    nodes:
      a: {type: TestNoise, params: {seed: 1}}
      b: {type: TestNoise, params: {seed: 2}}
      c: {type: TestNoise, params: {seed: 3}}
    """)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_workflow(wf, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert set(result.status().values()) == {"ran"}
    texts = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(texts) == 1 and "read-only" in texts[0], texts
    assert entries(tmp_path / "c") == []
