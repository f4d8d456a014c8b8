"""Text to image through our executor vs diffusers' UnCLIPPipeline on the same components.

Both sides use one set of module objects (a tiny random checkpoint, loaded once through
LoadUnCLIP's process-wide model cache) and the same steps (Karlo's 25 / 25 / 7 by default):

* pipeline: ``UnCLIPPipeline(...)(prompt, ...)`` built directly from those objects;
* cold:     ``run_workflow`` with an empty cache (fresh memory tier, fresh disk folder), so every
            node runs and writes its outputs to both tiers -- the models are already in memory,
            as the pipeline's are;
* reseed:   the same workflow re-run on that warm cache with a new decoder seed (Decoder and
            Upsample run, everything upstream is a cache hit).

Repeats are interleaved (pipeline, cold, reseed, then the next round, alternating who goes first)
and the medians compared.

    .venv/bin/python bench/bench_stages.py --repeats 7
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def workflow(path: Path, prompt: str, steps: tuple[int, int, int]) -> dict:
    p, d, u = steps
    return {
        "inputs": {"decoder_seed": {"type": "INT", "default": 2}},
        "nodes": {
            "model": {"type": "LoadUnCLIP", "params": {"path": str(path), "device": "cpu"}},
            "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                     "params": {"prompt": prompt}},
            "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"},
                      "params": {"steps": p, "guidance_scale": 4.0, "seed": 1}},
            "decode": {"type": "Decoder",
                       "links": {"decoder": "model.decoder", "image_embeds": "prior.image_embeds",
                                 "text": "text.text"},
                       "params": {"steps": d, "guidance_scale": 8.0, "seed": "$decoder_seed"}},
            "upsample": {"type": "Upsample",
                         "links": {"upsampler": "model.upsampler", "image": "decode.image"},
                         "params": {"steps": u, "seed": 3}},
        },
        "outputs": {"image": "upsample.image"},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, nargs=3, default=(25, 25, 7), metavar=("PRIOR", "DECODER", "SR"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    ap.add_argument("--prompt", default="a red circle on a blue background")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from unclip_nodes.graph.cache import Cache, MemoryTier
    from unclip_nodes.graph import run_workflow
    from unclip_nodes.nodes.loaders import LOADED, load_unclip
    from unclip_nodes.nodes.tiny import save_tiny_checkpoint
    from diffusers import UnCLIPScheduler
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

    tmp = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    ckpt = save_tiny_checkpoint(tmp / "tiny")
    wf = workflow(ckpt, args.prompt, tuple(args.steps))

    # first run: loads the models into the process cache (reported, not compared)
    t0 = time.perf_counter()
    run_workflow(wf, cache=Cache(tmp / "cache0", memory=MemoryTier()), out_dir=tmp)
    first = time.perf_counter() - t0
    loaded = len(LOADED)

    clip_text, _, prior, dec, up = load_unclip(path=str(ckpt), device="cpu", dtype="fp32",
                                               allow_pickle=False)
    pipe = UnCLIPPipeline(
        prior=prior.prior, decoder=dec.decoder, text_encoder=clip_text.text_encoder,
        tokenizer=clip_text.tokenizer, text_proj=dec.text_proj, super_res_first=up.first,
        super_res_last=up.last,
        prior_scheduler=UnCLIPScheduler.from_config(prior.scheduler_config),
        decoder_scheduler=UnCLIPScheduler.from_config(dec.scheduler_config),
        super_res_scheduler=UnCLIPScheduler.from_config(up.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    p_steps, d_steps, u_steps = args.steps

    def run_pipeline():
        pipe(args.prompt, prior_num_inference_steps=p_steps, decoder_num_inference_steps=d_steps,
             super_res_num_inference_steps=u_steps, prior_guidance_scale=4.0,
             decoder_guidance_scale=8.0, output_type="np",
             generator=torch.Generator("cpu").manual_seed(0))

    times = {"pipeline": [], "cold": [], "reseed": []}
    for r in range(args.repeats):
        cache = Cache(tmp / f"cache{r + 1}", memory=MemoryTier())

        def cold():
            res = run_workflow(wf, cache=cache, out_dir=tmp)
            assert all(s == "ran" for s in res.status().values()), res.status()

        def reseed():
            res = run_workflow(wf, {"decoder_seed": 100 + r}, cache=cache, out_dir=tmp)
            ran = {n for n, s in res.status().items() if s == "ran"}
            assert ran == {"decode", "upsample"}, res.status()

        order = [("pipeline", run_pipeline), ("cold", cold), ("reseed", reseed)]
        if r % 2:
            order = [order[1], order[2], order[0]]
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()),
              file=sys.stderr)
    assert len(LOADED) == loaded, "a timed run loaded a model"

    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [c / p for c, p in zip(times["cold"], times["pipeline"])]
    out = {
        "steps": list(args.steps), "threads": args.threads, "repeats": args.repeats,
        "torch": torch.__version__, "first_run_with_loading_s": round(first, 3),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "cold_over_pipeline": round(med["cold"] / med["pipeline"], 4),
        "median_of_paired_ratios": round(statistics.median(ratios), 4),
        "reseed_over_pipeline": round(med["reseed"] / med["pipeline"], 4),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
