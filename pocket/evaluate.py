"""Judge the pocket model with the pixel oracle: does it draw what the caption says?

    python -m unclip_nodes.pocket.evaluate [--model pocket] [--per-combo 2] [--via auto|workflow|nodes]

Text to image: every caption of the world (the training combinations and, reported separately, the
held-out ones the model never saw), sampled at seeds the training never used, judged on colour,
shape and background, with guidance and without.  Image variations: fresh world pictures encoded by
the CLIP image tower and decoded again; the variation should keep shape and colour.

``--via workflow`` runs workflows/text_to_image.yaml and workflows/image_variations.yaml through the
executor (what a user runs); ``--via nodes`` calls the same node functions directly (no executor,
no cache); ``auto`` uses the workflows when they exist.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import oracle, world

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"


@dataclass
class Settings:
    prior_steps: int = 25
    decoder_steps: int = 25
    upsample_steps: int = 7
    prior_guidance: float = 2.0     # the shipped workflows' defaults, measured best on the pocket
    decoder_guidance: float = 1.0   # model (see the README table)
    upsample: bool = True


# ----------------------------------------------------------------------------------- node path
_MODELS: dict[str, tuple] = {}


def models(path: str = "pocket"):
    """(clip_text, clip_vision, prior, decoder, upsampler) handles, loaded once per path."""
    if path not in _MODELS:
        from ..nodes.loaders import load_unclip
        _MODELS[path] = load_unclip(path=path, device="cpu", dtype="fp32", allow_pickle=False)
    return _MODELS[path]


def text_to_image(prompts: list[str], seed: int, s: Settings, path: str = "pocket") -> torch.Tensor:
    """IMAGE [B, H, W, 3] for the prompts, through the node functions."""
    from ..nodes.clip import clip_text_encode
    from ..nodes.decoder import decoder_node
    from ..nodes.prior import prior_node
    from ..nodes.upsample import upsample_node
    clip_text, _, prior, decoder, upsampler = models(path)
    text = clip_text_encode(clip=clip_text, text="\n".join(prompts))
    z = prior_node(prior=prior, text=text, negative=None, steps=s.prior_steps,
                   guidance_scale=s.prior_guidance, seed=seed, candidates=1)
    img = decoder_node(decoder=decoder, image_embeds=z, text=text, steps=s.decoder_steps,
                       guidance_scale=s.decoder_guidance, seed=seed, images_per_embedding=1)
    if s.upsample:
        img = upsample_node(upsampler=upsampler, image=img, steps=s.upsample_steps, seed=seed)
    return img


def upsample(images: torch.Tensor, seed: int, steps: int = 7, path: str = "pocket") -> torch.Tensor:
    """The checkpoint's upsampler on IMAGE [B, H, W, 3] (32 -> 64 px for the pocket model)."""
    from ..nodes.upsample import upsample_node
    return upsample_node(upsampler=models(path)[4], image=images, steps=steps, seed=seed)


def variations(images: torch.Tensor, seed: int, s: Settings, path: str = "pocket") -> torch.Tensor:
    """Decode the CLIP image embeddings of ``images`` (IMAGE [B,H,W,3]) again, without a caption."""
    from ..nodes.clip import clip_image_encode
    from ..nodes.decoder import decoder_node
    from ..nodes.upsample import upsample_node
    _, clip_vision, _, decoder, upsampler = models(path)
    z = clip_image_encode(clip_vision=clip_vision, image=images)
    img = decoder_node(decoder=decoder, image_embeds=z, text=None, steps=s.decoder_steps,
                       guidance_scale=s.decoder_guidance, seed=seed, images_per_embedding=1)
    if s.upsample:
        img = upsample_node(upsampler=upsampler, image=img, steps=s.upsample_steps, seed=seed)
    return img


# ------------------------------------------------------------------------------- workflow path
def workflows_available() -> bool:
    return ((WORKFLOWS / "text_to_image.yaml").exists() and (WORKFLOWS / "image_variations.yaml").exists())


def _workflow(name: str, guidance: dict[str, float]) -> dict:
    """The shipped workflow as a mapping, with the guidance of the named nodes replaced."""
    import yaml
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    for node_id, g in guidance.items():
        wf["nodes"][node_id].setdefault("params", {})["guidance_scale"] = g
    return wf


def _overrides(wf: dict, wanted: dict) -> dict:
    """Only the inputs the workflow declares (a workflow need not expose every setting)."""
    declared = wf.get("inputs") or {}
    return {k: v for k, v in wanted.items() if k in declared}


def _run(wf: dict, wanted: dict, out: str, output: str) -> torch.Tensor:
    from ..graph.cache import Cache
    from ..graph.api import run_workflow
    res = run_workflow(wf, _overrides(wf, wanted), out_dir=out, device="cpu", cache=Cache.off())
    return res.outputs[output]


def text_to_image_workflow(prompts: list[str], seed: int, s: Settings, path: str = "pocket") -> torch.Tensor:
    """workflows/text_to_image.yaml (one prior/decoder step count; the guidance patched in)."""
    wf = _workflow("text_to_image.yaml", {"prior": s.prior_guidance, "decode": s.decoder_guidance})
    wanted = {"prompt": "\n".join(prompts), "seed": seed, "model": path, "steps": s.decoder_steps,
              "upsample_steps": s.upsample_steps}
    with tempfile.TemporaryDirectory() as out:
        return _run(wf, wanted, out, "image" if s.upsample else "small")


def variations_workflow(images: torch.Tensor, seed: int, s: Settings, path: str = "pocket") -> torch.Tensor:
    """workflows/image_variations.yaml on each source image, given as a PNG file as a user would."""
    from PIL import Image
    wf = _workflow("image_variations.yaml", {"decode": s.decoder_guidance})
    outs = []
    with tempfile.TemporaryDirectory() as out:
        for i, im in enumerate(images):
            src = Path(out) / f"src{i}.png"
            Image.fromarray((im.numpy() * 255).round().astype(np.uint8)).save(src)
            wanted = {"image": str(src), "count": 1, "seed": seed, "model": path,
                      "steps": s.decoder_steps, "upsample_steps": s.upsample_steps}
            outs.append(_run(wf, wanted, out, "images")[:1])
    return torch.cat(outs)


# -------------------------------------------------------------------------------------- judging
def judge(images, labels: list[tuple[str, str, str]]) -> dict[str, float]:
    """Fraction right for colour, shape, background, and all three together."""
    readings = oracle.read_batch(images)
    r = {k: np.array([getattr(x, k) == lab[i] for x, lab in zip(readings, labels)])
         for i, k in enumerate(("colour", "shape", "background"))}
    r["all"] = r["colour"] & r["shape"] & r["background"]
    r["shape+colour"] = r["colour"] & r["shape"]
    return {k: float(v.mean()) for k, v in r.items()}


def eval_text_to_image(combos, seeds, s: Settings, path="pocket", via="nodes"):
    prompts = [world.caption(*c) for c in combos]
    fn = text_to_image_workflow if via == "workflow" else text_to_image
    imgs, labels = [], []
    for seed in seeds:
        imgs.append(fn(prompts, seed, s, path))
        labels += list(combos)
    return judge(torch.cat(imgs), labels), torch.cat(imgs), labels


def eval_variations(n: int, seed: int, s: Settings, path="pocket", via="nodes", split="all", size=64):
    src, _, labels = world.sample(10_000 + seed, n, size, split=split, as_float=True)
    fn = variations_workflow if via == "workflow" else variations
    out = fn(torch.from_numpy(src), seed, s, path)
    return judge(out, labels), out, labels


def grid(images: torch.Tensor, cols: int = 10) -> np.ndarray:
    """A uint8 picture grid (for a quick look)."""
    a = (images.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    n, h, w, c = a.shape
    rows = (n + cols - 1) // cols
    g = np.full((rows * (h + 2), cols * (w + 2), c), 255, np.uint8)
    for i, im in enumerate(a):
        y, x = divmod(i, cols)
        g[y * (h + 2):y * (h + 2) + h, x * (w + 2):x * (w + 2) + w] = im
    return g


def _pair(text: str) -> tuple[float, float]:
    a, b = text.split(",")
    return float(a), float(b)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="pocket")
    p.add_argument("--per-combo", type=int, default=2, help="seeds per training combination")
    p.add_argument("--heldout-per-combo", type=int, default=4, help="seeds per held-out combination")
    p.add_argument("--variations", type=int, default=30, help="source pictures for the variation test")
    p.add_argument("--via", choices=("auto", "workflow", "nodes"), default="auto")
    p.add_argument("--guidance", type=_pair, action="append",
                   help="PRIOR,DECODER guidance scales to evaluate (repeatable); default: 2,1 (the "
                        "workflows' defaults), 2,2, 1,1 (no guidance) and 4,8 (Karlo's defaults)")
    p.add_argument("--grid", default=None, help="save a PNG grid of the first setting's seen-combination samples")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    via = ("workflow" if workflows_available() else "nodes") if a.via == "auto" else a.via
    settings = a.guidance or [(2.0, 1.0), (2.0, 2.0), (1.0, 1.0), (4.0, 8.0)]
    seeds = [1000 + i for i in range(a.per_combo)]
    held_seeds = [2000 + i for i in range(a.heldout_per_combo)]
    rows, done_variations = [], set()
    t0 = time.time()
    for k, (pg, dg) in enumerate(settings):
        s = Settings(prior_guidance=pg, decoder_guidance=dg)
        tag = f"guidance {pg:g}/{dg:g}"
        r, imgs, _ = eval_text_to_image(world.TRAIN_COMBOS, seeds, s, a.model, via)
        rows.append((f"text->image, seen combinations, {tag}", len(imgs), r))
        if a.grid and k == 0:
            from PIL import Image
            Image.fromarray(grid(imgs)).save(a.grid)
        r, imgs, _ = eval_text_to_image(world.HELD_OUT_COMBOS, held_seeds, s, a.model, via)
        rows.append((f"text->image, held-out combinations, {tag}", len(imgs), r))
        if dg not in done_variations:   # variations use no prior: one row per decoder guidance
            done_variations.add(dg)
            r, imgs, _ = eval_variations(a.variations, 0, s, a.model, via)
            rows.append((f"image variations, decoder guidance {dg:g}", len(imgs), r))
    print(f"pocket model `{a.model}` via {via}; steps {Settings.prior_steps} (prior) / "
          f"{Settings.decoder_steps} (decoder) / {Settings.upsample_steps} (upsampler); judged on the "
          f"64 px output; {time.time() - t0:.0f} s\n")
    print("| task | images | colour | shape | background | shape+colour | all three |")
    print("|---|---|---|---|---|---|---|")
    for name, n, r in rows:
        print(f"| {name} | {n} | {r['colour']:.0%} | {r['shape']:.0%} | {r['background']:.0%} | "
              f"{r['shape+colour']:.0%} | {r['all']:.0%} |")


if __name__ == "__main__":
    main()
