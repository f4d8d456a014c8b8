"""The decoder: CLIP image embedding z_i (+ caption) -> an image (paper §2.1).

One Decoder node serves every family through the DecoderBackend protocol (``core/backends.py``):
the family's handle pairs embeddings and captions into a ``Conditioning``, gives the model as a
function ``(x, t) -> output`` with guidance prepared, its sampler and its sizes, and turns the
finished sample into pixels.  The loop here is the same for all: draw x_T (or noise an image for
image-to-image, or take x_T from DDIMInvert), then step the sampler down the timesteps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core.backends import Conditioning, DecoderBackend
from .core.facts import handle, same_width, width
from .core.handles import width_mismatch
from .core.pixels import check_sample_pixels, pixels_at, to_image
from .core.sampling import Generators, Sampler, make_generator, noise, sample
from .declare import Input, Output, Param, node
from .errors import UserError
from .types import ImageEmbeds, TextEmbeds, socket_type
from .widgets import (CONDITIONING_PARAMS, DECODER_GUIDANCE, SEED_PARAM, conditioning_options,
                      guidance_param)


def _latent_encode(t: torch.Tensor):
    return {"value": t.detach().cpu().contiguous()}, {}


LATENT = socket_type("UNCLIP_LATENT", "decoder noise x_T, float32 [B, C, h, w] (e.g. from "
                     "DDIMInvert): the second half of the bipartite latent (z_i, x_T)",
                     _latent_encode, lambda tensors, meta: tensors["value"])
SAMPLERS = ("unclip", "ddim")


# --- the loop -----------------------------------------------------------------------------------

def initial_noise(shape: tuple[int, int, int], rows: int, given: torch.Tensor | None,
                  same: bool, generator: torch.Generator) -> torch.Tensor | None:
    """x_T for ``rows`` samples of ``shape`` (C, h, w): the linked latent (one row serves all),
    one draw shared by every row (``same``), or None for the loop's own per-row draw."""
    if given is not None:
        if given.ndim != 4 or tuple(given.shape[1:]) != tuple(shape) or given.shape[0] not in (1, rows):
            raise UserError(f"the noise has shape {tuple(given.shape)} but this decoder needs "
                            f"[{rows} or 1, {', '.join(map(str, shape))}] for {rows} image(s)",
                            field="noise")
        return given.float().expand(rows, *shape)
    if same:
        if isinstance(generator, Generators):  # one draw per batched run, for its rows
            return torch.cat([noise((1, *shape), g, "cpu").expand(r, *shape)
                              for g, r in generator.groups])
        return noise((1, *shape), generator, "cpu").expand(rows, *shape)
    return None


def start_steps(timesteps: list[int], strength: float) -> list[int]:
    """The tail of ``timesteps`` that image-to-image runs (as diffusers counts it: the last
    int(steps * strength) of them)."""
    n = len(timesteps)
    keep = min(int(n * strength), n)
    if keep < 1:
        raise UserError(f"strength {strength:g} of {n} steps leaves no step to run; raise "
                        f"strength or steps", field="strength")
    return timesteps[n - keep:]


def hint_rows(hint: torch.Tensor, rows: int, embeds: int, size: tuple[int, int]) -> torch.Tensor:
    """A ControlNet hint IMAGE -> [rows, 3, H, W] in 0..1 at the output size: one hint for all,
    one per embedding (repeated for its images), or one per image."""
    if hint.ndim != 4 or hint.shape[0] == 0 or hint.shape[-1] not in (1, 3, 4):
        raise UserError(f"expected an IMAGE [B, H, W, C] as the hint, got shape "
                        f"{tuple(hint.shape)}", field="hint")
    x = hint.float()
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    x = x[..., :3].permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False,
                          antialias=True).clamp(0, 1)
    x = x.contiguous()  # the convolutions' results depend (in the last bits) on memory layout
    return image_rows(x, rows, embeds, "hint")


def image_rows(image: torch.Tensor, rows: int, embeds: int, field: str = "image") -> torch.Tensor:
    """An input batch (images, hints) matched to ``rows`` samples: one for all, one per
    embedding (repeated for its samples), or one per sample."""
    b = image.shape[0]
    if b == rows:
        return image
    if b == 1:
        return image.expand(rows, *image.shape[1:])
    if b == embeds and rows % b == 0:
        return image.repeat_interleave(rows // b, dim=0)
    what = "images" if field == "image" else f"{field} images"
    raise UserError(f"{b} {what} for {rows} images to draw; give one, one per embedding or one "
                    f"per image", field=field)


def decode(decoder: DecoderBackend, cond: Conditioning, *, steps: int, guidance_scale: float,
           seed: int | Generators, sampler: Sampler, size: tuple[int, int], x_T: torch.Tensor | None = None,
           same_noise: bool = False, image: torch.Tensor | None = None, strength: float = 1.0,
           hint: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one image per row of ``cond`` -> [N, 3, H, W] in [-1, 1].

    Random draws, all from ``generator(seed)``: the conditioning's own (``draw``, when the
    decoder has it), the initial noise (x_T unless linked; with an
    ``image``, the noise that takes it to the first level), then one per step.  ``seed`` may be
    ``Generators``: several runs batched, each drawing from its own."""
    generator = seed if isinstance(seed, Generators) else make_generator(seed)
    cond = draw_conditioning(decoder, cond, generator)
    shape = decoder.latent_shape(*size)
    rows = cond.rows
    start = initial_noise(shape, rows, x_T, same_noise, generator)
    model = decoder.model(cond, guidance_scale, hint=hint)
    timesteps = sampler.timesteps(steps)
    device = decoder.device
    if image is not None:  # image-to-image: start from the image noised part of the way
        timesteps = start_steps(timesteps, strength)
        # contiguous, as diffusers' img2img has it (its repeat_interleave copies): a UNet's
        # results depend in the last bits on its input's memory layout
        x0 = decoder.encode(image.to(device)).contiguous()
        if x0.shape[0] == 1 and rows > 1:
            x0 = x0.expand(rows, *x0.shape[1:])
        eps = start.to(device) if start is not None else noise(x0.shape, generator, device)
        x = sampler.add_noise(x0.float(), eps, timesteps[0])
    else:
        x = start.to(device) if start is not None else noise((rows, *shape), generator, device)
        x = x * sampler.init_noise_sigma
    x = sample(model, sampler, timesteps, x, generator)
    return decoder.decode(x)


def draw_conditioning(decoder: DecoderBackend, cond: Conditioning, generator) -> Conditioning:
    """``cond`` with its own random numbers drawn, for decoders whose conditioning has some."""
    draw = getattr(decoder, "draw", None)
    return draw(cond, generator) if draw is not None else cond


# --- the node -----------------------------------------------------------------------------------

def check_links(inputs: dict, use: str = "decode", params: dict | None = None) -> None:
    """Validation of what is linked to a decoder node (``use``: decode, inpaint or invert):
    embeddings of the decoder's width and CLIP, text only where the decoder reads it, the
    decoder variant that the node needs, and family-specific settings only where it reads
    them."""
    f = handle(inputs, "decoder")
    if f is None:
        return
    if params and f.settings is not None:
        for name in conditioning_options(**params):
            if name not in f.settings:
                raise UserError(f"the {f.label} decoder takes no {name}; leave it at its "
                                f"default", field=name)
    same_width(inputs, ("image_embeds",) + (("text",) if f.takes_text else ()),
               width(f), "decoder")
    if f.takes_text is False and "text" in inputs:
        raise UserError(f"the {f.label} decoder is conditioned on the image embedding alone and "
                        f"reads no text; unlink text (prompts go to the Prior)", field="text")
    kind = f.variant or "text2img"
    if use == "inpaint":
        handle(inputs, "upsampler")
        if kind == "inpaint" and "upsampler" in inputs:
            raise UserError("an inpainting decoder draws at full resolution; unlink the "
                            "upsampler", field="upsampler")
        if f.cannot_inpaint:
            raise UserError(f.cannot_inpaint, field="decoder")
        return
    if kind == "inpaint":
        raise UserError("this decoder is an inpainting decoder (it takes a masked image); use "
                        "the Inpaint node with it", field="decoder")
    if use == "decode":
        if kind == "controlnet" and "hint" not in inputs:
            raise UserError("this decoder is a ControlNet: link a hint image (a depth map)",
                            field="hint")
        if kind != "controlnet" and "hint" in inputs:
            raise UserError(f"only a ControlNet decoder takes a hint; this one is a {kind} "
                            f"decoder", field="hint")
    elif kind == "controlnet":
        raise UserError("DDIMInvert does not support ControlNet decoders (the hint would have to "
                        "be the same when decoding); invert with the text-to-image decoder",
                        field="decoder")


def _check_decoder_params(params: dict) -> None:
    if params.get("sampler", "unclip") != "ddim" and params.get("eta", 0.0) != 0:
        raise UserError("eta is DDIM's noise level; set sampler: ddim to use it (or eta 0)",
                        field="eta")


@node("Decoder", category="unCLIP/sampling",
      description="Decode CLIP image embeddings (+ optional captions) into images; with an image "
                  "linked, image-to-image from it (strength).",
      inputs=[Input("decoder", "UNCLIP_DECODER"),
              Input("image_embeds", "UNCLIP_IMAGE_EMBEDS"),
              Input("text", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="captions (Karlo; for Stable unCLIP their prompts are the SD prompt "
                            "unless 'prompt' is set); the empty prompt when absent (image "
                            "variations). Kandinsky 2.2's decoder reads no text"),
              Input("noise", "UNCLIP_LATENT", optional=True,
                    tooltip="initial noise x_T (e.g. from DDIMInvert); one row serves every "
                            "image"),
              Input("image", "IMAGE", optional=True,
                    tooltip="image-to-image: start from this image noised to 'strength' "
                            "instead of from pure noise (variations that keep its layout)"),
              Input("hint", "IMAGE", optional=True,
                    tooltip="ControlNet decoders only (Kandinsky 2.2 controlnet-depth): the depth "
                            "map, 0..1, resized to the output size")],
      params=[Param("steps", "INT", default=25, min=2, max=1000,
                    tooltip="Sampling steps of the decoder; 25 is Karlo's default (Kandinsky 2.2 "
                            "uses 50-100), fewer is faster but loses detail (decode DDIMInvert "
                            "noise with its steps)."),
              guidance_param(1.0, DECODER_GUIDANCE),
              SEED_PARAM,
              Param("images_per_embedding", "INT", default=1, min=1, max=64,
                    tooltip="Images decoded from each embedding, each sampled separately; the "
                            "batch grows by this factor, one embedding's images side by side."),
              Param("sampler", "COMBO", default="unclip", choices=SAMPLERS,
                    tooltip="unclip: the checkpoint's own scheduler (Karlo's stochastic "
                            "UnCLIPScheduler, Kandinsky's DDPM, Stable unCLIP's PNDM or DDIM); "
                            "ddim: DDIM with eta (eta 0 "
                            "decodes an inverted latent back to its image)"),
              Param("eta", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.05,
                    tooltip="ddim only: 0 = deterministic, larger = more varied"),
              Param("same_noise", "BOOLEAN", default=False,
                    tooltip="draw one x_T and use it for every image (smooth interpolation "
                            "paths)"),
              Param("width", "INT", default=0, min=0, max=4096, step=64,
                    tooltip="0 = the model's own size (Karlo 64, Kandinsky 2.2 512, Stable unCLIP "
                            "768); Kandinsky rounds up to a multiple of 64 as diffusers does, "
                            "Stable unCLIP takes multiples of 8"),
              Param("height", "INT", default=0, min=0, max=4096, step=64,
                    tooltip="0 = the model's own size; see width"),
              Param("strength", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.05,
                    tooltip="image-to-image only: how far the image is noised (1 = to the first "
                            "step's level, almost pure noise; 0.3 = keep most of it); the last "
                            "strength x steps steps run"),
              *CONDITIONING_PARAMS],
      outputs=[Output("image", "IMAGE")], check=_check_decoder_params,
      infer=lambda params, inputs: check_links(inputs, "decode", params), batch="seed")
def decoder_node(decoder, image_embeds: ImageEmbeds, text: TextEmbeds | None,
                 steps: int, guidance_scale: float, seed: int, images_per_embedding: int,
                 noise: torch.Tensor | None = None, sampler: str = "unclip", eta: float = 0.0,
                 same_noise: bool = False, image: torch.Tensor | None = None,
                 hint: torch.Tensor | None = None, width: int = 0, height: int = 0,
                 strength: float = 1.0, noise_level: int = 0, prompt: str = "",
                 negative_prompt: str = "", per_image_noise: bool = False):
    if decoder is None:
        raise UserError("no decoder is linked (the checkpoint has none)", field="decoder")
    if decoder.variant == "inpaint":
        raise UserError("this decoder is an inpainting decoder (it takes a masked image); use "
                        "the Inpaint node with it", field="decoder")
    if decoder.variant == "controlnet" and hint is None:
        raise UserError("this decoder is a ControlNet: link a hint image (a depth map)",
                        field="hint")
    if decoder.variant != "controlnet" and hint is not None:
        raise UserError("only a ControlNet decoder takes a hint; this one is a "
                        f"{decoder.variant} decoder", field="hint")
    if noise is not None and image is not None:
        raise UserError("link either noise (x_T) or an image for image-to-image, not both",
                        field="image")
    rule = decoder.sampler(sampler, eta)
    options = conditioning_options(noise_level=noise_level, prompt=prompt,
                                   negative_prompt=negative_prompt,
                                   per_image_noise=per_image_noise)
    runs = seed if isinstance(seed, tuple) else None
    if runs is None:
        cond, size, pixels, hints, x_T = _inputs(decoder, image_embeds, text, noise, image, hint,
                                                 images_per_embedding, width, height, options)
        decoder.check_guidance(cond, guidance_scale)
        generator = seed
    else:  # --batch: one decode per seed, each with its own inputs, in one model call
        pick = lambda v, i: v[i] if isinstance(v, tuple) else v  # noqa: E731
        parts = [_inputs(decoder, pick(image_embeds, i), pick(text, i), pick(noise, i),
                         pick(image, i), pick(hint, i), images_per_embedding, width, height,
                         options)
                 for i in range(len(runs))]
        if len({p[1] for p in parts}) > 1:
            raise UserError("batched decodes must have one size; run without --batch",
                            field="seed")
        for p in parts:
            decoder.check_guidance(p[0], guidance_scale)
        cond, size = cat_rows([p[0] for p in parts]), parts[0][1]
        rows = [p[0].rows for p in parts]
        pixels, hints, x_T = (
            None if parts[0][k] is None else
            torch.cat([p[k].expand(r, *p[k].shape[1:]) for p, r in zip(parts, rows)])
            for k in (2, 3, 4))
        generator = Generators([(make_generator(s), r) for s, r in zip(runs, rows)])
    with torch.inference_mode():
        x = decode(decoder, cond, steps=steps, guidance_scale=guidance_scale, seed=generator,
                   sampler=rule, size=size, x_T=x_T, same_noise=same_noise, image=pixels,
                   strength=strength, hint=hints)
    if runs:
        return tuple((to_image(part),) for part in generator.split(x))
    return to_image(x)


def _inputs(decoder, image_embeds, text, noise, image, hint, images_per_embedding, width, height,
            options: dict | None = None):
    """What one decode samples from: (conditioning, size, img2img pixels, hints, x_T)."""
    check_width(decoder, image_embeds)
    cond = decoder.conditioning(image_embeds, text, images_per_embedding, **(options or {}))
    if noise is not None and width == 0 and height == 0:
        size = decoder.size_of(noise)
    else:
        size = decoder.output_size(width, height)
    check_sample_pixels(*size, field="width" if width or not height else "height")
    embeds = image_embeds.image_embeds.shape[0]
    pixels = None
    if image is not None:
        pixels = image_rows(pixels_at(image, size), cond.rows, embeds)
    hints = hint_rows(hint, cond.rows, embeds, size) if hint is not None else None
    return cond, size, pixels, hints, noise


def check_width(decoder, image_embeds: ImageEmbeds, field: str = "image_embeds") -> None:
    """Embeddings of another width than the decoder's, said at run time with the CLIP they look
    like: validation cannot know the width of an embedding that came from outside (ComfyUI's
    CLIPVisionEncode through ClipVisionToImageEmbeds)."""
    z = getattr(image_embeds, "image_embeds", None)
    want = getattr(decoder, "clip_dim", None)
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or want is None or z.shape[1] == want:
        return  # the decoder's own checks say what else is wrong
    who = f"this {getattr(decoder, 'label', None) or decoder.family} decoder"
    raise UserError(f"{field} holds " + width_mismatch(z.shape[1], want,
                                                       getattr(decoder, "space", None), who),
                    field=field)


def cat_rows(conds: list[Conditioning]) -> Conditioning:
    """Several runs' conditioning, one after the other (one model call for all)."""
    def cat(values):
        if values[0] is None:
            return None
        if isinstance(values[0], tuple):
            return tuple(cat([v[i] for v in values]) for i in range(len(values[0])))
        if isinstance(values[0], dict):
            return {k: cat([v[k] for v in values]) for k in values[0]}
        return torch.cat(values)
    return Conditioning(*(cat([getattr(c, f) for c in conds])
                          for f in ("image_embeds", "negative", "text", "uncond", "extra")))
