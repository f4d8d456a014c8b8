"""Loading checkpoints as one typed handle per stage, for every model family.

The folder's ``model_index.json`` says which family it is (``families.detect``); the family's
module checks the layout and that the components fit together, and builds the handles.  We load
component by component and never touch the network.

The loaders themselves are cheap: they check the layout and return handles.  A handle loads its
weights on first use through a process-wide model cache (``checkpoint.py``), so one checkpoint
is read once per process however many nodes use it, and a stage that a workflow does not need
(the image encoder in text-to-image) is never read.
"""
from __future__ import annotations

import torch

from . import runtime
from .core.checkpoint import (CLIP_TEXT, CLIP_VISION, DECODER, DTYPES, LOADED, POCKET,  # noqa: F401
                              PRIOR, UPSAMPLER, Checkpoint, clear_model_cache, existing_dir,
                              resolve_path)
from .core.family import STAGES, by_name, open_checkpoint, stages_held  # noqa: F401
from .declare import Output, Param, node
from .errors import UserError
from .folders import model_choices, prior_choices
from . import families  # noqa: F401 -- registers the families


def handles(ck: Checkpoint, stages, device, dtype, allow_pickle=False) -> tuple:
    """One handle per stage, None for a stage the checkpoint lacks."""
    return by_name(ck.family).handles(ck, stages, device, dtype, allow_pickle)


# --- nodes --------------------------------------------------------------------------------------

_COMMON_PARAMS = (
    Param("device", "COMBO", default="auto", choices=("auto", "cpu", "cuda"),
          tooltip="auto = the host's device (cuda when available)"),
    Param("dtype", "COMBO", default="auto", choices=("auto", *DTYPES),
          tooltip="weights' precision (auto: ComfyUI's choice for the device inside ComfyUI, "
                  "fp32 headless); sampling arithmetic stays float32"),
    Param("allow_pickle", "BOOLEAN", default=False,
          tooltip="also load pickle weights (.bin); they can run code, use only trusted files"),
)
_PATH_TOOLTIP = ("checkpoint directory in diffusers' layout (Karlo unCLIP, a Kandinsky 2.2 "
                 "prior or decoder folder, or a Stable unCLIP folder), the name of one in the model folders "
                 "(UNCLIP_MODELS; ComfyUI's models/unclip), or 'pocket' for the bundled model")


def _check_device(params: dict) -> None:
    choice = params.get("device", "auto")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA is not available on this machine; use device auto or cpu",
                        field="device")


def _open(params: dict, stages: tuple[str, ...], layout: bool) -> Checkpoint:
    return open_checkpoint(params["path"], stages, layout=layout,
                           allow_pickle=params.get("allow_pickle", False),
                           prior_path=params.get("prior_path", ""))


def _fingerprint(stages: tuple[str, ...], layout: bool):
    def fingerprint(params: dict) -> dict:
        ck = _open(params, stages, layout)
        used = by_name(ck.family).used_parts(ck, stages, layout)
        out = {**ck.identity(sorted(used)),
               "device": str(runtime.resolve_device(params.get("device", "auto")))}
        if runtime.OPTIONS.compile:  # compiled kernels round differently: other results
            out["compile"] = runtime.OPTIONS.compile_backend
        return out
    return fingerprint


def _infer(stages: tuple[str, ...], layout: bool, outputs: tuple[str, ...]):
    """What validation may know of the handles (family, embedding width), from configs only."""
    def infer(params: dict, inputs: dict) -> dict:
        ck = _open(params, stages, layout)
        facts = by_name(ck.family).facts(ck, stages)
        return {out: facts.get(stage) for out, stage in zip(outputs, stages)}
    return infer


def _load(params: dict, stages: tuple[str, ...], layout: bool) -> tuple:
    _check_device(params)
    ck = _open(params, stages, layout)
    device = runtime.resolve_device(params["device"])
    return handles(ck, stages, device, resolve_dtype(params["dtype"], device),
                   params["allow_pickle"])


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """``auto`` is the host's choice (ComfyUI's for the device), float32 headless."""
    if choice != "auto":
        return DTYPES[choice]
    memory = runtime.host().memory
    return memory.dtype(device) if memory is not None else torch.float32


_ALL = STAGES


@node("LoadUnCLIP", category="unCLIP/loaders", display_name="unCLIP Load Checkpoint",
      description="Load an unCLIP checkpoint (Karlo layout, Kandinsky 2.2's decoder folder "
                  "with its prior folder, or a Stable unCLIP folder) as one model handle per "
                  "stage.",
      params=[Param("path", "STRING", default="pocket", tooltip=_PATH_TOOLTIP,
                    comfy_choices=model_choices),
              Param("prior_path", "STRING", default="",
                    comfy_choices=lambda: prior_choices(stages_held),
                    tooltip="Kandinsky 2.2 only: its prior folder (kandinsky-2-2-prior), when path "
                            "is a decoder folder; empty for Karlo and for a combined folder"),
              *_COMMON_PARAMS],
      outputs=[Output("clip_text", "UNCLIP_CLIP_TEXT"),
               Output("clip_vision", "UNCLIP_CLIP_VISION",
                      tooltip="None when the checkpoint has no image encoder"),
               Output("prior", "UNCLIP_PRIOR",
                      tooltip="None for an image-variation checkpoint without a prior"),
               Output("decoder", "UNCLIP_DECODER"),
               Output("upsampler", "UNCLIP_UPSAMPLER",
                      tooltip="None for a family without one (Kandinsky 2.2 and Stable unCLIP "
                              "decode at full size)")],
      fingerprint=_fingerprint(_ALL, True), check=_check_device,
      infer=_infer(_ALL, True, _ALL))
def load_unclip(path: str, device: str, dtype: str, allow_pickle: bool, prior_path: str = ""):
    return _load(dict(path=path, prior_path=prior_path, device=device, dtype=dtype,
                      allow_pickle=allow_pickle), _ALL, True)


def _stage_loader(type_: str, stage: str, socket: str, what: str):
    @node(type_, category="unCLIP/loaders",
          description=f"Load only the {what} of an unCLIP checkpoint (to combine stages from "
                      f"different checkpoints).",
          params=[Param("path", "STRING", default="pocket", tooltip=_PATH_TOOLTIP,
                        comfy_choices=lambda: model_choices(stages_held, stage)),
                  *_COMMON_PARAMS],
          outputs=[Output(stage, socket)],
          fingerprint=_fingerprint((stage,), False), check=_check_device,
          infer=_infer((stage,), False, (stage,)))
    def load_stage(path: str, device: str, dtype: str, allow_pickle: bool):
        return _load(dict(path=path, device=device, dtype=dtype, allow_pickle=allow_pickle),
                     (stage,), False)[0]
    load_stage.__name__ = f"load_{stage}"
    return load_stage


load_clip_text = _stage_loader("LoadUnCLIPClipText", "clip_text", "UNCLIP_CLIP_TEXT",
                               "CLIP text encoder and tokenizer")
load_clip_vision = _stage_loader("LoadUnCLIPClipVision", "clip_vision", "UNCLIP_CLIP_VISION",
                                 "CLIP image encoder")
load_prior = _stage_loader("LoadUnCLIPPrior", "prior", "UNCLIP_PRIOR", "prior")
load_decoder = _stage_loader("LoadUnCLIPDecoder", "decoder", "UNCLIP_DECODER",
                             "decoder (with text_proj)")
load_upsampler = _stage_loader("LoadUnCLIPUpsampler", "upsampler", "UNCLIP_UPSAMPLER",
                               "upsampler (super_res_first + super_res_last)")
