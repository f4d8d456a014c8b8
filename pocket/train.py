"""Train the bundled pocket unCLIP model on the shapes world, stage by stage, on a CPU.

    python -m unclip_nodes.pocket.train --out models/pocket

Stages run in order (CLIP towers -> prior -> decoder -> upsampler).  Each trains until its
wall-clock budget is spent (so the run fits a known time on any machine), then saves its
components into ``--out`` in the Karlo layout, so a crash or a cut-off never loses earlier stages.
A later stage reloads the earlier ones from ``--out``, so ``--stages decoder`` retrains one stage.
Losses go to the log every few steps; ``training.json`` records what each stage did.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import world

STAGES = ("clip", "prior", "decoder", "upsampler")
MAX_LENGTH = 24      # tokenizer model_max_length == prior num_embeddings
EMBED_DIM = 64       # CLIP projection dim == text hidden size (the prior and text_proj need both equal)
LOW_RES = 32
HIGH_RES = 64
BANK = 8192          # pictures whose CLIP embeddings the prior trains on
IMAGE_MEAN = [0.5, 0.5, 0.5]
IMAGE_STD = [0.5, 0.5, 0.5]


# ----------------------------------------------------------------------------------------- configs
def text_config(tok):
    from transformers import CLIPTextConfig
    return CLIPTextConfig(vocab_size=len(tok), hidden_size=EMBED_DIM, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                          projection_dim=EMBED_DIM, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def vision_config():
    from transformers import CLIPVisionConfig
    return CLIPVisionConfig(image_size=LOW_RES, patch_size=4, num_channels=3, hidden_size=64,
                            intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                            projection_dim=EMBED_DIM)


def feature_extractor():
    """The exact preprocessing the vision tower was trained with: 32x32, mean/std 0.5."""
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor(do_resize=True, size={"shortest_edge": LOW_RES}, resample=3,
                              do_center_crop=True, crop_size={"height": LOW_RES, "width": LOW_RES},
                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                              image_mean=IMAGE_MEAN, image_std=IMAGE_STD, do_convert_rgb=True)


def make_prior():
    from diffusers import PriorTransformer
    return PriorTransformer(num_attention_heads=4, attention_head_dim=32, num_layers=4,
                            embedding_dim=EMBED_DIM, num_embeddings=MAX_LENGTH, additional_embeddings=4)


def make_text_proj():
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    return UnCLIPTextProjModel(clip_extra_context_tokens=4, clip_embeddings_dim=EMBED_DIM,
                               time_embed_dim=64, cross_attention_dim=64)


def make_decoder():
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        sample_size=LOW_RES, in_channels=3, out_channels=6,
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8, cross_attention_dim=64,
        attention_head_dim=16, resnet_time_scale_shift="scale_shift", class_embed_type="identity")


def make_upsampler():
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=HIGH_RES, in_channels=6, out_channels=3,
                       down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
                       block_out_channels=(16, 32, 64), layers_per_block=1, add_attention=False, norm_num_groups=8,
                       resnet_time_scale_shift="scale_shift")


def schedulers(decoder_prediction: str = "sample"):
    from diffusers import UnCLIPScheduler
    common = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    return {
        "prior_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                           clip_sample_range=5.0, **common),
        # the decoder predicts x0 (channels 0..2) and its variance (channels 3..5, trained with the
        # VLB term below).  An epsilon decoder this small tinted flat backgrounds (white came out
        # cyan or pink): at high noise its x0 estimate divides a small error by sqrt(alpha_bar),
        # and the global colour of the picture is decided there.
        "decoder_scheduler": UnCLIPScheduler(variance_type="learned_range", prediction_type=decoder_prediction,
                                             clip_sample_range=1.0, **common),
        # x0 prediction: with 7 sampling steps an epsilon upsampler this small pulled white and
        # black backgrounds towards grey (its first steps divide by sqrt(alpha_bar) ~ 3e-5)
        "super_res_scheduler": UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                               clip_sample_range=1.0, **common),
    }


def model_index() -> dict:
    import diffusers
    return {
        "_class_name": "UnCLIPPipeline",
        "_diffusers_version": diffusers.__version__,
        "decoder": ["diffusers", "UNet2DConditionModel"],
        "decoder_scheduler": ["diffusers", "UnCLIPScheduler"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "prior": ["diffusers", "PriorTransformer"],
        "prior_scheduler": ["diffusers", "UnCLIPScheduler"],
        "super_res_first": ["diffusers", "UNet2DModel"],
        "super_res_last": ["diffusers", "UNet2DModel"],
        "super_res_scheduler": ["diffusers", "UnCLIPScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_proj": ["unclip", "UnCLIPTextProjModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    }


# ----------------------------------------------------------------------------------------- helpers
class Log:
    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, msg: str):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] in -1..1 (also the CLIP normalisation, mean = std = 0.5)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class TextTable:
    """Encodings of every caption and of "" (the unconditional prompt), computed once."""

    def __init__(self, tok, text_encoder):
        self.captions = [world.caption(*c) for c in world.ALL_COMBOS] + [""]
        self.index = {c: i for i, c in enumerate(self.captions)}
        enc = tok(self.captions, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                  return_tensors="pt")
        self.ids, self.mask = enc.input_ids, enc.attention_mask.bool()
        with torch.no_grad():
            out = text_encoder(self.ids)
        self.embeds, self.hidden = out.text_embeds, out.last_hidden_state
        self.empty = self.index[""]

    def lookup(self, captions: list[str], drop: torch.Tensor):
        idx = torch.tensor([self.empty if d else self.index[c] for c, d in zip(captions, drop.tolist())])
        return self.embeds[idx], self.hidden[idx], self.mask[idx]


def image_embeds(vision, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vision(pixel_values=x).image_embeds


class EMA:
    def __init__(self, modules, decay=0.999):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay, self.n = decay, 0

    def update(self):
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                s.mul_(d).add_(p.detach(), alpha=1 - d)

    def swap(self):
        """Exchange live and averaged weights (call twice to restore)."""
        with torch.no_grad():
            for s, p in zip(self.shadow, self.params):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)


def budget_loop(minutes: float, log: Log, name: str, every: int = 25):
    """Yield step numbers until the wall-clock budget is spent, logging timing."""
    start = time.time()
    step = 0
    while time.time() - start < minutes * 60:
        yield step
        step += 1
        if step % every == 0:
            log(f"{name}: step {step}, {time.time() - start:.0f}s, {(time.time() - start) / step:.2f}s/step")


# ------------------------------------------------------------------------------------------ stages
def train_clip(out: Path, minutes: float, seed: int, log: Log, resume: bool = False) -> dict:
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    from ..nodes.tokenizer import save_clip_tokenizer

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok = save_clip_tokenizer(out / "tokenizer", world.vocabulary(), model_max_length=MAX_LENGTH)
    if resume and (out / "text_encoder").exists() and (out / "image_encoder").exists():
        _, text, vision = load_clip(out)     # continue an earlier CLIP stage (``--resume clip``)
        text.train(), vision.train()
        rng = np.random.default_rng(seed + 100)
        log("clip: continuing from the saved towers")
    else:
        text = CLIPTextModelWithProjection(text_config(tok))
        vision = CLIPVisionModelWithProjection(vision_config())
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0 if not resume else 15.0)))
    params = list(text.parameters()) + list(vision.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    train_caps = [world.caption(*c) for c in world.TRAIN_COMBOS]
    cap_index = {c: i for i, c in enumerate(train_caps)}
    ids = tok(train_caps, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids
    batch, losses, t0 = 64, [], time.time()
    for step in budget_loop(minutes, log, "clip", every=50):
        lr = 2e-3 * min(1.0, (step + 1) / 50)
        for g in opt.param_groups:
            g["lr"] = lr
        # half the batch drawn at 64 px and reduced bicubically, as the variation path may feed it
        imgs32, caps, _ = world.sample(rng, batch // 2, LOW_RES)
        imgs64, caps2, _ = world.sample(rng, batch - batch // 2, HIGH_RES)
        x = torch.cat([to_tensor(imgs32), F.interpolate(to_tensor(imgs64), size=(LOW_RES, LOW_RES),
                                                        mode="bicubic", antialias=True).clamp(-1, 1)])
        x = x + torch.randn_like(x) * torch.rand(x.shape[0], 1, 1, 1) * 0.06
        target = torch.tensor([cap_index[c] for c in caps + caps2])
        img = F.normalize(vision(pixel_values=x).image_embeds, dim=-1)
        txt = F.normalize(text(input_ids=ids).text_embeds, dim=-1)
        logits = logit_scale.exp().clamp(max=100) * img @ txt.T           # [B, captions]
        loss_i = F.cross_entropy(logits, target)
        # text -> image: each caption present in the batch spreads its target over its images
        present = target.unique()
        pos = (target[None, :] == present[:, None]).float()
        loss_t = -(F.log_softmax(logits.T[present], dim=-1) * pos / pos.sum(1, keepdim=True)).sum(1).mean()
        loss = (loss_i + loss_t) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            acc = (logits.argmax(1) == target).float().mean().item()
            log(f"clip: step {step + 1} loss {np.mean(losses[-50:]):.4f} batch acc {acc:.3f} "
                f"scale {logit_scale.exp().item():.1f}")
    # retrieval accuracy over all 45 captions (held-out ones included) on fresh images
    text.eval(), vision.eval()
    all_caps = [world.caption(*c) for c in world.ALL_COMBOS]
    with torch.no_grad():
        imgs, caps, _ = world.sample(seed + 999, 450, LOW_RES, split="all")
        img = F.normalize(vision(pixel_values=to_tensor(imgs)).image_embeds, dim=-1)
        all_ids = tok(all_caps, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids
        txt = F.normalize(text(input_ids=all_ids).text_embeds, dim=-1)
        pred = (img @ txt.T).argmax(1)
        right = np.array([all_caps[p] == c for p, c in zip(pred.tolist(), caps)])
        held = np.array([tuple(c.split()[i] for i in (1, 2, 5)) in world.HELD_OUT for c in caps])
        per_attr = {k: float(np.mean([all_caps[p].split()[i] == c.split()[i] for p, c in zip(pred.tolist(), caps)]))
                    for k, i in (("colour", 1), ("shape", 2), ("background", 5))}
    stats = {"steps": len(losses), "seconds": round(time.time() - t0), "batch": batch,
             "final_loss": float(np.mean(losses[-50:])), "retrieval_acc_by_attribute": per_attr,
             "retrieval_acc_seen": float(right[~held].mean()), "retrieval_acc_heldout": float(right[held].mean())}
    log(f"clip: done {stats}")
    text.save_pretrained(out / "text_encoder")
    vision.save_pretrained(out / "image_encoder")
    feature_extractor().save_pretrained(out / "feature_extractor")
    return stats


def load_clip(out: Path):
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text = CLIPTextModelWithProjection.from_pretrained(out / "text_encoder").eval()
    vision = CLIPVisionModelWithProjection.from_pretrained(out / "image_encoder").eval()
    return tok, text, vision


def train_prior(out: Path, minutes: float, seed: int, log: Log) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok, text, vision = load_clip(out)
    table = TextTable(tok, text)
    sched = schedulers()["prior_scheduler"]
    prior = make_prior()
    # A bank of image embeddings computed once: the vision tower is frozen here, and embedding a
    # fresh batch every step would cost more than the prior's own step.
    bank_caps, bank = [], []
    with torch.no_grad():
        for _ in range(BANK // 512):
            imgs, caps, _ = world.sample(rng, 512, LOW_RES)
            bank.append(image_embeds(vision, to_tensor(imgs)))
            bank_caps += caps
    bank = torch.cat(bank)
    log(f"prior: embedded a bank of {len(bank)} training pictures")
    # clip_mean / clip_std: the prior diffuses normalised image embeddings
    with torch.no_grad():
        prior.clip_mean.copy_(bank.mean(0))
        prior.clip_std.copy_(bank.std(0))
    prior.clip_mean.requires_grad_(False)
    prior.clip_std.requires_grad_(False)
    params = [p for p in prior.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
    ema = EMA([prior], decay=0.998)
    batch, losses, t0 = 256, [], time.time()
    for step in budget_loop(minutes, log, "prior", every=100):
        for g in opt.param_groups:
            g["lr"] = 5e-4 * min(1.0, (step + 1) / 100)
        pick = torch.randint(0, len(bank), (batch,))
        caps = [bank_caps[i] for i in pick.tolist()]
        x0 = (bank[pick] - prior.clip_mean) / prior.clip_std
        drop = torch.rand(batch) < 0.1
        te, hs, mask = table.lookup(caps, drop)
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        xt = sched.add_noise(x0, noise, t)
        pred = prior(xt, timestep=t, proj_embedding=te, encoder_hidden_states=hs,
                     attention_mask=mask).predicted_image_embedding
        loss = F.mse_loss(pred, x0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"prior: step {step + 1} loss {np.mean(losses[-50:]):.4f}")
    ema.swap()
    stats = {"steps": len(losses), "seconds": round(time.time() - t0), "batch": batch,
             "final_loss": float(np.mean(losses[-50:])), "ema_decay": 0.998}
    log(f"prior: done {stats}")
    prior.save_pretrained(out / "prior")
    return stats


def _vlb_terms(sched):
    """Per-timestep constants of the true posterior q(x_{t-1} | x_t, x_0)."""
    ac = sched.alphas_cumprod.float()
    ac_prev = torch.cat([torch.ones(1), ac[:-1]])
    betas = sched.betas.float()
    post_var = betas * (1 - ac_prev) / (1 - ac)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    coef_x0 = betas * ac_prev.sqrt() / (1 - ac)
    coef_xt = (1 - ac_prev) * (1 - betas).sqrt() / (1 - ac)
    return ac, betas, post_logvar, coef_x0, coef_xt


def vlb_loss(terms, x0_pred, v, x0, xt, t):
    """KL (bits/dim) between the true posterior and the model's, training only the variance output.

    The variance parameterisation is UnCLIPScheduler's ``learned_range``: a per-pixel interpolation,
    in log space, between the posterior variance and beta_t.
    """
    ac, betas, post_logvar, coef_x0, coef_xt = (a[t].view(-1, 1, 1, 1) for a in terms)
    true_mean = coef_x0 * x0 + coef_xt * xt
    model_mean = coef_x0 * x0_pred.detach() + coef_xt * xt
    frac = (v + 1) / 2
    model_logvar = frac * torch.log(betas) + (1 - frac) * post_logvar
    kl = 0.5 * (-1.0 + model_logvar - post_logvar + torch.exp(post_logvar - model_logvar)
                + (true_mean - model_mean) ** 2 * torch.exp(-model_logvar))
    kl = kl.mean(dim=(1, 2, 3)) / math.log(2.0)
    return (kl * (t > 0).float()).mean()


def train_decoder(out: Path, minutes: float, seed: int, log: Log, resume: bool = False,
                  lr_decay: bool = False, lr: float = 1e-3, prediction: str = "sample",
                  save_every_min: float = 8.0) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok, text, vision = load_clip(out)
    table = TextTable(tok, text)
    sched = schedulers(prediction)["decoder_scheduler"]
    terms = _vlb_terms(sched)
    x0_target = sched.config.prediction_type == "sample"
    if resume and (out / "decoder").exists() and (out / "text_proj").exists():
        from diffusers import UNet2DConditionModel
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
        decoder = UNet2DConditionModel.from_pretrained(out / "decoder").train()
        text_proj = UnCLIPTextProjModel.from_pretrained(out / "text_proj").train()
        rng = np.random.default_rng(seed + 100)
        log("decoder: continuing from the saved decoder")
    else:
        decoder, text_proj = make_decoder(), make_text_proj()
    log(f"decoder: {sum(p.numel() for p in decoder.parameters()) / 1e6:.2f} M params, "
        f"text_proj {sum(p.numel() for p in text_proj.parameters()) / 1e6:.2f} M")
    params = list(decoder.parameters()) + list(text_proj.parameters())
    peak_lr = lr
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=0.0)
    ema = EMA([decoder, text_proj], decay=0.995)
    batch, losses, vlbs, t0 = 24, [], [], time.time()
    last_save = time.time()

    def save(tag):
        ema.swap()
        decoder.save_pretrained(out / "decoder")
        text_proj.save_pretrained(out / "text_proj")
        ema.swap()
        log(f"decoder: saved ({tag})")

    for step in budget_loop(minutes, log, "decoder", every=100):
        lr = peak_lr * min(1.0, (step + 1) / 100)
        if lr_decay:   # cosine over the wall-clock budget, down to a tenth
            frac = min(1.0, (time.time() - t0) / (minutes * 60))
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        imgs, caps, _ = world.sample(rng, batch, LOW_RES)
        x0 = to_tensor(imgs)
        emb = image_embeds(vision, x0)
        drop_img = torch.rand(batch) < 0.1
        emb = torch.where(drop_img[:, None],
                          text_proj.learned_classifier_free_guidance_embeddings[None].expand_as(emb), emb)
        te, hs, mask = table.lookup(caps, torch.rand(batch) < 0.5)
        hidden, add_time = text_proj(image_embeddings=emb, prompt_embeds=te, text_encoder_hidden_states=hs,
                                     do_classifier_free_guidance=False)
        dmask = F.pad(mask, (text_proj.clip_extra_context_tokens, 0), value=True)
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(x0)
        xt = sched.add_noise(x0, noise, t)
        out6 = decoder(xt, t, encoder_hidden_states=hidden, class_labels=add_time, attention_mask=dmask).sample
        pred, v = out6[:, :3], out6[:, 3:]
        ac = terms[0][t].view(-1, 1, 1, 1)
        if x0_target:
            # x0 loss weighted by 1 + SNR (what v-prediction's loss is), capped at 5 so the nearly
            # clean steps do not drown the noisy ones where colours are decided
            weight = (1 + ac / (1 - ac)).clamp(max=5.0)
            mse = (weight * (pred - x0) ** 2).mean()
            x0_pred = pred
        else:
            mse = F.mse_loss(pred, noise)
            x0_pred = (xt - (1 - ac).sqrt() * pred) / ac.sqrt()
        vlb = vlb_loss(terms, x0_pred, v, x0, xt, t)
        # The VLB barely constrains v at most timesteps of the 1000-step training schedule, where
        # beta and the posterior variance almost coincide; but a short sampling schedule spreads
        # them far apart, and a v outside [-1, 1] then extrapolates to huge variances (a fine-tune
        # from an epsilon decoder drove v to ~10 and sampled pure speckle).  Keep v in its range.
        loss = mse + vlb + F.relu(v.abs() - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        losses.append(mse.item())
        vlbs.append(vlb.item())
        if (step + 1) % 25 == 0:
            log(f"decoder: step {step + 1} mse {np.mean(losses[-25:]):.4f} vlb {np.mean(vlbs[-25:]):.4f}")
        if time.time() - last_save > save_every_min * 60:
            save(f"step {step + 1}")
            last_save = time.time()
    save("final")
    stats = {"steps": len(losses), "seconds": round(time.time() - t0), "batch": batch,
             "final_mse": float(np.mean(losses[-100:])), "final_vlb": float(np.mean(vlbs[-100:])),
             "ema_decay": 0.995}
    log(f"decoder: done {stats}")
    return stats


def degrade(low: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Soften a clean 32 px image like a decoder sample may be: random slight blur and noise."""
    b = low.shape[0]
    sigma = torch.rand(b, generator=gen) * 0.8
    k = torch.arange(-2, 3).float()
    kern = torch.exp(-k[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kern = kern / kern.sum(1, keepdim=True)                               # [B,5]
    x = F.pad(low, (2, 2, 2, 2), mode="replicate")
    out = torch.empty_like(low)
    for i in range(b):
        ki = kern[i]
        xi = x[i:i + 1]
        xi = F.conv2d(xi, ki.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
        xi = F.conv2d(xi, ki.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)
        out[i] = xi[0]
    out = out + torch.randn(out.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.05
    return out.clamp(-1, 1)


def upscale(low: torch.Tensor) -> torch.Tensor:
    """The pipeline's conditioning: bicubic, antialiased upscale to 64 px."""
    return F.interpolate(low, size=(HIGH_RES, HIGH_RES), mode="bicubic", align_corners=False, antialias=True)


def train_upsampler(out: Path, minutes: float, seed: int, log: Log, resume: bool = False) -> dict:
    torch.manual_seed(seed + int(resume))  # a continued run sees new scenes
    rng = np.random.default_rng(seed + int(resume))
    sched = schedulers()["super_res_scheduler"]
    unet = make_upsampler()
    if resume and (out / "super_res_first").exists():
        from diffusers import UNet2DModel
        unet = UNet2DModel.from_pretrained(out / "super_res_first")  # ``--resume upsampler``
        log("upsampler: continuing from the saved weights")
    log(f"upsampler: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M params")
    opt = torch.optim.AdamW(unet.parameters(), lr=5e-4, weight_decay=0.0)
    ema = EMA([unet], decay=0.995)
    batch, losses, t0 = 8, [], time.time()
    for step in budget_loop(minutes, log, "upsampler", every=100):
        for g in opt.param_groups:
            g["lr"] = 5e-4 * min(1.0, (step + 1) / 100)
        scenes = world.sample_scenes(rng, batch, "all")
        hi = to_tensor(np.stack([world.render(s, HIGH_RES) for s in scenes]))
        low = to_tensor(np.stack([world.render(s, LOW_RES) for s in scenes]))
        cond = upscale(degrade(low))
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(hi)
        xt = sched.add_noise(hi, noise, t)
        pred = unet(torch.cat([xt, cond], dim=1), t).sample
        target = hi if sched.config.prediction_type == "sample" else noise
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            log(f"upsampler: step {step + 1} mse {np.mean(losses[-50:]):.4f}")
    ema.swap()
    unet.save_pretrained(out / "super_res_first")
    unet.save_pretrained(out / "super_res_last")
    stats = {"steps": len(losses), "seconds": round(time.time() - t0), "batch": batch,
             "final_mse": float(np.mean(losses[-100:])), "ema_decay": 0.995}
    log(f"upsampler: done {stats}")
    return stats


def write_static(out: Path, decoder_prediction: str = "sample"):
    """Schedulers and model_index.json (they do not depend on training)."""
    for name, s in schedulers(decoder_prediction).items():
        s.save_pretrained(out / name)
    (out / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")


# The runs that made the bundled checkpoint, in order (``--recipe bundled``): CLIP in two parts, an
# epsilon decoder that was later fine-tuned into the x0 one (which kept its features and converged
# much faster than an x0 decoder from scratch), about 2h10 in all.  The x0 upsampler of the third
# run stands for the one trained on its own afterwards, with the same settings.
BUNDLED_RECIPE = (
    ("--stages", "clip", "--clip-minutes", "8"),
    ("--stages", "clip", "--resume", "clip", "--clip-minutes", "4"),
    ("--stages", "prior,decoder,upsampler", "--decoder-prediction", "epsilon", "--prior-minutes", "4",
     "--decoder-minutes", "42", "--upsampler-minutes", "10"),
    ("--stages", "decoder", "--decoder-prediction", "epsilon", "--resume", "decoder", "--decoder-lr-decay",
     "--decoder-minutes", "18"),
    ("--stages", "decoder", "--resume", "decoder", "--decoder-lr-decay", "--decoder-minutes", "8"),
    ("--stages", "decoder", "--resume", "decoder", "--decoder-lr-decay", "--decoder-minutes", "35"),
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="models/pocket")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    p.add_argument("--clip-minutes", type=float, default=12.0)
    p.add_argument("--prior-minutes", type=float, default=4.0)
    p.add_argument("--decoder-minutes", type=float, default=60.0)
    p.add_argument("--upsampler-minutes", type=float, default=10.0)
    p.add_argument("--resume", default="",
                   help="comma-separated stages (clip, decoder) that continue from the saved weights "
                        "instead of starting afresh")
    p.add_argument("--decoder-lr-decay", action="store_true",
                   help="decay the decoder's learning rate (cosine over its budget, to a tenth)")
    p.add_argument("--decoder-prediction", choices=("sample", "epsilon"), default="sample",
                   help="what the decoder predicts: x0 (the bundled model) or the noise (how its "
                        "first runs trained)")
    p.add_argument("--decoder-lr", type=float, default=1e-3, help="the decoder's peak learning rate")
    p.add_argument("--recipe", choices=("bundled",), default=None,
                   help="run the sequence of runs that made models/pocket (ignores the stage options)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiply every wall-clock budget (e.g. 0.5 on a machine twice as fast)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--log", default=None, help="also append the log to this file")
    a = p.parse_args(argv)
    if a.recipe:
        common = ["--out", a.out, "--seed", str(a.seed), "--threads", str(a.threads),
                  "--time-scale", str(a.time_scale)] + (["--log", a.log] if a.log else [])
        for run in BUNDLED_RECIPE:
            main(common + list(run))
        return
    for name in ("clip_minutes", "prior_minutes", "decoder_minutes", "upsampler_minutes"):
        setattr(a, name, getattr(a, name) * a.time_scale)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(Path(a.log) if a.log else None)
    stages = [s.strip() for s in a.stages.split(",") if s.strip()]
    resume = {s.strip() for s in a.resume.split(",") if s.strip()}
    for s in stages:
        if s not in STAGES:
            p.error(f"unknown stage {s!r}; choose from {', '.join(STAGES)}")
    log(f"training {stages} into {out} with seed {a.seed}, {a.threads} threads")
    write_static(out, a.decoder_prediction)
    record_path = out / "training.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    fns = {"clip": (train_clip, a.clip_minutes), "prior": (train_prior, a.prior_minutes),
           "decoder": (train_decoder, a.decoder_minutes), "upsampler": (train_upsampler, a.upsampler_minutes)}
    for i, s in enumerate(STAGES):
        if s not in stages:
            continue
        fn, minutes = fns[s]
        log(f"== stage {s}: budget {minutes} min")
        extra = {"resume": True} if s in resume and s in ("clip", "decoder", "upsampler") else {}
        if s == "decoder" and a.decoder_lr_decay:
            extra["lr_decay"] = True
        if s == "decoder" and a.decoder_lr != 1e-3:
            extra["lr"] = a.decoder_lr
        if s == "decoder":
            extra["prediction"] = a.decoder_prediction
        stats = fn(out, minutes, a.seed + i, log, **extra)
        stats.update(extra)
        if extra.get("resume") and s in record:
            stats["previous"] = record[s]
        stats["budget_minutes"] = minutes
        record[s] = stats
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    log("all stages done")


if __name__ == "__main__":
    main()
