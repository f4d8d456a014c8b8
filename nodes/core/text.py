"""Text embeddings as every family's text tower gives them: prompts encoded with their
unconditional (empty prompt) branch, and rows repeated to match a batch."""
from __future__ import annotations

import logging

import torch

from ..types import TextEmbeds
from .sampling import plain

log = logging.getLogger(__name__)

ENCODE_CHUNK = 64
"""Prompts go through the text encoder this many at a time, so its activations stay bounded;
the results equal one big batch's to float rounding (at most 64 prompts: bit for bit)."""


def encode_prompts(clip, prompts: list[str]) -> TextEmbeds:
    """Encode ``prompts``, and the empty prompt once per prompt as the unconditional branch.

    Two forwards (prompts, then as many empty prompts) rather than one: that is how the Karlo
    pipeline batches them, and the sampling loops amplify even last-bit differences (at t = 999
    the noise prediction is divided by sqrt(alpha_bar) ~ 5e-5), so we keep the same arithmetic.
    """
    tok = clip.tokenizer
    length = int(tok.model_max_length)
    for p in prompts:
        n = len(tok(p).input_ids)
        if n > length:
            log.warning("prompt %r has %d tokens; only the first %d are used", p, n, length)

    def encode(texts):
        batch = tok(list(texts), padding="max_length", max_length=length, truncation=True,
                    return_tensors="pt")
        with torch.inference_mode():
            out = clip.text_encoder(batch.input_ids.to(clip.device))
        return plain(out.text_embeds), plain(out.last_hidden_state), batch.attention_mask.bool()

    def chunked(texts):
        parts = [encode(texts[i:i + ENCODE_CHUNK]) for i in range(0, len(texts), ENCODE_CHUNK)]
        return parts[0] if len(parts) == 1 else tuple(torch.cat(t) for t in zip(*parts))

    embeds, hidden, mask = chunked(list(prompts))
    u_embeds, u_hidden, u_mask = chunked([""] * len(prompts))
    return TextEmbeds(text_embeds=embeds, hidden_states=hidden, attention_mask=mask,
                      prompts=tuple(prompts), uncond_text_embeds=u_embeds,
                      uncond_hidden_states=u_hidden, uncond_attention_mask=u_mask)


def text_rows(text: TextEmbeds, rows: int) -> TextEmbeds:
    """``text`` with each prompt repeated so there are ``rows`` of them (prompt-major)."""
    n = text.text_embeds.shape[0]
    if rows == n:
        return text
    k = rows // n

    def rep(t):  # a single unconditional row serves every prompt as it is
        return t if t is None or (t.shape[0] == 1 and n > 1) else t.repeat_interleave(k, dim=0)

    return TextEmbeds(rep(text.text_embeds), rep(text.hidden_states), rep(text.attention_mask),
                      tuple(p for p in text.prompts for _ in range(k)),
                      rep(text.uncond_text_embeds), rep(text.uncond_hidden_states),
                      rep(text.uncond_attention_mask))


def uncond_of(text: TextEmbeds, rows: int):
    """The unconditional branch as (embeds, hidden, mask) with ``rows`` rows, or None."""
    if text.uncond_text_embeds is None:
        return None
    parts = (text.uncond_text_embeds, text.uncond_hidden_states, text.uncond_attention_mask)
    if parts[0].shape[0] == rows:
        return parts
    return tuple(p.expand(rows, *p.shape[1:]) for p in parts)
