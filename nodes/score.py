"""Scores in a checkpoint's own CLIP space: how well images match their captions, and how close
variations stay to their source.

``CLIPScore`` is the cosine between an image's CLIP image embedding (the checkpoint's own image
preprocessing and image tower, as ``CLIPImageEncode``) and its caption's pooled CLIP text embedding
(``CLIPTextEncode``).  ``CLIPImageSimilarity`` is the cosine between two images' CLIP image
embeddings.  Both are raw cosines in [-1, 1], not the x100 / clipped-at-0 variant some papers
report, so that a sweep's table compares like with like across checkpoints of one family.

Each node gives the mean over its rows as a FLOAT output (``score``), which a workflow can name as
an output: a sweep reports every FLOAT output per combination (``--report`` and the contact
sheet), and the rows as text (``scores``) for a closer look.

Rows are paired the way the decoder lays them out: with P captions and B images, B = P pairs them
one to one, P = 1 serves every image, and B = k * P gives each caption k consecutive images (a
Decoder's ``images_per_embedding``).  The same holds for references and images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .clip import ClipTextModel, ClipVisionModel, encode_images
from .declare import Input, Output, Param, node
from .errors import UserError
from .core.facts import handle, same_width, width
from .types import TextEmbeds

CATEGORY = "unCLIP/score"


# --- maths ----------------------------------------------------------------------------------------

def pair_rows(first: torch.Tensor, rows: int, what: str, field: str) -> torch.Tensor:
    """``first`` ([P, D]) repeated to ``rows`` rows: one to one, one for all, or k consecutive
    rows per entry (how a Decoder lays out images_per_embedding)."""
    p = first.shape[0]
    if p == rows:
        return first
    if p >= 1 and rows % p == 0:
        return first.repeat_interleave(rows // p, dim=0)
    raise UserError(f"{p} {what} for {rows} images: give one per image, one for all, or a "
                    f"number that divides the images (each then serves that many in a row)",
                    field=field)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two [B, D] batches, in float64 so that the score does not depend on the
    towers' dtype beyond their own rounding."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)


def image_vectors(vision: ClipVisionModel, image: torch.Tensor) -> torch.Tensor:
    """CLIP image embeddings [B, D] of IMAGE [B, H, W, C] with the checkpoint's preprocessing."""
    return encode_images(vision, image).image_embeds.float().cpu()


def clip_scores(vision: ClipVisionModel, image: torch.Tensor, text: TextEmbeds) -> torch.Tensor:
    """Per image, the cosine between its CLIP image embedding and its caption's text embedding."""
    z_i = image_vectors(vision, image)
    z_t = pair_rows(text.text_embeds.float().cpu(), z_i.shape[0], "captions", "text")
    if z_t.shape[1] != z_i.shape[1]:
        raise UserError(f"text holds {z_t.shape[1]}-d CLIP embeddings but this image tower makes "
                        f"{z_i.shape[1]}-d ones; both must come from the same CLIP", field="text")
    return cosine(z_i, z_t)


def image_similarities(vision: ClipVisionModel, image: torch.Tensor,
                       reference: torch.Tensor) -> torch.Tensor:
    """Per image, the cosine between its CLIP image embedding and its reference's."""
    z = image_vectors(vision, image)
    ref = pair_rows(image_vectors(vision, reference), z.shape[0], "references", "reference")
    return cosine(z, ref)


def show_scores(scores: torch.Tensor) -> str:
    return ",".join(f"{float(s):.4f}" for s in scores)


# --- validation -----------------------------------------------------------------------------------

_NO_VISION = ("the checkpoint linked to clip_vision has no CLIP image encoder (image_encoder/ + "
              "feature_extractor/), which {node} needs; load one that has (Karlo's text-to-image "
              "folder has none: take the image-variation folder, or a Kandinsky 2.2 prior folder, "
              "with LoadUnCLIPClipVision)")


def _towers(inputs: dict, node: str, names: tuple[str, ...]) -> dict | None:
    """The image tower's facts; UserError when the linked checkpoint lacks it (a loader says so
    with None, which validation passes on as ``lacking``; every loader refuses a checkpoint
    without a text tower itself) or when the captions come from another CLIP."""
    lacking = getattr(inputs, "lacking", ())
    if "clip_vision" in lacking:
        raise UserError(_NO_VISION.format(node=node), field="clip_vision")
    vision = width(handle(inputs, "clip_vision"))
    if "clip_text" in inputs:
        same_width(inputs, ("clip_text",), vision, "clip_vision")
    same_width(inputs, names, vision, "clip_vision")
    return vision


def _infer_clip_score(params: dict, inputs: dict) -> dict:
    _towers(inputs, "CLIPScore", ("text",))
    _captions(params, inputs)
    return {}


def _captions(params: dict, inputs: dict) -> None:
    """Captions come either as encoded text or as a text tower and prompts, not both."""
    has_text, has_clip = "text" in inputs, "clip_text" in inputs
    prompt = (params.get("prompt") or "").strip()
    if has_text and has_clip:
        raise UserError("link either text (from CLIPTextEncode) or clip_text with prompt, not "
                        "both", field="clip_text")
    if not has_text and not has_clip:
        raise UserError("link text (CLIPTextEncode's output) or clip_text and give prompt: the "
                        "captions to score the images against", field="text")
    if has_clip and not prompt:
        raise UserError("give the captions to score against (one per line), or link text "
                        "instead of clip_text", field="prompt")
    if has_text and prompt:
        raise UserError("prompt is read only with clip_text; the linked text already holds the "
                        "captions (leave prompt empty)", field="prompt")


# --- nodes ----------------------------------------------------------------------------------------

_ROWS = ("P captions for B images: B = P pairs them, one caption serves all, and B = k * P gives "
         "each caption k consecutive images (images_per_embedding)")


@node("CLIPScore", category=CATEGORY,
      description="CLIP score: cosine between each image's CLIP image embedding and its "
                  "caption's CLIP text embedding, in the checkpoint's own CLIP (its image "
                  "preprocessing and towers). Outputs the mean (FLOAT, which sweeps report per "
                  "combination) and every image's score.",
      inputs=[Input("clip_vision", "UNCLIP_CLIP_VISION", tooltip="the image tower"),
              Input("image", "IMAGE", tooltip="the images to score"),
              Input("text", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="the captions, encoded by CLIPTextEncode (with the same checkpoint's "
                            "text tower). " + _ROWS),
              Input("clip_text", "UNCLIP_CLIP_TEXT", optional=True,
                    tooltip="instead of text: the text tower, with the captions in prompt")],
      params=[Param("prompt", "STRING", default="", multiline=True,
                    tooltip="with clip_text only: the captions, one per line. " + _ROWS)],
      outputs=[Output("score", "FLOAT", "the mean cosine over the images, in [-1, 1]"),
               Output("scores", "STRING", "each image's cosine, comma-separated")],
      infer=_infer_clip_score)
def clip_score_node(clip_vision: ClipVisionModel, image: torch.Tensor,
                    text: TextEmbeds | None = None, clip_text: ClipTextModel | None = None,
                    prompt: str = ""):
    _check_handles(clip_vision, image, "CLIPScore")
    _captions({"prompt": prompt}, {k: v for k, v in (("text", text), ("clip_text", clip_text))
                                   if v is not None})
    if clip_text is not None:
        from .clip import clip_text_encode
        text = clip_text_encode(clip=clip_text, text=prompt)
    if not isinstance(text, TextEmbeds):
        raise UserError(f"expected text embeddings (CLIPTextEncode), got {type(text).__name__}",
                        field="text")
    scores = clip_scores(clip_vision, image, text)
    return float(scores.mean()), show_scores(scores)


@node("CLIPImageSimilarity", category=CATEGORY,
      description="Cosine between the CLIP image embeddings of images and their references "
                  "(variations against their source), in the checkpoint's own CLIP. Outputs the "
                  "mean (FLOAT, which sweeps report per combination) and every image's value.",
      inputs=[Input("clip_vision", "UNCLIP_CLIP_VISION", tooltip="the image tower"),
              Input("image", "IMAGE", tooltip="the images to score (e.g. variations)"),
              Input("reference", "IMAGE",
                    tooltip="what to compare with (e.g. the source picture): one for all, one "
                            "per image, or one per k consecutive images")],
      outputs=[Output("score", "FLOAT", "the mean cosine over the images, in [-1, 1]"),
               Output("scores", "STRING", "each image's cosine, comma-separated")],
      infer=lambda params, inputs: _towers(inputs, "CLIPImageSimilarity", ()) and {})
def clip_image_similarity_node(clip_vision: ClipVisionModel, image: torch.Tensor,
                               reference: torch.Tensor):
    _check_handles(clip_vision, image, "CLIPImageSimilarity")
    _check_image(reference, "reference")
    scores = image_similarities(clip_vision, image, reference)
    return float(scores.mean()), show_scores(scores)


def _check_image(image, field: str) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] == 0 \
            or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(f"expected IMAGE [B, H, W, C] with 1, 3 or 4 channels, got {shape}",
                        field=field)


def _check_handles(clip_vision, image, node_type: str) -> None:
    if clip_vision is None:
        raise UserError(_NO_VISION.format(node=node_type), field="clip_vision")
    _check_image(image, "image")
