"""bench/gpu.py end to end at ``--size tiny --device cpu`` on a small grid, in subprocesses.

The point is the plumbing a GPU run depends on: both families through the executor and through
diffusers' pipelines built on the same modules, the batch on both sides, torch.compile on both
sides (``--compile-backend eager``: dynamo traces the denoisers, nothing is compiled to C++), the
table and ``--out``.  In float32 on the CPU the two sides agree to rounding, so the pixel bound
is tight.  Two runs, started together, one torch thread each (about 30 s of wall time on 2
cores): Kandinsky 2.2 over the whole small grid (batch 1 and 2, compile off and on), and Karlo
with compile off (its compiled rows trace four UNets each, ~25 s more) and ``--one-shot`` (our
side releases its models after each run, as ``unclip run`` does, and loads them again).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_module

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu.py"
PIXEL_BOUND = 1e-4  # max |ours - diffusers| on the 0..1 scale, fp32 on the CPU (seen: <= 3e-6)
COLUMNS = ("family", "dtype", "batch", "compile", "ours img/s", "diffusers img/s",
           "ours / diffusers", "ours peak mem", "diffusers peak mem", "weights",
           "max pixel diff vs diffusers", "vs ours eager", "graphs ours / diffusers")
RUNS = {
    "kandinsky": ("--families", "kandinsky", "--compile", "off,on", "--compile-backend", "eager"),
    "karlo": ("--families", "karlo", "--compile", "off", "--one-shot"),  # models released
}


def _command(folder: Path, extra) -> list[str]:
    return [sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu",
            "--cache", str(folder / "cache"), "--dtypes", "fp32", "--batches", "1,2",
            "--steps", "2", "--repeats", "1", "--threads", "1", "--out",
            str(folder / "table.md"), *extra]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """family -> (stdout, the --out file's text), both runs started at once."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    procs = {}
    for name, extra in RUNS.items():
        folder = tmp_path_factory.mktemp(f"bench_gpu_{name}")
        procs[name] = (folder, subprocess.Popen(
            _command(folder, extra), cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    out = {}
    for name, (folder, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-4000:]
        out[name] = (stdout, (folder / "table.md").read_text())
    return out


def parse(text: str) -> list[dict]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header) == COLUMNS
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]


def check_rows(rows: list[dict], family: str, compile_modes: tuple[str, ...]) -> None:
    want = [(family, "fp32", b, c) for b in ("1", "2") for c in compile_modes]
    assert [(r["family"], r["dtype"], r["batch"], r["compile"]) for r in rows] == want
    for r in rows:
        assert float(r["ours img/s"]) > 0 and float(r["diffusers img/s"]) > 0, r
        assert float(r["ours / diffusers"]) > 0, r
        assert float(r["max pixel diff vs diffusers"]) <= PIXEL_BOUND, r
        for side in ("ours peak mem", "diffusers peak mem"):  # bytes, or n/a; never blank
            assert re.fullmatch(r"\d+(\.\d+)? (kB|MB|GB)|n/a", r[side]), r
        assert re.fullmatch(r"\d+(\.\d+)? (kB|MB|GB)", r["weights"]), r
        if r["compile"] == "on":
            assert float(r["vs ours eager"]) <= PIXEL_BOUND, r
            ours, theirs = (g.strip() for g in r["graphs ours / diffusers"].split("/"))
            # dynamo really traced both sides' denoisers
            assert int(ours.rstrip("*")) > 0 and int(theirs.rstrip("*")) > 0, r
        else:
            assert r["vs ours eager"] == "—" and r["graphs ours / diffusers"] == "— / —", r


def test_kandinsky_grid_with_compile_through_the_eager_backend(tables):
    stdout, text = tables["kandinsky"]
    assert text.strip() in stdout  # --out holds what was printed
    assert "compile backend eager" in text and "peak RSS" in text
    check_rows(parse(text), "kandinsky", ("off", "on"))


def test_karlo_rows_against_unclip_pipeline(tables):
    require_module("diffusers.pipelines.deprecated.unclip",  # else its rows say "failed"
                   "the Karlo rows compare with diffusers' deprecated UnCLIPPipeline")
    stdout, text = tables["karlo"]
    assert text.strip() in stdout
    check_rows(parse(text), "karlo", ("off",))
