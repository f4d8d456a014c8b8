"""The upsampler: a diffusion super-resolution stage (paper §2.1: 64 -> 256 px).

The node drives any family's UpsamplerBackend (``core/backends.py``): the family's handle runs
its own loop (Karlo: an unconditional UNet denoising full-resolution noise stacked with the
upscaled low-resolution image, a separate UNet for the last step).  Families that draw at full
resolution have no upsampler; validation says so where one is linked.
"""
from __future__ import annotations

import torch

from .core.backends import UpsamplerBackend
from .core.facts import handle
from .core.pixels import from_image, to_image
from .core.sampling import Generators, make_generator
from .declare import Input, Output, Param, node
from .errors import UserError
from .widgets import SEED_PARAM


@node("Upsample", category="unCLIP/sampling",
      description="Upscale images with the checkpoint's diffusion upsampler (the last step uses "
                  "super_res_last, as Karlo does).",
      inputs=[Input("upsampler", "UNCLIP_UPSAMPLER"), Input("image", "IMAGE")],
      params=[Param("steps", "INT", default=7, min=2, max=1000,
                    tooltip="Sampling steps of the upsampler; 7 is Karlo's default and usually "
                            "enough, more is slower."),
              SEED_PARAM],
      outputs=[Output("image", "IMAGE")],
      infer=lambda params, inputs: handle(inputs, "upsampler") and None, batch="seed")
def upsample_node(upsampler: UpsamplerBackend, image: torch.Tensor, steps: int, seed: int):
    if upsampler is None:
        raise UserError("the linked upsampler is empty: its loader's checkpoint has no upsampler "
                        "(families that decode at full resolution have none: set the "
                        "Decoder's width and height instead)", field="upsampler")
    runs = seed if isinstance(seed, tuple) else None
    images = image if isinstance(image, tuple) else (image,) * (len(runs) if runs else 1)
    for one in images:
        if one.ndim != 4 or one.shape[-1] not in (1, 3, 4):
            raise UserError(f"expected IMAGE [B, H, W, C] with 1, 3 or 4 channels, got shape "
                            f"{tuple(one.shape)}", field="image")
    channels = upsampler.channels
    if channels != 3:
        raise UserError(f"this upsampler works on {channels}-channel images, not RGB",
                        field="upsampler")
    if runs:  # --batch: one upsampling per seed, each of its own image, in one model call
        lows = [from_image(one) for one in images]
        if len({tuple(lo.shape[1:]) for lo in lows}) > 1:
            raise UserError("batched upsamplings must have one size; run without --batch",
                            field="seed")
        generator = Generators([(make_generator(s), lo.shape[0]) for s, lo in zip(runs, lows)])
        low = torch.cat(lows)
    else:
        generator, low = make_generator(seed), from_image(image)
    with torch.inference_mode():
        x = upsampler.upsample(low, steps=steps, generator=generator,
                               sampler=upsampler.sampler())
    if runs:
        return tuple((to_image(part),) for part in generator.split(x))
    return to_image(x)
