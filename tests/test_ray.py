"""Sweeps on Ray (``unclip run --sweep ... --ray``), on a local Ray instance started once.

The reference is a local sweep with one torch thread: each worker takes one CPU and so runs
torch with one thread, and on the CPU the thread count changes results in the last bits.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from unclip_nodes.graph import cli, sweep
from unclip_nodes.graph.cache import Cache

from conftest import require_module

WF = str(Path(__file__).resolve().parents[1] / "workflows" / "text_to_image.yaml")
PACK = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_address():
    """A Ray instance of the tests' own: started here even when another one runs on this
    machine (``address="local"``: never the cluster ``ray start`` or RAY_ADDRESS names), with
    its own temp folder (sockets, logs, session files), ports chosen free by Ray, and
    this machine's loopback as its node address."""
    ray = require_module("ray", "the Ray tests need the [ray] extra")
    started = not ray.is_initialized()
    saved = os.environ.pop("RAY_ADDRESS", None)
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    try:
        if started:
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     log_to_driver=False, logging_level="error", _temp_dir=folder,
                     _node_ip_address="127.0.0.1")
        yield ray.get_runtime_context().gcs_address
    finally:
        if started:
            ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
        shutil.rmtree(folder, ignore_errors=True)


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too), by name, with a hash of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


_LOCAL: dict[str, tuple[dict[str, str], dict]] = {}


def local_sweep(tmp_path_factory, seeds: str, report: bool = False):
    """The files a local one-thread sweep writes (computed once per seed list); with
    ``report``, also its report."""
    if seeds not in _LOCAL:
        out = tmp_path_factory.mktemp("local")
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            sweep.run_sweep(WF, [f"seed={seeds}"], out_dir=out, cache=Cache.off(),
                            report=out.parent / f"{out.name}.json")
        finally:
            torch.set_num_threads(before)
        _LOCAL[seeds] = files(out), json.loads((out.parent / f"{out.name}.json").read_text())
    return _LOCAL[seeds] if report else _LOCAL[seeds][0]


def comparable(report: dict) -> dict:
    """A report without what differs between any two runs (times, folders) or is Ray's own."""
    def name(path):
        return Path(path).name if path else path
    return {"status": report["status"], "inputs": report["inputs"],
            "nodes": [dict(n, seconds=None, load_seconds=None, files=[name(f) for f in n["files"]])
                      for n in report["nodes"]],
            "files": [name(f) for f in report["files"]], "outputs": report["outputs"],
            "sweep": dict(report["sweep"], grid=name(report["sweep"]["grid"]))}


def test_ray_sweep_writes_the_local_sweeps_files_byte_for_byte(ray_address, tmp_path,
                                                              tmp_path_factory, capsys):
    want, local_report = local_sweep(tmp_path_factory, "0..3", report=True)
    report = tmp_path / "report.json"
    code = cli.main(["run", WF, "--sweep", "seed=0..3", "--ray", ray_address, "--workers", "2",
                     "--no-cache", "--out", str(tmp_path / "out"), "--report", str(report)])
    assert code == 0
    assert files(tmp_path / "out") == want  # same names, same bytes, contact sheet included
    doc = json.loads(report.read_text())
    assert comparable(doc) == comparable(local_report)
    workers = doc["ray"]["workers"]
    assert sorted(workers) == [f"seed-{i}" for i in range(4)]
    assert set(workers.values()) == {"worker-0", "worker-1"}
    assert [c["tag"] for c in doc["sweep"]["combinations"]] == sorted(workers)
    saved = [f for f in doc["files"] if f.endswith(".png")]
    assert len(saved) == 4 and all(Path(f).is_file() for f in saved)
    assert "sweep: 4 runs on 2 Ray worker(s)" in capsys.readouterr().out


def test_combinations_sharing_a_prompt_go_to_one_worker(ray_address, tmp_path):
    from unclip_nodes.graph import cluster
    plan = sweep.plan_sweep(WF, ["seed=0..2", "prompt=a red circle on a white background,"
                                              "a blue square on a black background"])
    groups = cluster.affinity_groups(plan)
    by_prompt = [sorted(plan.combinations[i].labels["prompt"] for i in g) for g in groups]
    assert sorted(map(tuple, by_prompt)) == [("1", "1", "1"), ("2", "2", "2")]
    done = cluster.run_on_ray(plan, out_dir=tmp_path, options=cluster.RayOptions(workers=2))
    for prompt in ("1", "2"):
        ran_on = {w for tag, w in done.workers.items() if tag.endswith(f"prompt-{prompt}")}
        assert len(ran_on) == 1
    text = [r for r in done.result.report if r.type == "CLIPTextEncode"]
    assert [r.status for r in text] == ["ran", "ran"]  # once per prompt, not per combination


def test_a_killed_worker_loses_and_duplicates_nothing(ray_address, tmp_path, tmp_path_factory,
                                                      capsys):
    from unclip_nodes.graph import cluster
    want = local_sweep(tmp_path_factory, "0..5")
    plan = sweep.plan_sweep(WF, ["seed=0..5"])
    killed = []

    def kill_first(tag, where):
        if not killed:  # SIGKILL, as the kernel's out-of-memory killer would
            os.kill(where["pid"], signal.SIGKILL)
            killed.append(where["worker"])

    done = cluster.run_on_ray(plan, out_dir=tmp_path, options=cluster.RayOptions(workers=2),
                              on_result=kill_first)
    assert killed
    assert f"ray: {killed[0]} died while running" in capsys.readouterr().err
    assert files(tmp_path) == want  # every image once, under its own name, nothing left over
    assert sorted(done.workers) == [f"seed-{i}" for i in range(6)]


def _journal(out: Path) -> list[dict]:
    found = list(out.glob(".unclip-sweep/*/journal.jsonl"))
    if not found:
        return []
    return [json.loads(line) for line in found[0].read_text().splitlines() if line.strip()]


def test_a_restarted_driver_resumes_and_writes_nothing_twice(ray_address, tmp_path,
                                                             tmp_path_factory, capsys):
    want = local_sweep(tmp_path_factory, "0..5")
    out = tmp_path / "out"
    args = ["run", WF, "--sweep", "seed=0..5", "--ray", ray_address, "--workers", "1",
            "--no-cache", "--out", str(out)]
    log = open(tmp_path / "driver.log", "wb")  # not a pipe: a full one would stall it
    driver = subprocess.Popen([sys.executable, "-m", "unclip_nodes.graph.cli", *args],
                              stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 240
    try:
        while sum(e["state"] == "done" for e in _journal(out)) < 2:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the driver wrote nothing in 240 s"
            time.sleep(0.1)
    finally:
        driver.kill()  # SIGKILL: no clean-up of its own
        driver.wait()
        log.close()
    before = files(out)
    images = [f for f in before if not f.startswith(".")]
    assert 2 <= len(images) < 6 and all(want[f] == before[f] for f in images)
    assert cli.main(args + ["--report", str(tmp_path / "report.json")]) == 0
    assert files(out) == want  # nothing twice (no _00002_), nothing half-written, no journal
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ray"]["resumed"] >= 2
    assert len(report["files"]) == 6
    assert "done by an earlier run" in capsys.readouterr().out


def test_ctrl_c_stops_the_workers_keeps_what_finished_and_exits_130(ray_address, tmp_path,
                                                                    monkeypatch, capsys):
    out = tmp_path / "out"
    # the user presses Ctrl-C once the first image is in place
    monkeypatch.setattr(cli._CtrlC, "pressed",
                        lambda self: any(e["state"] == "done" for e in _journal(out)))
    code = cli.main(["run", WF, "--sweep", "seed=0..7", "--ray", ray_address, "--workers", "1",
                     "--no-cache", "--out", str(out)])
    assert code == cli.EXIT_INTERRUPTED
    assert "the same command resumes" in capsys.readouterr().err
    images = [p for p in out.iterdir() if p.suffix == ".png"]
    assert 1 <= len(images) < 8
    assert not list(out.rglob("*.tmp")) and not list((out / ".unclip-sweep").rglob("tmp/*"))
    assert len([e for e in _journal(out) if e["state"] == "done"]) == len(images)


def test_a_node_error_on_a_worker_is_the_users_error(ray_address, tmp_path):
    """Validated on the driver, then the image is gone when a worker reads it."""
    from unclip_nodes.graph import cluster
    from unclip_nodes.nodes.errors import UserError
    image = tmp_path / "in.png"
    image.write_bytes((PACK / "workflows" / "images" / "red_circle_white.png").read_bytes())
    wf = str(PACK / "workflows" / "image_variations.yaml")
    plan = sweep.plan_sweep(wf, ["seed=0..1"], overrides={"image": str(image)})
    image.unlink()
    with pytest.raises(UserError) as e:
        cluster.run_on_ray(plan, out_dir=tmp_path / "out",
                           options=cluster.RayOptions(workers=1))
    assert e.value.file == wf and e.value.node == "load" and str(image) in e.value.message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "--workers: only with --ray"),
    (["--ray", "--workers", "2"], "--ray spreads a sweep's combinations"),
    (["--ray", "--sweep", "seed=0..1", "--batch", "2"], "leave --batch out"),
    (["--ray", "--sweep", "seed=0..1", "--gpus-per-worker", "-1"], "--gpus-per-worker -1: give"),
    (["--ray", "--sweep", "seed=0..1", "--device", "cuda"], "give the workers GPUs with"),
])
def test_ray_arguments_are_checked_before_anything_starts(argv, message, tmp_path, capsys):
    assert cli.main(["run", WF, "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_address_where_no_cluster_listens_is_a_quick_user_error(tmp_path):
    require_module("ray", "needs Ray")
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()  # in a process of its own: this one may have joined Ray already
    done = subprocess.run([sys.executable, "-m", "unclip_nodes", "run", WF, "--sweep",
                           "seed=0..1", "--ray", f"127.0.0.1:{port}", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and time.monotonic() - t0 < 60, done.stderr
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_core_imports_and_runs_without_ray(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
            "from unclip_nodes.graph import cli\n"
            f"assert cli.main(['validate', {WF!r}]) == 0\n"
            f"sys.exit(cli.main(['run', {WF!r}, '--sweep', 'seed=0..1', '--ray', "
            f"'--out', {str(tmp_path)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "--ray needs Ray: pip install 'unclip-nodes[ray]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_files_are_numbered_after_what_the_output_folder_holds_as_a_local_run_numbers_them(
        tmp_path):
    from unclip_nodes.graph import cluster
    from unclip_nodes.nodes.image import _next_number
    for name in ("a_00001_.png", "a_00007_.png", "b_3_00002_.png", "a_x.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    numbers = cluster._Numbers()
    for stem in ("a", "b_3", "b", "new"):
        assert numbers.next(tmp_path, stem) == _next_number(tmp_path, stem)
    assert numbers.next(tmp_path, "a") == 9  # what it handed out counts too
    got = cluster._targets(tmp_path, ["a_00001_.png", "sub/a_00001_.png", "sub/a_00002_.png",
                                      "plain.json"], None, numbers)
    assert got == ["a_00010_.png", "sub/a_00001_.png", "sub/a_00002_.png", "plain.json"]
    reserved = ["a_00004_.png"]  # an interrupted driver's names are kept
    assert cluster._targets(tmp_path, ["a_00001_.png"], reserved, numbers) == reserved
