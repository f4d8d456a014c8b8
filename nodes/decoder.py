"""The decoder: CLIP image embedding z_i (+ caption) -> a small image (64 px in Karlo).

GLIDE-style conditioning (paper §2.1): z_i is projected and added to the timestep embedding, and
also projected into a few extra context tokens placed before the text encoder's hidden states.
Classifier-free guidance compares against a learned "no image embedding" vector and the empty
prompt, both in one batched forward; it guides the predicted noise only, the predicted variance
comes from the conditional half.

``sample_decoder`` is the loop, written so that editing nodes can reuse it: explicit initial noise
``x_T``, a per-step ``callback`` (RePaint-style blending) and a pluggable ``sampler``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import runtime
from .declare import SEED_MAX, Input, Output, Param, node
from .errors import UserError
from .loaders import DecoderModel
from .sampling import Sampler, StepCallback, UnCLIPSampler, make_generator, noise, plain
from .types import ImageEmbeds, TextEmbeds


# --- text rows ----------------------------------------------------------------------------------

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


# --- the loop -----------------------------------------------------------------------------------

def sample_decoder(decoder, text_proj, image_embeds: torch.Tensor,
                   text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *,
                   guidance_scale: float, steps: int, generator: torch.Generator,
                   sampler: Sampler, x_T: torch.Tensor | None = None,
                   callback: StepCallback | None = None) -> torch.Tensor:
    """Sample x_0 ~ P(x | z_i, y): [B, C, S, S] float32 in [-1, 1].

    ``text`` = (pooled [B, D], hidden states [B, L, W], mask [B, L]) on any device, ``uncond`` the
    same for the unconditional branch (needed when ``guidance_scale`` != 1).  Random draws, all
    from ``generator``: x_T (unless given), then one per step but the last (in the sampler).
    """
    device, dtype = decoder.device, decoder.dtype
    guided = guidance_scale != 1.0
    embeds, hidden, mask = text
    if guided:
        if uncond is None:
            raise ValueError("guidance needs the unconditional branch")
        embeds = torch.cat([uncond[0], embeds])
        hidden = torch.cat([uncond[1], hidden])
        mask = torch.cat([uncond[2], mask])
    context, time_embeds = text_proj(
        image_embeddings=image_embeds.to(device, dtype), prompt_embeds=embeds.to(device, dtype),
        text_encoder_hidden_states=hidden.to(device, dtype), do_classifier_free_guidance=guided)
    mask = F.pad(mask.to(device), (text_proj.clip_extra_context_tokens, 0), value=True)

    channels, size = decoder.config.in_channels, decoder.config.sample_size
    timesteps = sampler.timesteps(steps)
    if x_T is None:
        x = noise((image_embeds.shape[0], channels, size, size), generator, device)
    else:
        x = x_T.to(device=device, dtype=torch.float32)
    x = x * sampler.init_noise_sigma
    for i in runtime.steps(len(timesteps), "decoder"):
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        x_in = torch.cat([x, x]) if guided else x
        out = decoder(sample=x_in.to(dtype), timestep=t, encoder_hidden_states=context,
                      class_labels=time_embeds, attention_mask=mask).sample.float()
        if guided:
            out_u, out_c = out.chunk(2)
            eps = out_u[:, :channels] + guidance_scale * (out_c[:, :channels] - out_u[:, :channels])
            out = torch.cat([eps, out_c[:, channels:]], dim=1)
        x = sampler.step(out, t, prev_t, x, generator)
        if callback is not None:
            x = callback(i, t, prev_t, x)
    return x.clamp(-1, 1)


def to_image(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> IMAGE [B, H, W, C] float32 in 0..1 on the CPU."""
    return plain((x.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)).contiguous()


def from_image(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> [B, C, H, W] in [-1, 1] (RGB; alpha dropped)."""
    x = image.float()
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x[..., :3].permute(0, 3, 1, 2) * 2 - 1


# --- the node -----------------------------------------------------------------------------------

def _check_dims(decoder: DecoderModel, z: torch.Tensor, text: TextEmbeds | None) -> None:
    dim = decoder.clip_dim
    if z.ndim != 2 or z.shape[1] != dim:
        raise UserError(f"image embeddings have shape {tuple(z.shape)} but this decoder takes "
                        f"[B, {dim}] (another CLIP?)", field="image_embeds")
    if text is not None and (text.text_embeds.shape[-1] != dim or text.hidden_states.shape[-1] != dim):
        raise UserError(f"text embeddings of width {text.hidden_states.shape[-1]} do not fit this "
                        f"decoder (it takes {dim}); encode with the decoder's own CLIP",
                        field="text")


def prepare_decoder_inputs(decoder: DecoderModel, image_embeds: ImageEmbeds,
                           text: TextEmbeds | None, images_per_embedding: int):
    """Pair embeddings and prompts row by row; returns (z_i [N, D], text, uncond) for N images."""
    z = image_embeds.image_embeds
    _check_dims(decoder, z, text)
    if text is None:
        text = decoder.empty_text(z.shape[0])
        if text is None:
            raise UserError("no text embeddings are linked and the decoder's checkpoint has no text "
                            "encoder to encode the empty prompt with; link a CLIPTextEncode",
                            field="text")
    e, t = z.shape[0], text.text_embeds.shape[0]
    if e % t == 0:
        text = text_rows(text, e)
    elif t % e == 0:
        z = z.repeat_interleave(t // e, dim=0)
    else:
        raise UserError(f"{e} image embeddings and {t} prompts cannot be paired (one must be a "
                        f"multiple of the other)", field="text")
    if images_per_embedding > 1:
        z = z.repeat_interleave(images_per_embedding, dim=0)
        text = text_rows(text, z.shape[0])
    rows = z.shape[0]
    return z, (text.text_embeds, text.hidden_states, text.attention_mask), uncond_of(text, rows)


@node("Decoder", category="unCLIP/sampling",
      description="Decode CLIP image embeddings (+ optional captions) into images at the decoder's "
                  "resolution.",
      inputs=[Input("decoder", "UNCLIP_DECODER"),
              Input("image_embeds", "UNCLIP_IMAGE_EMBEDS"),
              Input("text", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="captions; the empty prompt when absent (image variations)")],
      params=[Param("steps", "INT", default=25, min=2, max=1000),
              Param("guidance_scale", "FLOAT", default=8.0, min=0.0, max=100.0, step=0.1,
                    tooltip="1 = no guidance (skips the unconditional half)"),
              Param("seed", "INT", default=0, min=0, max=SEED_MAX),
              Param("images_per_embedding", "INT", default=1, min=1, max=64)],
      outputs=[Output("image", "IMAGE")])
def decoder_node(decoder: DecoderModel, image_embeds: ImageEmbeds, text: TextEmbeds | None,
                 steps: int, guidance_scale: float, seed: int, images_per_embedding: int):
    if decoder is None:
        raise UserError("no decoder is linked (the checkpoint has none)", field="decoder")
    z, cond, uncond = prepare_decoder_inputs(decoder, image_embeds, text, images_per_embedding)
    if guidance_scale != 1.0 and uncond is None:
        raise UserError("guidance needs the unconditional branch; these text embeddings have none "
                        "(use CLIPTextEncode) or set guidance_scale 1", field="text")
    with torch.inference_mode():
        x = sample_decoder(decoder.decoder, decoder.text_proj, z, cond, uncond,
                           guidance_scale=guidance_scale, steps=steps,
                           generator=make_generator(seed),
                           sampler=UnCLIPSampler(decoder.scheduler_config))
    return to_image(x)
