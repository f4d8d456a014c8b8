"""The upsampler: a diffusion super-resolution stage (64 -> 256 px in Karlo).

An unconditional UNet denoises full-resolution noise stacked with the low-resolution image,
upscaled bicubically (antialiased).  No guidance.  Karlo trains a separate UNet for the last step
(``super_res_last``); every other step uses ``super_res_first``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import runtime
from .declare import Input, Output, Param, node
from .facts import handle
from .decoder import from_image, to_image
from .errors import UserError
from .families.karlo import UpsamplerModel
from .sampling import (SEED_PARAM, Generators, Sampler, StepCallback, UnCLIPSampler,
                       make_generator, noise, step_tensor)


def sample_upsampler(first, last, low_res: torch.Tensor, *, steps: int,
                     generator: torch.Generator, sampler: Sampler,
                     x_T: torch.Tensor | None = None,
                     callback: StepCallback | None = None, resample: int = 1) -> torch.Tensor:
    """Sample a high-resolution image given ``low_res`` [B, C, h, w] in [-1, 1]; returns
    [B, C, S, S] float32 (not clamped).  Draws: x_T (unless given), then one per step but the
    last.  ``callback(i, t, prev_t, x) -> x`` runs after each step; ``resample`` as in
    ``sample_decoder`` (RePaint's jumps)."""
    device, dtype = first.device, first.dtype
    channels, size = first.config.in_channels // 2, first.config.sample_size
    timesteps = sampler.timesteps(steps)
    if x_T is None:
        x = noise((low_res.shape[0], channels, size, size), generator, device)
    else:
        x = x_T.to(device=device, dtype=torch.float32)
    x = x * sampler.init_noise_sigma
    cond = F.interpolate(low_res.to(device, torch.float32), size=[size, size], mode="bicubic",
                         align_corners=False, antialias=True)
    for i in runtime.steps(len(timesteps), "upsampler"):
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        unet = last if prev_t is None else first
        for jump in range(resample if prev_t is not None else 1):
            if jump > 0:
                x = sampler.renoise(x, prev_t, t, noise(x.shape, generator, device))
            out = unet(sample=torch.cat([x, cond], dim=1).to(dtype),
                       timestep=step_tensor(t)).sample.float()
            x = sampler.step(out, t, prev_t, x, generator)
            if callback is not None:
                x = callback(i, t, prev_t, x)
    return x


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
def upsample_node(upsampler: UpsamplerModel, image: torch.Tensor, steps: int, seed: int):
    if upsampler is None:
        raise UserError("no upsampler is linked (the checkpoint has none)", field="upsampler")
    runs = seed if isinstance(seed, tuple) else None
    images = image if isinstance(image, tuple) else (image,) * (len(runs) if runs else 1)
    for one in images:
        if one.ndim != 4 or one.shape[-1] not in (1, 3, 4):
            raise UserError(f"expected IMAGE [B, H, W, C] with 1, 3 or 4 channels, got shape "
                            f"{tuple(one.shape)}", field="image")
    channels = int(upsampler.config("super_res_first").get("in_channels", 6)) // 2
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
        x = sample_upsampler(upsampler.first, upsampler.last, low, steps=steps,
                             generator=generator,
                             sampler=UnCLIPSampler(upsampler.scheduler_config))
    if runs:
        return tuple((to_image(part),) for part in generator.split(x))
    return to_image(x)
