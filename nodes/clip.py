"""CLIP encoders: prompts -> text embeddings, images -> image embeddings.

Text: each prompt is padded to the tokenizer's ``model_max_length`` (which the prior requires) and
encoded by the projection text model; the empty prompt is encoded alongside, as the unconditional
branch that classifier-free guidance in the prior and the decoder needs.

Images: the checkpoint's ``feature_extractor`` config (CLIPImageProcessor: resize the short side,
centre-crop, normalise) applied in torch to the IMAGE tensor, then the projection vision model.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from .declare import Input, Output, Param, node
from .core.facts import pass_width
from .errors import UserError
from .errors import env_limit, over_limit
from .core.handles import ClipTextModel, ClipVisionModel
from .core.text import ENCODE_CHUNK, encode_prompts  # noqa: F401 -- named here too
from .core.sampling import plain
from .types import ImageEmbeds

MAX_PROMPTS = 1024
"""The most prompt lines one CLIPTextEncode node takes, unless UNCLIP_MAX_PROMPTS says otherwise
(each line is a batch entry of everything downstream)."""
def split_prompts(text: str) -> list[str]:
    """One prompt per non-blank line; no line at all means the single empty prompt."""
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line] or [""]


def _size_of(value, default) -> tuple[int | None, int | None, int | None]:
    """(shortest_edge, height, width) from a processor's ``size``/``crop_size`` entry."""
    if value is None:
        value = default
    if isinstance(value, (int, float)):
        return int(value), None, None
    if isinstance(value, dict):
        if value.get("shortest_edge"):
            return int(value["shortest_edge"]), None, None
        if value.get("height") and value.get("width"):
            return None, int(value["height"]), int(value["width"])
    raise UserError(f"feature_extractor size {value!r} is not supported (give shortest_edge or "
                    f"height and width)", field="clip_vision")


_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resampling codes


def clip_preprocess(image: torch.Tensor, config: dict) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> the image encoder's pixel values [B, 3, S, S], following a
    CLIPImageProcessor config.  PIL's bicubic filter is matched by torch's antialiased bicubic;
    clamping to 0..1 afterwards stands for PIL's 8-bit saturation."""
    x = image.float()
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    x = x[..., :3].permute(0, 3, 1, 2)  # like convert("RGB"): alpha is dropped, not composited
    if config.get("do_resize", True):
        short, h, w = _size_of(config.get("size"), {"shortest_edge": 224})
        H, W = x.shape[-2:]
        if short is not None:
            lo, hi = min(H, W), max(H, W)
            new_lo, new_hi = short, int(short * hi / lo)
            h, w = (new_hi, new_lo) if W <= H else (new_lo, new_hi)
        if (h, w) != (H, W):
            mode = _RESAMPLE.get(int(config.get("resample", 3)), "bicubic")
            kw = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
            x = F.interpolate(x, size=(h, w), mode=mode, **kw).clamp(0, 1)
    if config.get("do_center_crop", True):
        _, ch, cw = _size_of(config.get("crop_size"), {"height": 224, "width": 224})
        if ch is None:
            ch = cw = _size_of(config.get("crop_size"), None)[0]
        H, W = x.shape[-2:]
        top, left = (H - ch) // 2, (W - cw) // 2
        if top < 0 or left < 0:  # smaller than the crop: pad with black around it, as HF does
            pad_t, pad_l = max(-top, 0), max(-left, 0)
            x = F.pad(x, (pad_l, max(cw - W - pad_l, 0), pad_t, max(ch - H - pad_t, 0)))
            H, W = x.shape[-2:]
            top, left = (H - ch) // 2, (W - cw) // 2
        x = x[..., top:top + ch, left:left + cw]
    # IMAGE values are already rescaled to 0..1 (what do_rescale does to 8-bit input)
    if not config.get("do_rescale", True):
        x = x * 255.0
    elif abs(float(config.get("rescale_factor", 1 / 255)) * 255.0 - 1.0) > 1e-6:
        x = x * (255.0 * float(config["rescale_factor"]))
    if config.get("do_normalize", True):
        mean = torch.tensor(config.get("image_mean", [0.48145466, 0.4578275, 0.40821073]))
        std = torch.tensor(config.get("image_std", [0.26862954, 0.26130258, 0.27577711]))
        x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return x.contiguous()


def encode_images(vision: ClipVisionModel, image: torch.Tensor) -> ImageEmbeds:
    pixels = clip_preprocess(image, vision.preprocess)
    with torch.inference_mode():
        out = vision.image_encoder(pixels.to(device=vision.device, dtype=vision.dtype))
    return ImageEmbeds(image_embeds=plain(out.image_embeds),
                       negative_image_embeds=vision.negative_embeds())


def _check_prompts(params: dict) -> None:
    """More prompt lines than the limit is refused before anything runs."""
    count = len(split_prompts(params.get("text", "")))
    limit = env_limit("PROMPTS", MAX_PROMPTS)
    if count > limit:
        raise over_limit(f"{count:,} prompt lines in one node (each is a batch entry)", count,
                         limit, "PROMPTS", field="text")


@node("CLIPTextEncode", category="unCLIP/conditioning",
      description="Encode prompts with the CLIP text encoder (one prompt per line).",
      inputs=[Input("clip", "UNCLIP_CLIP_TEXT")],
      params=[Param("text", "STRING", multiline=True,
                    tooltip="one prompt per line; each line becomes one batch entry")],
      outputs=[Output("text", "UNCLIP_TEXT_EMBEDS")], infer=pass_width("clip", "text"),
      check=_check_prompts, renamed={"prompt": "text"}, display_name="unCLIP Text Encode")
def clip_text_encode(clip: ClipTextModel, text: str):
    if clip is None:
        raise UserError("no CLIP text encoder is linked (the checkpoint has none)", field="clip")
    _check_prompts({"text": text})  # also when called directly (ComfyUI)
    return clip.encode(split_prompts(text))


@node("CLIPImageEncode", category="unCLIP/conditioning",
      description="Encode images with the CLIP image encoder (the z_i that image variations use).",
      inputs=[Input("clip_vision", "UNCLIP_CLIP_VISION"), Input("image", "IMAGE")],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS")],
      infer=pass_width("clip_vision", "image_embeds"), display_name="unCLIP Image Encode")
def clip_image_encode(clip_vision: ClipVisionModel, image: torch.Tensor):
    if clip_vision is None:
        raise UserError("this checkpoint has no image encoder (image_encoder/ + "
                        "feature_extractor/); load one that has, e.g. with LoadUnCLIPClipVision",
                        field="clip_vision")
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise UserError(f"expected IMAGE [B, H, W, C] with 1, 3 or 4 channels, got shape "
                        f"{tuple(image.shape)}", field="image")
    return encode_images(clip_vision, image)
