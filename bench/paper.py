"""The DALL-E 2 paper's experiments, in miniature, on the bundled pocket model.

    .venv/bin/python bench/paper.py [--out docs] [--steps 12] [--scale 1.0] [--threads 2]
    .venv/bin/python bench/paper.py --quick --out /tmp/paper   # seconds: the test's setting

Why a miniature: the pocket world has three attributes (colour, shape, background) that a pixel
oracle reads back, so every claim of the paper that is about *what survives* (conditioning,
guidance, PCA components, variations, interpolations, text diffs) turns into counts we can check.
Everything calls the node functions directly (no executor, no cache), in large batches, with fixed
seeds, and writes ``<out>/paper.md`` plus PNG plots (matplotlib, the ``bench`` extra; without it
the tables are still written).

Sections:
1. conditioning ablation (paper §5.1): caption only / CLIP text embedding as z_i / prior sample;
2. guidance vs fidelity and diversity (paper §5.2), image-embedding path against caption only;
3. PCA probe (paper §3.4 / Fig. 7): decoding from the first k principal components;
4. variations and edits (paper §3.1-3.3): eta of inverted variations, slerp, text diffs.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

from unclip_nodes.nodes.clip import clip_image_encode, clip_text_encode  # noqa: E402
from unclip_nodes.nodes.decoder import decoder_node  # noqa: E402
from unclip_nodes.nodes.interpolate import slerp, text_diff  # noqa: E402
from unclip_nodes.nodes.invert import ddim_invert_node  # noqa: E402
from unclip_nodes.nodes.pca import fit, project  # noqa: E402
from unclip_nodes.nodes.prior import prior_node  # noqa: E402
from unclip_nodes.nodes.score import clip_scores, image_vectors  # noqa: E402
from unclip_nodes.nodes.types import ImageEmbeds  # noqa: E402
from unclip_nodes.pocket import evaluate, oracle, world  # noqa: E402

ATTRS = ("colour", "shape", "background")


@dataclass
class Setting:
    """How much work each section does; ``--quick`` is the test's tiny version."""

    steps: int = 12                 # prior and decoder steps (pocket_quality's setting)
    invert_steps: int = 20          # DDIM inversion and its decodes
    seen_seeds: int = 2             # samples per trained caption (40 captions)
    held_seeds: int = 8             # samples per held-out caption (5 captions)
    guidances: tuple = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
    diversity_prompts: int = 8      # captions of the guidance section
    diversity_samples: int = 6      # samples per caption there
    pca_fit: int = 256              # pictures the basis is fitted on (> 64: a complete basis)
    pca_sources: int = 30
    pca_ks: tuple = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64)
    eta_sources: int = 30
    etas: tuple = (0.0, 0.25, 0.5, 0.75, 1.0)
    slerp_pairs: int = 12
    slerp_thetas: int = 11
    diff_sources: int = 15
    diff_thetas: tuple = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    prior_guidance: float = 2.0     # the shipped workflows' defaults
    decoder_guidance: float = 1.0


QUICK = Setting(steps=3, invert_steps=3, seen_seeds=1, held_seeds=1, guidances=(1.0, 4.0),
                diversity_prompts=2, diversity_samples=3, pca_fit=24, pca_sources=3,
                pca_ks=(0, 2, 8, 23), eta_sources=3, etas=(0.0, 1.0), slerp_pairs=2,
                slerp_thetas=3, diff_sources=2, diff_thetas=(0.0, 0.5))


@dataclass
class Results:
    setting: Setting
    sections: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    threads: int = 0                # torch threads of the run


# ----------------------------------------------------------------------------------- helpers
def models():
    ct, cv, pr, dec, _ = evaluate.models("pocket")
    return ct, cv, pr, dec


def encode_text(prompts: list[str]):
    return clip_text_encode(clip=models()[0], text="\n".join(prompts))


def decode(z: torch.Tensor, text, s: Setting, seed: int, guidance: float | None = None,
           steps: int | None = None, **kw) -> torch.Tensor:
    """Decoder at its own 32 px (the oracle reads any size; the upsampler adds nothing here)."""
    return decoder_node(decoder=models()[3], image_embeds=ImageEmbeds(image_embeds=z), text=text,
                        steps=steps or s.steps, seed=seed, images_per_embedding=1,
                        guidance_scale=s.decoder_guidance if guidance is None else guidance, **kw)


def null_embeds(rows: int) -> torch.Tensor:
    """The decoder's learned null z_i, the one text_proj puts in the unconditional branch: what
    the decoder saw in training when the image embedding was dropped (paper: a zero vector)."""
    v = models()[3].text_proj.learned_classifier_free_guidance_embeddings.detach().float().cpu()
    return v.expand(rows, -1).contiguous()


def readings(images: torch.Tensor) -> list[oracle.Reading]:
    return oracle.read_batch(images)


def agreement(reads, labels) -> dict[str, float]:
    """Fraction of images whose oracle reading matches the labels, per attribute and all three."""
    hit = {a: np.array([getattr(r, a) == lab[i] for r, lab in zip(reads, labels)])
           for i, a in enumerate(ATTRS)}
    hit["all"] = hit["colour"] & hit["shape"] & hit["background"]
    return {k: float(v.mean()) if len(v) else float("nan") for k, v in hit.items()}


def object_geometry(images: torch.Tensor) -> np.ndarray:
    """Per image (cx, cy, area) of the pixels far from the border's median colour (the object),
    as fractions of the side / the picture; nan when nothing stands out."""
    a = images.detach().float().clamp(0, 1).numpy() * 255.0
    out = np.full((a.shape[0], 3), np.nan)
    for i, im in enumerate(a):
        h, w, _ = im.shape
        border = np.concatenate([im[0], im[-1], im[:, 0], im[:, -1]])
        bg = np.median(border, axis=0)
        mask = np.sqrt(((im - bg) ** 2).sum(-1)) > oracle.MIN_CONTRAST
        if mask.sum() == 0:
            continue
        ys, xs = np.nonzero(mask)
        out[i] = (xs.mean() / w, ys.mean() / h, mask.mean())
    return out


def spread(geom: np.ndarray, groups: list[np.ndarray]) -> tuple[float, float]:
    """Mean over caption groups of the position spread (RMS distance of the centroids from their
    mean, in fractions of the side) and of the size spread (std of sqrt(area), a side length)."""
    pos, size = [], []
    for idx in groups:
        g = geom[idx]
        g = g[~np.isnan(g).any(1)]
        if len(g) < 2:
            continue
        pos.append(float(np.sqrt(((g[:, :2] - g[:, :2].mean(0)) ** 2).sum(1).mean())))
        size.append(float(np.sqrt(g[:, 2]).std()))
    return (float(np.mean(pos)) if pos else float("nan"),
            float(np.mean(size)) if size else float("nan"))


def embedding_spread(images: torch.Tensor, groups: list[np.ndarray]) -> float:
    """Mean over caption groups of the mean pairwise cosine distance (1 - cos) of the samples'
    CLIP image embeddings."""
    z = torch.nn.functional.normalize(image_vectors(models()[1], images).double(), dim=-1)
    out = []
    for idx in groups:
        g = z[torch.as_tensor(idx)]
        if len(g) < 2:
            continue
        cos = g @ g.T
        n = len(g)
        out.append(float((1 - cos).sum() / (n * (n - 1))))
    return float(np.mean(out)) if out else float("nan")


def world_images(seed: int, n: int, size: int = 64, combos=None, split="all"):
    imgs, captions, labels = world.sample(seed, n, size, split=split, as_float=True, combos=combos)
    return torch.from_numpy(imgs), captions, labels


def timed(res: Results, name: str):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            res.seconds[name] = time.perf_counter() - self.t
    return _T()


# ----------------------------------------------------------------------------------- 1. ablation
def ablation(s: Setting) -> dict:
    """Oracle accuracy for three ways of giving the decoder its z_i, with the caption always on."""
    ct, cv, pr, dec = models()
    out = {}
    for split, combos, n in (("seen", world.TRAIN_COMBOS, s.seen_seeds),
                             ("held-out", world.HELD_OUT_COMBOS, s.held_seeds)):
        combos = list(combos) * n
        prompts = [world.caption(*c) for c in combos]
        text = encode_text(prompts)
        rows = len(prompts)
        z_prior = prior_node(prior=pr, text=text, negative=None, steps=s.steps,
                             guidance_scale=s.prior_guidance, seed=11, candidates=1).image_embeds
        z_text = text.text_embeds.float()
        # the text embedding at the length of the prior's samples (their mean norm)
        z_scaled = z_text / z_text.norm(dim=-1, keepdim=True) * z_prior.norm(dim=-1).mean()
        conds = {"caption only (null z_i)": null_embeds(rows),
                 "CLIP text embedding as z_i": z_text,
                 "text embedding, rescaled to the prior's norm": z_scaled,
                 "prior sample (unCLIP)": z_prior}
        keys = list(conds)
        z = torch.cat([conds[k] for k in keys])
        from unclip_nodes.nodes.clip import encode_prompts
        both = encode_prompts(ct, prompts * len(keys))
        imgs = decode(z, both, s, seed=12)
        scores = clip_scores(cv, imgs, both).numpy()
        for i, k in enumerate(keys):
            part = imgs[i * rows:(i + 1) * rows]
            r = agreement(readings(part), combos)
            r["clip_score"] = float(scores[i * rows:(i + 1) * rows].mean())
            r["n"] = rows
            out.setdefault(k, {})[split] = r
    out["_norms"] = {"text": float(z_text.norm(dim=-1).mean()),
                     "prior": float(z_prior.norm(dim=-1).mean())}
    return out


# ----------------------------------------------------------------------------------- 2. guidance
DIVERSITY_CAPTIONS = [("red", "circle", "white"), ("green", "square", "black"),
                      ("blue", "triangle", "grey"), ("yellow", "square", "white"),
                      ("purple", "triangle", "black"), ("red", "square", "grey"),
                      ("green", "triangle", "white"), ("blue", "circle", "black"),
                      ("yellow", "triangle", "grey"), ("purple", "circle", "white")]


def guidance(s: Setting) -> dict:
    """Fidelity and diversity over decoder guidance, with a prior sample per row (unCLIP) and with
    the caption alone (the GLIDE-like baseline); the decoder noise is the same for every scale."""
    ct, cv, pr, dec = models()
    combos = DIVERSITY_CAPTIONS[:s.diversity_prompts]
    per = s.diversity_samples
    rows_combos = [c for c in combos for _ in range(per)]  # each caption's samples in a row
    prompts = [world.caption(*c) for c in rows_combos]
    groups = [np.arange(i * per, (i + 1) * per) for i in range(len(combos))]
    text = encode_text(prompts)
    z_prior = prior_node(prior=pr, text=text, negative=None, steps=s.steps,
                         guidance_scale=s.prior_guidance, seed=21, candidates=1).image_embeds
    paths = {"unCLIP (prior z_i + caption)": z_prior,
             "caption only (GLIDE-like)": null_embeds(len(prompts))}
    out: dict = {}
    for name, z in paths.items():
        for g in s.guidances:
            imgs = decode(z, text, s, seed=22, guidance=g)
            r = agreement(readings(imgs), rows_combos)
            geom = object_geometry(imgs)
            r["position_spread"], r["size_spread"] = spread(geom, groups)
            r["clip_spread"] = embedding_spread(imgs, groups)
            r["clip_score"] = float(clip_scores(cv, imgs, text).mean())
            r["n"] = len(prompts)
            out.setdefault(name, {})[g] = r
    # the world's own spread (fresh pictures of the same captions), for scale
    geom = np.concatenate([object_geometry(world_images(24 + i, per, 32, combos=[c])[0])
                           for i, c in enumerate(combos)])
    pos, size = spread(geom, groups)
    out["_world"] = {"position_spread": pos, "size_spread": size}
    return out


# ----------------------------------------------------------------------------------- 3. PCA
def pca_probe(s: Setting) -> dict:
    """Decode source pictures' embeddings from their first k principal components."""
    ct, cv, pr, dec = models()
    fit_imgs, _, _ = world_images(31, s.pca_fit)
    basis = fit(clip_image_encode(clip_vision=cv, image=fit_imgs).image_embeds)
    src, _, labels = world_images(32, s.pca_sources)
    z = clip_image_encode(clip_vision=cv, image=src).image_embeds
    ks = [k for k in s.pca_ks if k <= basis.size]
    zk = torch.cat([project(z, basis, k).float() for k in ks])
    imgs = decode(zk, None, s, seed=33)
    n = len(labels)
    out = {"_basis": {"size": basis.size, "samples": basis.samples,
                      "variance_8": float(basis.variances[:8].sum() / basis.variances.sum())}}
    for i, k in enumerate(ks):
        r = agreement(readings(imgs[i * n:(i + 1) * n]), labels)
        r["n"] = n
        out[k] = r
    return out


# ----------------------------------------------------------------------------------- 4. edits
def eta_variations(s: Setting) -> dict:
    """Bipartite inversion (DDIMInvert, guidance 1) then DDIM decoding with growing eta; and, for
    reference, plain variations from fresh noise (the checkpoint's sampler)."""
    ct, cv, pr, dec = models()
    src, _, labels = world_images(41, s.eta_sources)
    emb = clip_image_encode(clip_vision=cv, image=src)
    x_T = ddim_invert_node(decoder=dec, image=src, image_embeds=emb, steps=s.invert_steps,
                           guidance_scale=1.0)
    small = torch.nn.functional.interpolate(src.permute(0, 3, 1, 2), size=(32, 32),
                                            mode="area").permute(0, 2, 3, 1)
    out = {}
    for eta in s.etas:
        imgs = decode(emb.image_embeds, None, s, seed=42, guidance=1.0, steps=s.invert_steps,
                      noise=x_T, sampler="ddim", eta=eta)
        r = agreement(readings(imgs), labels)
        r["mae"] = float((imgs - small).abs().mean())
        out[eta] = r
    imgs = decode(emb.image_embeds, None, s, seed=43, guidance=1.0, steps=s.invert_steps)
    r = agreement(readings(imgs), labels)
    r["mae"] = float((imgs - small).abs().mean())
    out["fresh noise"] = r
    out["_n"] = len(labels)
    return out


def _different_pairs(seed: int, n: int):
    """n pairs of combinations that differ in all three attributes."""
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        a = world.ALL_COMBOS[int(rng.integers(len(world.ALL_COMBOS)))]
        b = world.ALL_COMBOS[int(rng.integers(len(world.ALL_COMBOS)))]
        if all(x != y for x, y in zip(a, b)):
            pairs.append((a, b))
    return pairs


def slerp_paths(s: Setting) -> dict:
    """Along slerp(z_a, z_b, theta), where does each attribute switch from a's value to b's?"""
    ct, cv, pr, dec = models()
    pairs = _different_pairs(51, s.slerp_pairs)
    a_imgs = torch.cat([world_images(52 + i, 1, combos=[a])[0] for i, (a, _) in enumerate(pairs)])
    b_imgs = torch.cat([world_images(152 + i, 1, combos=[b])[0] for i, (_, b) in enumerate(pairs)])
    za = clip_image_encode(clip_vision=cv, image=a_imgs).image_embeds
    zb = clip_image_encode(clip_vision=cv, image=b_imgs).image_embeds
    thetas = np.linspace(0, 1, s.slerp_thetas)
    z = torch.cat([slerp(za, zb, float(t)).float() for t in thetas])  # theta-major
    imgs = decode(z, None, s, seed=53, guidance=1.0, same_noise=True)
    reads = readings(imgs)
    n = len(pairs)
    out = {}
    for ai, attr in enumerate(ATTRS):
        switches, clean, ends, others = [], 0, 0, {}
        for p, (a, b) in enumerate(pairs):
            seq = [getattr(reads[t * n + p], attr) for t in range(len(thetas))]
            for v in seq:
                if v not in (a[ai], b[ai]):
                    key = f"{a[ai]}->{b[ai]}: {v}"
                    others[key] = others.get(key, 0) + 1
            if seq[0] == a[ai] and seq[-1] == b[ai]:
                ends += 1
                first_b = next(i for i in range(len(seq)) if all(v == b[ai] for v in seq[i:]))
                last_a = max(i for i in range(len(seq)) if seq[i] == a[ai])
                if all(v in (a[ai], b[ai]) for v in seq) and last_a + 1 == first_b:
                    clean += 1
                switches.append((thetas[last_a] + thetas[first_b]) / 2)
        out[attr] = {"ends": ends / n, "single_switch": clean / n,
                     "switch_theta": float(np.mean(switches)) if switches else float("nan"),
                     "switch_min": float(np.min(switches)) if switches else float("nan"),
                     "switch_max": float(np.max(switches)) if switches else float("nan"),
                     "others": dict(sorted(others.items(), key=lambda kv: -kv[1]))}
    out["_n"] = n
    return out


def text_diffs(s: Setting) -> dict:
    """"a <c> circle on a <b> background" -> "... square ...": at each theta, how often is the
    shape a square with colour and background kept."""
    ct, cv, pr, dec = models()
    circles = [c for c in world.ALL_COMBOS if c[1] == "circle"]
    src, _, labels = world_images(61, s.diff_sources, combos=circles)
    z_i = clip_image_encode(clip_vision=cv, image=src).image_embeds
    z_t0 = encode_text([world.caption(*lab) for lab in labels]).text_embeds
    z_t = encode_text([world.caption(c, "square", b) for c, _, b in labels]).text_embeds
    rows = text_diff(z_i, z_t0, z_t, list(s.diff_thetas)).float()  # [T, B, D]
    imgs = decode(rows.reshape(-1, rows.shape[-1]), None, s, seed=62, guidance=1.0)
    reads = readings(imgs)
    n = len(labels)
    out = {}
    for ti, theta in enumerate(s.diff_thetas):
        part = reads[ti * n:(ti + 1) * n]
        sq = np.array([r.shape == "square" for r in part])
        col = np.array([r.colour == lab[0] for r, lab in zip(part, labels)])
        bg = np.array([r.background == lab[2] for r, lab in zip(part, labels)])
        out[theta] = {"square": float(sq.mean()), "colour_kept": float(col.mean()),
                      "background_kept": float(bg.mean()), "edit": float((sq & col & bg).mean())}
    out["_n"] = n
    return out


SECTIONS = {"ablation": ablation, "guidance": guidance, "pca": pca_probe,
            "eta": eta_variations, "slerp": slerp_paths, "text_diff": text_diffs}


def run(s: Setting, only=None) -> Results:
    res = Results(s, threads=torch.get_num_threads())
    for name, fn in SECTIONS.items():
        if only and name not in only:
            continue
        with timed(res, name):
            res.sections[name] = fn(s)
        print(f"{name}: {res.seconds[name]:.1f} s", flush=True)
    return res


# ----------------------------------------------------------------------------------- writing
def pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.0%}"


def num(x: float, digits: int = 3) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_ablation(r: dict) -> str:
    rows = []
    for name, by in r.items():
        if name.startswith("_"):
            continue
        for split, x in by.items():
            rows.append([name, split, x["n"], pct(x["colour"]), pct(x["shape"]),
                         pct(x["background"]), f"**{pct(x['all'])}**", num(x["clip_score"])])
    cap, txt, pri = (r["caption only (null z_i)"], r["CLIP text embedding as z_i"],
                     r["prior sample (unCLIP)"])
    scaled = r["text embedding, rescaled to the prior's norm"]

    def order(split):
        a, b, c = cap[split]["all"], max(txt[split]["all"], scaled[split]["all"]), pri[split]["all"]
        if c >= b >= a and c > a:
            return "agrees (prior best, caption only worst)"
        if c >= max(a, b):
            return "agrees that the prior is best, but caption only is not the worst"
        return f"disagrees: the prior ({pct(c)}) is not the best (text {pct(b)}, caption {pct(a)})"
    worst = {split: min(((cap[split]["all"], "caption only"), (txt[split]["all"], "the text "
                                                                "embedding as z_i")))[1]
             for split in ("seen", "held-out")}
    worst_text = (f"{worst['seen']}, on trained and held-out captions alike"
                  if worst["seen"] == worst["held-out"] else
                  f"{worst['seen']} on trained captions and {worst['held-out']} on held-out ones")
    return "\n".join([
        "## 1. Conditioning ablation (paper §5.1, \"the importance of the prior\")",
        "",
        "**Paper.** The same decoder can be driven by the caption alone (a zero image embedding), "
        "by the CLIP text embedding put where the image embedding goes, or by an image embedding "
        "the prior samples. The text embedding already works zero-shot, but the prior's samples "
        "give clearly better pictures, and the caption alone the weakest.",
        "",
        "**Here.** Every row decodes the same captions with the same noise (decoder guidance "
        f"{SETTING.decoder_guidance:g}, prior guidance {SETTING.prior_guidance:g}); only z_i "
        "changes. Caption only uses the decoder's *learned* null embedding, the one it saw when "
        "training dropped z_i (the paper passes a zero vector). The text embedding is used as it "
        "is "
        f"(mean norm {r['_norms']['text']:.1f}) and rescaled to the prior samples' mean norm "
        f"({r['_norms']['prior']:.1f}). CLIP score: cosine of the picture's CLIP image embedding "
        "with its caption's text embedding (`CLIPScore`).",
        "",
        table(["z_i given to the decoder", "captions", "images", "colour", "shape", "background",
               "all three", "CLIP score"], rows),
        "",
        f"- Trained captions: {order('seen')}.",
        f"- Held-out combinations: {order('held-out')}.",
        f"- The worst here is {worst_text}. The pocket decoder was trained with its caption "
        "half of the time, and in this world the caption names everything there is to draw, so the caption alone "
        "goes far; a text embedding in z_i's place is something the decoder never saw in "
        "training, and rescaling it to the prior's norm "
        + ("helps only a little." if scaled["seen"]["all"] >= txt["seen"]["all"] else
           "does not help.")
        + (" The prior's lead over the caption alone is larger on the held-out combinations "
           f"({(pri['held-out']['all'] - cap['held-out']['all']) * 100:.0f} points against "
           f"{(pri['seen']['all'] - cap['seen']['all']) * 100:.0f} on trained captions)."
           if pri["held-out"]["all"] - cap["held-out"]["all"]
           > pri["seen"]["all"] - cap["seen"]["all"] else ""),
    ])


def write_guidance(r: dict, plot: str | None) -> str:
    rows = []
    for name, by in r.items():
        if name.startswith("_"):
            continue
        for g, x in by.items():
            rows.append([name, f"{g:g}", pct(x["colour"]), pct(x["shape"]), pct(x["background"]),
                         f"**{pct(x['all'])}**", num(x["position_spread"]),
                         num(x["size_spread"]), num(x["clip_spread"], 4), num(x["clip_score"])])
    names = [k for k in r if not k.startswith("_")]
    un, gl = r[names[0]], r[names[1]]
    gs = sorted(un)
    lo, hi = gs[0], gs[-1]

    def keep(path, key):
        a, b = path[lo][key], path[hi][key]
        return b / a if a > 0 else float("nan")
    pu, pg = keep(un, "position_spread"), keep(gl, "position_spread")
    cu, cg = keep(un, "clip_spread"), keep(gl, "clip_spread")
    verdict = []
    verdict.append(("Agrees" if pu > pg else "Disagrees")
                   + f" on layout diversity: from guidance {lo:g} to {hi:g} unCLIP keeps "
                   f"{pu:.0%} of its position spread, the caption-only baseline {pg:.0%}"
                   + (" (both lose some: neither collapses to one layout)" if pg > 0.5 else ""))
    best_u = max(gs, key=lambda g: un[g]["all"])
    best_g = max(gs, key=lambda g: gl[g]["all"])
    falls = un[hi]["all"] < un[lo]["all"] and gl[hi]["all"] < gl[lo]["all"]
    verdict.append(("Disagrees" if falls else "Agrees")
                   + f" on fidelity: unCLIP is best at guidance {best_u:g} "
                   f"({pct(un[best_u]['all'])}) and reads {pct(un[hi]['all'])} at {hi:g}; "
                   f"caption only is best at {best_g:g} ({pct(gl[best_g]['all'])}) and reads "
                   f"{pct(gl[hi]['all'])} at {hi:g}"
                   + (". The pocket decoder follows its conditioning without guidance, and "
                      "strong guidance overshoots (halos, wrong colours and shapes; see the "
                      "README's evaluation), where the paper's large decoder gains fidelity "
                      "from guidance" if falls else ""))
    if cu > 1 and cg > 1:
        verdict.append(f"The CLIP spread *grows* with guidance on both paths (x{cu:.1f} for "
                       f"unCLIP, x{cg:.1f} for caption only) while fidelity falls: past "
                       "guidance 2 it measures the overshoot's artefacts, not semantic variety, "
                       "so it cannot test the paper's claim here")
    else:
        verdict.append(("Agrees" if cu > cg else "Disagrees")
                       + f" on CLIP-embedding diversity: unCLIP keeps {cu:.0%} of its spread, "
                       f"caption only {cg:.0%}")
    w = r["_world"]
    out = [
        "## 2. Guidance against fidelity and diversity (paper §5.3)",
        "",
        "**Paper.** Guidance trades diversity for fidelity. For GLIDE (caption-conditioned) the "
        "samples of one caption converge as guidance grows; unCLIP keeps them diverse, because "
        "the image embedding the prior sampled already fixes what is drawn and the decoder's "
        "guidance only sharpens it.",
        "",
        "**Here.** Decoder guidance from 1 to 8 on the same captions, prior samples and noise. "
        "unCLIP: one prior sample per row plus the caption; caption only: the learned null z_i "
        "plus the caption, guided against (null z_i, empty caption), which is GLIDE's text "
        "guidance. Diversity per caption over its samples: *position spread* (RMS distance of "
        "the object's centroid from the mean centroid, fraction of the side), *size spread* (std "
        "of sqrt(object area), fraction of the side) — the object is every pixel far from the "
        "border's median colour — and *CLIP spread* (mean pairwise 1 - cos of the samples' CLIP "
        f"image embeddings). For scale: fresh world pictures of the same captions have position "
        f"spread {num(w['position_spread'])} and size spread {num(w['size_spread'])}.",
        "",
        table(["path", "decoder guidance", "colour", "shape", "background", "all three",
               "position spread", "size spread", "CLIP spread", "CLIP score"], rows),
        "",
    ] + [f"- {v}." for v in verdict]
    if plot:
        out += ["", f"![guidance against fidelity and diversity]({plot})"]
    return "\n".join(out)


def write_pca(r: dict, plot: str | None) -> str:
    ks = [k for k in r if not isinstance(k, str)]
    rows = [[k, pct(r[k]["colour"]), pct(r[k]["shape"]), pct(r[k]["background"]),
             f"**{pct(r[k]['all'])}**"] for k in ks]
    b = r["_basis"]

    def first(attr, level=0.9):
        for k in ks:
            if all(r[kk][attr] >= level for kk in ks if kk >= k):
                return k
        return None
    firsts = {a: first(a) for a in ATTRS + ("all",)}
    shown = ", ".join(f"{a} from k = {k}" if k is not None else f"{a} never steadily"
                      for a, k in firsts.items())
    order = sorted((k, a) for a, k in firsts.items() if k is not None and a != "all")
    shape_last = bool(order) and order[-1][1] == "shape" and len(order) == 3
    out = [
        "## 3. PCA probe (paper §4)",
        "",
        "**Paper.** Decoding an image embedding from only its first principal components (the "
        "paper shows 20 to 320 of 1024): the first few keep the coarse semantics, such as what "
        "kinds of objects are in the scene, and later ones add finer detail, such as the shapes "
        "and exact forms of the objects.",
        "",
        f"**Here.** A basis fitted on the CLIP image embeddings of {b['samples']} fresh world "
        f"pictures ({b['size']} components, the first 8 hold {b['variance_8']:.0%} of the "
        "variance); other pictures' embeddings projected on the first k and decoded without a "
        "caption (decoder guidance 1). k = 0 is the mean embedding.",
        "",
        table(["k", "colour", "shape", "background", "all three"], rows),
        "",
        f"- Right in at least 90 % of the pictures for every larger k too: {shown}.",
        "- Order in which the attributes come back: "
        + (" < ".join(f"{a} ({k})" for k, a in order) if order else "none steadily") + ". "
        + ("Background and colour come first, the shape last. In the paper's terms that "
           "agrees if the shape counts as detail (the paper names shapes as such) and disagrees "
           "if it counts as the kind of object, which the paper has come first; in this world "
           "the shape is both." if shape_last else
           "The paper has coarse semantics first and finer detail, such as shapes, later."),
    ]
    if firsts["all"] is not None:
        share = firsts["all"] / b["size"]
        out.append(f"- {firsts['all']} of {b['size']} components ({share:.0%}) bring back all "
                   "three attributes. "
                   + ("Agrees with the paper: a few percent of the dimensions keep the gist."
                      if share <= 0.05 else
                      "A larger share than the paper's smallest setting (20 of 1024, 2 %), which "
                      "already keeps the kinds of objects: this CLIP is 64-d, and its first 8 "
                      f"components hold {b['variance_8']:.0%} of the variance."))
    if plot:
        out += ["", f"![PCA probe]({plot})"]
    return "\n".join(out)


def write_edits(eta: dict, sl: dict, td: dict, plot: str | None) -> str:
    etas = [k for k in eta if not isinstance(k, str)]
    rows = [[f"DDIM, eta {e:g}", pct(eta[e]["colour"]), pct(eta[e]["shape"]),
             pct(eta[e]["background"]), f"**{pct(eta[e]['all'])}**", num(eta[e]["mae"])]
            for e in etas]
    f = eta["fresh noise"]
    rows.append(["fresh noise (the checkpoint's sampler)", pct(f["colour"]), pct(f["shape"]),
                 pct(f["background"]), f"**{pct(f['all'])}**", num(f["mae"])])
    e0, e1 = etas[0], etas[-1]
    eta_v = []
    eta_v.append(("Agrees" if eta[e0]["all"] >= 0.9 else "Partly agrees")
                 + f": at eta {e0:g} the inverted latent gives back the source (all three "
                 f"attributes {pct(eta[e0]['all'])}, mean absolute error {num(eta[e0]['mae'])})")
    grows = eta[e1]["mae"] > eta[e0]["mae"]
    eta_v.append(("Agrees" if grows and eta[e1]["all"] >= 0.7 else "Disagrees")
                 + f": at eta {e1:g} the pictures move away from the source (error "
                 f"{num(eta[e1]['mae'])}) while the attributes CLIP encodes stay "
                 f"({pct(eta[e1]['all'])} all three); they stay closer to the source than "
                 f"variations from fresh noise (error {num(f['mae'])}), which keep the "
                 f"attributes too ({pct(f['all'])}) but not the layout")
    def passing(a):
        top = list(sl[a].get("others", {}).items())[:3]
        return ", ".join(f"{k} ({v})" for k, v in top) or "none"
    srows = [[a, pct(sl[a]["ends"]), pct(sl[a]["single_switch"]), num(sl[a]["switch_theta"], 2),
              f"{num(sl[a]['switch_min'], 2)} – {num(sl[a]['switch_max'], 2)}", passing(a)]
             for a in ATTRS]
    clean = sorted(ATTRS, key=lambda a: -sl[a]["single_switch"])
    ends = min(sl[a]["ends"] for a in ATTRS)
    thetas = [k for k in td if not isinstance(k, str)]
    trows = [[f"{t:g}", pct(td[t]["square"]), pct(td[t]["colour_kept"]),
              pct(td[t]["background_kept"]), f"**{pct(td[t]['edit'])}**"] for t in thetas]
    best = max(thetas, key=lambda t: td[t]["edit"])
    out = [
        "## 4. Variations and edits (paper §3.1–3.3)",
        "",
        "### Variations against eta",
        "",
        "**Paper.** The bipartite latent (z_i, x_T from DDIM inversion) reconstructs the image "
        "at eta 0; raising eta adds noise to the DDIM steps and gives variations that keep what "
        "CLIP encodes (the object, the style) and change the rest.",
        "",
        f"**Here.** {eta['_n']} fresh world pictures (64 px, all 45 combinations); DDIMInvert "
        f"with their own embedding, guidance 1, {SETTING.invert_steps} steps; decoded with DDIM at "
        "each eta, no caption. Agreement: the oracle's reading of the variation equals the "
        "source's labels; error: mean absolute pixel difference to the source at 32 px (0..1).",
        "",
        table(["decoding", "colour", "shape", "background", "all three", "error"], rows),
        "",
    ] + [f"- {v}." for v in eta_v] + [
        "",
        "### Interpolating between two images",
        "",
        "**Paper.** Slerp between two images' CLIP embeddings (with the decoder noise fixed) "
        "moves smoothly from one to the other, the content blending along the way.",
        "",
        f"**Here.** {sl['_n']} pairs of world pictures that differ in all three attributes, "
        f"{SETTING.slerp_thetas} thetas from 0 to 1, one decoder noise for the whole path. Per "
        "attribute: how often the path starts at a's value and ends at b's (*ends*), how often it "
        "switches exactly once with nothing else in between (*single switch*), and where "
        "(midway between the last theta with a's value and the first from which b's holds).",
        "",
        table(["attribute", "ends right", "single switch", "mean switch theta", "range",
               "other readings on the way (images)"], srows),
        "",
        f"- The paths do go from one picture to the other: every attribute starts at a's value "
        f"and ends at b's on at least {pct(ends)} of them"
        + (", and the switches sit around the middle of the path (mean theta "
           + " / ".join(num(sl[a]["switch_theta"], 2) for a in ATTRS) + ")."
           if all(0.3 <= sl[a]["switch_theta"] <= 0.7 for a in ATTRS) else "."),
        "- " + "; ".join(f"{a} switches once and cleanly on {pct(sl[a]['single_switch'])}"
                         for a in clean).capitalize()
        + " of the paths. In a world of discrete attributes a smooth path can only show as "
        "clean switches; where it does not, the last column says what the oracle read in "
        "between"
        + (f" (most often, for {clean[-1]}: {passing(clean[-1]).split(' (')[0]}; a blend of "
           "two values can read as a third, and 'none' is a picture with no object the oracle "
           "can see)" if sl[clean[-1]].get("others") else "")
        + ". "
        + ("Agrees." if sl[clean[-1]]["single_switch"] >= 0.7 else
           f"So the paper's smoothness holds for {clean[0]}"
           + ("" if sl[clean[1]]["single_switch"] < 0.7 else f" and {clean[1]}")
           + f", not for {clean[-1]}."),
        "",
        "### Text diffs: circle to square",
        "",
        "**Paper.** Moving an image embedding towards the difference of two captions' text "
        "embeddings (slerp with theta about 0.25–0.5) changes what the captions differ in and "
        "keeps the rest of the picture.",
        "",
        f"**Here.** {td['_n']} pictures of circles (every colour and background), "
        "z_d = normalised(z(\"a <c> square on a <b> background\") - z(\"a <c> circle on a <b> "
        "background\")), slerp(z_i, z_d, theta) at the image's norm (`TextDiff`, match_norm), "
        "decoded without a caption. *Edit*: a square with colour and background kept.",
        "",
        table(["theta", "square", "colour kept", "background kept", "edit"], trows),
        "",
        f"- Best at theta {best:g}: {pct(td[best]['edit'])} of the pictures become squares and "
        "keep colour and background; "
        + ("agrees with the paper's range" if 0.2 <= best <= 0.5 and td[best]["edit"] >= 0.5 else
           "outside what the paper describes") + ".",
    ]
    if plot:
        out += ["", f"![variations and text diffs]({plot})"]
    return "\n".join(out)


SETTING = Setting()


def plots(res: Results, out: Path) -> dict[str, str]:
    """PNG plots next to paper.md; {} without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): tables only", flush=True)
        return {}
    made = {}
    sec = res.sections
    if "guidance" in sec:
        r = sec["guidance"]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for name in (k for k in r if not k.startswith("_")):
            gs = sorted(r[name])
            for ax, key in zip(axes, ("all", "position_spread", "clip_spread")):
                ax.plot(gs, [r[name][g][key] for g in gs], marker="o", label=name)
        axes[0].set_ylabel("oracle: all three right")
        axes[1].set_ylabel("position spread (fraction of side)")
        axes[2].set_ylabel("CLIP spread (1 - cos)")
        axes[1].axhline(r["_world"]["position_spread"], color="grey", ls=":", label="world")
        for ax in axes:
            ax.set_xlabel("decoder guidance")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(next(v for k, v in r.items() if not k.startswith("_"))))
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes[0].set_ylim(-0.02, 1.02)
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "paper_guidance.png", dpi=110)
        plt.close(fig)
        made["guidance"] = "paper_guidance.png"
    if "pca" in sec:
        r = sec["pca"]
        ks = [k for k in r if not isinstance(k, str)]
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for a in ATTRS + ("all",):
            ax.plot([max(k, 0.5) for k in ks], [r[k][a] for k in ks], marker="o", label=a)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k, principal components kept (0 drawn at 0.5)")
        ax.set_ylabel("oracle accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "paper_pca.png", dpi=110)
        plt.close(fig)
        made["pca"] = "paper_pca.png"
    if "eta" in sec and "text_diff" in sec:
        e, td = sec["eta"], sec["text_diff"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        etas = [k for k in e if not isinstance(k, str)]
        for a in ATTRS + ("all",):
            axes[0].plot(etas, [e[k][a] for k in etas], marker="o", label=a)
        ax2 = axes[0].twinx()
        ax2.plot(etas, [e[k]["mae"] for k in etas], color="black", ls="--", label="error")
        ax2.set_ylabel("mean abs. error to source")
        axes[0].set_xlabel("eta")
        axes[0].set_ylabel("agreement with source")
        axes[0].set_ylim(-0.02, 1.02)
        axes[0].legend(fontsize=7, loc="center left")
        axes[0].set_title("dashed: error to the source", fontsize=8)
        ts = [k for k in td if not isinstance(k, str)]
        for key in ("square", "colour_kept", "background_kept", "edit"):
            axes[1].plot(ts, [td[t][key] for t in ts], marker="o", label=key.replace("_", " "))
        axes[1].set_xlabel("theta (text diff circle -> square)")
        axes[1].set_ylim(-0.02, 1.02)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "paper_edits.png", dpi=110)
        plt.close(fig)
        made["edits"] = "paper_edits.png"
    return made


def write(res: Results, out: Path, command: str, wall: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    made = plots(res, out)
    s, sec = res.setting, res.sections
    parts = [
        "# The DALL·E 2 paper's experiments on the pocket model",
        "",
        "Written by `bench/paper.py`; every number below comes from that run. The pocket model "
        "(`models/pocket`) and its pixel oracle are described in the README. The paper is "
        "Ramesh et al. 2022, *Hierarchical Text-Conditional Image Generation with CLIP Latents*; "
        "its claims are paraphrased beside each table. Keep the scale in mind: a 64-d CLIP, a "
        "0.8 M-parameter decoder and a world of 45 captions, judged on three attributes. "
        "Agreement here means the same *direction* as the paper, not the same size of effect.",
        "",
        f"- Command: `{command}`",
        f"- Wall time: {wall:.0f} s on {platform.machine()} with {res.threads} torch "
        "threads (CPU shared with other jobs); sections: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items()),
        f"- Settings: {s.steps} prior and decoder steps ({s.invert_steps} for inversion), decoder "
        f"at its own 32 px (no upsampler), prior guidance {s.prior_guidance:g}, decoder guidance "
        f"{s.decoder_guidance:g} unless a table varies it; seeds fixed in the script.",
        "",
    ]
    if "ablation" in sec:
        parts += [write_ablation(sec["ablation"]), ""]
    if "guidance" in sec:
        parts += [write_guidance(sec["guidance"], made.get("guidance")), ""]
    if "pca" in sec:
        parts += [write_pca(sec["pca"], made.get("pca")), ""]
    if {"eta", "slerp", "text_diff"} <= set(sec):
        parts += [write_edits(sec["eta"], sec["slerp"], sec["text_diff"], made.get("edits")), ""]
    path = out / "paper.md"
    path.write_text("\n".join(parts))
    return path


def _plain(v):
    """Results as JSON: dicts become [key, value] pairs, since their keys are numbers too."""
    if isinstance(v, dict):
        return {"items": [[k, _plain(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _unplain(v):
    if isinstance(v, dict) and set(v) == {"items"}:
        return {(tuple(k) if isinstance(k, list) else k): _unplain(x) for k, x in v["items"]}
    if isinstance(v, list):
        return [_unplain(x) for x in v]
    return v


def save(res: Results, path: Path, command: str, wall: float) -> None:
    path.write_text(json.dumps(_plain({"setting": res.setting.__dict__, "sections": res.sections,
                                       "seconds": res.seconds, "threads": res.threads,
                                       "command": command,
                                       "wall": wall}), indent=1))


def load(path: Path) -> tuple[Results, str, float]:
    d = _unplain(json.loads(path.read_text()))
    setting = Setting(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in d["setting"].items()})
    return Results(setting, d["sections"], d["seconds"], d["threads"]), d["command"], d["wall"]


def main(argv=None) -> Results:
    global SETTING
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for paper.md and the plots")
    p.add_argument("--quick", action="store_true", help="a tiny setting (seconds; the test's)")
    p.add_argument("--steps", type=int, default=None, help="prior and decoder steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", action="append", choices=list(SECTIONS),
                   help="run only this section (repeatable)")
    p.add_argument("--rewrite", action="store_true",
                   help="write paper.md and the plots again from <out>/paper.json, running nothing")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.rewrite:
        res, command, wall = load(out / "paper.json")
        SETTING = res.setting
        print(f"wrote {write(res, out, command, wall)} (from paper.json)")
        return res
    torch.set_num_threads(a.threads)
    SETTING = Setting(**{**QUICK.__dict__}) if a.quick else Setting()
    if a.steps:
        SETTING.steps = a.steps
    t0 = time.perf_counter()
    res = run(SETTING, a.only)
    wall = time.perf_counter() - t0
    command = "python bench/paper.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    save(res, out / "paper.json", command.strip(), wall)
    path = write(res, out, command.strip(), wall)
    print(f"wrote {path} ({wall:.0f} s)")
    return res


if __name__ == "__main__":
    main()
