"""Inpainting (and, with OutpaintPad, outpainting) with any unCLIP decoder, RePaint style.

The decoder was never trained to inpaint.  Instead, after every sampling step the region to keep
is overwritten with the original image noised to the step's timestep (Lugmayr et al. 2022,
"RePaint"), so the model only ever fills in the masked region around a context it agrees with.
``resample`` > 1 repeats each step after diffusing back up one step (RePaint's jumps), which gives
the filled-in region more chances to agree with the kept one.  The upsampler, when linked, gets
the same treatment at its resolution.

Nothing the user kept is lost: at the end the original pixels are pasted back at the input's own
resolution wherever the mask is 0, so those pixels are bit-identical to the input.  ``feather``
fades the generated pixels in over a few pixels *inside* the mask; it never touches a pixel
outside it.  MASK follows ComfyUI: 1 = change.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .declare import Input, Output, Param, node
from .decoder import check_links, from_image, sample_decoder, to_image
from .errors import UserError
from .image import check_image
from .loaders import DecoderModel, UpsamplerModel
from .mask import fit_mask, grow
from .sampling import SEED_PARAM, guidance_param, UnCLIPSampler, make_generator, noise
from .types import ImageEmbeds, TextEmbeds
from .upsample import sample_upsampler


# --- geometry -------------------------------------------------------------------------------------

def square_canvas(image: torch.Tensor, mask: torch.Tensor):
    """The image centred on a square canvas (the diffusion models are square); the added margin
    is masked (1), so it is generated and then cropped away.  Returns (image, mask, box) with
    box = (top, left, height, width) of the original on the canvas."""
    b, h, w, c = image.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if side == h == w:
        return image, mask, (0, 0, h, w)
    canvas = torch.zeros(b, side, side, c, dtype=image.dtype)
    canvas[:, top:top + h, left:left + w] = image
    m = torch.ones(b, side, side, dtype=mask.dtype)
    m[:, top:top + h, left:left + w] = mask
    return canvas, m, (top, left, h, w)


def resize_x(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] to size x size (antialiased bicubic, clamped)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                         antialias=True).clamp(-1, 1)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W] -> [B, 1, size, size].  Shrinking keeps a pixel's largest value (a low-res pixel
    is generated if any of the pixels it covers is to change); growing is nearest-neighbour."""
    m = mask[:, None].float()
    if m.shape[-1] == size and m.shape[-2] == size:
        return m
    if m.shape[-1] > size:
        return F.adaptive_max_pool2d(m, (size, size))
    return F.interpolate(m, size=(size, size), mode="nearest-exact")


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


# --- the RePaint loops ----------------------------------------------------------------------------

def repaint_callback(sampler, known: torch.Tensor, keep: torch.Tensor, generator):
    """A StepCallback that puts the known image, noised to the step's level, where ``keep`` is 1
    (soft values blend).  After the last step the known image goes in as it is."""
    def callback(i, t, prev_t, x):
        if prev_t is None:
            target = known
        else:
            target = sampler.add_noise(known, noise(known.shape, generator, known.device), prev_t)
        return keep * target + (1 - keep) * x
    return callback


def inpaint(decoder: DecoderModel, upsampler: UpsamplerModel | None, image: torch.Tensor,
            mask: torch.Tensor, z: torch.Tensor, cond, uncond, *, guidance_scale: float,
            steps: int, upsample_steps: int, seed: int, resample: int,
            feather: int) -> torch.Tensor:
    """image [B, H, W, C] and a fitted mask [B, H, W] -> inpainted image [B, H, W, C]."""
    canvas, cmask, (top, left, h, w) = square_canvas(image.float(), mask)
    device = decoder.device
    generator = make_generator(seed)
    x_full = from_image(canvas).to(device)
    size = decoder.sample_size
    known = resize_x(x_full, size)
    keep = 1 - resize_mask(cmask, size).to(device)
    sampler = UnCLIPSampler(decoder.scheduler_config)
    with torch.inference_mode():
        x = sample_decoder(decoder.decoder, decoder.text_proj, z, cond, uncond,
                           guidance_scale=guidance_scale, steps=steps, generator=generator,
                           sampler=sampler, resample=resample,
                           callback=repaint_callback(sampler, known, keep, generator))
        if upsampler is not None:
            up_size = upsampler.sample_size
            known_hi = resize_x(x_full, up_size).to(upsampler.device)
            keep_hi = 1 - resize_mask(cmask, up_size).to(upsampler.device)
            up_sampler = UnCLIPSampler(upsampler.scheduler_config)
            x = sample_upsampler(upsampler.first, upsampler.last, x, steps=upsample_steps,
                                 generator=generator, sampler=up_sampler, resample=resample,
                                 callback=repaint_callback(up_sampler, known_hi, keep_hi,
                                                           generator)).clamp(-1, 1)
    side = canvas.shape[1]
    generated = to_image(resize_x(x.float().cpu(), side))[:, top:top + h, left:left + w]
    return composite(image.float(), generated, mask, feather)


# --- the node -------------------------------------------------------------------------------------

def pair_rows(decoder, image: torch.Tensor, mask: torch.Tensor,
              image_embeds: ImageEmbeds, text: TextEmbeds | None, count: int = 1):
    """Match images and embeddings row by row (equal numbers, or one of them is one), then
    ``count`` results for each pair, consecutive.  Returns (image, mask, Conditioning)."""
    n, b = decoder.conditioning(image_embeds, text, 1).rows, image.shape[0]
    if n == b or b == 1:
        per, rows = count, n * count
    elif n == 1:
        per, rows = b * count, b * count
    else:
        raise UserError(f"{b} images and {n} embeddings cannot be paired: give one image, one "
                        f"embedding, or as many of each", field="image_embeds")
    cond = decoder.conditioning(image_embeds, text, per)
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
              guidance_param(8.0),
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
                    tooltip="results per image (each with its own noise), consecutive")],
      outputs=[Output("image", "IMAGE", "the input's size; unmasked pixels unchanged")],
      infer=lambda params, inputs: check_links(inputs, "inpaint"))
def inpaint_node(decoder, image: torch.Tensor, mask: torch.Tensor,
                 image_embeds: ImageEmbeds, text: TextEmbeds | None = None,
                 upsampler: UpsamplerModel | None = None, steps: int = 25,
                 guidance_scale: float = 8.0, seed: int = 0, resample: int = 1,
                 feather: int = 0, upsample_steps: int = 7, count: int = 1):
    if decoder is None:
        raise UserError("no decoder is linked (the checkpoint has none)", field="decoder")
    check_image(image)
    if image.shape[-1] not in (1, 3, 4):
        raise UserError(f"expected 1, 3 or 4 channels, got {image.shape[-1]}", field="image")
    mask = fit_mask(mask, image)
    if float(mask.min()) < 0 or float(mask.max()) > 1:
        raise UserError("mask values must lie in 0..1 (1 = change)", field="mask")
    image, mask, cond = pair_rows(decoder, image, mask, image_embeds, text, count)
    decoder.check_guidance(cond, guidance_scale)
    if decoder.variant == "inpaint":
        if upsampler is not None:
            raise UserError("an inpainting decoder draws at full resolution; unlink the "
                            "upsampler", field="upsampler")
        return inpaint_with_decoder(decoder, image, mask, cond, guidance_scale=guidance_scale,
                                    steps=steps, seed=seed, resample=resample, feather=feather)
    if decoder.variant != "text2img" or not hasattr(decoder, "text_proj"):
        raise UserError(f"Inpaint needs an inpainting decoder for {decoder.family}: load its "
                        f"decoder-inpaint folder (this one is {decoder.variant})",
                        field="decoder")
    return inpaint(decoder, upsampler, image, mask, cond.image_embeds, cond.text, cond.uncond,
                   guidance_scale=guidance_scale, steps=steps, upsample_steps=upsample_steps,
                   seed=seed, resample=resample, feather=feather)


def inpaint_with_decoder(decoder, image: torch.Tensor, mask: torch.Tensor, cond, *,
                         guidance_scale: float, steps: int, seed: int, resample: int,
                         feather: int) -> torch.Tensor:
    """A decoder trained to inpaint (Kandinsky 2.2's decoder-inpaint): it works at the image's
    own size rounded up to whole UNet cells; the result is resized back and composited, so the
    kept pixels are exactly the input's."""
    from .families.kandinsky22 import inpaint_latents
    h, w = image.shape[1:3]
    pixels = decoder.fit_image(image.float())
    size = tuple(pixels.shape[-2:])
    change = mask[:, None].float()
    if tuple(change.shape[-2:]) != size:
        change = F.interpolate(change, size=size, mode="nearest-exact")
    with torch.inference_mode():
        x = inpaint_latents(decoder, cond, pixels, change, guidance_scale=guidance_scale,
                            steps=steps, seed=seed, sampler=decoder.sampler("unclip", 0.0),
                            resample=resample)
    generated = to_image(x.float().cpu())
    if tuple(generated.shape[1:3]) != (h, w):
        from .image import resize
        generated = resize(generated, w, h, "bicubic", "none")
    return composite(image.float(), generated, mask, feather)
