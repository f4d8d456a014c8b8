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
from .declare import Input, Output, Param, node
from .errors import UserError
from .loaders import DecoderModel
from .sampling import (SEED_PARAM, guidance_param, cfg_batch, DDIMSampler, Sampler,
                       StepCallback, UnCLIPSampler, make_generator, noise, plain)
from .types import ImageEmbeds, TextEmbeds, socket_type


def _latent_encode(t: torch.Tensor):
    return {"value": t.detach().cpu().contiguous()}, {}


LATENT = socket_type("UNCLIP_LATENT", "decoder noise x_T, float32 [B, C, S, S] (e.g. from "
                     "DDIMInvert): the second half of the bipartite latent (z_i, x_T)",
                     _latent_encode, lambda tensors, meta: tensors["value"])
SAMPLERS = ("unclip", "ddim")


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

def decoder_model(decoder, text_proj, image_embeds: torch.Tensor,
                  text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *,
                  guidance_scale: float):
    """The decoder as a function ``(x, t) -> model output`` (guided noise prediction, then the
    predicted variance channels if any) with the conditioning prepared once; the sampling loop
    and DDIM inversion both call it."""
    device, dtype = decoder.device, decoder.dtype
    guided = guidance_scale != 1.0
    embeds, hidden, mask = cfg_batch(text, uncond, guided)
    context, time_embeds = text_proj(
        image_embeddings=image_embeds.to(device, dtype), prompt_embeds=embeds.to(device, dtype),
        text_encoder_hidden_states=hidden.to(device, dtype), do_classifier_free_guidance=guided)
    mask = F.pad(mask.to(device), (text_proj.clip_extra_context_tokens, 0), value=True)
    channels = decoder.config.in_channels

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        x_in = torch.cat([x, x]) if guided else x
        out = decoder(sample=x_in.to(dtype), timestep=t, encoder_hidden_states=context,
                      class_labels=time_embeds, attention_mask=mask).sample.float()
        if guided:
            out_u, out_c = out.chunk(2)
            eps = out_u[:, :channels] + guidance_scale * (out_c[:, :channels] - out_u[:, :channels])
            out = torch.cat([eps, out_c[:, channels:]], dim=1)
        return out
    return model


def sample_decoder(decoder, text_proj, image_embeds: torch.Tensor,
                   text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *,
                   guidance_scale: float, steps: int, generator: torch.Generator,
                   sampler: Sampler, x_T: torch.Tensor | None = None,
                   callback: StepCallback | None = None, resample: int = 1) -> torch.Tensor:
    """Sample x_0 ~ P(x | z_i, y): [B, C, S, S] float32 in [-1, 1].

    ``text`` = (pooled [B, D], hidden states [B, L, W], mask [B, L]) on any device, ``uncond`` the
    same for the unconditional branch (needed when ``guidance_scale`` != 1).  Random draws, all
    from ``generator``: x_T (unless given), then one per step but the last (in the sampler).
    ``resample`` > 1 repeats every step but the last that many times, diffusing the result back
    up in between (RePaint's jumps, which let a ``callback``'s edits spread); each jump draws its
    noise after the step's own draws.
    """
    device = decoder.device
    model = decoder_model(decoder, text_proj, image_embeds, text, uncond,
                          guidance_scale=guidance_scale)
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
        for jump in range(resample if prev_t is not None else 1):
            if jump > 0:
                x = sampler.renoise(x, prev_t, t, noise(x.shape, generator, device))
            x = sampler.step(model(x, t), t, prev_t, x, generator)
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


def make_sampler(decoder: DecoderModel, sampler: str, eta: float) -> Sampler:
    """The Decoder's update rule: Karlo's (the default, what the parity tests pin) or DDIM."""
    if sampler == "ddim":
        return DDIMSampler(decoder.scheduler_config, eta=eta)
    if eta != 0:
        raise UserError("eta is DDIM's noise level; set sampler: ddim to use it (or eta 0)",
                        field="eta")
    return UnCLIPSampler(decoder.scheduler_config)


def initial_noise(decoder: DecoderModel, rows: int, given: torch.Tensor | None, same: bool,
                  generator: torch.Generator) -> torch.Tensor | None:
    """x_T for ``rows`` images: the linked latent (one row serves all), one draw shared by every
    row (``same``), or None for the loop's own per-row draw."""
    c = int(decoder.config("decoder").get("in_channels", 3))
    s = decoder.sample_size
    if given is not None:
        if (given.ndim != 4 or tuple(given.shape[1:]) != (c, s, s)
                or given.shape[0] not in (1, rows)):
            raise UserError(f"the noise has shape {tuple(given.shape)} but this decoder needs "
                            f"[{rows} or 1, {c}, {s}, {s}] for {rows} image(s)", field="noise")
        return given.float().expand(rows, c, s, s)
    if same:
        return noise((1, c, s, s), generator, "cpu").expand(rows, c, s, s)
    return None


def _check_decoder_params(params: dict) -> None:
    if params.get("sampler", "unclip") != "ddim" and params.get("eta", 0.0) != 0:
        raise UserError("eta is DDIM's noise level; set sampler: ddim to use it (or eta 0)",
                        field="eta")


@node("Decoder", category="unCLIP/sampling",
      description="Decode CLIP image embeddings (+ optional captions) into images at the decoder's "
                  "resolution.",
      inputs=[Input("decoder", "UNCLIP_DECODER"),
              Input("image_embeds", "UNCLIP_IMAGE_EMBEDS"),
              Input("text", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="captions; the empty prompt when absent (image variations)"),
              Input("noise", "UNCLIP_LATENT", optional=True,
                    tooltip="initial noise x_T (e.g. from DDIMInvert); one row serves every "
                            "image")],
      params=[Param("steps", "INT", default=25, min=2, max=1000,
                    tooltip="Sampling steps of the decoder; 25 is Karlo's default, fewer is "
                            "faster but loses detail (decode DDIMInvert noise with its steps)."),
              guidance_param(8.0),
              SEED_PARAM,
              Param("images_per_embedding", "INT", default=1, min=1, max=64,
                    tooltip="Images decoded from each embedding, each sampled separately; the "
                            "batch grows by this factor, one embedding's images side by side."),
              Param("sampler", "COMBO", default="unclip", choices=SAMPLERS,
                    tooltip="unclip: Karlo's stochastic sampler; ddim: DDIM with eta (eta 0 "
                            "decodes an inverted latent back to its image)"),
              Param("eta", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.05,
                    tooltip="ddim only: 0 = deterministic, larger = more varied"),
              Param("same_noise", "BOOLEAN", default=False,
                    tooltip="draw one x_T and use it for every image (smooth interpolation "
                            "paths)")],
      outputs=[Output("image", "IMAGE")], check=_check_decoder_params)
def decoder_node(decoder: DecoderModel, image_embeds: ImageEmbeds, text: TextEmbeds | None,
                 steps: int, guidance_scale: float, seed: int, images_per_embedding: int,
                 noise: torch.Tensor | None = None, sampler: str = "unclip", eta: float = 0.0,
                 same_noise: bool = False):
    if decoder is None:
        raise UserError("no decoder is linked (the checkpoint has none)", field="decoder")
    z, cond, uncond = prepare_decoder_inputs(decoder, image_embeds, text, images_per_embedding)
    if guidance_scale != 1.0 and uncond is None:
        raise UserError("guidance needs the unconditional branch; these text embeddings have none "
                        "(use CLIPTextEncode) or set guidance_scale 1", field="text")
    rule = make_sampler(decoder, sampler, eta)
    generator = make_generator(seed)
    x_T = initial_noise(decoder, z.shape[0], noise, same_noise, generator)
    with torch.inference_mode():
        x = sample_decoder(decoder.decoder, decoder.text_proj, z, cond, uncond,
                           guidance_scale=guidance_scale, steps=steps, generator=generator,
                           sampler=rule, x_T=x_T)
    return to_image(x)
