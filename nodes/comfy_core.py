"""ComfyUI's own nodes, as our workflows may name them (``type: comfy:KSampler``).

A template that hands our prior's embedding to ComfyUI's native unCLIP checkpoint, or that
uses ComfyUI's mask nodes, is one graph of ours and theirs.  Declaring their nodes here (their
inputs in ComfyUI 0.3.64's order, their widgets' defaults and ranges, their outputs) lets the
same validation check links between the two and the same exporter write both.  Such a node
never runs headless: it runs only inside ComfyUI, which has the code.

Drop-downs that list files on ComfyUI's disk (``ckpt_name``, ``clip_name``, LoadImage's
``image``) are free text here, marked with ``Files`` in ``comfy_types``.
"""
from __future__ import annotations

from typing import Any

from .comfy_models import checkpoint_facts, clip_vision_facts
from .core.facts import handle, pass_width, same_clip, same_width, width
from .core.handles import COMFY_CLIP_VISION
from .declare import FOREIGN, FOREIGN_PREFIX, SEED_MAX, Input, NodeSpec, Output, Param
from .errors import UserError
from .types import SOCKET_TYPES, socket_type

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROP_METHODS = ("disabled", "center")

for _name, _what in (("MODEL", "a diffusion model"), ("CLIP", "a CLIP text model"),
                     ("VAE", "a VAE"), ("CONDITIONING", "text conditioning"),
                     ("LATENT", "latents"), ("CLIP_VISION", "a CLIP vision model"),
                     ("CLIP_VISION_OUTPUT", "a CLIP vision encoding")):
    if _name not in SOCKET_TYPES:
        socket_type(_name, f"ComfyUI's {_what} (inside ComfyUI only)")


class Files(list):
    """A drop-down whose values only a running ComfyUI knows: the files of one of its folders,
    or a list that changes between its versions (samplers, schedulers)."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder


_PRIMITIVE = ("INT", "FLOAT", "STRING", "BOOLEAN")


def _runs_in_comfyui(type_: str):
    def fn(**_: Any):
        raise UserError(f"{type_} is one of ComfyUI's own nodes: it runs only inside ComfyUI "
                        "(export the workflow with `unclip export --comfy-ui`)")
    return fn


def core(name: str, fields: list[tuple], outputs: list[tuple[str, str]], *, category: str,
         description: str, output_node: bool = False, infer=None) -> NodeSpec:
    """Declare ComfyUI's node ``name``: ``fields`` are (name, type, options) in its order."""
    required: dict[str, tuple] = {}
    inputs, params = [], []
    for fname, ftype, *rest in fields:
        opts = dict(rest[0]) if rest else {}
        required[fname] = (ftype, opts) if opts else (ftype,)
        tip = opts.get("tooltip", "")
        if isinstance(ftype, Files):
            params.append(Param(fname, "STRING", default=opts.get("default", ""), tooltip=tip))
        elif isinstance(ftype, (list, tuple)):
            params.append(Param(fname, "COMBO", default=opts.get("default", ftype[0]),
                                choices=tuple(ftype), tooltip=tip))
        elif ftype in _PRIMITIVE and not opts.get("forceInput"):
            params.append(Param(fname, ftype, default=opts.get("default", {
                "INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[ftype]),
                min=opts.get("min"), max=opts.get("max"), step=opts.get("step"),
                multiline=bool(opts.get("multiline")), tooltip=tip))
        else:
            inputs.append(Input(fname, ftype, tooltip=tip))
    types: dict[str, Any] = {"required": required}
    if output_node:
        types["hidden"] = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    spec = NodeSpec(type=FOREIGN_PREFIX + name, fn=_runs_in_comfyui(name), category=category,
                    description=description, inputs=tuple(inputs), params=tuple(params),
                    outputs=tuple(Output(n, t) for n, t in outputs), display_name=name,
                    output_node=output_node, cacheable=False, comfy_types=types, infer=infer)
    FOREIGN[spec.type] = spec
    return spec


_SIDE = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}


# Which CLIP ComfyUI's unCLIP models take and its CLIP vision models give, from their files'
# headers (inside ComfyUI only; nodes/comfy_models.py), so that our embedding of another CLIP
# is refused before the prompt runs instead of failing inside KSampler.

def _known(**facts) -> dict:
    """Only what is known: None from a loader would say the output is missing."""
    return {name: f for name, f in facts.items() if f is not None}


def _infer_checkpoint(params: dict, inputs: dict) -> dict:
    unet, vision = checkpoint_facts(params.get("ckpt_name"))
    return _known(MODEL=unet, CLIP_VISION=vision)  # CheckpointLoaderSimple has no CLIP_VISION


def _infer_sampler(params: dict, inputs: dict) -> dict:
    model = handle(inputs, "model")
    if model is None:
        return {}
    for name in ("positive", "negative"):
        got = width(inputs.get(name))
        if got is None or same_clip(got, model):
            continue
        theirs = f"{got.clip_dim}-d {got.space}" if got.space else f"{got.clip_dim}-d"
        vision = COMFY_CLIP_VISION.get(model.space)
        fix = (f"use a prior or encoder of {model.space}"
               + (f" (ComfyUI's {vision} into CLIPVisionEncode)" if vision else "")
               + " or a checkpoint made for the embedding's CLIP")
        raise UserError(f"{name} carries an unCLIP image embedding ({theirs}, from {got.label}) "
                        f"but {model.label} takes {model.clip_dim}-d {model.space} ones: {fix}",
                        field=name)
    return {}

core("CheckpointLoaderSimple", [("ckpt_name", Files("checkpoints"))],
     [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], category="loaders",
     description="ComfyUI's checkpoint loader.", infer=_infer_checkpoint)
core("unCLIPCheckpointLoader", [("ckpt_name", Files("checkpoints"))],
     [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("CLIP_VISION", "CLIP_VISION")],
     category="loaders", description="ComfyUI's loader for unCLIP checkpoints (SD 2.1 unCLIP).",
     infer=_infer_checkpoint)
core("CLIPVisionLoader", [("clip_name", Files("clip_vision"))],
     [("CLIP_VISION", "CLIP_VISION")], category="loaders",
     description="ComfyUI's CLIP vision loader (clip_vision_l / _h / _g).",
     infer=lambda params, inputs: _known(CLIP_VISION=clip_vision_facts(params.get("clip_name"))))
core("CLIPVisionEncode", [("clip_vision", "CLIP_VISION"), ("image", "IMAGE"),
                          ("crop", ["center", "none"])],
     [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")], category="conditioning",
     description="ComfyUI's CLIP vision encoder.",
     infer=pass_width("clip_vision", "CLIP_VISION_OUTPUT"))
core("unCLIPConditioning",
     [("conditioning", "CONDITIONING"), ("clip_vision_output", "CLIP_VISION_OUTPUT"),
      ("strength", "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
      ("noise_augmentation", "FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01})],
     [("CONDITIONING", "CONDITIONING")], category="conditioning",
     description="ComfyUI's unCLIP conditioning: adds an image embedding to a conditioning.",
     infer=lambda params, inputs: {"CONDITIONING": same_width(
         inputs, ("conditioning", "clip_vision_output"))})
core("CLIPTextEncode", [("text", "STRING", {"multiline": True, "dynamicPrompts": True}),
                        ("clip", "CLIP")],
     [("CONDITIONING", "CONDITIONING")], category="conditioning",
     description="ComfyUI's text encoder.")
core("KSampler",
     [("model", "MODEL"),
      ("seed", "INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
      ("steps", "INT", {"default": 20, "min": 1, "max": 10000}),
      ("cfg", "FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
      ("sampler_name", Files("samplers"), {"default": "euler"}),
      ("scheduler", Files("schedulers"), {"default": "normal"}),
      ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT"),
      ("denoise", "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})],
     [("LATENT", "LATENT")], category="sampling", description="ComfyUI's sampler.",
     infer=_infer_sampler)
core("EmptyLatentImage",
     [("width", "INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
      ("height", "INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
      ("batch_size", "INT", {"default": 1, "min": 1, "max": 4096})],
     [("LATENT", "LATENT")], category="latent", description="ComfyUI's empty latent.")
core("VAEDecode", [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")],
     category="latent", description="ComfyUI's VAE decoder.")
core("LoadImage", [("image", Files("input"), {"image_upload": True})],
     [("IMAGE", "IMAGE"), ("MASK", "MASK")], category="image",
     description="ComfyUI's image loader.")
core("SaveImage", [("images", "IMAGE"),
                   ("filename_prefix", "STRING", {"default": "ComfyUI"})],
     [], category="image", description="ComfyUI's image saver.", output_node=True)
core("PreviewImage", [("images", "IMAGE")], [], category="image",
     description="ComfyUI's image preview.", output_node=True)
core("ImageScale",
     [("image", "IMAGE"), ("upscale_method", list(UPSCALE_METHODS)),
      ("width", "INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
      ("height", "INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
      ("crop", list(CROP_METHODS))],
     [("IMAGE", "IMAGE")], category="image/upscaling", description="ComfyUI's image resize.")
core("ImageBatch", [("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")],
     category="image", description="ComfyUI's image batch (two images into one batch).")
core("ImagePadForOutpaint",
     [("image", "IMAGE"), ("left", "INT", _SIDE), ("top", "INT", _SIDE), ("right", "INT", _SIDE),
      ("bottom", "INT", _SIDE),
      ("feathering", "INT", {"default": 40, "min": 0, "max": MAX_RESOLUTION, "step": 1})],
     [("IMAGE", "IMAGE"), ("MASK", "MASK")], category="image",
     description="ComfyUI's outpaint padding.")
core("GrowMask",
     [("mask", "MASK"),
      ("expand", "INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1}),
      ("tapered_corners", "BOOLEAN", {"default": True})],
     [("MASK", "MASK")], category="mask", description="ComfyUI's mask grow/shrink.")
core("FeatherMask",
     [("mask", "MASK"),
      *((side, "INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        for side in ("left", "top", "right", "bottom"))],
     [("MASK", "MASK")], category="mask",
     description="ComfyUI's mask feathering (fades the mask towards the canvas edges).")
core("InvertMask", [("mask", "MASK")], [("MASK", "MASK")], category="mask",
     description="ComfyUI's mask inversion.")
core("MaskToImage", [("mask", "MASK")], [("IMAGE", "IMAGE")], category="mask",
     description="ComfyUI's mask to image.")
core("ImageToMask", [("image", "IMAGE"), ("channel", ["red", "green", "blue", "alpha"])],
     [("MASK", "MASK")], category="mask", description="ComfyUI's image channel to mask.")
core("ImageBlur",
     [("image", "IMAGE"),
      ("blur_radius", "INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
      ("sigma", "FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1})],
     [("IMAGE", "IMAGE")], category="image/postprocessing", description="ComfyUI's image blur.")
