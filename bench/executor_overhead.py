"""What the executor itself costs: per node, per memory hit, per disk hit.

A chain of N cheap nodes (each adds 1 to a tiny image) is validated and run with the cache off,
with a cold cache (memory + disk writes), and again with everything cached.  Hit latencies are
measured on the cache tiers directly for images of a few sizes.

    .venv/bin/python bench/executor_overhead.py [--nodes 200] [--repeat 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from unclip_nodes.graph import Cache, MemoryTier, load, run_workflow
from unclip_nodes.graph.cache import DiskTier
from unclip_nodes.nodes.declare import Input, Output, Param, node
from unclip_nodes.nodes.types import IMAGE


@node("BenchSource", category="bench", description="A small constant image.",
      params=[Param("size", "INT", 8, min=1)], outputs=[Output("image", "IMAGE")])
def _source(size):
    return torch.zeros(1, size, size, 3)


@node("BenchInc", category="bench", description="Adds 1.",
      inputs=[Input("image", "IMAGE")], outputs=[Output("image", "IMAGE")])
def _inc(image):
    return image + 1


def chain(n: int) -> dict:
    nodes = {"n0": {"type": "BenchSource"}}
    for i in range(1, n):
        nodes[f"n{i}"] = {"type": "BenchInc", "links": {"image": f"n{i - 1}.image"}}
    return {"nodes": nodes, "outputs": {"image": f"n{n - 1}.image"}}


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def node_seconds(result) -> float:
    return sum(r.seconds for r in result.report if r.status == "ran")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, rows = args.nodes, []
    wf = chain(n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = best(lambda: load(wf), args.repeat)
        rows.append(("validate + resolve", f"{t / n * 1e6:.0f} us/node", f"{t * 1e3:.1f} ms"))

        def off():
            return run_workflow(wf, cache=Cache.off(), out_dir=tmp)
        t = best(off, args.repeat)
        fn = node_seconds(off())
        rows.append(("run, cache off", f"{(t - fn) / n * 1e6:.0f} us/node overhead",
                     f"{t * 1e3:.1f} ms ({fn * 1e3:.1f} ms in node functions)"))

        counter = iter(range(10**9))

        def cold():
            return run_workflow(wf, out_dir=tmp,
                                cache=Cache(tmp / f"c{next(counter)}", memory=MemoryTier()))
        t = best(cold, args.repeat)
        fn = node_seconds(cold())
        rows.append(("run, cold cache (memory + disk writes)",
                     f"{(t - fn) / n * 1e6:.0f} us/node overhead", f"{t * 1e3:.1f} ms"))

        warm = Cache(tmp / "warm", memory=MemoryTier())
        run_workflow(wf, cache=warm, out_dir=tmp)
        t = best(lambda: run_workflow(wf, cache=warm, out_dir=tmp), args.repeat)
        rows.append(("re-run, output in memory (1 hit, rest not needed)", "",
                     f"{t * 1e3:.1f} ms"))
        t = best(lambda: run_workflow(wf, out_dir=tmp, cache=Cache(tmp / "warm",
                                                                   memory=MemoryTier())),
                 args.repeat)
        rows.append(("re-run, output on disk (1 hit, rest not needed)", "", f"{t * 1e3:.1f} ms"))

        for size in (64, 256, 1024):
            value = torch.rand(1, size, size, 3)
            mem, disk = MemoryTier(), DiskTier(tmp / f"hit{size}")
            mem.put("k" * 64, value)
            disk.put("d" * 64, IMAGE, value)
            reps = max(args.repeat * 20, 20)
            t_mem = statistics.median(_timed(lambda: mem.get("k" * 64)) for _ in range(reps))
            t_disk = statistics.median(_timed(lambda: disk.get("d" * 64, IMAGE))
                                       for _ in range(args.repeat * 4))
            t_put = statistics.median(_timed(lambda: disk.put("e" * 64, IMAGE, value))
                                      for _ in range(args.repeat))
            mb = value.nbytes / 2**20
            rows.append((f"memory hit, IMAGE {size}x{size} ({mb:.2f} MiB)", "",
                         f"{t_mem * 1e6:.1f} us"))
            rows.append((f"disk hit, IMAGE {size}x{size} (read + sha256 + decode)", "",
                         f"{t_disk * 1e3:.2f} ms"))
            rows.append((f"disk write, IMAGE {size}x{size} (existing entry)", "",
                         f"{t_put * 1e3:.2f} ms"))
    print(f"executor overhead, chain of {n} nodes, best of {args.repeat}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]}")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
