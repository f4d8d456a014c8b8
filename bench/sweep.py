"""An 8-seed decoder sweep as one graph vs 8 separate runs; and what batching the seeds would buy.

Workflow: LoadUnCLIP -> CLIPTextEncode -> Prior -> Decoder (seed swept) -> SaveImage, Karlo's
steps (prior 25, decoder 25, guidance 4 / 8), cache off everywhere so that only the sharing
inside one run counts.  Compared:

* ``unclip run --set seed=K`` eight times, each in a new process (a shell loop);
* ``run_workflow`` eight times in one process (the model stays in the process's model cache);
* ``unclip run --sweep seed=0..7`` in a new process, and ``run_sweep`` in this process.

The sweep's images are checked to equal the separate runs' bit for bit.  Last, the decoder loop
is run once on a batch of the 8 seeds (each seed's noise from its own generator) to measure what
batching would save and how far its images are from the separate runs' -- the reason sweeps do
not batch.

    .venv/bin/python bench/sweep.py [--model DIR] [--threads 1] [--repeats 3]

Without --model a tiny random checkpoint (nodes/tiny.py) is written to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SEEDS = 8


def workflow(model: str, steps: int) -> dict:
    return {
        "inputs": {"seed": {"type": "INT", "default": 0}},
        "nodes": {
            "model": {"type": "LoadUnCLIP", "params": {"path": model}},
            "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                     "params": {"prompt": "a red circle on a blue background"}},
            "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"},
                      "params": {"steps": steps, "guidance_scale": 4.0, "seed": 1}},
            "decode": {"type": "Decoder",
                       "links": {"decoder": "model.decoder", "image_embeds": "prior.image_embeds",
                                 "text": "text.text"},
                       "params": {"steps": steps, "guidance_scale": 8.0, "seed": "$seed"}},
            "save": {"type": "SaveImage", "links": {"images": "decode.image"},
                     "params": {"prefix": "bench"}},
        },
        "outputs": {"image": "decode.image"},
    }


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def cli(args: list[str], cwd: Path, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), XDG_CACHE_HOME=str(cwd / "xdg"))
    code = ("import sys, torch; torch.set_num_threads(%d); from unclip_nodes.graph.cli import main;"
            " sys.exit(main(sys.argv[1:]))" % threads)
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"unclip {' '.join(args)} failed:\n{done.stderr}")


def batched_decoder(dec, embeds, text, steps: int) -> tuple[float, torch.Tensor]:
    """The decoder loop once for all seeds: x_T and per-step noise from each seed's own
    generator (diffusers' randn_tensor takes a list of generators)."""
    from unclip_nodes.nodes.core.pixels import to_image
    from unclip_nodes.nodes.families.karlo import prepare_decoder_inputs, sample_decoder
    from unclip_nodes.nodes.core.sampling import UnCLIPSampler, make_generator, noise
    z, cond, uncond = prepare_decoder_inputs(dec, embeds, text, 1)
    rows = lambda t: t.expand(SEEDS, *t.shape[1:])  # noqa: E731
    z, cond, uncond = rows(z), tuple(map(rows, cond)), tuple(map(rows, uncond))
    gens = [make_generator(s) for s in range(SEEDS)]
    size, ch = dec.decoder.config.sample_size, dec.decoder.config.in_channels
    x_T = torch.cat([noise((1, ch, size, size), g, "cpu") for g in gens])
    with torch.inference_mode():
        seconds, x = timed(lambda: sample_decoder(
            dec.decoder, dec.text_proj, z, cond, uncond, guidance_scale=8.0, steps=steps,
            generator=gens, sampler=UnCLIPSampler(dec.scheduler_config), x_T=x_T))
    return seconds, to_image(x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="checkpoint folder (default: a tiny random one)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="in-process repeats")
    ap.add_argument("--process-repeats", type=int, default=1,
                    help="repeats of the new-process runs (slow: each imports torch anew)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from unclip_nodes.graph import Cache, run_workflow
    from unclip_nodes.graph.sweep import run_sweep

    work = Path(tempfile.mkdtemp(prefix="unclip-bench-sweep-"))
    model = args.model
    if model is None:
        from unclip_nodes.nodes.tiny import save_tiny_checkpoint
        model = str(save_tiny_checkpoint(work / "tiny"))
    wf = workflow(str(Path(model).resolve()), args.steps)
    (work / "wf.json").write_text(json.dumps(wf))

    rows: dict[str, list[float]] = {k: [] for k in (
        "separate_processes", "sweep_process", "separate_in_process", "sweep_in_process")}
    for r in range(args.process_repeats):
        t0 = time.perf_counter()
        for s in range(SEEDS):
            cli(["run", "wf.json", "--set", f"seed={s}", "--no-cache", "--out", "sep"], work,
                args.threads)
        rows["separate_processes"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cli(["run", "wf.json", "--sweep", f"seed=0..{SEEDS - 1}", "--no-cache", "--out", "sw"],
            work, args.threads)
        rows["sweep_process"].append(time.perf_counter() - t0)
        print(f"processes {r + 1}: separate {rows['separate_processes'][-1]:.2f} s, sweep "
              f"{rows['sweep_process'][-1]:.2f} s", flush=True)

    run_workflow(wf, {"seed": 0}, cache=Cache.off(), out_dir=work / "warm")  # loads the model

    def separate_runs():
        return [run_workflow(wf, {"seed": s}, cache=Cache.off(), out_dir=work / "sep2")
                for s in range(SEEDS)]

    def sweep_run():
        return run_sweep(wf, [f"seed=0..{SEEDS - 1}"], cache=Cache.off(), out_dir=work / "sw2")

    separate = sweep = None
    for r in range(args.repeats):  # alternate which goes first
        for name in (("separate", "sweep") if r % 2 == 0 else ("sweep", "separate")):
            if name == "separate":
                t, separate = timed(separate_runs)
            else:
                t, sweep = timed(sweep_run)
            rows[f"{name}_in_process"].append(t)
        print(f"in process {r + 1}: separate {rows['separate_in_process'][-1]:.2f} s, sweep "
              f"{rows['sweep_in_process'][-1]:.2f} s", flush=True)

    alone = [r.outputs["image"] for r in separate]
    swept = [sweep.outputs(c)["image"] for c in sweep.plan.combinations]
    identical = all(torch.equal(a, b) for a, b in zip(alone, swept))
    ran = {r.node: r.status for r in sweep.result.report}
    per_node = {r.node: r.seconds for r in sweep.result.report}
    decode_each = statistics.median(v for k, v in per_node.items() if k.endswith("/decode"))
    shared = {k: round(per_node[k], 3) for k in ("model", "text", "prior")}

    # what batching the 8 seeds into one decoder call would give
    from unclip_nodes.graph.validate import load
    rs = load(wf)
    vals = {}
    for nid in ("model", "text", "prior"):
        rn = rs.nodes[nid]
        kw = {s.name: None for s in rn.spec.inputs} | rn.params
        kw |= {k: vals[ref] for k, ref in rn.links.items()}
        for out, v in zip(rn.spec.outputs, rn.spec.call(**kw)):
            vals[(nid, out.name)] = v
    t_batch, batch = batched_decoder(vals[("model", "decoder")], vals[("prior", "image_embeds")],
                                     vals[("text", "text")], args.steps)
    diff = max(float((batch[i:i + 1] - alone[i]).abs().max()) for i in range(SEEDS))
    same = sum(torch.equal(batch[i:i + 1], alone[i]) for i in range(SEEDS))

    med = {k: statistics.median(v) for k, v in rows.items() if v}
    print(json.dumps({
        "model": "tiny (nodes/tiny.py)" if args.model is None else args.model,
        "steps": args.steps, "threads": args.threads, "repeats": args.repeats,
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "speedup_processes": round(med["separate_processes"] / med["sweep_process"], 2)
        if rows["separate_processes"] else None,
        "speedup_in_process": round(med["separate_in_process"] / med["sweep_in_process"], 2),
        "sweep_nodes_ran": sum(s == "ran" for s in ran.values()),
        "separate_nodes_ran": sum(sum(r.status == "ran" for r in x.report) for x in separate),
        "sweep_images_equal_separate_runs": identical,
        "sweep_shared_node_seconds": shared,
        "decoder_seconds_per_seed": round(decode_each, 3),
        "batched_decoder_seconds_for_all": round(t_batch, 3),
        "batched_equal_images": f"{same}/{SEEDS}", "batched_max_abs_diff": diff,
    }, indent=2))


if __name__ == "__main__":
    main()
