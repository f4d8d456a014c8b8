"""Images/s and peak memory of our executor against diffusers' pipelines, on a GPU (or the CPU).

For each configuration of the grid (family x dtype x batch x torch.compile) both sides run text
to image on the same module objects, with the same steps, guidance, sizes and seeds:

* ours:      a workflow mapping (LoadUnCLIP with ``device`` and ``dtype`` -> CLIPTextEncode ->
             Prior -> Decoder [-> Upsample]) through ``run_workflow`` with ``Cache.off()``;
             compile on = ``OPTIONS.compile = True`` (the model manager compiles the prior and
             decoder UNets, ``OPTIONS.compile_backend`` = ``--compile-backend``);
* diffusers: ``UnCLIPPipeline`` (Karlo; deprecated, built from our handles' modules, one
             generator per stage as our nodes draw), ``KandinskyV22PriorPipeline`` then
             ``KandinskyV22Pipeline`` (Kandinsky 2.2); compile on = ``torch.compile`` of the same
             denoiser modules (``dynamic=False``, the same backend).

Batch B: Karlo draws B prior embeddings and B images (our prompt given as B lines, so the Prior
samples B rows; diffusers ``num_images_per_prompt=B``); Kandinsky draws one embedding and B
images from it (our Decoder's ``images_per_embedding=B``; the decoder pipeline's
``num_images_per_prompt=B``).

Each side: one warm-up run (which also compiles), then ``--repeats`` timed runs; images/s =
B / median seconds.  Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over a run after
``reset_peak_memory_stats`` (weights included); on the CPU the growth of the process's peak RSS
over a run (VmHWM, reset through /proc/self/clear_refs; weights, loaded before, excluded), or
n/a where that cannot be read.  The sides run one after the other, with dynamo's caches reset in
between, since compiled code and its recompile limit are shared by every wrapper of a module.

    python bench/gpu.py --size real --device cuda --out bench/gpu_h200.md
    python bench/gpu.py --size tiny --device cpu --dtypes fp32 --batches 1,2 --steps 3 \\
        --compile off,on --compile-backend eager
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
FAMILIES = ("karlo", "kandinsky")
DTYPES = ("fp16", "bf16", "fp32")
DEFAULT_STEPS = {"karlo": (25, 25, 7), "kandinsky": (25, 50)}
GUIDANCE = {"karlo": (4.0, 8.0), "kandinsky": (4.0, 4.0)}
PROMPTS = {"karlo": "a red circle on a blue background", "kandinsky": "a red cat, 4k photo"}

_T0 = time.perf_counter()


def say(text: str) -> None:
    """Progress on stderr, stamped with the seconds since start."""
    print(f"[{time.perf_counter() - _T0:7.1f} s] {text}", file=sys.stderr, flush=True)


# --- checkpoints ------------------------------------------------------------------------------

def _done(folder: Path) -> bool:
    return (folder / "done").is_file()


def _mark(folder: Path) -> None:
    (folder / "done").write_text("ok\n")


def tiny_checkpoints(cache: Path, families) -> dict[str, dict]:
    """The tiny random checkpoints (nodes/tiny.py, nodes/tiny_kandinsky.py), written once."""
    out = {}
    if "karlo" in families:
        from unclip_nodes.nodes.tiny import save_tiny_checkpoint
        karlo = cache / "tiny-karlo"
        if not _done(karlo):
            save_tiny_checkpoint(karlo, image_variation=False)
            _mark(karlo)
        out["karlo"] = {"path": str(karlo)}
    if "kandinsky" in families:
        from unclip_nodes.nodes.tiny_kandinsky import save_tiny_kandinsky
        k22 = cache / "tiny-kandinsky22"
        if not _done(k22):
            save_tiny_kandinsky(k22)
            _mark(k22)
        out["kandinsky"] = {"path": str(k22 / "decoder"), "prior_path": str(k22 / "prior")}
    return out


def karlo_real_parts(device: str) -> dict:
    """Karlo (kakaobrain/karlo-v1-alpha) at its real size with random weights, in float16.

    Sizes as diffusers' Karlo conversion script writes them: PriorTransformer's defaults; the
    text tower of CLIP ViT-L/14; text_proj; the 64 px decoder UNet and the 256 px super-res
    UNets; Karlo's three UnCLIPSchedulers.  Each module is built on ``device`` (fast on a GPU)
    and halved at once, so building holds one module in float32 at a time."""
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel, UnCLIPScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from unclip_nodes.nodes.textproj import UnCLIPTextProjModel
    from unclip_nodes.nodes.tokenizer import make_clip_tokenizer

    tokenizer = make_clip_tokenizer(PROMPTS["karlo"].split(), model_max_length=77)

    def made(seed: int, make):
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            module = make()
        return module.to(torch.float16).eval().requires_grad_(False)

    def prior():
        p = PriorTransformer()
        with torch.no_grad():  # a spread, as a trained prior has, so that the prior matters
            p.clip_std.copy_(0.5 + torch.rand_like(p.clip_std))
            p.clip_mean.copy_(0.1 * torch.randn_like(p.clip_mean))
        return p

    def text_proj():
        m = UnCLIPTextProjModel(time_embed_dim=1280, cross_attention_dim=1536,
                                clip_embeddings_dim=768)
        with torch.no_grad():  # zeros would make the unconditional branch trivial
            g = m.learned_classifier_free_guidance_embeddings
            g.copy_(torch.randn_like(g))
        return m

    super_res = dict(sample_size=256, layers_per_block=3,
                     down_block_types=("ResnetDownsampleBlock2D",) * 4,
                     up_block_types=("ResnetUpsampleBlock2D",) * 4,
                     block_out_channels=(320, 640, 960, 1280), in_channels=6, out_channels=3,
                     add_attention=False)
    return {
        "text_encoder": made(0, lambda: CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
            hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))),
        "tokenizer": tokenizer,
        "prior": made(1, prior),
        "text_proj": made(2, text_proj),
        "decoder": made(3, lambda: UNet2DConditionModel(
            sample_size=64, layers_per_block=3,
            down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
            up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn",
            block_out_channels=(320, 640, 960, 1280), in_channels=3, out_channels=6,
            cross_attention_dim=1536, class_embed_type="identity", attention_head_dim=64,
            resnet_time_scale_shift="scale_shift")),
        "super_res_first": made(4, lambda: UNet2DModel(**super_res)),
        "super_res_last": made(5, lambda: UNet2DModel(**super_res)),
        "prior_scheduler": UnCLIPScheduler(variance_type="fixed_small_log",
                                           prediction_type="sample", num_train_timesteps=1000,
                                           clip_sample_range=5.0),
        "decoder_scheduler": UnCLIPScheduler(variance_type="learned_range",
                                             prediction_type="epsilon", num_train_timesteps=1000),
        "super_res_scheduler": UnCLIPScheduler(variance_type="fixed_small_log",
                                               prediction_type="epsilon",
                                               num_train_timesteps=1000),
    }


def real_checkpoints(cache: Path, device: str, families) -> dict[str, dict]:
    """Karlo (built here, float16 files) and Kandinsky 2.2 (``real_size.build``) at real size."""
    out = {}
    if "karlo" in families:
        karlo = cache / "karlo"
        if not _done(karlo):
            from unclip_nodes.nodes.tiny import save_components
            t = time.perf_counter()
            parts = karlo_real_parts(device)
            n = sum(sum(p.numel() for p in m.parameters()) for m in parts.values()
                    if isinstance(m, torch.nn.Module))
            save_components(parts, karlo)
            del parts
            _free()
            _mark(karlo)
            say(f"built Karlo at real size: {n:,} parameters in "
                f"{time.perf_counter() - t:.0f} s")
        out["karlo"] = {"path": str(karlo)}
    if "kandinsky" in families:
        sys.path.insert(0, str(BENCH))
        import real_size
        real_size.build(cache / "kandinsky22")
        out["kandinsky"] = {"path": str(cache / "kandinsky22" / "decoder"),
                            "prior_path": str(cache / "kandinsky22" / "prior")}
    return out


# --- measuring --------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _status_kb(name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5: set the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(device: torch.device, into: list):
    """Appends the run's peak to ``into``: bytes, or None when it cannot be measured."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield
        _sync(device)
        into.append(int(torch.cuda.max_memory_allocated(device)))
        return
    base = _status_kb("VmRSS")
    ok = base is not None and _reset_rss_peak()
    yield
    peak = _status_kb("VmHWM") if ok else None
    into.append(max(0, peak - base) if peak is not None else None)


class DynamoWatch:
    """How many graphs dynamo compiled, and whether it gave up on a function (its recompile
    limit: the calls that no cached graph fits then run eagerly)."""

    def __init__(self):
        self.limit_hits = 0
        watch = self

        class Handler(logging.Handler):
            def emit(self, record):
                text = record.getMessage()
                if "recompile_limit" in text or "cache_size_limit" in text:
                    watch.limit_hits += 1

        self.handler = Handler()
        logging.getLogger("torch._dynamo").addHandler(self.handler)

    def close(self) -> None:
        logging.getLogger("torch._dynamo").removeHandler(self.handler)

    @staticmethod
    def graphs() -> int:
        from torch._dynamo.utils import counters
        return int(counters["stats"].get("unique_graphs", 0))

    @contextlib.contextmanager
    def count(self, into: dict):
        g, h = self.graphs(), self.limit_hits
        yield
        into["graphs"] = self.graphs() - g
        into["limit_hit"] = self.limit_hits > h


def reset_dynamo() -> None:
    import torch._dynamo
    torch._dynamo.reset()


@dataclass
class Side:
    seconds: list = field(default_factory=list)
    peaks: list = field(default_factory=list)
    image: np.ndarray | None = None
    graphs: int | None = None
    limit_hit: bool = False
    error: str | None = None

    def images_per_s(self, batch: int) -> float | None:
        return batch / statistics.median(self.seconds) if self.seconds else None

    def peak(self) -> int | None:
        known = [p for p in self.peaks if p is not None]
        return max(known) if known else None


def timed(fn, device: torch.device, repeats: int, watch: DynamoWatch | None) -> Side:
    side = Side()
    counted: dict = {}
    with watch.count(counted) if watch else contextlib.nullcontext():
        fn()  # warm-up (loads on first use, compiles)
        for _ in range(repeats):
            with peak_memory(device, side.peaks):
                _sync(device)
                t = time.perf_counter()
                image = fn()
                _sync(device)
                side.seconds.append(time.perf_counter() - t)
    side.image = np.asarray(image, dtype=np.float32)
    side.graphs = counted.get("graphs")
    side.limit_hit = bool(counted.get("limit_hit"))
    return side


# --- our side ---------------------------------------------------------------------------------

def our_workflow(family: str, ck: dict, *, device: str, dtype: str, batch: int, steps,
                 px: int, seed: int) -> dict:
    """Text to image as a workflow mapping; every sampling node draws from ``seed``."""
    g_prior, g_dec = GUIDANCE[family]
    load = {"path": ck["path"], "device": device, "dtype": dtype}
    if ck.get("prior_path"):
        load["prior_path"] = ck["prior_path"]
    if family == "karlo":
        prompt = "\n".join([PROMPTS[family]] * batch)  # B prompt rows: the Prior samples B
        per = 1
    else:
        prompt, per = PROMPTS[family], batch           # one embedding, B images from it
    decode = {"steps": steps[1], "guidance_scale": g_dec, "seed": seed,
              "images_per_embedding": per}
    links = {"decoder": "model.decoder", "image_embeds": "prior.image_embeds"}
    if family == "karlo":
        links["text"] = "text.text"
    else:
        decode.update(width=px, height=px)
    nodes = {
        "model": {"type": "LoadUnCLIP", "params": load},
        "text": {"type": "CLIPTextEncode", "links": {"clip": "model.clip_text"},
                 "params": {"prompt": prompt}},
        "prior": {"type": "Prior", "links": {"prior": "model.prior", "text": "text.text"},
                  "params": {"steps": steps[0], "guidance_scale": g_prior, "seed": seed}},
        "decode": {"type": "Decoder", "links": links, "params": decode},
    }
    out = "decode.image"
    if family == "karlo":
        nodes["upsample"] = {"type": "Upsample",
                             "links": {"upsampler": "model.upsampler", "image": "decode.image"},
                             "params": {"steps": steps[2], "seed": seed}}
        out = "upsample.image"
    return {"nodes": nodes, "outputs": {"image": out}}


def run_ours(wf: dict, out_dir: Path, one_shot: bool = False):
    """Our side as a function of no arguments.  ``one_shot``: each run lets go of every model
    after its last use, as ``unclip run`` does (stage-wise residency), so every timed run loads
    its weights again and the figures are a one-shot command's; off, the models stay between
    runs, as in a session (ComfyUI, a Python loop)."""
    from unclip_nodes.graph.cache import Cache
    from unclip_nodes.graph import run_workflow

    def run():
        r = run_workflow(wf, cache=Cache.off(), out_dir=out_dir, release=one_shot)
        return r.outputs["image"].float().cpu().numpy()
    return run


# --- diffusers' side --------------------------------------------------------------------------

@contextlib.contextmanager
def plain_modules():
    """Our handles give the raw modules (not the manager's compiled wrappers) inside."""
    from unclip_nodes.nodes.runtime import OPTIONS
    before = OPTIONS.compile
    OPTIONS.compile = False
    try:
        yield
    finally:
        OPTIONS.compile = before


def load_handles(ck: dict, device: str, dtype: str):
    from unclip_nodes.nodes.loaders import load_unclip
    with plain_modules():
        return load_unclip(path=ck["path"], prior_path=ck.get("prior_path", ""), device=device,
                           dtype=dtype, allow_pickle=False)


def _compiled(module, on: bool, backend: str):
    return torch.compile(module, dynamic=False, backend=backend) if on else module


@contextlib.contextmanager
def per_stage_generators(pipe, seed: int):
    """UnCLIPPipeline drawing each stage's noise from its own generator of ``seed``, as our
    Prior, Decoder and Upsample nodes each do; the pipeline's own code is left as it is."""
    names = ("prior_scheduler", "decoder_scheduler", "super_res_scheduler")
    gens = {name: torch.Generator("cpu").manual_seed(seed) for name in names}
    by_scheduler = {id(getattr(pipe, name)): gens[name] for name in names}
    for name in names:
        sched = getattr(pipe, name)

        def step(*args, _step=sched.step, _gen=gens[name], generator=None, **kw):
            return _step(*args, generator=_gen, **kw)
        sched.step = step
    prepare = pipe.prepare_latents

    def prepare_latents(shape, dtype, device, generator, latents, scheduler):
        return prepare(shape, dtype, device, by_scheduler[id(scheduler)], latents, scheduler)
    pipe.prepare_latents = prepare_latents
    try:
        yield
    finally:
        del pipe.prepare_latents
        for name in names:
            del getattr(pipe, name).step


def diffusers_karlo(handles, *, compile_on: bool, backend: str, batch: int, steps, seed: int):
    from diffusers import UnCLIPScheduler
    from diffusers.pipelines.deprecated.unclip import UnCLIPPipeline

    clip_text, _, prior, dec, up = handles
    with plain_modules():
        pipe = UnCLIPPipeline(
            prior=_compiled(prior.prior, compile_on, backend),
            decoder=_compiled(dec.decoder, compile_on, backend),
            text_encoder=clip_text.text_encoder, tokenizer=clip_text.tokenizer,
            text_proj=dec.text_proj,
            super_res_first=_compiled(up.first, compile_on, backend),
            super_res_last=_compiled(up.last, compile_on, backend),
            prior_scheduler=UnCLIPScheduler.from_config(prior.scheduler_config),
            decoder_scheduler=UnCLIPScheduler.from_config(dec.scheduler_config),
            super_res_scheduler=UnCLIPScheduler.from_config(up.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    g_prior, g_dec = GUIDANCE["karlo"]

    def run():
        with per_stage_generators(pipe, seed):
            return pipe(PROMPTS["karlo"], num_images_per_prompt=batch,
                        prior_num_inference_steps=steps[0], decoder_num_inference_steps=steps[1],
                        super_res_num_inference_steps=steps[2], prior_guidance_scale=g_prior,
                        decoder_guidance_scale=g_dec, output_type="np").images
    return run, [pipe]


def diffusers_kandinsky(handles, *, compile_on: bool, backend: str, batch: int, steps,
                        seed: int, px: int):
    from diffusers import (DDPMScheduler, KandinskyV22Pipeline, KandinskyV22PriorPipeline,
                           UnCLIPScheduler)
    from transformers import CLIPImageProcessor

    clip_text, clip_vision, prior, dec, _ = handles
    with plain_modules():
        prior_pipe = KandinskyV22PriorPipeline(
            prior=_compiled(prior.prior, compile_on, backend),
            image_encoder=clip_vision.image_encoder, text_encoder=clip_text.text_encoder,
            tokenizer=clip_text.tokenizer,
            scheduler=UnCLIPScheduler.from_config(prior.scheduler_config),
            image_processor=CLIPImageProcessor(**clip_vision.preprocess))
        unet = dec.unet
        # Our MoVQ stays float32 whatever the dtype; diffusers' pipeline decodes the latents in
        # the UNet's dtype, so it gets a copy in that dtype, as pipe.to(dtype) would make.
        movq = dec.movq if unet.dtype == torch.float32 else copy.deepcopy(dec.movq).to(unet.dtype)
        dec_pipe = KandinskyV22Pipeline(
            unet=_compiled(unet, compile_on, backend), movq=movq,
            scheduler=DDPMScheduler.from_config(dec.scheduler_config))
    for p in (prior_pipe, dec_pipe):
        p.set_progress_bar_config(disable=True)
    g_prior, g_dec = GUIDANCE["kandinsky"]

    def run():
        emb = prior_pipe(PROMPTS["kandinsky"], num_inference_steps=steps[0],
                         guidance_scale=g_prior, generator=torch.Generator("cpu").manual_seed(seed))
        return dec_pipe(image_embeds=emb.image_embeds,
                        negative_image_embeds=emb.negative_image_embeds, height=px, width=px,
                        num_inference_steps=steps[1], guidance_scale=g_dec,
                        num_images_per_prompt=batch,
                        generator=torch.Generator("cpu").manual_seed(seed),
                        output_type="np").images
    return run, [prior_pipe, dec_pipe]


# --- the grid ---------------------------------------------------------------------------------

@dataclass
class Row:
    family: str
    dtype: str
    batch: int
    compile: bool
    ours: Side
    theirs: Side
    weights: int | None
    diff: float | None
    vs_eager: float | None

    def label(self) -> str:
        return (f"{self.family} {self.dtype} batch {self.batch} compile "
                f"{'on' if self.compile else 'off'}")


def _max_diff(a, b) -> float | None:
    if a is None or b is None or a.shape != b.shape:
        return None
    return float(np.abs(a - b).max())


def attempt(label: str, make) -> Side:
    """``make()`` -> Side; a failure (an op missing for a dtype, out of memory) becomes a row
    note instead of ending a long run."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001  (reported in the table, traceback on stderr)
        traceback.print_exc()
        text = " ".join(f"{type(e).__name__}: {e}".split())
        say(f"{label} failed: {text[:200]}")
        return Side(error=text[:160])


def measure_block(family: str, ck: dict, dtype: str, args, device: torch.device,
                  watch: DynamoWatch, tmp: Path) -> list[Row]:
    """Every batch and compile setting of one family and dtype (the weights loaded once)."""
    from unclip_nodes.nodes.loaders import clear_model_cache

    rows, eager = [], {}
    try:
        for batch in args.batches:
            for compile_on in args.compile:
                row = measure_row(family, ck, dtype, batch, compile_on, args, device, watch,
                                  tmp)
                if not compile_on:
                    eager[batch] = row.ours.image
                else:
                    row.vs_eager = _max_diff(row.ours.image, eager.get(batch))
                rows.append(row)
                say(f"{row.label()}: ours {_rate(row.ours, batch)} img/s, diffusers "
                    f"{_rate(row.theirs, batch)} img/s, max diff {_num(row.diff)}")
    finally:
        clear_model_cache()
        reset_dynamo()
        _free()
    return rows


def measure_row(family: str, ck: dict, dtype: str, batch: int, compile_on: bool, args,
                device: torch.device, watch: DynamoWatch, tmp: Path) -> Row:
    from unclip_nodes.nodes.core.manager import MANAGER
    from unclip_nodes.nodes.runtime import OPTIONS

    row = Row(family, dtype, batch, compile_on, Side(), Side(), None, None, None)
    steps, px = args.steps[family], args.px[family]
    say(f"{row.label()}: ours")
    wf = our_workflow(family, ck, device=str(device), dtype=dtype, batch=batch, steps=steps,
                      px=px, seed=args.seed)
    reset_dynamo()
    before = OPTIONS.compile, OPTIONS.compile_backend
    OPTIONS.compile, OPTIONS.compile_backend = compile_on, args.compile_backend
    try:
        ours = run_ours(wf, tmp, args.one_shot)
        row.ours = attempt(row.label(), lambda: timed(ours, device, args.repeats, watch))
    finally:
        OPTIONS.compile, OPTIONS.compile_backend = before
        reset_dynamo()
        _free()
    row.weights = MANAGER.used(device.type)

    say(f"{row.label()}: diffusers")
    make = diffusers_karlo if family == "karlo" else diffusers_kandinsky
    extra = {} if family == "karlo" else {"px": px}

    def theirs() -> Side:
        handles = load_handles(ck, str(device), dtype)
        fn, pipes = make(handles, compile_on=compile_on, backend=args.compile_backend,
                         batch=batch, steps=steps, seed=args.seed, **extra)
        del handles, pipes  # fn holds the pipelines (and a MoVQ copy) until it returns
        return timed(fn, device, args.repeats, watch)
    try:
        row.theirs = attempt(row.label(), theirs)
    finally:
        reset_dynamo()
        _free()
    row.diff = _max_diff(row.ours.image, row.theirs.image)
    return row


# --- the table --------------------------------------------------------------------------------

def _bytes(n: int | None) -> str:
    if n is None:
        return "n/a"
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _num(x: float | None) -> str:
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.1e}"


def _rate(side: Side, batch: int) -> str:
    v = side.images_per_s(batch)
    return "n/a" if v is None else f"{v:.3g}"


def _graphs(side: Side, compile_on: bool) -> str:
    if not compile_on or side.graphs is None:
        return "—"
    return f"{side.graphs}{'*' if side.limit_hit else ''}"


def table(rows: list[Row]) -> str:
    head = ("| family | dtype | batch | compile | ours img/s | diffusers img/s | ours / diffusers "
            "| ours peak mem | diffusers peak mem | weights | max pixel diff vs diffusers "
            "| vs ours eager | graphs ours / diffusers |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    notes: list[str] = []

    def rate(side: Side, batch: int, who: str) -> str:
        if side.error is None:
            return _rate(side, batch)
        notes.append(f"{who}: {side.error}")
        return f"failed [{len(notes)}]"

    for r in rows:
        a, b = r.ours.images_per_s(r.batch), r.theirs.images_per_s(r.batch)
        ratio = f"{a / b:.2f}" if a and b else "n/a"
        lines.append(
            f"| {r.family} | {r.dtype} | {r.batch} | {'on' if r.compile else 'off'} "
            f"| {rate(r.ours, r.batch, 'ours')} | {rate(r.theirs, r.batch, 'diffusers')} "
            f"| {ratio} | {_bytes(r.ours.peak())} | {_bytes(r.theirs.peak())} "
            f"| {_bytes(r.weights)} | {_num(r.diff)} | {_num(r.vs_eager)} "
            f"| {_graphs(r.ours, r.compile)} / {_graphs(r.theirs, r.compile)} |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def describe(args, device: torch.device) -> str:
    import diffusers
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        mem = ("peak mem = torch.cuda.max_memory_allocated over one timed run (weights "
               "included)")
    else:
        name = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
               f"{torch.get_num_threads()} torch threads"
        mem = ("peak mem = growth of the process's peak RSS over one timed run (VmHWM after a "
               "reset; the weights, loaded before, and reused heap not included: a lower "
               "bound)")
    limit = f", recompile limit {args.recompile_limit}" if args.recompile_limit else ""
    sizes = {"karlo": "64 -> 256 px" if args.size == "real" else "32 -> 64 px",
             "kandinsky": f"{args.px['kandinsky']} px"}
    steps = "; ".join(f"{f} {'/'.join(map(str, args.steps[f]))} ({sizes[f]})"
                      for f in args.families)
    return (f"{args.size} models, {name}; torch {torch.__version__}, diffusers "
            f"{diffusers.__version__}; steps {steps}; guidance Karlo 4/8, Kandinsky 4/4; "
            f"batch = images per run (Karlo: B prior rows, B images; Kandinsky: one "
            f"embedding, B images); median of {args.repeats} runs after one warm-up; compile "
            f"backend {args.compile_backend}{limit}.  {mem}; weights = what the model "
            f"manager holds on the device; max pixel diff on the 0..1 scale; graphs = dynamo "
            f"graphs compiled by the side's runs, * = dynamo hit its recompile limit (calls no "
            f"graph fits ran eagerly)." + (
                "  Ours one-shot (--one-shot): each run releases its models after their last use "
                "and loads them again, as unclip run does; its times include loading."
                if args.one_shot else ""))


# --- command line -----------------------------------------------------------------------------

def _list(text: str, choices=None, kind=str):
    items = [kind(t.strip()) for t in text.split(",") if t.strip()]
    if choices is not None:
        bad = [t for t in items if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not among {list(choices)}")
    return items


def _on_off(text: str):
    return [t == "on" for t in _list(text, ("off", "on"))]


def parse_steps(tokens: list[str] | None) -> dict:
    """``25`` (every stage of every family), ``karlo:25,25,7``, ``kandinsky:25,50``."""
    steps = {f: list(v) for f, v in DEFAULT_STEPS.items()}
    for tok in tokens or []:
        fam, _, values = tok.rpartition(":")
        nums = _list(values, kind=int)
        for f in ([fam] if fam else FAMILIES):
            if f not in steps:
                raise SystemExit(f"--steps: unknown family {f!r}")
            n = len(steps[f])
            steps[f] = (nums + nums[-1:] * n)[:n]
    return {f: tuple(v) for f, v in steps.items()}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=("tiny", "real"), default="tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cache", type=Path,
                    default=Path.home() / ".cache" / "unclip-nodes" / "gpu-bench",
                    help="where the random-weight checkpoints are built (once)")
    ap.add_argument("--families", type=lambda s: _list(s, FAMILIES), default=list(FAMILIES))
    ap.add_argument("--dtypes", type=lambda s: _list(s, DTYPES), default=["fp16", "bf16"])
    ap.add_argument("--batches", type=lambda s: _list(s, kind=int), default=[1, 8])
    ap.add_argument("--compile", type=_on_off, default=[False, True], metavar="off,on")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend of both sides (eager: plumbing only)")
    ap.add_argument("--recompile-limit", type=int, default=None,
                    help="torch._dynamo's recompile limit (default: torch's own)")
    ap.add_argument("--steps", nargs="+", metavar="[FAMILY:]N[,N...]",
                    help="sampling steps: Karlo prior,decoder,super-res (default 25,25,7); "
                         "Kandinsky prior,decoder (default 25,50); a bare list sets both")
    ap.add_argument("--kandinsky-px", type=int, default=None,
                    help="Kandinsky image side (default 512 real, 64 tiny)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own; 1 is steadier on a busy CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one-shot", action="store_true",
                    help="our side as unclip run: each run releases its models after their last "
                         "use and loads them again (loading included in the figures)")
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    args.steps = parse_steps(args.steps)
    px = args.kandinsky_px or (512 if args.size == "real" else 64)
    args.px = {"karlo": 0, "kandinsky": px}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    if args.recompile_limit is not None:
        import torch._dynamo.config as dynamo_config
        name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else \
            "cache_size_limit"
        setattr(dynamo_config, name, args.recompile_limit)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if args.size == "tiny":
        ckpts = tiny_checkpoints(args.cache, args.families)
    else:
        ckpts = real_checkpoints(args.cache, args.device, args.families)
    say(f"checkpoints ready in {time.perf_counter() - t:.0f} s")

    import unclip_nodes.nodes  # noqa: F401  (registers the nodes)
    watch = DynamoWatch()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
            for family in args.families:
                for dtype in args.dtypes:
                    rows += measure_block(family, ckpts[family], dtype, args, device, watch,
                                          Path(tmp))
    finally:
        watch.close()
    text = f"{describe(args, device)}\n\n{table(rows)}\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
