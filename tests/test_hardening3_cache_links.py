"""`unclip cache clear/prune` delete only the cache's own files: never through a link (a
shard folder, `objects`, an entry), never a folder standing where an entry should be, and a
cache folder that is itself a link only when the user named it; a read-only cache ends in one
line, not a traceback."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from unclip_nodes.graph.cache import MISS, SUFFIX, Cache
from unclip_nodes.graph.cli import main
from unclip_nodes.nodes.types import SOCKET_TYPES

import torch

KEY = "ab" + "0" * 62


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def entry_name(key: str = KEY) -> str:
    return f"{key}.{'1' * 64}{SUFFIX}"


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder outside the cache with files named like cache entries."""
    d = tmp_path / "precious"
    d.mkdir()
    (d / entry_name()).write_bytes(b"keep me")
    (d / ".tmp-old").write_bytes(b"keep me too")
    os.utime(d / ".tmp-old", (0, 0))
    return d


def a_real_entry(root: Path) -> Path:
    cache = Cache(root)
    cache.disk.put("cd" + "1" * 62, SOCKET_TYPES["IMAGE"], torch.zeros(1, 4, 4, 3))
    (path,) = (root / "objects" / "cd").iterdir()
    return path


def prune_or_clear(action: str, root: Path) -> list:
    return ["cache", action, "--cache-dir", root] + (["--max-bytes", "0"]
                                                      if action == "prune" else [])


def test_a_linked_shard_folder_is_not_followed(tmp_path, victim, capsys):
    root = tmp_path / "cache"
    mine = a_real_entry(root)
    (root / "objects" / "ab").symlink_to(victim, target_is_directory=True)
    code, _, err = run(prune_or_clear("clear", root), capsys)
    assert code == 0, err
    assert not mine.exists()  # the cache's own entry went
    assert sorted(p.name for p in victim.iterdir()) == sorted([entry_name(), ".tmp-old"])


@pytest.mark.parametrize("action", ["clear", "prune"])
def test_a_linked_objects_folder_is_not_followed(tmp_path, victim, action, capsys):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "objects").symlink_to(victim.parent, target_is_directory=True)  # holds 'precious'
    code, _, err = run(prune_or_clear(action, root), capsys)
    assert code == 0, err
    assert sorted(p.name for p in victim.iterdir()) == sorted([entry_name(), ".tmp-old"])


def test_an_entry_that_is_a_link_is_neither_followed_nor_read(tmp_path, victim, capsys):
    root = tmp_path / "cache"
    shard = root / "objects" / "ab"
    shard.mkdir(parents=True)
    (shard / entry_name()).symlink_to(victim / entry_name())
    with pytest.warns(UserWarning, match="not a file"):
        Cache(root).disk.get(KEY, SOCKET_TYPES["IMAGE"])
    code, _, err = run(["cache", "clear", "--cache-dir", root], capsys)
    assert code == 0, err
    assert (victim / entry_name()).read_bytes() == b"keep me"


def test_a_default_cache_folder_that_is_a_link_is_cleared_only_when_named(
        tmp_path, victim, monkeypatch, capsys):
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    shard = victim / "objects" / "ab"
    shard.mkdir(parents=True)
    (shard / entry_name()).write_bytes(b"someone else's")
    (xdg / "unclip-nodes").symlink_to(victim, target_is_directory=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    code, _, err = run(["cache", "clear"], capsys)
    assert code == 2 and "is a link" in err and "--cache-dir" in err
    assert len(err.strip().splitlines()) == 1
    assert (shard / entry_name()).exists()
    code, _, err = run(["cache", "clear", "--cache-dir", xdg / "unclip-nodes"], capsys)
    assert code == 0, err  # named: the user means it
    assert not (shard / entry_name()).exists()


def test_a_folder_where_an_entry_should_be_is_reported_every_run_and_never_removed(
        tmp_path, capsys):
    root = tmp_path / "cache"
    odd = root / "objects" / "ab" / entry_name()
    odd.mkdir(parents=True)
    (odd / "inside").write_bytes(b"x")
    for _ in range(2):  # every run: each a new Cache
        with pytest.warns(UserWarning, match="not a file"):
            assert Cache(root).disk.get(KEY, SOCKET_TYPES["IMAGE"]) is MISS
    Cache(root).disk.put(KEY, SOCKET_TYPES["IMAGE"], torch.zeros(1, 2, 2, 3))
    for action in ("prune", "clear"):
        code, _, err = run(["cache", action, "--cache-dir", root], capsys)
        assert code == 0 and "Traceback" not in err, err
    assert (odd / "inside").read_bytes() == b"x"


def test_clear_in_a_read_only_cache_is_one_line(tmp_path, monkeypatch, capsys):
    root = tmp_path / "cache"
    a_real_entry(root)

    def refuse(self, *a, **k):  # root deletes anywhere: the refusal a read-only folder gives
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "unlink", refuse)
    code, _, err = run(["cache", "clear", "--cache-dir", root], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "field 'cache_dir'" in err and "Permission denied" in err
