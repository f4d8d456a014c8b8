"""Running workflows: backwards planning over the cache, reports, savers, interruption."""
import json
import signal
import subprocess
import sys
import time

import enginenodes  # noqa: F401  -- registers the Test* node types
import networkx as nx
import pytest
import torch
from conftest import CLI, cli_env

from unclip_nodes.graph import Cache, MemoryTier, RunInterrupted, load, run_workflow
from unclip_nodes.graph.cache import compute_keys
from unclip_nodes.graph.run import check_device
from unclip_nodes.nodes.errors import UserError

CHAIN = """
inputs:
  seed: {type: INT, default: 1}
  factor: {type: FLOAT, default: 2.0}
  steps: {type: INT, default: 2}
  delay: {type: FLOAT, default: 0.0}
outputs:
  image: apply.image
nodes:
  model: {type: TestLoader}
  noise: {type: TestNoise, params: {seed: $seed, size: 4}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: $factor}}
  apply:
    type: TestApply
    links: {model: model.model, image: scale.image}
    params: {steps: $steps, delay: $delay}
  save: {type: TestSave, links: {image: apply.image}, params: {prefix: out}}
  unused: {type: TestNoise, params: {seed: 9}}
"""


def expected_image(seed=1, factor=2.0, steps=2):
    img = torch.rand(1, 4, 4, 3, generator=torch.Generator().manual_seed(seed)) * factor
    for _ in range(steps):
        img = img * 0.5 + torch.full((1,), 4.0) * 0.01
    return img


def ran(result):
    return {n for n, s in result.status().items() if s == "ran"}


def test_first_run_runs_what_outputs_and_savers_need(write_workflow, engine_cache, tmp_path):
    result = run_workflow(write_workflow(CHAIN), out_dir=tmp_path / "out", cache=engine_cache)
    assert result.status() == {"model": "ran", "noise": "ran", "scale": "ran", "apply": "ran",
                               "save": "ran", "unused": "not needed"}
    assert torch.allclose(result.outputs["image"], expected_image())
    saved = tmp_path / "out" / "out.txt"
    assert result.files == [str(saved.resolve())]
    value, inputs = saved.read_text().splitlines()
    assert float(value) == pytest.approx(float(expected_image().sum()), abs=1e-5)
    assert json.loads(inputs) == {"seed": 1, "factor": 2.0, "steps": 2, "delay": 0.0}


def test_rerun_in_same_process_is_a_memory_hit_and_loads_no_model(write_workflow, engine_cache,
                                                                  tmp_path):
    path = write_workflow(CHAIN)
    run_workflow(path, out_dir=tmp_path, cache=engine_cache)
    again = run_workflow(path, out_dir=tmp_path, cache=engine_cache)
    assert again.status() == {"model": "not needed", "noise": "not needed",
                              "scale": "not needed", "apply": "memory hit", "save": "ran",
                              "unused": "not needed"}
    assert torch.allclose(again.outputs["image"], expected_image())


@pytest.mark.parametrize("override,changed", [({"seed": "2"}, "noise"), ({"factor": "3"}, "scale"),
                                              ({"steps": "3"}, "apply")])
def test_changing_one_parameter_reruns_exactly_that_node_and_its_descendants(
        write_workflow, engine_cache, tmp_path, override, changed):
    path = write_workflow(CHAIN)
    first = run_workflow(path, out_dir=tmp_path, cache=engine_cache)
    second = run_workflow(path, override, out_dir=tmp_path, cache=engine_cache)
    graph = load(path).graph
    assert ran(second) == {changed} | nx.descendants(graph, changed)
    changed_keys = {r.node for r, s in zip(first.report, second.report) if r.key != s.key}
    assert changed_keys == ({changed} | nx.descendants(graph, changed)) - {"save"}


def test_second_run_in_a_new_process_has_the_same_keys_is_all_disk_hits_and_calls_no_loader(
        write_workflow, tmp_path):
    path = write_workflow(CHAIN)
    first = run_workflow(path, out_dir=tmp_path, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    log = tmp_path / "calls.log"
    proc = subprocess.run([sys.executable, "-c", CLI, "run", str(path), "--cache-dir",
                           str(tmp_path / "c"), "--report", str(tmp_path / "r.json"), "--out",
                           str(tmp_path / "out2")], env=cli_env(tmp_path, ENGINE_TEST_LOG=str(log)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    status = {r["node"]: r["status"] for r in report["nodes"]}
    assert status == {"model": "not needed", "noise": "not needed", "scale": "not needed",
                      "apply": "disk hit", "save": "ran", "unused": "not needed"}
    assert log.read_text().split() == ["TestSave"]  # no loader, no node but the saver
    assert {r["node"]: r["key"] for r in report["nodes"]} == {r.node: r.key for r in first.report}
    assert report["files"] == [str((tmp_path / "out2" / "out.txt").resolve())]
    assert "apply" in proc.stdout and "disk hit" in proc.stdout


def test_unlinked_optional_input_arrives_as_none(engine_cache):
    wf = {"nodes": {"n": {"type": "TestNoise"},
                    "a": {"type": "TestAdd", "links": {"a": "n.image"}}},
          "outputs": {"total": "a.total", "image": "n.image"}}
    out = run_workflow(wf, cache=engine_cache).outputs
    assert out["total"] == pytest.approx(float(out["image"].sum()))


def test_nodes_below_an_uncacheable_node_get_no_cache_key(write_workflow):
    rs = load(write_workflow(CHAIN + "  count: {type: TestLength, links: {text: save.paths}}\n"))
    keys = compute_keys(rs.nodes, nx.topological_sort(rs.graph))
    assert keys["save"] is None and keys["count"] is None and keys["apply"] is not None


def test_node_user_error_at_run_time_is_located_at_its_field(write_workflow, engine_cache,
                                                             capsys, tmp_path, monkeypatch):
    from unclip_nodes.graph.cli import main
    path = write_workflow("outputs: {x: f.image}\nnodes:\n"
                          "  f: {type: TestFail, params: {text: oops}}\n")
    with pytest.raises(UserError) as info:
        run_workflow(path, cache=engine_cache)
    assert str(info.value) == f"{path}:3:38: node 'f', field 'text': cannot use 'oops'"
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path), "--no-cache"]) == 2
    assert capsys.readouterr().err == f"{path}:3:38: node 'f', field 'text': cannot use 'oops'\n"


def test_node_that_mutates_its_input_is_caught_and_the_spoiled_value_dropped(engine_cache):
    wf = {"nodes": {"n": {"type": "TestNoise"},
                    "m": {"type": "TestMutate", "links": {"image": "n.image"}}},
          "outputs": {"x": "m.image"}}
    with pytest.raises(RuntimeError, match="changed its input.*in place"):
        run_workflow(wf, cache=engine_cache)
    assert len(engine_cache.memory) == 0


def test_interrupting_keeps_finished_nodes_cached(write_workflow, engine_cache, tmp_path):
    path = write_workflow(CHAIN)
    calls = []

    def stop_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(RunInterrupted) as info:
        run_workflow(path, out_dir=tmp_path, cache=engine_cache, interrupted=stop_after_two)
    done = info.value.result.status()
    assert sum(s == "ran" for s in done.values()) == 2 and info.value.result.interrupted
    again = run_workflow(path, out_dir=tmp_path, cache=engine_cache)
    assert ran(again).isdisjoint({n for n, s in done.items() if s == "ran"} - {"model"})


def test_report_file_lists_status_seconds_key_and_files(write_workflow, engine_cache, tmp_path):
    run_workflow(write_workflow(CHAIN), out_dir=tmp_path / "o", cache=engine_cache,
                 report=tmp_path / "rep" / "r.json")
    rep = json.loads((tmp_path / "rep" / "r.json").read_text())
    assert rep["status"] == "finished" and rep["outputs"]["image"]["tensor"] == [1, 4, 4, 3]
    save = next(r for r in rep["nodes"] if r["node"] == "save")
    assert save["files"] == [str((tmp_path / "o" / "out.txt").resolve())] and save["key"] is None
    apply = next(r for r in rep["nodes"] if r["node"] == "apply")
    assert len(apply["key"]) == 64 and apply["seconds"] >= 0 and apply["type"] == "TestApply"


def test_cli_run_prints_the_table_and_exits_0(write_workflow, tmp_path, capsys, monkeypatch):
    from unclip_nodes.graph.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["run", str(write_workflow(CHAIN)), "--no-cache", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["node", "type", "status", "seconds"]
    assert "unused  TestNoise   not needed" in out
    assert f"wrote {(tmp_path / 'output' / 'out.txt').resolve()}" in out
    assert not (tmp_path / "xdg").exists()


def test_asking_for_cuda_without_it_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # whatever this machine has
    for device in ("cuda", "cuda:1"):
        with pytest.raises(UserError, match="no CUDA device") as e:
            check_device(device)
        assert e.value.field == "device"
    check_device("cpu")
    check_device("auto")
    with pytest.raises(UserError, match="not a device"):
        check_device("banana")


def test_asking_for_cuda_with_it_passes_the_check(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no CUDA call is made
    for device in ("cuda", "cuda:1", "cpu", "auto"):
        check_device(device)
    with pytest.raises(UserError, match="not a device"):
        check_device("gpu")


def test_auto_device_follows_the_host_then_cuda_availability(monkeypatch):
    from unclip_nodes.nodes import runtime
    for available, expected in ((True, "cuda"), (False, "cpu")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        with runtime.use_host(runtime.Host(device="auto")):
            assert runtime.resolve_device("auto") == torch.device(expected)
            assert runtime.resolve_device("cpu") == torch.device("cpu")
        with runtime.use_host(runtime.Host(device="cuda:1")):  # the host's choice wins
            assert runtime.resolve_device("auto") == torch.device("cuda:1")


def test_ctrl_c_exits_130_and_the_next_run_reuses_finished_nodes(write_workflow, tmp_path):
    path = write_workflow(CHAIN)
    log = tmp_path / "calls.log"
    env = cli_env(tmp_path, ENGINE_TEST_LOG=str(log))
    cmd = [sys.executable, "-c", CLI, "run", str(path), "--cache-dir", str(tmp_path / "c")]
    proc = subprocess.Popen(cmd + ["--set", "steps=1000", "--set", "delay=0.02"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while "TestApply" not in (log.read_text() if log.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    table = {line.split()[0]: line.split()[2:-1] for line in out.splitlines()[1:-1]}
    assert table["noise"] == table["scale"] == ["ran"]
    assert table["apply"] == ["interrupted"] and table["save"] == ["not", "run"]
    again = subprocess.run(cmd + ["--set", "steps=1", "--report", str(tmp_path / "r.json")],
                           env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    status = {r["node"]: r["status"] for r in report["nodes"]}
    assert status["scale"] == "disk hit" and status["noise"] == "not needed"
    assert status["apply"] == "ran"
