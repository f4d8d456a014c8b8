"""The test harness itself (tests/conftest.py): registries restored after each test, the
random order and its replay seed, and requirements that skip here but fail under CI."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest
from unclip_nodes.nodes import declare, types

# Run in a fresh pytest (file order, then shuffled): the first test declares a node and a socket
# type in its body and imports a module that declares one when imported; the others, run after
# it, see the first two gone and the imported one kept (its module will not run again).
INNER = {
    "lazy_nodes.py": '''
        from unclip_nodes.nodes.declare import Output, node

        @node("HarnessLazy", category="test/harness", description="Declared on import.",
              outputs=[Output("n", "INT")])
        def lazy():
            return 1
        ''',
    "test_marked.py": '''
        import pytest

        @pytest.mark.require(False, reason="a missing reference")
        def test_missing():
            pass

        @pytest.mark.require(True, reason="present")
        def test_present():
            pass
        ''',
    "test_inner.py": '''
        import enginenodes  # noqa: F401  (declared at collection, for every test)
        from unclip_nodes.nodes import declare, types

        def test_a_declares():
            types.socket_type("HARNESS_SOCKET", "a socket declared in a test")

            @declare.node("HarnessLeak", category="test/harness", description="Declared here.",
                          outputs=[declare.Output("x", "HARNESS_SOCKET")])
            def leak():
                return None
            import lazy_nodes  # noqa: F401
            assert {"HarnessLeak", "HarnessLazy", "TestNoise"} <= set(declare.REGISTRY)

        def test_b_sees_none_of_it():
            assert "HarnessLeak" not in declare.REGISTRY
            assert "HARNESS_SOCKET" not in types.SOCKET_TYPES
            assert "HarnessLazy" in declare.REGISTRY and "TestNoise" in declare.REGISTRY
            assert "TEST_MODEL" in types.SOCKET_TYPES
        ''' + "".join(f'''
        def test_c{i}():
            pass
        ''' for i in range(12)),
}


def _inner(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(Path(conftest.__file__).read_text())
    for name, text in INNER.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    run_env = conftest.cli_env(tmp_path, **env)
    for name in ("UNCLIP_TEST_ORDER", "UNCLIP_TEST_SEED"):
        if name not in env:
            run_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)


def test_declarations_in_a_test_do_not_reach_the_next_test(tmp_path):
    proc = _inner(tmp_path, "-q", "-rs", "test_inner.py::test_a_declares",
                  "test_inner.py::test_b_sees_none_of_it", "test_marked.py", CI="")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "3 passed, 1 skipped" in proc.stdout  # the require mark: a skip here
    assert "a missing reference" in proc.stdout
    assert "UNCLIP_TEST_SEED" not in proc.stdout  # file order, and no seed to replay


def test_random_order_prints_its_seed_even_under_q_and_replays_it(tmp_path):
    """Also: under CI (CI=true) the require mark fails its test instead of skipping it."""
    env = dict(UNCLIP_TEST_ORDER="random", UNCLIP_TEST_SEED="7", CI="true")
    proc = _inner(tmp_path, "-q", "-k", "not test_b", **env)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "14 passed, 1 deselected, 1 error" in proc.stdout
    assert "required under CI: a missing reference" in proc.stdout
    assert "UNCLIP_TEST_ORDER=random UNCLIP_TEST_SEED=7" in proc.stdout
    again = _inner(tmp_path, "-q", "--co", **env)
    order = [line for line in again.stdout.splitlines() if line.startswith("test_")]
    inner = [n for n in order if n.startswith("test_inner.py::")]
    assert len(order) == 16 and inner != sorted(inner, key=lambda n: (len(n), n))
    assert "UNCLIP_TEST_ORDER=random UNCLIP_TEST_SEED=7" in again.stdout
    modules = [n.split("::")[0] for n in order]
    assert sorted(set(modules)) == ["test_inner.py", "test_marked.py"]
    assert modules in (sorted(modules), sorted(modules, reverse=True))  # each module together
    # the same seed, the same order (as --co lists it and as the run above ran it)
    assert [n for n in order if "test_b" not in n] == _ran(tmp_path, **env)


def _ran(tmp_path: Path, **env: str) -> list[str]:
    proc = _inner(tmp_path, "-v", "-k", "not test_b", **env)
    return [line.split()[0] for line in proc.stdout.splitlines()
            if line.startswith("test_") and ("PASSED" in line or "ERROR" in line)]


def _items(spec: str) -> list:
    """Fake collected items: 'a:x a:y b:C.z' -> module a (tests x, y), module b (class C)."""
    out = []
    for entry in spec.split():
        module, name = entry.split(":")
        cls, _, name = name.rpartition(".")
        out.append(SimpleNamespace(path=Path(module), cls=cls or None, name=f"{module}:{cls}.{name}"))
    return out


def test_shuffled_keeps_each_module_and_class_together_and_depends_only_on_the_seed():
    items = _items(" ".join(f"m{m}:{'C.' if t % 3 == 0 else ''}t{t}" for m in range(6) for t in range(9)))
    names = lambda seq: [it.name for it in seq]  # noqa: E731
    first = conftest.shuffled(items, 1)
    assert sorted(names(first)) == sorted(names(items))
    assert names(first) != names(items)
    assert names(conftest.shuffled(items, 1)) == names(first)
    assert names(conftest.shuffled(items, 2)) != names(first)
    runs = [(it.path, it.cls) for it in first]
    groups = [g for i, g in enumerate(runs) if i == 0 or runs[i - 1] != g]
    assert len(groups) == len(set(groups)) == 12  # each module's class and loose tests in one run
    modules = [p for i, p in enumerate(r[0] for r in runs) if i == 0 or runs[i - 1][0] != p]
    assert len(modules) == 6 and modules != sorted(modules)


@pytest.mark.parametrize("ci", ["", "0", "false", "true", "1"])
def test_require_skips_locally_and_fails_under_ci(ci, monkeypatch):
    monkeypatch.setenv("CI", ci)
    under_ci = ci in ("true", "1")
    conftest.require(True, "always there")
    expected = pytest.fail.Exception if under_ci else pytest.skip.Exception
    with pytest.raises(expected, match="the reference"):
        conftest.require(False, "the reference")
    with pytest.raises(expected, match="no_such_module_here"):
        conftest.require_module("no_such_module_here")
    assert conftest.require_module("json").dumps(1) == "1"


def test_this_session_restores_the_registries_too():
    assert "HarnessLeak" not in declare.REGISTRY and "HARNESS_SOCKET" not in types.SOCKET_TYPES
