"""Kandinsky 2.2, Karlo and Stable unCLIP at their real size, with random weights: our executor
against diffusers' pipelines.

The components are built from the real checkpoints' configs (``bench/configs/kandinsky22``) with
random weights, once, and saved as safetensors in diffusers' folder layout under ``--cache``
(15.9 GB: float32, but the image encoder in float16 as the published files are; the tokenizer is a small offline one, so only the text encoder's
embedding rows it uses are ever read).  Then a short text-to-image (``--prior-steps`` +
``--steps`` steps at ``--size`` px, guidance 4 in both stages) runs

* through the executor (``workflows/kandinsky/text_to_image.yaml``, cache off), and
* through ``KandinskyV22PriorPipeline`` then ``KandinskyV22Pipeline`` (each loaded with
  ``from_pretrained`` from the same folders, each stage with its own generator of the same seed,
  as our nodes draw their noise),

each in a fresh child process, so that each peak RSS is its own (``wait4``'s ru_maxrss).  The
script prints a Markdown table and the largest pixel difference between the two images.

    .venv/bin/python bench/real_size.py --cache ~/.cache/unclip-nodes/real-size

``--family karlo`` builds Karlo at its real size (3.42 B parameters, float16 files) and runs
``workflows/text_to_image.yaml`` against ``UnCLIPPipeline`` with each stage's own generator.
``--family stable_unclip`` does the same for Stable unCLIP's text-to-image -small layout
(``bench/configs/stable_unclip/l/txt2img``: Karlo's prior, SD 2.1 UNet, VAE; about 9.7 GB in
float32) with ``workflows/stable_unclip/text_to_image.yaml`` against one ``StableUnCLIPPipeline``
call (default 768 px, guidance 4 in the prior and 10 in the decoder, noise_level 0).  diffusers
draws the prior's, the embedding's and the latents' noise from one generator where our Prior and
Decoder each have their own: its prior gets a generator of the seed, and the embedding noise and
latents are drawn from another one of the seed in our Decoder's order and handed to it.

Each executor side runs as ``unclip run`` does: the disk cache on (a folder of its own under
``--out``), each model let go of after its last use.  A first run (another prompt and seed, an
empty cache) computes the checkpoint's constants; the measured run finds them.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "bench" / "configs" / "kandinsky22"
WORKFLOW = ROOT / "workflows" / "kandinsky" / "text_to_image.yaml"
PROMPT = "a red cat, 4k photo"
PRIOR_PARTS = ("prior", "text_encoder", "image_encoder")
DECODER_PARTS = ("unet", "movq")
KINDS = ("executor-first", "executor", "diffusers")
NAMES = {"executor-first": "executor, first run (an empty cache: computes the checkpoint's "
                           "constants)",
         "executor": "executor (`unclip run` defaults, another prompt: constants found in the "
                     "cache)",
         "diffusers": "diffusers prior + decoder pipelines"}


def random_weights(ck, label: str) -> None:
    """Every weighted component of a config-only checkpoint built with random weights and saved
    in place, one at a time (freed before the next is built)."""
    import torch

    from unclip_nodes.nodes.core.checkpoint import instantiate
    for part in sorted(ck.classes):
        if ck.classes[part][1] in ("CLIPTokenizer", "CLIPImageProcessor") or \
                ck.classes[part][1].endswith("Scheduler"):
            continue
        if any(ck.dir(part).glob("*.safetensors")):
            continue
        t = time.perf_counter()
        torch.manual_seed(0)
        model = instantiate(ck, part, device="cpu")
        if part == "prior":  # as trained priors have: a spread, not zeros
            with torch.no_grad():
                model.clip_std.fill_(1.0)
        model.save_pretrained(str(ck.dir(part)), safe_serialization=True)
        n = sum(p.numel() for p in model.parameters())
        del model
        print(f"built {label}/{ck.dir(part).name}: {n:,} parameters in "
              f"{time.perf_counter() - t:.0f} s", flush=True)


def build(cache: Path) -> None:
    """Random-weight components from the real configs, one at a time (a component is freed
    before the next is built, so building needs about the largest one's memory, twice)."""
    from unclip_nodes.nodes.loaders import open_checkpoint
    from unclip_nodes.nodes.tokenizer import save_clip_tokenizer

    cache.mkdir(parents=True, exist_ok=True)
    for folder in ("prior", "decoder"):
        src, dst = CONFIGS / folder, cache / folder
        if (dst / "done").is_file():
            continue
        shutil.copytree(src, dst, dirs_exist_ok=True)
        if folder == "prior":
            save_clip_tokenizer(dst / "tokenizer", PROMPT.replace(",", " ").split(),
                                model_max_length=77)
            index = json.loads((dst / "model_index.json").read_text())
            assert "tokenizer" in index
        stages = ("clip_text", "clip_vision", "prior") if folder == "prior" else ("decoder",)
        random_weights(open_checkpoint(str(dst), stages, layout=False, config_only=True),
                       folder)
        (dst / "done").write_text("ok\n")


def build_karlo(cache: Path) -> Path:
    """Karlo (kakaobrain/karlo-v1-alpha) at its real size, random weights, float16 files as the
    published ones are (``gpu.karlo_real_parts``: 3.42 B parameters, 6.8 GB)."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import gpu
    from unclip_nodes.nodes.tiny import save_components
    root = cache / "karlo"
    if not (root / "done").is_file():
        t = time.perf_counter()
        parts = gpu.karlo_real_parts("cpu")
        n = sum(sum(p.numel() for p in m.parameters()) for m in parts.values()
                if isinstance(m, torch.nn.Module))
        save_components(parts, root)
        (root / "done").write_text("ok\n")
        print(f"built Karlo: {n:,} parameters in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def karlo_child(kind: str, cache: Path, out: Path, steps: int, seed: int) -> tuple:
    """Karlo text to image (``steps`` prior, decoder and upsampler steps, guidance 4 / 8) ->
    (image, parts of the time)."""
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    import gpu
    prompt, root = gpu.PROMPTS["karlo"], cache / "karlo"
    parts: dict[str, float] = {}
    if kind.startswith("executor"):
        from unclip_nodes.graph import run_workflow
        from unclip_nodes.graph.cache import Cache
        first = kind == "executor-first"
        r = run_workflow(ROOT / "workflows" / "text_to_image.yaml",
                         {"model": str(root), "prompt": "a blue dog" if first else prompt,
                          "steps": steps, "upsample_steps": steps, "prior_guidance": 4.0,
                          "decoder_guidance": 8.0, "seed": seed + 1 if first else seed},
                         cache=Cache(out / "executor-cache-karlo"), out_dir=out / "executor_png",
                         release=True)
        t = r.breakdown()
        by_node = {rec.node: rec for rec in r.report}
        parts = {"load": t["load"], "save": t["save"],
                 "text + prior": sum(by_node[n].seconds - by_node[n].load_seconds
                                     for n in ("text", "prior")),
                 "decoder": sum(by_node[n].seconds - by_node[n].load_seconds
                                for n in ("decode", "upsample"))}
        return r.outputs["image"].numpy(), parts
    import diffusers
    import transformers
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline, UnCLIPTextProjModel
    t = time.perf_counter()
    f32 = {"dtype": torch.float32, "local_files_only": True}
    half = {"variant": "fp16"} if any((root / "prior").glob("*.fp16.safetensors")) else {}
    pipe = UnCLIPPipeline(
        prior=diffusers.PriorTransformer.from_pretrained(root / "prior", **f32, **half),
        decoder=diffusers.UNet2DConditionModel.from_pretrained(root / "decoder", **f32, **half),
        text_encoder=transformers.CLIPTextModelWithProjection.from_pretrained(
            root / "text_encoder", **f32),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(root / "tokenizer"),
        text_proj=UnCLIPTextProjModel.from_pretrained(root / "text_proj", **f32, **half),
        super_res_first=diffusers.UNet2DModel.from_pretrained(root / "super_res_first", **f32,
                                                              **half),
        super_res_last=diffusers.UNet2DModel.from_pretrained(root / "super_res_last", **f32,
                                                             **half),
        prior_scheduler=diffusers.UnCLIPScheduler.from_pretrained(root / "prior_scheduler"),
        decoder_scheduler=diffusers.UnCLIPScheduler.from_pretrained(root / "decoder_scheduler"),
        super_res_scheduler=diffusers.UnCLIPScheduler.from_pretrained(
            root / "super_res_scheduler"))
    pipe.set_progress_bar_config(disable=True)
    parts["load"] = time.perf_counter() - t
    t = time.perf_counter()
    with gpu.per_stage_generators(pipe, seed):
        image = pipe(prompt, prior_num_inference_steps=steps, decoder_num_inference_steps=steps,
                     super_res_num_inference_steps=steps, prior_guidance_scale=4.0,
                     decoder_guidance_scale=8.0, output_type="np").images
    parts["text + prior + decoder"] = time.perf_counter() - t
    parts["save"] = 0.0
    return image, parts


SU_CONFIGS = ROOT / "bench" / "configs" / "stable_unclip" / "l" / "txt2img"
SU_WORKFLOW = ROOT / "workflows" / "stable_unclip" / "text_to_image.yaml"
SU_PROMPT = "a photo of a red cat"


def build_stable_unclip(cache: Path) -> None:
    """Random-weight components from the -small text-to-image configs, one at a time, with
    word-list tokenizers (the SD one pads with "!", the prior's with EOS, as the real ones)."""
    from unclip_nodes.nodes.loaders import open_checkpoint
    from unclip_nodes.nodes.tiny_stable_unclip import _tokenizer

    dst = cache / "stable_unclip_l_txt2img"
    if (dst / "done").is_file():
        return
    shutil.copytree(SU_CONFIGS, dst, dirs_exist_ok=True)
    for folder, pad in (("tokenizer", "!"), ("prior_tokenizer", "<|endoftext|>")):
        _tokenizer(pad).save_pretrained(str(dst / folder))
    random_weights(open_checkpoint(str(dst), ("clip_text", "prior", "decoder"), layout=False,
                                   config_only=True), "stable_unclip")
    (dst / "done").write_text("ok\n")


def stable_unclip_child(kind: str, cache: Path, out: Path, size: int, prior_steps: int,
                        steps: int, seed: int) -> tuple:
    """One Stable unCLIP text-to-image in this process -> (image, parts of the time)."""
    import torch

    folder = cache / "stable_unclip_l_txt2img"
    parts: dict[str, float] = {}
    if kind.startswith("executor"):
        from unclip_nodes.graph import run_workflow
        from unclip_nodes.graph.cache import Cache
        first = kind == "executor-first"
        r = run_workflow(SU_WORKFLOW, {"model": str(folder),
                                       "prompt": "a blue dog" if first else SU_PROMPT,
                                       "prior_steps": prior_steps, "steps": steps,
                                       "seed": seed + 1 if first else seed,
                                       "width": size, "height": size},
                         cache=Cache(out / "executor-cache-su"), out_dir=out / "executor_png",
                         release=True)
        t = r.breakdown()
        parts = {"load": t["load"], "save": t["save"],
                 "text + prior": sum(rec.seconds - rec.load_seconds for rec in r.report
                                     if rec.type in ("CLIPTextEncode", "Prior")),
                 "decoder": sum(rec.seconds - rec.load_seconds for rec in r.report
                                if rec.type not in ("CLIPTextEncode", "Prior") and not rec.files)}
        return r.outputs["image"].numpy(), parts
    from diffusers import StableUnCLIPPipeline
    t = time.perf_counter()
    pipe = StableUnCLIPPipeline.from_pretrained(str(folder), dtype=torch.float32,
                                                local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    parts["load"] = time.perf_counter() - t
    dim = pipe.prior.config.embedding_dim
    by_hand = torch.Generator("cpu").manual_seed(seed)  # our Decoder's draws, in its order
    noise = torch.randn(1, dim, generator=by_hand)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    latents = torch.randn(1, pipe.unet.config.in_channels, size // factor, size // factor,
                          generator=by_hand)
    plain = pipe.noise_image_embeddings
    pipe.noise_image_embeddings = lambda image_embeds, noise_level, noise_=None, generator=None: \
        plain(image_embeds, noise_level, noise=noise)
    t = time.perf_counter()
    image = pipe(SU_PROMPT, height=size, width=size, num_inference_steps=steps,
                 guidance_scale=10.0, prior_num_inference_steps=prior_steps,
                 prior_guidance_scale=4.0, latents=latents,
                 generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    parts["text + prior + decoder"] = time.perf_counter() - t
    parts["save"] = 0.0
    return image, parts


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def child(kind: str, cache: Path, out: Path, size: int, prior_steps: int, steps: int,
          seed: int, ram_budget: str | None = None, family: str = "kandinsky") -> None:
    """Runs in the child process: one text-to-image, its image saved as .npy."""
    import numpy as np
    import torch

    if ram_budget:
        from unclip_nodes.nodes.core.manager import MANAGER, parse_bytes
        MANAGER.set_budgets(ram=parse_bytes(ram_budget))

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    parts: dict[str, float] = {}
    if family == "karlo":
        image, parts = karlo_child(kind, cache, out, steps, seed)
    elif family == "stable_unclip":
        image, parts = stable_unclip_child(kind, cache, out, size, prior_steps, steps, seed)
    elif kind.startswith("executor"):
        # as `unclip run` does: the disk cache on (in its own folder), each model let go of
        # after its last use; "executor-first" runs another prompt and seed into a new cache
        # folder, as a first run ever would, and leaves the checkpoint's constants there
        from unclip_nodes.graph import run_workflow
        from unclip_nodes.graph.cache import Cache
        first = kind == "executor-first"
        r = run_workflow(WORKFLOW, {"prior": str(cache / "prior"),
                                    "decoder": str(cache / "decoder"),
                                    "prompt": "a blue dog" if first else PROMPT,
                                    "prior_steps": prior_steps, "steps": steps,
                                    "seed": seed + 1 if first else seed,
                                    "width": size, "height": size},
                         cache=Cache(out / "executor-cache"), out_dir=out / "executor_png",
                         release=True)
        image = r.outputs["image"].numpy()
        by_node = {rec.node: rec for rec in r.report}
        t = r.breakdown()
        parts = {"load": t["load"], "save": t["save"],
                 "text + prior": sum(by_node[n].seconds - by_node[n].load_seconds
                                     for n in ("text", "prior") if n in by_node),
                 "decoder": sum(rec.seconds - rec.load_seconds for rec in r.report
                                if rec.node not in ("text", "prior") and not rec.files)}
    else:
        from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline
        # dtype: fp32 like our run (the image encoder's files are fp16, as on the hub, and
        # transformers would otherwise keep it in fp16)
        t = time.perf_counter()
        prior = KandinskyV22PriorPipeline.from_pretrained(str(cache / "prior"), dtype=torch.float32,
                                                          local_files_only=True)
        prior.set_progress_bar_config(disable=True)
        parts["load"] = time.perf_counter() - t
        t = time.perf_counter()
        emb = prior(PROMPT, num_inference_steps=prior_steps, guidance_scale=4.0,
                    generator=torch.Generator("cpu").manual_seed(seed))
        parts["text + prior"] = time.perf_counter() - t
        t = time.perf_counter()
        decoder = KandinskyV22Pipeline.from_pretrained(str(cache / "decoder"), dtype=torch.float32,
                                                       local_files_only=True)
        decoder.set_progress_bar_config(disable=True)
        parts["load"] += time.perf_counter() - t
        t = time.perf_counter()
        image = decoder(image_embeds=emb.image_embeds,
                        negative_image_embeds=emb.negative_image_embeds, height=size, width=size,
                        num_inference_steps=steps, guidance_scale=4.0,
                        generator=torch.Generator("cpu").manual_seed(seed),
                        output_type="np").images
        parts["decoder"] = time.perf_counter() - t
        parts["save"] = 0.0
    np.save(out / f"{family}-{kind}.npy", image)
    (out / f"{family}-{kind}.json").write_text(json.dumps({"seconds": time.perf_counter() - t0,
                                                  "parts": parts}))


def measure(kind: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--cache", str(args.cache), "--out",
           str(args.out), "--size", str(args.size), "--prior-steps", str(args.prior_steps),
           "--steps", str(args.steps), "--seed", str(args.seed), "--family", args.family]
    if kind.startswith("executor") and args.ram_budget:
        cmd += ["--ram-budget", args.ram_budget]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} run failed")
    inner = json.loads((args.out / f"{args.family}-{kind}.json").read_text())
    return {"wall": wall, "seconds": inner["seconds"], "rss": usage.ru_maxrss * 1024,
            "parts": inner.get("parts", {})}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path,
                    default=Path.home() / ".cache" / "unclip-nodes" / "real-size")
    ap.add_argument("--out", type=Path, default=Path("/tmp/unclip-real-size"))
    ap.add_argument("--size", type=int, help="pixels (default: 512 Kandinsky 2.2, 768 Stable "
                    "unCLIP)")
    ap.add_argument("--prior-steps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", choices=("kandinsky", "karlo", "stable_unclip"),
                    default="kandinsky",
                    help="karlo: the 3.4 B Karlo stack (2 steps in every stage, 64 -> 256 px); "
                         "stable_unclip: the -small text-to-image layout")
    ap.add_argument("--child", choices=KINDS)
    ap.add_argument("--only", choices=KINDS, help="measure one side only")
    ap.add_argument("--ram-budget", metavar="SIZE",
                    help="the executor's model manager RAM budget (e.g. 8GB)")
    args = ap.parse_args(argv)
    if args.size is None:
        args.size = 768 if args.family == "stable_unclip" else 512
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, args.cache, args.out, args.size, args.prior_steps, args.steps,
              args.seed, args.ram_budget, args.family)
        return 0
    import numpy as np
    t = time.perf_counter()
    {"karlo": build_karlo, "stable_unclip": build_stable_unclip}.get(args.family, build)(args.cache)
    print(f"components ready in {time.perf_counter() - t:.0f} s; "
          f"{disk_bytes(args.cache) / 1e9:.1f} GB on disk in {args.cache}", flush=True)
    if args.only is None:
        shutil.rmtree(args.out / "executor-cache", ignore_errors=True)
        shutil.rmtree(args.out / "executor-cache-karlo", ignore_errors=True)
        shutil.rmtree(args.out / "executor-cache-su", ignore_errors=True)
    kinds = KINDS if args.only is None else (args.only,)
    rows = {kind: measure(kind, args) for kind in kinds}
    both = [args.out / f"{args.family}-{k}.npy" for k in ("executor", "diffusers")]
    diff = float(np.abs(np.load(both[0]) - np.load(both[1])).max()) if all(
        p.is_file() for p in both) else float("nan")
    if args.family == "stable_unclip":
        print(f"\nStable unCLIP (-small layout) text to image, {args.prior_steps} prior + "
              f"{args.steps} decoder steps, {args.size} px, fp32, CPU ({os.cpu_count()} cores)\n")
    elif args.family == "karlo":
        print(f"\nKarlo text to image, {args.steps} prior + {args.steps} decoder + {args.steps} "
              f"upsampler steps, 64 -> 256 px, fp32, CPU ({os.cpu_count()} cores)\n")
    else:
        print(f"\nKandinsky 2.2 text to image, {args.prior_steps} prior + {args.steps} decoder "
              f"steps, {args.size} px, fp32, CPU ({os.cpu_count()} cores)\n")
    print("| run | load (s) | text + prior (s) | decoder (s) | save (s) | in the process (s) | "
          "wall incl. start-up (s) | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, r in rows.items():
        name = ({"karlo": "diffusers UnCLIPPipeline",
                 "stable_unclip": "diffusers StableUnCLIPPipeline"}.get(args.family, NAMES[kind])
                if kind == "diffusers" else NAMES[kind])
        name += (f", --ram-budget {args.ram_budget}"
                              if kind.startswith("executor") and args.ram_budget else "")
        p = r["parts"]
        both_stages = p.get("text + prior + decoder")  # diffusers' Karlo pipeline: one call
        stages = (f"{both_stages:.0f} (both) | |" if both_stages is not None else
                  f"{p.get('text + prior', 0):.0f} | {p.get('decoder', 0):.0f} |")
        print(f"| {name} | {p.get('load', 0):.0f} | {stages} {p.get('save', 0):.1f} | "
              f"{r['seconds']:.0f} | "
              f"{r['wall']:.0f} | {r['rss'] / 1e9:.1f} |")
    if "executor" in rows and "diffusers" in rows:
        ours, theirs = rows["executor"], rows["diffusers"]
        print(f"\nexecutor / diffusers: wall {ours['wall'] / theirs['wall']:.2f} x, "
              f"peak RSS {ours['rss'] / theirs['rss']:.2f} x")
    print(f"largest pixel difference between the executor's and diffusers' images: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
