"""Images per second of a sweep: one local sweep against Ray with 1 and 2 workers, in one run.

    .venv/bin/python bench/ray_sweep.py --seeds 16

The workflow is the shipped text_to_image on the bundled pocket model, swept over seeds with
the cache off, so every combination is real work.  Each Ray worker takes one CPU and runs torch
with one thread; the local sweep runs with torch's default threads (one per core) and, for
comparison, with one.  "wall" counts from the call to the last file in place, so it includes
starting the workers (importing torch and diffusers, loading the model); "steady" counts from
the first finished combination to the last, which is the rate a long sweep settles at.
All runs must write the same images: the script checks it (one-thread runs against each other).
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WF = ROOT / "workflows" / "text_to_image.yaml"


def images(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.png")
            if "_sweep_" not in p.name}


def local(seeds: int, threads: int | None, out: Path) -> tuple[float, dict]:
    from unclip_nodes.graph import sweep
    from unclip_nodes.graph.cache import Cache
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        sweep.run_sweep(str(WF), [f"seed=0..{seeds - 1}"], out_dir=out, cache=Cache.off(),
                        grid=False)
        return time.perf_counter() - t0, images(out)
    finally:
        torch.set_num_threads(before)


def on_ray(seeds: int, workers: int, out: Path) -> tuple[float, float, dict]:
    from unclip_nodes.graph import cluster, sweep
    plan = sweep.plan_sweep(str(WF), [f"seed=0..{seeds - 1}"])
    times: list[float] = []
    t0 = time.perf_counter()
    cluster.run_on_ray(plan, out_dir=out, options=cluster.RayOptions(workers=workers),
                       on_result=lambda tag, where: times.append(time.perf_counter()))
    wall = time.perf_counter() - t0
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return wall, steady, images(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16, help="combinations (default 16)")
    args = ap.parse_args()
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="error")
    n = args.seeds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        local(2, 1, tmp / "warm")  # first-use costs (imports, model files) out of the figures
        t, ref1 = local(n, 1, tmp / "local1")
        rows.append(("local sweep, 1 torch thread", t, None))
        t, _ = local(n, None, tmp / "local")
        rows.append((f"local sweep, {torch.get_num_threads()} torch threads", t, None))
        for w in (1, 2):
            wall, steady, got = on_ray(n, w, tmp / f"ray{w}")
            assert got == ref1, f"Ray with {w} worker(s) wrote other images than a local sweep"
            rows.append((f"Ray, {w} worker(s) x 1 thread", wall, steady))
    ray.shutdown()
    print(f"{n} combinations of text_to_image (pocket model), cache off; "
          f"torch {torch.__version__}\n")
    print("| run | wall s | images/s (wall) | images/s (steady) |")
    print("|---|---|---|---|")
    for name, wall, steady in rows:
        st = "" if steady is None else f"{steady:.2f}"
        print(f"| {name} | {wall:.1f} | {n / wall:.2f} | {st} |")


if __name__ == "__main__":
    main()
