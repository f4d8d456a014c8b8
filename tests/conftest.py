"""Shared helpers for the engine tests: a private cache per test and the CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# The CLI with the engine's test nodes registered, as a fresh process would run it.
CLI = ("import sys, enginenodes; from unclip_nodes.graph.cli import main; "
       "sys.exit(main(sys.argv[1:]))")


@pytest.fixture
def engine_cache(tmp_path):
    """A cache with its own memory tier and disk folder, so tests never share entries."""
    from unclip_nodes.graph.cache import Cache, MemoryTier
    return Cache(tmp_path / "cache", memory=MemoryTier())


@pytest.fixture
def write_workflow(tmp_path):
    """Write dedented YAML to a file in tmp_path and return its path."""
    def write(text: str, name: str = "wf.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path
    return write


@pytest.fixture
def cli(tmp_path):
    """``cli(args, **env)``: run ``unclip ARGS`` in a new process in tmp_path (test nodes
    registered, cache under tmp_path/xdg) and return the finished process."""
    return lambda args, **env: run_cli(args, tmp_path, **env)


def cli_env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    env.update(extra)
    return env


def run_cli(args: list[str], tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """``unclip ARGS`` in a new process (test nodes registered); returns the finished process."""
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], cwd=tmp_path,
                          env=cli_env(tmp_path, **extra_env), capture_output=True, text=True,
                          timeout=120)
