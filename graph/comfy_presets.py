"""Presets as ComfyUI nodes: every preset the CLI can name is also the node 'unCLIP preset:<name>'.

For each preset that ``preset.list_presets()`` finds (shipped ``workflows/`` and
``workflows/presets/``, then the folders of ``$UNCLIP_PRESETS``) and that declares inputs and
outputs, ``preset_mappings()`` derives a ComfyUI V1 class: value inputs become widgets (with the
input's default, and the range, choices or multi-line box of the node parameters they feed),
socket-typed inputs become sockets, and the outputs become RETURN_TYPES.  Running the node runs
the preset through our executor, under ComfyUI's host (device, output folder, progress bar,
Cancel) with a memory-only cache: ComfyUI caches the node's outputs itself, and the memory tier
keeps e.g. a loaded model between two runs that change only a seed.

The classes are not node types of the executor (not in ``declare.REGISTRY``): a workflow uses a
preset as ``type: preset:<name>``, which is expanded inline as before.  A ComfyUI API prompt
that uses the class is read back as such a node (``comfy.api_to_mapping``).  A preset that does
not load is left out with a logged warning; it never stops the pack from loading.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ..nodes import declare, runtime
from ..nodes.declare import COMFY_PREFIX, Param
from ..nodes.errors import UserError
from . import preset as presets
from .preset import CATEGORY, preset_spec  # noqa: F401 -- preset_spec: named here too
from .cache import Cache
from .workflow import MISSING, Workflow, WorkflowInput

log = logging.getLogger("unclip_nodes.presets")

PRESET_PREFIX = COMFY_PREFIX + "preset:"
_INT_LIMIT = 2**63 - 1
_ZERO = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}


def class_id(name: str) -> str:
    return PRESET_PREFIX + name


def preset_mappings() -> tuple[dict[str, type], dict[str, str]]:
    """(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS) entries for the presets found now."""
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for name, path in presets.list_presets().items():
        try:
            cls = preset_class(name, path)
        except UserError as e:
            log.warning("unclip-nodes: preset '%s' is left out of ComfyUI: %s", name, e)
            continue
        except Exception as e:  # noqa: BLE001 -- never break the pack's import for one preset
            log.warning("unclip-nodes: preset '%s' (%s) is left out of ComfyUI: %s: %s", name,
                        path, type(e).__name__, e)
            continue
        if cls is not None:
            classes[class_id(name)] = cls
            names[class_id(name)] = f"unCLIP preset {name}"
    return classes, names


def _param_uses(wf: Workflow) -> dict[str, list[Param]]:
    """Per workflow input, the node parameters it is given to (``params: {steps: $steps}``)."""
    uses: dict[str, list[Param]] = {}
    for decl in wf.nodes.values():
        spec = declare.get(decl.type.value) if isinstance(decl.type.value, str) else None
        for field, at in decl.params.items():
            v = at.value
            par = spec.param(field) if spec else None
            if par is not None and isinstance(v, str) and v.startswith("$") \
                    and not v.startswith("$$"):
                uses.setdefault(v[1:], []).append(par)
    return uses


def widget(wi: WorkflowInput, uses: list[Param]) -> tuple:
    """ComfyUI's input spec for a value input: its type and default, plus what the parameters it
    feeds agree on (a range all of them accept, their common choices, a multi-line box)."""
    t = wi.type
    default = _ZERO[t] if wi.default is MISSING else wi.default
    opts: dict[str, Any] = {"default": default}
    if t in ("INT", "FLOAT"):
        nums = [p for p in uses if p.type in ("INT", "FLOAT")]
        lo = max((p.min for p in nums if p.min is not None), default=None)
        hi = min((p.max for p in nums if p.max is not None), default=None)
        if lo is not None and (lo > default or (hi is not None and lo > hi)):
            lo = None
        if hi is not None and hi < default:
            hi = None
        lim = _INT_LIMIT if t == "INT" else 1e10
        cast = int if t == "INT" else float
        opts["min"] = cast(lo) if lo is not None else -lim
        opts["max"] = cast(hi) if hi is not None else lim
        steps = [p.step for p in nums if p.step is not None]
        opts["step"] = 1 if t == "INT" else (min(steps) if steps else 0.01)
    if t == "STRING" and uses:
        if all(p.type == "COMBO" for p in uses):
            choices = [c for c in uses[0].choices if all(c in p.choices for p in uses[1:])]
            if default in choices:
                if wi.description:
                    opts["tooltip"] = wi.description
                return (choices, opts)
        if any(p.multiline for p in uses):
            opts["multiline"] = True
    if wi.description:
        opts["tooltip"] = wi.description
    return (t, opts)


def _free(name: str, taken) -> str:
    while name in taken:
        name = "unclip_" + name
    return name


def preset_class(name: str, path: Path) -> type | None:
    """The ComfyUI class of one preset; None when it declares no inputs or no outputs."""
    sig = presets.signature(path)
    if not sig.inputs or not sig.outputs:
        return None
    wf = sig.workflow
    uses = _param_uses(wf)
    sockets = [n for n, wi in sig.inputs.items() if wi.socket]
    fields = [n for n, wi in sig.inputs.items() if not wi.socket]
    specs = [declare.get(d.type.value) for d in wf.nodes.values()]
    output_node = any(s.output_node for s in specs if s is not None)
    always = any(not s.cacheable for s in specs if s is not None)
    required: dict[str, tuple] = {}
    for n, wi in sig.inputs.items():
        if wi.socket:
            required[n] = (wi.type, {"tooltip": wi.description}) if wi.description else (wi.type,)
        else:
            required[n] = widget(wi, uses.get(n, []))
    hidden = {}
    if output_node:  # savers inside write ComfyUI's prompt and workflow, as its SaveImage does
        hidden = {_free("prompt", sig.inputs): "PROMPT",
                  _free("extra_pnginfo", sig.inputs): "EXTRA_PNGINFO"}
    path = Path(path)

    def INPUT_TYPES(cls):
        types = {"required": dict(required)}
        if hidden:
            types["hidden"] = dict(hidden)
        return types

    def run(self, **kwargs):
        extra = {k: kwargs.pop(h, None) for h, k in zip(hidden, ("prompt", "extra_pnginfo"))}
        values = {n: kwargs[n] for n in sockets if n in kwargs}
        overrides = {n: kwargs[n] for n in fields if n in kwargs}
        from .run import execute
        from .validate import load
        with runtime.comfy_host(**extra) as host:  # ComfyUI's host records its own metadata
            result = execute(load(path, overrides, values=values), cache=Cache(disk=False),
                             host=host)
            ui = runtime.take_ui() if output_node else None
        out = tuple(result.outputs[n] for n in sig.outputs)
        return {"ui": ui, "result": out} if ui else out

    def IS_CHANGED(cls, **kw):
        """Run again when a file the preset reads changed (a checkpoint, an image, the preset
        itself); always when it has savers (as our savers do)."""
        if always:
            return float("nan")
        from .validate import load
        try:
            text = path.read_bytes()
            rs = load(path, {n: kw[n] for n in fields if n in kw}, preset=True)
        except (OSError, UserError) as e:
            return f"error: {e}"
        prints = {nid: rn.fingerprint for nid, rn in rs.nodes.items()
                  if rn.fingerprint is not None}
        return hashlib.sha256(text).hexdigest() + json.dumps(prints, sort_keys=True, default=str)

    description = (sig.description or "").strip() or f"The workflow {path.name} as one node."
    return type(f"Preset_{name}", (), {
        "INPUT_TYPES": classmethod(INPUT_TYPES),
        "RETURN_TYPES": tuple(sig.outputs.values()),
        "RETURN_NAMES": tuple(sig.outputs),
        "OUTPUT_TOOLTIPS": tuple(f"{wf.outputs[n].value} of the preset" for n in sig.outputs),
        "FUNCTION": "run",
        "CATEGORY": CATEGORY,
        "DESCRIPTION": f"{description}\n\nPreset file: {path}",
        "OUTPUT_NODE": output_node,
        "IS_CHANGED": classmethod(IS_CHANGED),
        "run": run,
        "__doc__": description,
        "__module__": __name__,
        "PRESET_PATH": str(path),
    })
