"""Shared helpers for the engine tests: a private cache per test and the CLI in a subprocess."""
from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

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


def write(path: Path, text: str) -> Path:
    """Dedented ``text`` into ``path`` (its folders made); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


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


# --- isolation: node and socket-type registries ---------------------------------------------------

@pytest.fixture(autouse=True)
def _isolated_registries():
    """Each test sees the node and socket-type registries as they were before it ran, and what it
    declares (a node in a test body, a monkeypatched spec) is gone afterwards.  Declarations made
    while a module is imported for the first time during the test (a lazy ``import enginenodes``,
    a node module) stay: that module will not run again to redeclare them."""
    from unclip_nodes.nodes import declare, types
    nodes, sockets, modules = dict(declare.REGISTRY), dict(types.SOCKET_TYPES), set(sys.modules)
    yield
    imported = set(sys.modules) - modules
    kept = {t: s for t, s in declare.REGISTRY.items()
            if t not in nodes and getattr(s.fn, "__module__", None) in imported}
    used = {sock.type for s in kept.values() for sock in (*s.inputs, *s.outputs)}
    bound = {id(v) for m in imported for v in getattr(sys.modules[m], "__dict__", {}).values()}
    kept_sockets = {n: t for n, t in types.SOCKET_TYPES.items()
                    if n not in sockets and (n in used or id(t) in bound)}
    declare.REGISTRY.clear()
    declare.REGISTRY.update(nodes, **kept)
    types.SOCKET_TYPES.clear()
    types.SOCKET_TYPES.update(sockets, **kept_sockets)


# --- optional dependencies: skip here, fail under CI ---------------------------------------------

def in_ci() -> bool:
    """Whether this run is CI's (the CI variable set, as CI services do, and not to false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(condition: object, why: str) -> None:
    """Inside a test: go on if ``condition`` holds; otherwise skip it, or fail it under CI, where
    every test must run (a missing reference there would silently drop the parity proof)."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"required under CI: {why}", pytrace=False)
    pytest.skip(why)


def requires(condition: object, reason: str) -> pytest.MarkDecorator:
    """``@requires(cond, reason)``: the decorator form of ``require`` (the ``require`` mark)."""
    return pytest.mark.require(bool(condition), reason=reason)


def require_module(name: str, why: str = ""):
    """``pytest.importorskip(name)`` that fails instead under CI; returns the module."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        require(False, f"{why or 'needs ' + name} (import {name}: {e})")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "require(condition, reason): skip the test when condition is false, but fail "
        "it when the CI environment variable is set")
    config.stash[_SEED] = _order_seed()


def pytest_runtest_setup(item):
    for mark in item.iter_markers("require"):
        require(mark.args[0] if mark.args else mark.kwargs["condition"],
                mark.kwargs.get("reason", mark.args[1] if len(mark.args) > 1 else "required"))


# --- random order (UNCLIP_TEST_ORDER=random, replay with UNCLIP_TEST_SEED=N) -----------------------

_SEED = pytest.StashKey[Optional[int]]()


def _order_seed() -> int | None:
    if os.environ.get("UNCLIP_TEST_ORDER", "").strip().lower() != "random":
        return None
    seed = os.environ.get("UNCLIP_TEST_SEED", "").strip()
    return int(seed) if seed else random.SystemRandom().randrange(1_000_000)


def _replay(seed: int) -> str:
    return f"random test order, seed {seed} (replay: UNCLIP_TEST_ORDER=random UNCLIP_TEST_SEED={seed})"


def pytest_report_header(config):
    seed = config.stash.get(_SEED, None)
    return _replay(seed) if seed is not None else "test order: as collected (UNCLIP_TEST_ORDER=random shuffles)"


def shuffled(items: list, seed: int) -> list:
    """Modules in a random order, then the classes of each module, then the tests of each class
    (or module), so each module- and class-scoped fixture is still set up once."""
    rng = random.Random(seed)

    def groups(seq, key):
        out: dict = {}
        for it in seq:
            out.setdefault(key(it), []).append(it)
        return list(out.values())

    result = []
    modules = groups(items, lambda it: it.path)
    rng.shuffle(modules)
    for module in modules:
        classes = groups(module, lambda it: getattr(it, "cls", None))
        rng.shuffle(classes)
        for tests in classes:
            rng.shuffle(tests)
            result.extend(tests)
    return result


@pytest.hookimpl(tryfirst=True)  # before pytest's grouping of items by parametrized fixtures
def pytest_collection_modifyitems(config, items):
    seed = config.stash.get(_SEED, None)
    if seed is not None:
        items[:] = shuffled(items, seed)


def pytest_terminal_summary(terminalreporter, config):
    seed = config.stash.get(_SEED, None)
    if seed is not None:  # also under -q, which hides the header
        terminalreporter.write_line(_replay(seed))
