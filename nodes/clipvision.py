"""Interop with ComfyUI's ``CLIP_VISION_OUTPUT``: our image embeddings to ComfyUI and back.

ComfyUI's ``CLIPVisionEncode`` gives a ``CLIP_VISION_OUTPUT`` (``comfy.clip_vision.Output``) and
``unCLIPConditioning`` takes one; what ComfyUI's unCLIP models read of it is ``image_embeds``
alone: [B, D], each row in turn (``for row in out.image_embeds``), moved to the model's device,
noise-augmented in float32.  So

* ``ImageEmbedsToClipVision`` hands our Prior's (or any of our nodes') embeddings to ComfyUI's
  native unCLIP checkpoints: a Karlo prior's ViT-L/14 768-d embedding into SD 2.1 unCLIP small
  (-l), a Kandinsky 2.2 prior's ViT-bigG 1280-d embedding into SDXL Revision, both through
  ``unCLIPConditioning``.  Inside ComfyUI the output is ComfyUI's own Output class, its tensor
  on ComfyUI's intermediate device (where CLIPVisionEncode leaves its own).
* ``ClipVisionToImageEmbeds`` lets ComfyUI's ``CLIPVisionEncode`` drive our decoders and
  CLIP-space edits (Slerp, TextDiff, MixEmbeds).

Batches: unCLIPConditioning does not make a batch of B conditionings from B rows; it noise-
augments each row, weights it by ``strength`` and *sums* them into one (SD 2.1 unCLIP then
noises the sum again at ``unclip_noise_augment_merge``, 0.05 of the schedule), which every
image of the latent batch shares.  ``row`` picks one row to hand on.

Which CLIP: our own embeddings carry their width and space at validation (facts), so a
mismatch there is found before anything runs; an output of ComfyUI's CLIPVisionEncode is known
only at run time, where the decoder (``decoder.check_width``) or the linked ``clip_vision`` says
which CLIP the embedding looks like, which one it takes, and what to load instead.
"""
from __future__ import annotations

import torch

from .core.facts import handle, same_width, width
from .core.handles import ClipVisionModel, width_mismatch
from .core.sampling import plain
from .declare import Input, Output, Param, node
from .errors import UserError
from .types import NEGATIVE_KEY, ImageEmbeds, clip_vision_output, clip_vision_values

CATEGORY = "unCLIP/conditioning"
MAX_ROW = 4095


def _infer_to_comfy(params: dict, inputs: dict) -> dict:
    return {"clip_vision_output": width(inputs.get("image_embeds"))}


@node("ImageEmbedsToClipVision", category=CATEGORY,
      description="Hand our CLIP image embeddings (from the Prior, CLIPImageEncode or an edit) "
                  "to ComfyUI as a CLIP_VISION_OUTPUT, e.g. into ComfyUI's unCLIPConditioning: "
                  "a Karlo prior's 768-d ViT-L/14 embedding drives SD 2.1 unCLIP small (-l), a "
                  "Kandinsky 2.2 prior's 1280-d ViT-bigG one drives SDXL Revision. Only "
                  "image_embeds is set (ComfyUI's unCLIP models read nothing else).",
      inputs=[Input("image_embeds", "UNCLIP_IMAGE_EMBEDS",
                    tooltip="z_i [B, D]; its CLIP must be the one the ComfyUI model was trained "
                            "on (768-d ViT-L/14 for SD 2.1 unCLIP -l, 1024-d ViT-H/14 for -h, "
                            "1280-d ViT-bigG for SDXL Revision)")],
      params=[Param("row", "INT", default=-1, min=-1, max=MAX_ROW,
                    tooltip="-1: every row. unCLIPConditioning sums the rows of one output "
                            "(each noised and weighted by strength) into ONE conditioning that "
                            "all images share; it does not make one image per row. 0, 1, ...: "
                            "hand on that row only (one prompt or candidate of the Prior).")],
      outputs=[Output("clip_vision_output", "CLIP_VISION_OUTPUT",
                      "ComfyUI's CLIP vision output with image_embeds [B, D] (or [1, D] with a "
                      "row), float32")],
      infer=_infer_to_comfy)
def image_embeds_to_clip_vision(image_embeds: ImageEmbeds, row: int = -1):
    z = _embeds(getattr(image_embeds, "image_embeds", None), "image_embeds")
    neg = image_embeds.negative_image_embeds
    if row >= 0:
        if row >= z.shape[0]:
            raise UserError(f"row {row} does not exist: image_embeds has {z.shape[0]} row"
                            f"{'s' if z.shape[0] != 1 else ''} (0 to {z.shape[0] - 1}); give "
                            f"one of them or -1 for all", field="row")
        z = z[row:row + 1]
        if neg is not None and neg.shape[0] > 1:
            neg = neg[row:row + 1]
    return clip_vision_output(**{"image_embeds": plain(z).contiguous(),
                                 NEGATIVE_KEY: None if neg is None else plain(neg).contiguous()})


def _infer_from_comfy(params: dict, inputs: dict) -> dict:
    f = handle(inputs, "clip_vision")
    return {"image_embeds": same_width(inputs, ("clip_vision_output", "negative"), width(f),
                                       "clip_vision")}


@node("ClipVisionToImageEmbeds", category=CATEGORY,
      description="Take a CLIP_VISION_OUTPUT (ComfyUI's CLIPVisionEncode) as our CLIP image "
                  "embeddings, for our Decoder and the CLIP-space edits (Slerp, TextDiff, "
                  "MixEmbeds). Its CLIP must be the decoder's: clip_vision_l (ViT-L/14, 768-d) "
                  "for Karlo and Stable unCLIP small, clip_vision_g (ViT-bigG, 1280-d) for "
                  "Kandinsky 2.2, clip_vision_h (ViT-H, 1024-d) for Stable unCLIP -h; another "
                  "is refused with what to load instead.",
      inputs=[Input("clip_vision_output", "CLIP_VISION_OUTPUT",
                    tooltip="e.g. ComfyUI's CLIPVisionEncode; only image_embeds [B, D] is read"),
              Input("negative", "CLIP_VISION_OUTPUT", optional=True,
                    tooltip="the negative image embedding a decoder that guides against one "
                            "(Kandinsky 2.2) pushes away from: one row for all, or one per "
                            "row. Default: the one carried from our own embeddings, else "
                            "clip_vision's (Kandinsky's zero-image embedding)"),
              Input("clip_vision", "UNCLIP_CLIP_VISION", optional=True,
                    tooltip="our CLIP vision of the decoder's checkpoint (LoadUnCLIP's "
                            "clip_vision): the output is checked against its CLIP, and its "
                            "family's negative image embedding is attached (Kandinsky 2.2's "
                            "decoder needs one to guide)")],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS", "z_i [B, D], float32")],
      infer=_infer_from_comfy)
def clip_vision_to_image_embeds(clip_vision_output, negative=None,
                                clip_vision: ClipVisionModel | None = None):
    values = _values(clip_vision_output, "clip_vision_output")
    z = _embeds(values["image_embeds"], "clip_vision_output")
    if clip_vision is not None and z.shape[1] != clip_vision.clip_dim:
        raise UserError("clip_vision_output holds " + width_mismatch(
            z.shape[1], clip_vision.clip_dim, clip_vision.space,
            f"the linked clip_vision ({clip_vision.label})"), field="clip_vision_output")
    if negative is not None:
        neg = _embeds(_values(negative, "negative")["image_embeds"], "negative")
        field = "negative"
    elif values.get(NEGATIVE_KEY) is not None:
        neg, field = _embeds(values[NEGATIVE_KEY], "clip_vision_output"), "clip_vision_output"
    elif clip_vision is not None:
        neg, field = clip_vision.negative_embeds(), "clip_vision"
    else:
        neg = None
    if neg is not None:
        if neg.ndim != 2 or neg.shape[0] not in (1, z.shape[0]) or neg.shape[1] != z.shape[1]:
            raise UserError(f"the negative image embedding has shape {tuple(neg.shape)} for "
                            f"image embeddings {tuple(z.shape)}: give one row for all or one "
                            f"per row, of the same CLIP", field=field)
        neg = plain(neg).contiguous()
    return ImageEmbeds(image_embeds=plain(z).contiguous(), negative_image_embeds=neg)


def _values(value, field: str) -> dict:
    try:
        return clip_vision_values(value)
    except ValueError as e:
        raise UserError(f"expected a CLIP vision output (ComfyUI's CLIPVisionEncode gives one): "
                        f"{e}", field=field) from None


def _embeds(z, field: str) -> torch.Tensor:
    """[B, D] floating-point image embeddings, or a UserError naming ``field``."""
    if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.ndim != 2 \
            or z.shape[0] == 0 or z.shape[1] == 0:
        got = f"shape {tuple(z.shape)}, {z.dtype}" if isinstance(z, torch.Tensor) \
            else f"a {type(z).__name__}"
        raise UserError(f"expected image embeddings [B, D] (floating point), got {got}",
                        field=field)
    return z.detach()
