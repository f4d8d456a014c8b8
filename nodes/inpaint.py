"""Inpainting (and, with OutpaintPad, outpainting) with any unCLIP decoder.

Each family inpaints in its own way (``DecoderBackend.inpaint``): Karlo's decoder was never
trained to inpaint, so it repaints RePaint-style (Lugmayr et al. 2022), overwriting the region to
keep with the original noised to each step's level; Kandinsky 2.2 has an inpainting UNet.  What
this node adds is the same for all: images and embeddings paired row by row, the mask fitted to
the image, and at the end the original pixels pasted back at the input's own resolution wherever
the mask is 0, so those pixels are bit-identical to the input.  ``feather`` fades the generated
pixels in over a few pixels *inside* the mask; it never touches a pixel outside it.  MASK follows
ComfyUI: 1 = change.
"""
from __future__ import annotations

import logging

import torch

from .core.backends import DecoderBackend, UpsamplerBackend
from .declare import Input, Output, Param, node
from .decoder import check_links, check_width
from .errors import UserError
from .image import check_image
from .mask import fit_mask, grow
from .types import ImageEmbeds, TextEmbeds
from .widgets import (CONDITIONING_PARAMS, DECODER_GUIDANCE, SEED_PARAM, conditioning_options,
                      guidance_param)

log = logging.getLogger(__name__)


# --- compositing ------------------------------------------------------------------------------------

def feather_weights(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """How much of the generated image each pixel takes: the mask itself, times a ramp that
    rises from 1/(pixels+1) on the mask's edge to 1 at ``pixels`` inside.  0 wherever the mask
    is 0, so feathering never reaches a kept pixel."""
    if pixels <= 0:
        return mask
    hard = (mask > 0).float()
    ramp = sum(grow(hard, -k) for k in range(pixels + 1)) / (pixels + 1)
    return mask * ramp


def composite(original: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor,
              pixels: int) -> torch.Tensor:
    """Original pixels where the mask is 0 (exactly), the generated ones blended in elsewhere.
    ``generated`` is RGB [B, H, W, 3]; ``original`` keeps its channel count (alpha is kept, a
    grey image gets the generated grey)."""
    c = original.shape[-1]
    colour = original[..., :3] if c >= 3 else original
    gen = generated.mean(-1, keepdim=True) if c == 1 else generated
    w = feather_weights(mask, pixels)[..., None]
    blended = torch.where(mask[..., None] > 0, colour * (1 - w) + gen * w, colour)
    if c == 4:
        blended = torch.cat([blended, original[..., 3:]], dim=-1)
    return blended.contiguous()


# --- the node -------------------------------------------------------------------------------------

def pair_rows(decoder, image: torch.Tensor, mask: torch.Tensor,
              image_embeds: ImageEmbeds, text: TextEmbeds | None, count: int = 1,
              options: dict | None = None):
    """Match images and embeddings row by row (equal numbers, or one of them is one), then
    ``count`` results for each pair, consecutive.  Returns (image, mask, Conditioning)."""
    options = options or {}
    check_width(decoder, image_embeds)  # from outside (ComfyUI's CLIPVisionEncode): said so
    n, b = decoder.conditioning(image_embeds, text, 1, **options).rows, image.shape[0]
    if n == b or b == 1:
        per, rows = count, n * count
    elif n == 1:
        per, rows = b * count, b * count
    else:
        raise UserError(f"{b} images and {n} embeddings cannot be paired: give one image, one "
                        f"embedding, or as many of each", field="image_embeds")
    cond = decoder.conditioning(image_embeds, text, per, **options)
    if b == 1:
        image, mask = image.expand(rows, *image.shape[1:]), mask.expand(rows, *mask.shape[1:])
    elif count > 1:
        image, mask = image.repeat_interleave(count, 0), mask.repeat_interleave(count, 0)
    return image, mask, cond


@node("Inpaint", category="unCLIP/edit",
      description="Repaint the masked part of an image (mask 1 = change) with the decoder, and "
                  "the upsampler if linked, guided by an image embedding and optional captions; "
                  "the rest stays exactly as it was.",
      inputs=[Input("decoder", "UNCLIP_DECODER"),
              Input("image", "IMAGE", tooltip="any size; the output has the same size"),
              Input("mask", "MASK", tooltip="1 = change, 0 = keep (ComfyUI's convention); the "
                                            "image's size or the same aspect ratio"),
              Input("image_embeds", "UNCLIP_IMAGE_EMBEDS",
                    tooltip="what the result should show: from a Prior (text) or CLIPImageEncode"),
              Input("text", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="captions for the decoder; the empty prompt when absent"),
              Input("upsampler", "UNCLIP_UPSAMPLER", optional=True,
                    tooltip="also repaint at the upsampler's resolution (sharper fill)")],
      params=[Param("steps", "INT", default=25, min=2, max=1000,
                    tooltip="Decoder sampling steps for the fill; 25 is Karlo's default, and the "
                            "time grows with steps x resample."),
              guidance_param(1.0, DECODER_GUIDANCE),
              SEED_PARAM,
              Param("resample", "INT", default=1, min=1, max=50,
                    tooltip="RePaint jumps: each step is done this many times, diffusing back "
                            "in between (more = better blended, slower)"),
              Param("feather", "INT", default=0, min=0, max=1024,
                    tooltip="fade the generated pixels in over this many pixels inside the mask "
                            "(kept pixels are never touched)"),
              Param("upsample_steps", "INT", default=7, min=2, max=1000,
                    tooltip="upsampler steps, when an upsampler is linked"),
              Param("count", "INT", default=1, min=1, max=64,
                    tooltip="results per image (each with its own noise), consecutive"),
              *CONDITIONING_PARAMS],
      outputs=[Output("image", "IMAGE", "the input's size; unmasked pixels unchanged")],
      infer=lambda params, inputs: check_links(inputs, "inpaint", params))
def inpaint_node(decoder: DecoderBackend, image: torch.Tensor, mask: torch.Tensor,
                 image_embeds: ImageEmbeds, text: TextEmbeds | None = None,
                 upsampler: UpsamplerBackend | None = None, steps: int = 25,
                 guidance_scale: float = 1.0, seed: int = 0, resample: int = 1,
                 feather: int = 0, upsample_steps: int = 7, count: int = 1,
                 noise_level: int = 0, prompt: str = "", negative_prompt: str = "",
                 per_image_noise: bool = False):
    if decoder is None:
        raise UserError("no decoder is linked (the checkpoint has none)", field="decoder")
    check_image(image)
    if image.shape[-1] not in (1, 3, 4):
        raise UserError(f"expected 1, 3 or 4 channels, got {image.shape[-1]}", field="image")
    mask = fit_mask(mask, image)
    if float(mask.min()) < 0 or float(mask.max()) > 1:
        raise UserError("mask values must lie in 0..1 (1 = change)", field="mask")
    options = conditioning_options(noise_level=noise_level, prompt=prompt,
                                   negative_prompt=negative_prompt,
                                   per_image_noise=per_image_noise)
    image, mask, cond = pair_rows(decoder, image, mask, image_embeds, text, count, options)
    decoder.check_guidance(cond, guidance_scale)
    if decoder.variant == "inpaint" and upsampler is not None:
        raise UserError("an inpainting decoder draws at full resolution; unlink the "
                        "upsampler", field="upsampler")
    if decoder.cannot_inpaint:
        raise UserError(decoder.cannot_inpaint, field="decoder")
    if float(mask.max()) == 0:  # e.g. a mask editor's work that never reached this node
        log.warning("Inpaint: the mask is empty (all zeros), so nothing is repainted and the "
                    "image comes back as it was; paint the area to change (mask 1 = change)")
        return image.float().contiguous()
    generated = decoder.inpaint(image, mask, cond, upsampler, guidance_scale=guidance_scale,
                                steps=steps, upsample_steps=upsample_steps, seed=seed,
                                resample=resample)
    return composite(image.float(), generated, mask, feather)
