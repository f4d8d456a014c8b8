"""The prior: text -> CLIP image embedding z_i (paper §2.2, the diffusion prior).

A decoder-only transformer reads [text tokens, text embedding z_t, timestep, noised z_i] and
predicts the clean z_i.  Sampling runs in the prior's normalised space and maps the result back
to CLIP space with the prior's ``clip_mean``/``clip_std``.  As in the paper, several candidates can
be drawn per prompt and the one most similar to z_t kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import runtime
from .core.backends import PriorBackend
from .core.facts import handle, same_width, width
from .core.sampling import (Generators, Sampler, cfg_batch, make_generator, noise, plain,
                            step_tensor)
from .core.text import text_rows, uncond_of
from .declare import Input, Output, Param, node
from .errors import UserError
from .types import ImageEmbeds, TextEmbeds
from .widgets import SEED_PARAM, guidance_param


def sample_prior(prior, text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *,
                 guidance_scale: float, steps: int, generator: torch.Generator,
                 sampler: Sampler) -> torch.Tensor:
    """Sample z_i ~ P(z_i | y) for each row of ``text`` = (z_t [B, D], hidden [B, L, W], mask
    [B, L]); returns [B, D] float32 in CLIP space.  Draws: the initial noise, then one per step
    but the last."""
    device, dtype = prior.device, prior.dtype
    guided = guidance_scale != 1.0
    embeds, hidden, mask = cfg_batch(text, uncond, guided)
    embeds, hidden, mask = embeds.to(device, dtype), hidden.to(device, dtype), mask.to(device)

    timesteps = sampler.timesteps(steps)
    z = noise((text[0].shape[0], prior.config.embedding_dim), generator, device)
    z = z * sampler.init_noise_sigma
    for i in runtime.steps(len(timesteps), "prior"):
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        z_in = torch.cat([z, z]) if guided else z
        pred = prior(z_in.to(dtype), timestep=step_tensor(t), proj_embedding=embeds,
                     encoder_hidden_states=hidden,
                     attention_mask=mask).predicted_image_embedding.float()
        if guided:
            pred_u, pred_c = pred.chunk(2)
            pred = pred_u + guidance_scale * (pred_c - pred_u)
        z = sampler.step(pred, t, prev_t, z, generator)
    return (z * prior.clip_std.float() + prior.clip_mean.float()).float()


def best_candidates(z: torch.Tensor, text_embeds: torch.Tensor, n: int) -> torch.Tensor:
    """From ``n`` consecutive candidates per prompt keep the one whose cosine similarity with
    the prompt's text embedding is highest.  z: [B*n, D], text_embeds: [B, D] -> [B, D]."""
    b = text_embeds.shape[0]
    cand = z.reshape(b, n, -1)
    sim = F.cosine_similarity(cand, text_embeds.to(z).unsqueeze(1), dim=-1)  # [B, n]
    return cand[torch.arange(b), sim.argmax(dim=1)]


def _infer(inputs: dict) -> dict | None:
    f = handle(inputs, "prior")
    same_width(inputs, ("text", "negative"), width(f), "prior")
    return width(f)


def _check(prior: PriorBackend, text: TextEmbeds, field: str) -> None:
    cfg = prior.config("prior")
    dim = cfg.get("embedding_proj_dim") or cfg.get("embedding_dim", 768)
    if text.text_embeds.shape[-1] != dim:
        raise UserError(f"text embeddings have width {text.text_embeds.shape[-1]} but this prior "
                        f"takes {dim}; encode with the prior's own CLIP", field=field)
    width = cfg.get("embedding_dim", 768)
    if cfg.get("encoder_hid_proj_type", "linear") is not None and text.hidden_states.shape[-1] != width:
        raise UserError(f"text hidden states have width {text.hidden_states.shape[-1]} but this "
                        f"prior reads {width}; encode with the prior's own CLIP", field=field)
    length = prior.num_embeddings
    if text.hidden_states.shape[1] != length:
        raise UserError(f"text embeddings have {text.hidden_states.shape[1]} tokens but this prior "
                        f"reads {length}; encode with a tokenizer whose model_max_length is {length}",
                        field=field)


@node("Prior", category="unCLIP/sampling",
      description="Sample CLIP image embeddings from text embeddings with the diffusion prior.",
      inputs=[Input("prior", "UNCLIP_PRIOR"),
              Input("text", "UNCLIP_TEXT_EMBEDS"),
              Input("negative", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="what to guide away from (default: the empty prompt)")],
      params=[Param("steps", "INT", default=25, min=2, max=1000,
                    tooltip="Sampling steps of the prior; 25 is Karlo's default, fewer is faster "
                            "but the embeddings come out less accurate."),
              guidance_param(4.0),
              SEED_PARAM,
              Param("candidates", "INT", default=1, min=1, max=64,
                    tooltip="samples drawn per prompt; the one closest to the text embedding is "
                            "kept (the paper uses 2)")],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS")], infer=lambda params, inputs: {
          "image_embeds": _infer(inputs)}, batch="seed")
def prior_node(prior: PriorBackend, text: TextEmbeds, negative: TextEmbeds | None, steps: int,
               guidance_scale: float, seed: int, candidates: int):
    if prior is None:
        raise UserError("the linked prior is empty: its loader's checkpoint has no prior (an "
                        "image-variation checkpoint, or a decoder folder: load the prior's own "
                        "folder)", field="prior")
    runs = seed if isinstance(seed, tuple) else None
    if runs is None:
        batch = _rows(prior, text, negative, candidates, guidance_scale)
        generator = make_generator(seed)
        parts = [batch]
    else:  # --batch: one prior run per seed, each with its own prompts, in one model call
        pick = lambda v, i: v[i] if isinstance(v, tuple) else v  # noqa: E731
        parts = [_rows(prior, pick(text, i), pick(negative, i), candidates, guidance_scale)
                 for i in range(len(runs))]
        generator = Generators([(make_generator(s), p[0][0].shape[0])
                                for s, p in zip(runs, parts)])
    cond = tuple(torch.cat([p[0][k] for p in parts]) for k in range(3))
    uncond = None if any(p[1] is None for p in parts) else tuple(
        torch.cat([p[1][k] for p in parts]) for k in range(3))
    with torch.inference_mode():
        z = sample_prior(prior.prior, cond, uncond, guidance_scale=guidance_scale, steps=steps,
                         generator=generator, sampler=prior.sampler())
    if runs is None:
        return _finish(prior, z, text, parts[0], candidates)
    return tuple((_finish(prior, zi, pick(text, i), parts[i], candidates),)
                 for i, zi in enumerate(generator.split(z)))


def _rows(prior, text: TextEmbeds, negative: TextEmbeds | None, candidates: int,
          guidance_scale: float):
    """One prior run's rows: (cond, uncond, rows, paired) with cond/uncond = (pooled, hidden,
    mask); ``paired``: the negative prompts are sampled too (Kandinsky 2.2), after the
    prompts."""
    _check(prior, text, "text")
    b = text.text_embeds.shape[0]
    rows = b * candidates
    cond_text = text_rows(text, rows)
    cond = (cond_text.text_embeds, cond_text.hidden_states, cond_text.attention_mask)
    if negative is not None:
        _check(prior, negative, "negative")
        nb = negative.text_embeds.shape[0]
        if nb not in (1, b):
            raise UserError(f"{nb} negative prompts for {b} prompts; give one, or one per prompt",
                            field="negative")
        neg = text_rows(negative, rows) if nb == b else negative
        uncond = tuple(t.expand(rows, *t.shape[1:]) if t.shape[0] == 1 else t
                       for t in (neg.text_embeds, neg.hidden_states, neg.attention_mask))
    else:
        uncond = uncond_of(cond_text, rows)
    if guidance_scale != 1.0 and uncond is None:
        raise UserError("guidance needs the unconditional branch; these text embeddings have none "
                        "(use CLIPTextEncode, or link a negative) or set guidance_scale 1",
                        field="text")
    paired = negative is not None and prior.samples_negative
    if paired:
        # Kandinsky 2.2: the negative prompts are sampled in the same batch, after the prompts
        # and guided by themselves; their embeddings are what the decoder guides against.
        cond = tuple(torch.cat([c, u]) for c, u in zip(cond, uncond))
        uncond = tuple(torch.cat([u, u]) for u in uncond)
    return cond, uncond, rows, paired


def _finish(prior, z: torch.Tensor, text: TextEmbeds, part, candidates: int) -> ImageEmbeds:
    """One run's sampled rows -> its image embeddings (candidates reranked, negative kept)."""
    _, uncond, rows, paired = part
    z_neg = None
    if paired:
        z, z_neg = z[:rows], z[rows:]
        if candidates > 1:
            z_neg = best_candidates(z_neg, uncond[0][:rows:candidates], candidates)
    elif prior.samples_negative:
        z_neg = prior.negative_embeds()
    if candidates > 1:
        z = best_candidates(z, text.text_embeds, candidates)
    return ImageEmbeds(image_embeds=plain(z).contiguous(),
                       negative_image_embeds=None if z_neg is None else plain(z_neg).contiguous())
