"""The backend protocols: what the stage nodes ask of a family's handles.

The stage nodes (``nodes/<stage>.py``) call only these; each family's handles implement them in
their own way (Karlo: a 64 px pixel-space UNet conditioned through text_proj, and an upsampler;
Kandinsky 2.2: a latent UNet + MoVQ; and so on).  ``Conditioning`` is what a decoder samples
from, one row per image to draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..types import ImageEmbeds, TextEmbeds
from .sampling import Sampler, StepCallback


@dataclass(frozen=True)
class Conditioning:
    """What a decoder is conditioned on, one row per image to draw."""

    image_embeds: torch.Tensor                  # z_i [N, D]
    negative: torch.Tensor | None = None        # [N, D]: what guidance pushes away from
    text: tuple | None = None                   # (pooled, hidden, mask), for decoders that read text
    uncond: tuple | None = None                 # the same for the unconditional branch
    extra: dict | None = None                   # anything else a family's model reads, per row

    @property
    def rows(self) -> int:
        return self.image_embeds.shape[0]


class TextBackend(Protocol):
    """A CLIP text tower (CLIPTextEncode)."""

    family: str
    clip_dim: int
    space: str | None
    device: torch.device

    def encode(self, prompts: list[str]) -> TextEmbeds:
        """The prompts' embeddings with their unconditional branch."""


class VisionBackend(Protocol):
    """A CLIP image tower and its preprocessing (CLIPImageEncode)."""

    family: str
    clip_dim: int
    space: str | None
    image_encoder: torch.nn.Module
    preprocess: dict

    def negative_embeds(self) -> torch.Tensor | None:
        """The negative image embedding the family's decoder guides against, or None."""


class PriorBackend(Protocol):
    """A diffusion prior (the Prior node's loop drives its transformer)."""

    family: str
    clip_dim: int
    prior: torch.nn.Module
    num_embeddings: int
    samples_negative: bool

    def sampler(self) -> Sampler: ...

    def negative_embeds(self) -> torch.Tensor | None: ...


class DecoderBackend(Protocol):
    """What the Decoder, Inpaint and DDIMInvert nodes ask of a decoder handle."""

    family: str
    clip_dim: int          # width of the image embeddings it takes
    space: str | None      # their CLIP, when known
    variant: str           # "text2img", "inpaint" (extra input channels) or "controlnet" (hint)
    takes_text: bool       # whether it reads captions
    cannot_inpaint: str | None  # why Inpaint cannot use it (None: it can)
    settings: tuple[str, ...]  # the family-specific Decoder settings it reads (noise_level...)
    device: torch.device

    def conditioning(self, image_embeds: ImageEmbeds, text: TextEmbeds | None,
                     images_per_embedding: int, **options) -> Conditioning:
        """Pair embeddings (and captions) row by row; UserError naming the field if they do not
        fit.  ``options``: the Decoder's family-specific settings (``noise_level``...)."""

    def draw(self, cond: Conditioning, generator) -> Conditioning:
        """Optional: the conditioning's own random numbers (e.g. noise augmentation of the
        image embedding), drawn from the decode's generator before anything else.  Nodes call
        it when the handle has it; a family whose conditioning draws nothing leaves it out."""

    def check_guidance(self, cond: Conditioning, guidance_scale: float) -> None:
        """UserError when guidance is asked for but the conditioning lacks its other branch."""

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) in pixels that a request gives (0 = the model's own size)."""

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the sample the loop runs on for that pixel size."""

    def size_of(self, latent: torch.Tensor) -> tuple[int, int]:
        """(height, width) in pixels that a sample [B, C, h, w] decodes to."""

    def model(self, cond: Conditioning, guidance_scale: float,
              hint: torch.Tensor | None = None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The decoder as ``(x, t) -> model output`` with the conditioning prepared once."""

    def sampler(self, name: str, eta: float) -> Sampler:
        """The update rule from the checkpoint's scheduler config ("unclip") or DDIM."""

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """A finished sample -> pixels [B, 3, H, W] in [-1, 1]."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] in [-1, 1] at an ``output_size`` -> the clean sample x_0."""

    def fit_image(self, image: torch.Tensor) -> torch.Tensor:
        """An IMAGE -> pixels [B, 3, H, W] in [-1, 1] at the size this decoder works at."""

    def inpaint(self, image: torch.Tensor, mask: torch.Tensor, cond: Conditioning,
                upsampler: "UpsamplerBackend | None", *, guidance_scale: float, steps: int,
                upsample_steps: int, seed: int, resample: int) -> torch.Tensor:
        """The family's own inpainting: image [N, H, W, C] in 0..1 and mask [N, H, W] (1 =
        change) -> generated IMAGE [N, H, W, 3] at the image's size.  The Inpaint node pastes
        the kept pixels back, so only the masked region of the result is used."""


class UpsamplerBackend(Protocol):
    """A diffusion super-resolution stage (the Upsample node)."""

    family: str
    device: torch.device
    sample_size: int       # the output's side in pixels
    channels: int          # image channels it works on

    def sampler(self) -> Sampler: ...

    def upsample(self, low_res: torch.Tensor, *, steps: int, generator, sampler: Sampler,
                 callback: StepCallback | None = None, resample: int = 1) -> torch.Tensor:
        """[B, C, h, w] in [-1, 1] -> [B, C, S, S] float32 (not clamped)."""
