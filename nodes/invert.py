"""The bipartite latent (paper §3): an image as (z_i, x_T).

z_i is the image's CLIP embedding (CLIPImageEncode).  x_T is found by running the decoder's
deterministic DDIM update backwards from the image (DDIM inversion), conditioned on z_i: each
step predicts the noise at the current point and moves one step *up* the schedule along it.
Decoding (z_i, x_T) with ``sampler: ddim``, ``eta: 0`` and the same steps and guidance retraces
the path and gives the image back (up to the model's error between neighbouring steps);
``eta`` > 0 adds fresh noise along the way, so the results vary around the image, more as eta
grows.
"""
from __future__ import annotations

import torch

from . import runtime
from .core.sampling import DDIMSampler, make_generator, plain
from .declare import SEED_MAX, Input, Output, Param, node
from .decoder import check_links, check_width, draw_conditioning
from .errors import UserError
from .image import check_image
from .types import ImageEmbeds, TextEmbeds
from .widgets import CONDITIONING_PARAMS, conditioning_options


def ddim_invert(model, sampler: DDIMSampler, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """x_0 [B, C, S, S] in [-1, 1] -> x_T for ``sampler``'s ``steps`` timesteps.

    The sampling chain is t_0 > t_1 > ... > t_{n-1} = 0 -> clean; inversion walks it the other
    way, clean -> 0 -> ... -> t_0, each move using the model's output at its starting point
    (at 0 for the clean image)."""
    timesteps = sampler.timesteps(steps)
    levels = [None] + timesteps[::-1]
    x = x0.float()
    for i in runtime.steps(len(timesteps), "invert"):
        here, there = levels[i], levels[i + 1]
        out = model(x, 0 if here is None else here)
        x = sampler.invert_step(out, here, there, x)
    return x


@node("DDIMInvert", category="unCLIP/edit",
      description="Find the decoder noise x_T that decodes (DDIM, eta 0) back to an image: with "
                  "the image's CLIP embedding it is the image's bipartite latent.",
      inputs=[Input("decoder", "UNCLIP_DECODER"),
              Input("image", "IMAGE", tooltip="resized to the decoder's size (Karlo: centre crop; "
                                               "Kandinsky 2.2: its own size, rounded up to 64; "
                                               "Stable unCLIP: rounded up to 8)"),
              Input("image_embeds", "UNCLIP_IMAGE_EMBEDS",
                    tooltip="the image's own embedding (CLIPImageEncode), one per image"),
              Input("text", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="a caption; the empty prompt when absent. Decode with the same")],
      params=[Param("steps", "INT", default=25, min=2, max=1000,
                    tooltip="decode with the same number of steps"),
              Param("guidance_scale", "FLOAT", default=1.0, min=0.0, max=100.0, step=0.1,
                    tooltip="decode with the same; 1 (no guidance) inverts best"),
              Param("seed", "INT", default=0, min=0, max=SEED_MAX,
                    tooltip="Stable unCLIP: seeds the image embedding's noise augmentation; "
                            "decode with the same seed (other models draw nothing here)"),
              *CONDITIONING_PARAMS[:3]],
      outputs=[Output("noise", "UNCLIP_LATENT", "x_T, one per image; link to Decoder.noise")],
      infer=lambda params, inputs: check_links(inputs, "invert", params))
def ddim_invert_node(decoder, image: torch.Tensor, image_embeds: ImageEmbeds,
                     text: TextEmbeds | None = None, steps: int = 25,
                     guidance_scale: float = 1.0, seed: int = 0, noise_level: int = 0,
                     prompt: str = "", negative_prompt: str = ""):
    if decoder is None:
        raise UserError("no decoder is linked (the checkpoint has none)", field="decoder")
    check_image(image)
    if decoder.variant != "text2img":
        raise UserError(f"DDIMInvert needs a text-to-image decoder; this one is a "
                        f"{decoder.variant} decoder", field="decoder")
    options = conditioning_options(noise_level=noise_level, prompt=prompt,
                                   negative_prompt=negative_prompt)
    check_width(decoder, image_embeds)
    cond = decoder.conditioning(image_embeds, text, 1, **options)
    b = image.shape[0]
    if cond.rows != b:
        if cond.rows != 1:
            raise UserError(f"{b} images but {cond.rows} embeddings: give one embedding per "
                            f"image (CLIPImageEncode of the same images)", field="image_embeds")
        cond = decoder.conditioning(image_embeds, text, b, **options)
    cond = draw_conditioning(decoder, cond, make_generator(seed))
    decoder.check_guidance(cond, guidance_scale)
    sampler = decoder.sampler("ddim", 0.0)
    with torch.inference_mode():
        x0 = decoder.encode(decoder.fit_image(image.float()).to(decoder.device))
        model = decoder.model(cond, guidance_scale)
        x_T = ddim_invert(model, sampler, x0, steps)
    return plain(x_T).contiguous()
