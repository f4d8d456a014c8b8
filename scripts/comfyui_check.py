#!/usr/bin/env python3
"""Check the pack inside a real ComfyUI: install it, start ComfyUI on the CPU, run every template.

    python scripts/comfyui_check.py --comfyui /path/to/ComfyUI [--python PY] [--out DIR]

Steps (docs/comfyui_check.md says more):

1. link the repository into ``custom_nodes/unclip-nodes`` (left alone when it is already this
   repository), start ``main.py --cpu --listen 127.0.0.1 --port <free port>`` and read its log:
   the pack must have loaded without an import failure;
2. ``GET /object_info``: every node type of every ``example_workflows/*.json`` must be known;
   then write the models the templates name into ``models/`` (``MODEL_RULES``);
3. convert each template (the front end's UI format) to the API format and queue it
   (``POST /prompt``), wait for ``/history/<id>`` and check that it saved at least one image
   that exists in ComfyUI's output or temp folder;
4. where Playwright and Chromium are installed: load each template in the web UI, look for
   missing node types, compare the front end's own ``graphToPrompt()`` with our conversion and
   take a screenshot;
5. stop ComfyUI (also on an error or Ctrl-C), print a table; exit 0 when every template passed,
   1 when one did not, 2 for a usage mistake, 130 on Ctrl-C.

Only the standard library is imported at the top (Playwright is optional and imported by name
when the browser step runs), so the script runs with any Python 3.10+, ComfyUI's or another.
Every request goes to 127.0.0.1 with proxies switched off.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parent.parent
"""The pack's repository (its root is the pack folder)."""
PACK_NAME = "unclip-nodes"
"""Its folder name under ComfyUI's custom_nodes."""
PACK_MODULE = f"custom_nodes.{PACK_NAME}"
"""What /object_info gives as python_module for our nodes."""
HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-proxy-server"]

# ------------------------------------------------------------------------------------------------
# Templates and the UI -> API conversion (pure: no ComfyUI needed)
# ------------------------------------------------------------------------------------------------

VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
"""Front-end-only node types: never sent to the server (a Reroute is followed, a PrimitiveNode's
value is already in the widget it feeds)."""
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
"""Values of the front end's extra 'control_after_generate' widget."""
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
"""Input options that make the front end add an upload button widget right after the input."""
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_MUTED, MODE_BYPASS = 2, 4


class UsageError(Exception):
    """A mistake in how the script was called: a short message, exit 2."""


def find_templates(folder: Path = REPO / "example_workflows", only: Iterable[str] = ()
                   ) -> list[Path]:
    """The templates to check: ``folder/*.json`` (the repository's example_workflows), sorted by
    name; ``only`` keeps those whose file stem is listed (an unknown name is a usage mistake)."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    found = sorted(folder.glob("*.json"))
    wanted = [n[:-5] if n.endswith(".json") else n for n in only]
    if wanted:
        stems = {p.stem: p for p in found}
        unknown = [n for n in wanted if n not in stems]
        if unknown:
            raise UsageError(f"no template named {', '.join(unknown)} in {folder} "
                             f"(there are: {', '.join(sorted(stems)) or 'none'})")
        found = [stems[n] for n in wanted]
    return found


def load_template(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.name}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a workflow (a JSON object is expected)")
    return data


def is_api_format(workflow: dict) -> bool:
    """An API-format prompt: {id: {"class_type": ..., "inputs": ...}} rather than a UI graph."""
    return "nodes" not in workflow and bool(workflow) and all(
        isinstance(v, dict) and "class_type" in v for v in workflow.values())


def node_types(workflow: dict) -> set[str]:
    """Every node type a workflow uses, virtual front-end nodes left out (also those inside
    subgraph definitions)."""
    if is_api_format(workflow):
        return {v["class_type"] for v in workflow.values()}
    nodes = list(workflow.get("nodes", []))
    for sub in (workflow.get("definitions") or {}).get("subgraphs", []) or []:
        nodes += sub.get("nodes", [])
    return {n["type"] for n in nodes if n.get("type") not in VIRTUAL_NODES}


def _spec_parts(spec: Any) -> tuple[Any, dict]:
    """An /object_info input spec -> (type, options)."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return spec, {}
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0], opts


def is_widget(spec: Any) -> bool:
    """Whether the front end shows this input as a widget (and saves its value in
    widgets_values) rather than as a socket."""
    kind, opts = _spec_parts(spec)
    if opts.get("forceInput") or opts.get("rawLink"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def has_control_widget(name: str, spec: Any) -> bool:
    """Whether the front end follows this widget with a 'control_after_generate' one: every INT
    named seed or noise_seed, and any input whose options ask for it."""
    kind, opts = _spec_parts(spec)
    return bool(opts.get("control_after_generate")) or (kind == "INT" and name in ("seed",
                                                                                    "noise_seed"))


def input_order(info: dict) -> list[tuple[str, Any]]:
    """(name, spec) of a node type's required then optional inputs, in the server's order."""
    inputs = info.get("input", {})
    order = info.get("input_order") or {k: list(inputs.get(k, {})) for k in ("required",
                                                                            "optional")}
    out = []
    for section in ("required", "optional"):
        specs = inputs.get(section, {}) or {}
        for name in order.get(section, []) or []:
            if name in specs:
                out.append((name, specs[name]))
    return out


def _links(workflow: dict) -> dict[int, tuple[int, int, int, int, Any]]:
    """link id -> (origin node, origin slot, target node, target slot, type); both the list
    form of schema 0.4 and the object form of schema 1."""
    out = {}
    for link in workflow.get("links", []) or []:
        if isinstance(link, dict):
            out[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"],
                               link["target_slot"], link.get("type"))
        elif isinstance(link, (list, tuple)) and len(link) >= 5:
            out[link[0]] = (link[1], link[2], link[3], link[4], link[5] if len(link) > 5 else None)
    return out


def widget_values(node: dict, widgets: list[tuple[str, Any]]) -> tuple[dict, list[str]]:
    """name -> value for a node's widget inputs, read from its widgets_values (widgets a graph
    saved no value for get their defaults, as in the front end); and notes about values that
    did not fit (too many, or a missing one without a default)."""
    raw = node.get("widgets_values")
    if raw is None:
        return {}, []
    if isinstance(raw, dict):  # some front ends save a name -> value map
        return {n: raw[n] for n, _ in widgets if n in raw}, []
    values, notes, i = {}, [], 0
    for k, (name, spec) in enumerate(widgets):
        if i >= len(raw):
            # a graph saved before the node had these widgets: the front end gives them their
            # defaults, and so do we
            for later, later_spec in widgets[k:]:
                kind, opts = _spec_parts(later_spec)
                if "default" in opts:
                    values[later] = opts["default"]
                elif isinstance(kind, list) and kind:
                    values[later] = kind[0]
                else:
                    notes.append(f"node {node.get('id')} ({node.get('type')}): no saved value "
                                 f"and no default for {later}")
            break
        values[name] = raw[i]
        i += 1
        if has_control_widget(name, spec) and i < len(raw) and raw[i] in CONTROL_VALUES:
            i += 1
        _, opts = _spec_parts(spec)
        # the upload button's saved value (e.g. "image"), when there is one more value than
        # the widgets still to come need
        if any(opts.get(f) for f in UPLOAD_FLAGS) and len(raw) - i > len(widgets) - k - 1:
            i += 1
    if i < len(raw):
        notes.append(f"node {node.get('id')} ({node.get('type')}): {len(raw) - i} saved "
                     f"value(s) left over: {raw[i:]!r}")
    return values, notes


def ui_to_api(workflow: dict, object_info: dict) -> tuple[dict, list[str], list[str]]:
    """Convert a UI-format workflow (LiteGraph, schema 0.4 or 1) to the API format /prompt takes.

    Returns (prompt, missing node types, notes).  Widget values are matched to the node type's
    widget inputs in the server's order (required, then optional), skipping the front end's
    control_after_generate value after a seed widget and an upload button's value; links become
    ``[origin id, origin slot]``, followed through Reroute nodes and bypassed nodes; muted nodes,
    Notes and other front-end-only nodes are left out; ``_meta.title`` is the node's title or the
    type's display name."""
    if is_api_format(workflow):
        missing = sorted({v["class_type"] for v in workflow.values()} - set(object_info))
        return workflow, missing, []
    if (workflow.get("definitions") or {}).get("subgraphs"):
        return {}, [], ["subgraphs are not supported by this converter"]
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    links = _links(workflow)
    missing = sorted({n["type"] for n in nodes.values()
                      if n.get("type") not in VIRTUAL_NODES and n.get("type") not in object_info})
    notes: list[str] = []

    def origin(link_id, seen=()) -> tuple[int, int] | None:
        """The executed node and output slot a link really comes from, or None."""
        if link_id is None or link_id not in links or link_id in seen:
            return None
        src, slot, _, _, ltype = links[link_id]
        node = nodes.get(src)
        if node is None or node.get("mode") == MODE_MUTED:
            return None
        if node.get("type") == "Reroute":
            ins = node.get("inputs") or []
            return origin(ins[0].get("link"), (*seen, link_id)) if ins else None
        if node.get("type") in VIRTUAL_NODES:
            return None  # a PrimitiveNode: the target keeps its own widget value
        if node.get("mode") == MODE_BYPASS:  # pass the input of the same type through
            ins = node.get("inputs") or []
            outs = node.get("outputs") or []
            want = outs[slot].get("type") if slot < len(outs) else ltype
            same = [i for i in ins if i.get("type") == want and i.get("link") is not None]
            if slot < len(ins) and ins[slot] in same:
                same = [ins[slot]]
            return origin(same[0]["link"], (*seen, link_id)) if same else None
        return (src, slot)

    prompt = {}
    for nid, node in sorted(nodes.items(), key=lambda kv: kv[0]):
        ntype = node.get("type")
        if ntype in VIRTUAL_NODES or ntype not in object_info:
            continue
        if node.get("mode") in (MODE_MUTED, MODE_BYPASS):
            continue
        info = object_info[ntype]
        specs = input_order(info)
        widgets = [(n, s) for n, s in specs if is_widget(s)]
        inputs, more = widget_values(node, widgets)
        notes += more
        known = {n for n, _ in specs}
        for slot in node.get("inputs") or []:
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            if name not in known:
                continue
            src = origin(slot.get("link"))
            if src is not None:
                inputs[name] = [str(src[0]), src[1]]
        prompt[str(nid)] = {"inputs": inputs, "class_type": ntype,
                            "_meta": {"title": node.get("title") or info.get("display_name")
                                      or ntype}}
    return prompt, missing, notes


def compare_prompts(ours: dict, theirs: dict) -> list[str]:
    """Differences between our API prompt and the front end's graphToPrompt() output."""
    diffs = []
    for nid in sorted(set(ours) | set(theirs), key=lambda s: (len(s), s)):
        a, b = ours.get(nid), theirs.get(nid)
        if a is None or b is None:
            diffs.append(f"node {nid}: only in {'the front end' if a is None else 'ours'}")
            continue
        if a["class_type"] != b.get("class_type"):
            diffs.append(f"node {nid}: class {a['class_type']} vs {b.get('class_type')}")
        ia, ib = a.get("inputs", {}), b.get("inputs", {})
        for k in sorted(set(ia) | set(ib)):
            va, vb = ia.get(k, "<none>"), ib.get(k, "<none>")
            if isinstance(va, list) and isinstance(vb, list):
                va, vb = [str(x) for x in va], [str(x) for x in vb]
            if va != vb:
                diffs.append(f"node {nid} {a['class_type']}.{k}: ours {va!r}, front end {vb!r}")
    return diffs


# ------------------------------------------------------------------------------------------------
# Models the templates name: a table of rules (pure), then the providers that act on them
# ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelRule:
    """Widget values that name a model, and how the check provides one.

    ``node`` and ``input`` are regular expressions on the node type and input name; ``value`` on
    the widget value (its named groups are handed to the provider).  ``provider``: ``bundled``
    (nothing to do), ``tiny-karlo``, ``tiny-kandinsky``, ``tiny-stable-unclip`` (the pack's tiny
    random checkpoint builders, written under ``models/<folder>/``), ``fabricate`` (a random
    checkpoint of the real architecture that ComfyUI's model detection accepts, made with
    ComfyUI's own classes: ``kind`` sd21-unclip or clip-vision, ``variant`` h or l, from the
    options or the value's ``variant`` group), ``stand-in`` (a copy of a sample picture in
    ComfyUI's input folder) or ``placeholder`` (an empty file of that name: ComfyUI accepts the
    prompt but cannot run it, so the template is "validated only")."""
    node: str
    input: str
    value: str
    provider: str
    folder: str = ""
    options: tuple[tuple[str, str], ...] = ()

    def match(self, node_type: str, input_name: str, value: Any) -> re.Match | None:
        if not isinstance(value, str):
            return None
        if not (re.search(self.node, node_type) and re.search(self.input, input_name)):
            return None
        return re.search(self.value, value)


PACK_LOADERS = r"^unCLIP (LoadUnCLIP\w*|preset:.+)$"
PACK_MODEL_INPUTS = r"^(path|prior_path|model|prior_model|decoder_model|upsampler_model)$"
MODEL_RULES: tuple[ModelRule, ...] = (
    ModelRule(PACK_LOADERS, PACK_MODEL_INPUTS, r"^(pocket)?$", "bundled"),
    ModelRule(PACK_LOADERS, PACK_MODEL_INPUTS,
              r"^(?P<root>[^/\\]+)/(?P<part>prior|decoder|decoder-inpaint|controlnet-depth)$",
              "tiny-kandinsky", "unclip"),
    ModelRule(PACK_LOADERS, PACK_MODEL_INPUTS, r"(?i)kandinsky", "tiny-kandinsky", "unclip"),
    ModelRule(PACK_LOADERS, PACK_MODEL_INPUTS, r"(?i)(txt2img|text).*unclip|stable.?unclip.*"
              r"(txt2img|text)|karlo.*stable", "tiny-stable-unclip", "unclip",
              (("layout", "txt2img"),)),
    ModelRule(PACK_LOADERS, PACK_MODEL_INPUTS, r"(?i)stable.?unclip|sd-?2-?1-?unclip|"
              r"2[-_.]?1[-_]unclip", "tiny-stable-unclip", "unclip", (("layout", "img2img"),)),
    ModelRule(PACK_LOADERS, PACK_MODEL_INPUTS, r".", "tiny-karlo", "unclip"),
    ModelRule(r"^(LoadImage|LoadImageMask)$", r"^image$", r".", "stand-in", "input"),
    ModelRule(r".", r"^ckpt_name$", r"(?i)unclip[-_ ]?(?P<variant>[hl])(?![a-z])", "fabricate",
              "checkpoints", (("kind", "sd21-unclip"),)),
    ModelRule(r".", r"^ckpt_name$", r"(?i)unclip", "fabricate", "checkpoints",
              (("kind", "sd21-unclip"), ("variant", "h"))),
    ModelRule(r".", r"^ckpt_name$", r".", "placeholder", "checkpoints"),
    ModelRule(r"^CLIPVisionLoader$", r"^clip_name$", r"(?i)(big-?g|vit-?g|[-_]g(?![a-z]))",
              "placeholder", "clip_vision"),  # ViT-bigG: 1.8 G parameters, too big to fake here
    ModelRule(r"^CLIPVisionLoader$", r"^clip_name$",
              r"(?i)(vit-?|[-_])(?P<variant>[hl])(?![a-z])", "fabricate", "clip_vision",
              (("kind", "clip-vision"),)),
    ModelRule(r"^CLIPVisionLoader$", r"^clip_name$", r".", "fabricate", "clip_vision",
              (("kind", "clip-vision"), ("variant", "h"))),
    ModelRule(r".", r"^clip_name\d?$", r".", "placeholder", "text_encoders"),
    ModelRule(r".", r"^vae_name$", r".", "placeholder", "vae"),
    ModelRule(r".", r"^unet_name$", r".", "placeholder", "diffusion_models"),
    ModelRule(r".", r"^lora_name$", r".", "placeholder", "loras"),
    ModelRule(r".", r"^style_model_name$", r".", "placeholder", "style_models"),
    ModelRule(r".", r"^control_net_name$", r".", "placeholder", "controlnet"),
    ModelRule(r".", r"^model_name$", r".", "placeholder", "upscale_models"),
)
"""First match wins.  A new template that names another kind of model needs one more row."""


FABRICATOR = r"""
import os, sys, time
what, variant, out, fmt = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sys.argv = [sys.argv[0], "--cpu"]            # ComfyUI's own argument parser: no CUDA here
sys.path.insert(0, os.getcwd())              # run in the ComfyUI folder: its comfy package
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.clip_vision
import comfy.sd
import comfy.supported_models
from comfy.ldm.models.autoencoder import AutoencoderKL
from comfy.utils import save_torch_file


def save(sd, path):
    # ComfyUI reads a file by its name's suffix: safetensors, else a torch.load'able pickle
    # of plain tensors (loaded with weights_only), as .ckpt files are
    if fmt == "safetensors":
        save_torch_file(sd, path)
    else:
        torch.save({"state_dict": sd}, path)


def randomize(module, seed):
    # ComfyUI builds its models without initialising them: small random weights, unit norms
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    p.fill_(1.0 if name == "weight" else 0.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def half(sd):
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def vision(v, seed):
    # ComfyUI picks the config from the layer count: ViT-L 24 layers, ViT-H 32
    config = {"l": "clip_vision_config_vitl.json", "h": "clip_vision_config_h.json"}[v]
    model = comfy.clip_vision.ClipVisionModel(
        os.path.join(os.path.dirname(comfy.clip_vision.__file__), config))
    randomize(model.model, seed)
    return half(model.get_sd())


t0 = time.time()
if what == "clip-vision":
    save(vision(variant, 3), out)
elif what == "sd21-unclip":
    # SD 2.1 unCLIP as ComfyUI detects it: a 320-channel SD2 UNet with linear transformer
    # projections, 1024-wide text context and a class-embedding input of 2048 (H: 1024 image
    # embedding + 1024 noise level) or 1536 (L: 768 + 768); ComfyUI's SD2 text encoder, its
    # SD VAE and the CLIP vision tower under embedder.model.visual.
    cls = comfy.supported_models.SD21UnclipL if variant == "l" else \
        comfy.supported_models.SD21UnclipH
    unet = {"use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
            "model_channels": 320, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
            "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "use_spatial_transformer": True, "use_linear_in_transformer": True, "legacy": False,
            "context_dim": 1024, "num_head_channels": 64, "num_classes": "sequential",
            "adm_in_channels": 1536 if variant == "l" else 2048,
            "use_temporal_attention": False, "use_temporal_resblock": False}
    config = cls(unet)
    config.set_inference_dtype(torch.float32, None)
    clip = comfy.sd.CLIP(config.clip_target(state_dict={}), embedding_directory=None)
    randomize(clip.cond_stage_model, 2)
    clip_sd = clip.get_sd()
    del clip
    vae = AutoencoderKL(embed_dim=4, ddconfig={
        "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
        "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
        "dropout": 0.0})
    randomize(vae, 4)
    vae_sd = vae.state_dict()
    del vae
    vision_sd = vision(variant, 3)
    model = config.get_model({})
    randomize(model.diffusion_model, 1)
    sd = half(model.state_dict_for_saving(clip_sd, vae_sd, vision_sd))
    del model
    save(sd, out)
else:
    raise SystemExit(f"unknown kind {what}")
print(f"wrote {os.path.getsize(out) / 2**30:.2f} GiB in {time.time() - t0:.0f} s")
"""
"""Run by ComfyUI's Python in the ComfyUI folder: ``-c FABRICATOR KIND VARIANT OUT``.  It only
calls ComfyUI's classes (model configs, CLIP, VAE, CLIP vision) and saves what they hold."""


@dataclasses.dataclass
class ModelNeed:
    """One model (or input file) a template names, and the rule that provides it."""
    node_type: str
    input: str
    value: str
    rule: ModelRule
    groups: dict

    @property
    def provider(self) -> str:
        return self.rule.provider


def _strip_annotation(value: str) -> tuple[str, str]:
    """'clipspace/x.png [input]' -> ('clipspace/x.png', 'input'), as ComfyUI annotates files."""
    m = re.fullmatch(r"(.*) \[(input|output|temp)\]", value)
    return (m.group(1), m.group(2)) if m else (value, "input")


def model_needs(prompt: dict, rules: tuple[ModelRule, ...] = MODEL_RULES) -> list[ModelNeed]:
    """The models and files an API prompt names, each with the first rule that matches it."""
    needs, seen = [], set()
    for node in prompt.values():
        for name, value in node.get("inputs", {}).items():
            for rule in rules:
                m = rule.match(node["class_type"], name, value)
                if m:
                    key = (rule.provider, rule.folder, value)
                    if key not in seen:
                        seen.add(key)
                        needs.append(ModelNeed(node["class_type"], name, value, rule,
                                               {k: v for k, v in m.groupdict().items() if v}))
                    break
    return needs


def needs_placeholder(needs: list[ModelNeed], comfy: Path) -> list[ModelNeed]:
    """The needs that only an empty placeholder file satisfies (nothing real there)."""
    return [n for n in needs if n.provider in ("placeholder", "fabricate")
            and not _real_file(comfy / "models" / n.rule.folder / n.value)]


def _real_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


class Provisioner:
    """Makes what the model rules ask for, remembering what it made (to remove it at the end)."""

    def __init__(self, comfy: Path, python: str, log: Callable[[str], None],
                 cache: Path | None = None, fabricate: bool = True):
        self.comfy, self.python, self.log = comfy, python, log
        self.cache, self.fabricate = cache, fabricate and cache is not None
        self.made: list[Path] = []
        self.kinds: dict[str, str] = {}  # value -> what was made

    def _builder(self, *args: str) -> None:
        cmd = [self.python, str(REPO), *args]
        self.log("  $ " + " ".join(cmd))
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({r.returncode}):\n{r.stdout[-3000:]}")

    def _new(self, path: Path) -> bool:
        """True when path does not exist yet (then it is recorded as ours)."""
        if path.exists():
            return False
        self.made.append(path)
        return True

    def provide(self, need: ModelNeed) -> str:
        """Make one need available; returns how ('bundled', 'present', 'tiny Karlo', ...)."""
        key = f"{need.provider}:{need.rule.folder}:{need.value}"
        if key not in self.kinds:  # a second template naming it: told the same way
            self.kinds[key] = self._provide(need)
        return self.kinds[key]

    def _provide(self, need: ModelNeed) -> str:
        kind = need.provider
        models = self.comfy / "models"
        if kind == "bundled":
            return "bundled"
        if kind in ("tiny-karlo", "tiny-stable-unclip"):
            target = models / need.rule.folder / need.value
            if (target / "model_index.json").is_file() or not self._new(target):
                return "present"
            opts = dict(need.rule.options)
            if kind == "tiny-karlo":  # at Karlo's real CLIP width: fits ComfyUI's ViT-L models
                self._builder("tiny", str(target), "--clip-width", "768")
                return "tiny Karlo, 768-d CLIP (random)"
            self._builder("tiny-stable-unclip", str(target), "--layout", opts.get("layout",
                                                                                "img2img"))
            return f"tiny Stable unCLIP {opts.get('layout', 'img2img')} (random)"
        if kind == "tiny-kandinsky":
            target = models / need.rule.folder / need.value
            root = need.groups.get("root")
            if root and models / need.rule.folder / root in self.made:
                return "tiny Kandinsky 2.2 (random)"  # built for another part of this run
            if (target / "model_index.json").is_file():
                return "present"
            if root:  # kandinsky22/decoder: the builder writes prior, decoder, ... under root
                where = models / need.rule.folder / root
                if where in self.made:
                    return "tiny Kandinsky 2.2 (random)"
                if where.exists():
                    return "present" if (target / "model_index.json").is_file() else "missing"
                self.made.append(where)
                self._builder("tiny-kandinsky", str(where))
                return "tiny Kandinsky 2.2 (random)"
            # one folder named like 'kandinsky-2-2-prior': build all, keep the part it names
            if not self._new(target):
                return "present"
            part = ("prior" if "prior" in need.value.lower() else
                    "decoder-inpaint" if "inpaint" in need.value.lower() else
                    "controlnet-depth" if "controlnet" in need.value.lower() else "decoder")
            with tempfile.TemporaryDirectory() as tmp:
                self._builder("tiny-kandinsky", tmp)
                shutil.copytree(Path(tmp) / part, target)
            return f"tiny Kandinsky 2.2 {part} (random)"
        if kind == "stand-in":
            name, where = _strip_annotation(need.value)
            target = self.comfy / where / name
            if target.is_file():
                return "present"
            sample = REPO / "workflows" / "images" / "red_circle_white.png"
            self._new(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample, target)
            return "stand-in picture"
        if kind == "fabricate" and self.fabricate:
            target = models / need.rule.folder / need.value
            if _real_file(target):
                return "present"
            opts = {**dict(need.rule.options), **need.groups}
            what, variant = opts["kind"], opts.get("variant", "h").lower()
            fmt = "safetensors" if target.suffix == ".safetensors" else "ckpt"
            made = self._fabricated(what, variant, fmt)
            if self._new(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(made)
            return f"random {what}-{variant} (real architecture)"
        if kind in ("placeholder", "fabricate"):
            target = models / need.rule.folder / need.value
            if _real_file(target):
                return "present"
            if self._new(target):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"")
            return "empty placeholder (validated only)"
        raise ValueError(f"unknown provider {kind!r}")

    def _fabricated(self, what: str, variant: str, fmt: str = "safetensors") -> Path:
        """The cached random checkpoint of this kind, made on first use with ComfyUI's Python
        (in ComfyUI's folder, so that its ``comfy`` package builds the models); ``fmt``
        safetensors or ckpt (a torch.save'd state dict), as the name a template uses says."""
        path = self.cache / f"{what}-{variant}.{fmt}"
        if _real_file(path):
            return path
        self.cache.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        self.log(f"  fabricating a random {what}-{variant} checkpoint (full size, a minute or so)"
                 f" -> {path}")
        r = subprocess.run([self.python, "-c", FABRICATOR, what, variant, str(part), fmt],
                           cwd=self.comfy, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=1800)
        if r.returncode != 0 or not _real_file(part):
            part.unlink(missing_ok=True)
            raise RuntimeError(f"fabricating {what}-{variant} failed:\n{r.stdout[-3000:]}")
        self.log("  " + r.stdout.strip().splitlines()[-1])
        part.rename(path)
        return path

    def remove(self) -> None:
        for path in reversed(self.made):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.made.clear()


# ------------------------------------------------------------------------------------------------
# Verdicts from ComfyUI's answers (pure)
# ------------------------------------------------------------------------------------------------

def history_images(entry: dict) -> list[dict]:
    """Every image record ({filename, subfolder, type}) in a /history entry's outputs."""
    out = []
    for node_out in (entry.get("outputs") or {}).values():
        for img in node_out.get("images") or []:
            if isinstance(img, dict) and "filename" in img:
                out.append(img)
    return out


def history_error(entry: dict) -> str | None:
    """ComfyUI's error text for a failed run, or None when it did not fail."""
    status = entry.get("status") or {}
    for kind, data in status.get("messages") or []:
        if kind == "execution_error":
            where = f"node {data.get('node_id')} ({data.get('node_type')})"
            kind = str(data.get("exception_type") or "error").rsplit(".", 1)[-1]  # a custom
            # node's exception type is named after its module's file path: keep the class
            return f"{where}: {kind}: " \
                   f"{str(data.get('exception_message', '')).strip()}"
        if kind == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    if status.get("status_str") == "error":
        return "ComfyUI reports an error without a message"
    return None


def image_path(img: dict, folders: dict[str, Path]) -> Path | None:
    base = folders.get(img.get("type", "output"))
    if base is None:
        return None
    return base / (img.get("subfolder") or "") / img["filename"]


def judge(entry: dict, folders: dict[str, Path], placeholders: bool = False) -> tuple[str, str]:
    """(status, detail) for a finished /history entry: 'ok' when it completed and every image it
    lists exists in ComfyUI's output/temp folders (at least one image); 'validated' when it
    failed but the template's models are placeholders (ComfyUI accepted the prompt, nothing could
    run); 'failed' otherwise, with ComfyUI's error text."""
    error = history_error(entry)
    if error is not None:
        return ("validated", f"prompt accepted; run stopped at the placeholder model: {error}") \
            if placeholders else ("failed", error)
    status = entry.get("status") or {}
    if not status.get("completed", True):
        return "failed", f"did not complete (status {status.get('status_str')!r})"
    images = history_images(entry)
    if not images:
        return "failed", "finished without an image in its outputs"
    absent = [str(image_path(i, folders) or i["filename"]) for i in images
              if (image_path(i, folders) is None or not image_path(i, folders).is_file())]
    if absent:
        return "failed", f"image(s) listed but not on disk: {', '.join(absent[:3])}"
    return "ok", f"{len(images)} image(s)"


QUICK = {"KSampler": {"steps": 2}, "KSamplerAdvanced": {"steps": 2},
         "EmptyLatentImage": {"width": 256, "height": 256}}
"""What ``--quick`` lowers (to at most these) in a prompt whose models include a random
full-size checkpoint: its picture is noise either way, and SD 2.1 unCLIP's 20 steps at 768 px
take some 12 minutes on two CPU cores."""


def quicken(prompt: dict) -> tuple[dict, list[str]]:
    """A copy of ``prompt`` with ComfyUI's samplers and latent sizes lowered to ``QUICK``, and
    what changed ("node 11 KSampler steps 20 -> 2").  Linked inputs are left alone."""
    out, changed = json.loads(json.dumps(prompt)), []
    for nid, node in out.items():
        for name, most in QUICK.get(node.get("class_type"), {}).items():
            value = node.get("inputs", {}).get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > most:
                node["inputs"][name] = most
                changed.append(f"node {nid} {node['class_type']} {name} {value} -> {most}")
    return out, changed


def prompt_error(answer: dict) -> str:
    """A readable text for a refused /prompt: the error and each node's errors."""
    parts = []
    err = answer.get("error")
    if isinstance(err, dict):
        parts.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    elif err:
        parts.append(str(err))
    for nid, ne in (answer.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            parts.append(f"node {nid} ({ne.get('class_type')}): {e.get('message')}: "
                         f"{e.get('details')}")
    return "; ".join(p for p in parts if p) or json.dumps(answer)[:500]


def pack_log_status(log: str) -> tuple[bool, str]:
    """Whether ComfyUI's log says our pack loaded: its line in 'Import times for custom nodes'
    without '(IMPORT FAILED)', and no 'Cannot import ... unclip-nodes'."""
    pat = re.compile(r"^\s*[\d.]+ seconds( \(IMPORT FAILED\))?: (.*)$", re.M)
    for m in pat.finditer(log):
        if Path(m.group(2).strip()).name == PACK_NAME:
            if m.group(1):
                cannot = re.search(r"^Cannot import .*" + re.escape(PACK_NAME) + r".*$", log, re.M)
                return False, cannot.group(0) if cannot else m.group(0).strip()
            return True, m.group(0).strip()
    cannot = re.search(r"^Cannot import .*" + re.escape(PACK_NAME) + r".*$", log, re.M)
    if cannot:
        return False, cannot.group(0)
    return False, f"no line for {PACK_NAME} in the log's 'Import times for custom nodes'"


def other_import_failures(log: str) -> list[str]:
    """Other modules ComfyUI could not import (its own optional nodes): for the report."""
    return sorted(set(re.findall(r"^IMPORT FAILED: (.+)$", log, re.M)))


# ------------------------------------------------------------------------------------------------
# ComfyUI: installing, starting, talking to it
# ------------------------------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def http(base: str, path: str, data: Any = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a request to the local ComfyUI."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(base + path, data=body, method="POST" if body else "GET",
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_comfyui_folder(folder: str) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UsageError(f"{folder}: no such folder")
    if not ((path / "main.py").is_file() and (path / "nodes.py").is_file()
            and (path / "comfy").is_dir()):
        raise UsageError(f"{folder}: not a ComfyUI folder (main.py, nodes.py and comfy/ expected)")
    return path.resolve()


def pick_python(comfy: Path, given: str | None) -> str:
    if given:
        found = shutil.which(given) or (given if Path(given).is_file() else None)
        if not found or not os.access(found, os.X_OK):
            raise UsageError(f"--python {given}: not an executable")
        return found
    venv = comfy / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() else sys.executable


def install_pack(comfy: Path) -> str:
    """Link the repository into custom_nodes; an existing entry is used only when it is this
    repository."""
    target = comfy / "custom_nodes" / PACK_NAME
    if target.is_symlink() or target.exists():
        if target.resolve() == REPO:
            return f"{target} -> {REPO} (already there)"
        raise UsageError(f"{target} exists and is not this repository ({REPO}); move it away "
                         "first (the check must load this checkout)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(REPO, target_is_directory=True)
    return f"{target} -> {REPO} (linked now; left in place)"


class ComfyServer:
    """A ComfyUI process on 127.0.0.1, its log in a file; stop() ends it and its children."""

    def __init__(self, comfy: Path, python: str, out: Path, port: int | None = None,
                 extra: list[str] = ()):
        self.comfy, self.python, self.out = comfy, python, out
        self.port = port or free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = out / "comfyui.log"
        self.user_dir = Path(tempfile.mkdtemp(prefix="comfyui-check-user-"))
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [self.python, "main.py", "--cpu", "--listen", HOST, "--port", str(self.port),
               "--disable-auto-launch", "--user-directory", str(self.user_dir), *self.extra]
        self.log_file = open(self.log_path, "w", encoding="utf-8")
        self.log_file.write("$ " + " ".join(cmd) + "\n")
        self.log_file.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY"):
            env.pop(k, None)
        self.proc = subprocess.Popen(cmd, cwd=self.comfy, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.proc.returncode}) before it answered; "
                                   f"log tail:\n{self.log()[-3000:]}")
            try:
                status, _ = http(self.base, "/system_stats", timeout=5)
                if status == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; log tail:\n"
                           f"{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)  # ComfyUI's own Ctrl-C path
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        if getattr(self, "log_file", None):
            self.log_file.close()
        shutil.rmtree(self.user_dir, ignore_errors=True)

    def folders(self) -> dict[str, Path]:
        """Where ComfyUI puts 'output' and 'temp' images (the defaults; --output-directory and
        --temp-directory in extra args are honoured)."""
        out = {"output": self.comfy / "output", "temp": self.comfy / "temp",
               "input": self.comfy / "input"}
        for flag, key in (("--output-directory", "output"), ("--temp-directory", "temp"),
                          ("--input-directory", "input")):
            if flag in self.extra:
                out[key] = Path(self.extra[self.extra.index(flag) + 1])
        return out


def run_prompt(server: ComfyServer, prompt: dict, workflow: dict, timeout: float
               ) -> tuple[dict | None, str | None]:
    """Queue one prompt and wait for its history entry: (entry, None) or (None, why not)."""
    client = uuid.uuid4().hex
    status, answer = http(server.base, "/prompt", {
        "prompt": prompt, "client_id": client,
        "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
        return None, f"refused by /prompt ({status}): " + (prompt_error(answer) if isinstance(
            answer, dict) else str(answer)[:500])
    pid = answer["prompt_id"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.proc.poll() is not None:
            return None, f"ComfyUI exited ({server.proc.returncode}) while running it"
        _, hist = http(server.base, f"/history/{pid}")
        entry = hist.get(pid) if isinstance(hist, dict) else None
        if entry and (entry.get("status") or {}).get("status_str") in ("success", "error") or (
                entry and (entry.get("status") or {}).get("completed")):
            return entry, None
        time.sleep(0.25)
    http(server.base, "/interrupt", {"prompt_id": pid})
    return None, f"no result within {timeout:.0f} s (interrupted)"


# ------------------------------------------------------------------------------------------------
# The browser step (optional: Playwright + Debian's chromium)
# ------------------------------------------------------------------------------------------------

BROWSER_PROBE = """async (graph) => {
  const app = window.app ?? window.comfyAPI?.app?.app;
  const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  try { app.extensionManager.toast.removeAll(); } catch (e) {}
  document.querySelectorAll('.p-toast-message').forEach(t => t.remove());
  if (graph.workflow.nodes) await app.loadGraphData(graph.workflow, true, true, graph.name);
  else app.loadApiJson(graph.workflow, graph.name);  // an API-format template
  await new Promise(r => setTimeout(r, 1500));
  const nodes = app.graph._nodes ?? app.graph.nodes ?? [];
  const registered = LG?.registered_node_types ?? {};
  const virtual = new Set(["Note", "MarkdownNote", "Reroute", "PrimitiveNode"]);
  const types = nodes.map(n => n.type);
  const missing = [...new Set(types.filter(t => !(t in registered) && !virtual.has(t)))];
  const dialogs = [...document.querySelectorAll('.p-dialog, [role=dialog]')]
      .map(d => d.innerText.trim()).filter(t => t);
  const toasts = [...document.querySelectorAll('.p-toast-message')]
      .map(t => t.innerText.trim()).filter(t => t);
  let output = null, error = null;
  try { output = (await app.graphToPrompt()).output; } catch (e) { error = String(e); }
  try { await app.extensionManager.command.execute('Comfy.Canvas.FitView'); } catch (e) {}
  app.canvas?.setDirty?.(true, true);
  return {count: nodes.length, types, missing, dialogs, toasts, output, error,
          graph: JSON.parse(JSON.stringify(app.graph.serialize()))};
}"""


def browser_available(chromium: str) -> str | None:
    """None when the browser step can run, else why not."""
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        return f"Playwright is not installed for {sys.executable} (pip install playwright)"
    if not (Path(chromium).is_file() and os.access(chromium, os.X_OK)):
        return f"no Chromium at {chromium} (apt-get install -y chromium)"
    return None


def _template_browser(page, shots: Path) -> dict:
    """Open ComfyUI's template browser at the pack's entry and take a screenshot."""
    try:
        page.evaluate("async () => { const a = window.app ?? window.comfyAPI?.app?.app; "
                      "await a.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
        page.wait_for_timeout(1000)
        page.get_by_text(PACK_NAME, exact=True).first.click(timeout=15_000)
        page.wait_for_timeout(2500)
        text = page.evaluate("() => [...document.querySelectorAll('[role=dialog]')]"
                             ".map(d => d.innerText).join('\\n')")
        shot = shots / "template_browser.png"
        page.screenshot(path=str(shot))
        return {"screenshot": str(shot), "text": text}
    except Exception as e:  # the browser may look different in another front-end release
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}


def browser_check(server: ComfyServer, templates: list[tuple[Path, dict, dict]], shots: Path,
                  chromium: str, log: Callable[[str], None]) -> dict[str, dict]:
    """Load each template in the web UI; name -> {missing, dialogs, diffs, screenshot, error}."""
    sync_api = importlib.import_module("playwright.sync_api")
    shots.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            errors: list[str] = []  # the page's script errors while a template loads
            page.on("pageerror", lambda e: errors.append(f"{e}".splitlines()[0]))
            page.on("console", lambda m: errors.append(m.text.splitlines()[0])
                    if m.type == "error" and re.search(r"\b\w*Error\b", m.text)
                    and "Failed to load resource" not in m.text else None)
            # only ComfyUI itself: anything else the page asks for is refused at once
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(
                server.base) else route.abort())
            page.goto(server.base + "/", wait_until="domcontentloaded", timeout=120_000)
            page.wait_for_function(
                "() => (window.app ?? window.comfyAPI?.app?.app)?.graph && "
                "document.querySelector('canvas')", timeout=120_000)
            page.wait_for_timeout(2000)
            # draw titles and widgets also when the graph is zoomed out to fit the window
            page.evaluate("async () => { const a = window.app ?? window.comfyAPI?.app?.app; try { "
                          "await a.extensionManager.setting.set("
                          "'LiteGraph.Canvas.MinFontSizeForLOD', 1); } catch (e) {} }")
            results["(template browser)"] = _template_browser(page, shots)
            for _ in range(3):
                page.keyboard.press("Escape")
            for path, workflow, _prompt in templates:
                t0 = time.monotonic()
                errors.clear()
                try:
                    r = page.evaluate(BROWSER_PROBE, {"workflow": workflow, "name": path.stem})
                    r["page_errors"] = list(dict.fromkeys(errors))
                    for _ in range(2):
                        page.keyboard.press("Escape")
                    page.wait_for_timeout(300)
                    page.evaluate("() => { const a = window.app ?? window.comfyAPI?.app?.app; "
                                  "a.canvas?.ds && a.canvas.setDirty(true, true); }")
                    graph = r.pop("graph", None)
                    if not workflow.get("nodes") and graph:  # an API-format template: keep
                        ui_dir = shots.parent / "ui_format"  # the front end's UI-format copy
                        ui_dir.mkdir(exist_ok=True)
                        (ui_dir / path.name).write_text(json.dumps(graph, indent=1))
                        r["ui_format"] = str(ui_dir / path.name)
                    shot = shots / f"{path.stem}.png"
                    page.screenshot(path=str(shot))
                    r["screenshot"] = str(shot)
                except Exception as e:  # a page error: reported for this template
                    r = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
                r["seconds"] = time.monotonic() - t0
                results[path.stem] = r
                log(f"  {path.stem}: {r.get('count', '?')} nodes, missing "
                    f"{r.get('missing') or 'none'}, {r.get('screenshot') or r.get('error')}")
        finally:
            browser.close()
    return results


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="comfyui_check.py",
        description="Install this pack into a ComfyUI, start it on the CPU (127.0.0.1 only) and "
                    "run every example_workflows/*.json template through its API (and its web "
                    "UI, when Playwright and Chromium are installed).")
    ap.add_argument("--comfyui", required=True, metavar="DIR", help="the ComfyUI folder")
    ap.add_argument("--python", metavar="PATH",
                    help="the Python that runs ComfyUI (default: DIR/.venv/bin/python if there, "
                         "else this one)")
    ap.add_argument("--out", metavar="DIR", default=str(Path(tempfile.gettempdir()) /
                                                         "unclip-comfyui-check"),
                    help="where the log, the report and the screenshots go (default: %(default)s)")
    ap.add_argument("--templates", metavar="DIR", default=str(REPO / "example_workflows"),
                    help="the templates to check (default: this repository's %(default)s; "
                         "ComfyUI's template list is checked only for those)")
    ap.add_argument("--only", metavar="NAME", action="append", default=[],
                    help="check only this template (file stem; repeatable)")
    ap.add_argument("--port", type=int, help="port for ComfyUI (default: a free one)")
    ap.add_argument("--start-timeout", type=float, default=300, metavar="S")
    ap.add_argument("--timeout", type=float, default=900, metavar="S",
                    help="seconds one template may run (default: %(default)s)")
    ap.add_argument("--no-browser", action="store_true", help="skip the web UI step")
    ap.add_argument("--chromium", default=CHROMIUM, metavar="PATH",
                    help="Chromium for Playwright (default: %(default)s; Playwright's own "
                         "browsers are never downloaded)")
    ap.add_argument("--no-fabricate", action="store_true",
                    help="never fabricate full-size random checkpoints (SD 2.1 unCLIP, CLIP "
                         "vision): write empty placeholders, the template is 'validated only'")
    ap.add_argument("--quick", action="store_true",
                    help="where a template's models include a random full-size checkpoint, run "
                         "ComfyUI's KSampler for 2 steps at 256 px at most (the wiring is "
                         "checked the same; the web UI step still compares the saved values)")
    ap.add_argument("--keep-models", action="store_true",
                    help="keep the tiny checkpoints and placeholders written into models/")
    ap.add_argument("--comfy-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for main.py (repeatable), e.g. --comfy-arg=--verbose")
    return ap.parse_args(argv)  # a usage mistake: argparse prints it and exits 2


@dataclasses.dataclass
class Row:
    name: str
    status: str = "pending"
    seconds: float = 0.0
    detail: str = ""
    models: str = ""
    ui: str = ""

    @property
    def passed(self) -> bool:
        """The API run produced its images (or, with placeholder models, was accepted) and the
        web UI step, when it ran, found nothing wrong (no missing node, no schema alert, no page
        error, the front end's own prompt equal to ours)."""
        return self.status in ("ok", "validated") and self.ui in ("", "ok")


def print_table(rows: list[Row], out=sys.stdout) -> None:
    head = ("template", "result", "api", "time", "ui", "models", "detail")
    cells = [(r.name, "PASS" if r.passed else "FAIL", r.status, f"{r.seconds:.1f}s", r.ui or "-",
              r.models or "-", r.detail) for r in rows]
    n = len(head) - 1  # the last column is not padded
    widths = [max([len(head[i])] + [len(c[i]) for c in cells]) for i in range(n)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[n]
    print(line, file=out)
    print("-" * min(len(line) + 40, 140), file=out)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)) + "  " + c[n], file=out)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage mistake (2), already printed
        return 0 if e.code in (0, None) else 2
    try:
        comfy = check_comfyui_folder(args.comfyui)
        python = pick_python(comfy, args.python)
        templates = find_templates(Path(args.templates).expanduser(), args.only)
        if not templates:
            raise UsageError(f"no templates (*.json) in {args.templates}")
    except UsageError as e:
        if str(e):
            print(f"comfyui_check: {e}", file=sys.stderr)
        return 2

    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = open(out / "report.txt", "w", encoding="utf-8")

    def log(msg: str) -> None:
        print(msg, flush=True)
        report.write(msg + "\n")
        report.flush()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    server = ComfyServer(comfy, python, out, args.port, args.comfy_arg)
    provisioner = Provisioner(comfy, python, log, out / "fabricated", not args.no_fabricate)
    rows = [Row(p.stem) for p in templates]
    started = time.monotonic()
    code = 1
    try:
        code = _check(args, comfy, python, templates, server, provisioner, rows, out, log)
    except KeyboardInterrupt:
        log("interrupted: stopping ComfyUI")
        code = 130
    except Exception as e:  # noqa: BLE001 -- reported, ComfyUI still stopped below
        log(f"check aborted: {type(e).__name__}: {e}")
        code = 1
    finally:
        for r in rows:
            if r.status == "pending":
                r.status = "not run"
        server.stop()
        if not args.keep_models:
            provisioner.remove()
        signal.signal(signal.SIGTERM, previous)
        log("")
        print_table(rows)
        print_table(rows, report)
        passed = sum(r.passed for r in rows)
        if any("random" in r.models for r in rows):
            log("models marked 'random' are tiny or full-size random checkpoints written for "
                "this check: their pictures are noise, the check is about the wiring")
        log(f"\n{passed}/{len(rows)} templates passed in {time.monotonic() - started:.0f} s "
            f"(ComfyUI log: {server.log_path}; report: {out / 'report.txt'})")
        report.close()
    return code


def _check(args, comfy: Path, python: str, templates: list[Path], server: ComfyServer,
           provisioner: Provisioner, rows: list[Row], out: Path, log) -> int:
    by_name = {r.name: r for r in rows}
    log(f"unclip-nodes ComfyUI check, {datetime.datetime.now().isoformat(timespec='seconds')}")
    log(f"ComfyUI: {comfy}  python: {python}")
    log(f"pack: {install_pack(comfy)}")
    workflows = {}
    for path in templates:
        try:
            workflows[path.stem] = load_template(path)
        except ValueError as e:
            by_name[path.stem].status, by_name[path.stem].detail = "failed", str(e)

    # 1. start ComfyUI and read its log
    log(f"starting ComfyUI on {server.base} (log: {server.log_path})")
    t0 = time.monotonic()
    server.start()
    server.wait_ready(args.start_timeout)
    log(f"ComfyUI answers after {time.monotonic() - t0:.1f} s")
    ok, line = pack_log_status(server.log())
    log(f"pack import: {'ok' if ok else 'FAILED'}: {line}")
    others = other_import_failures(server.log())
    if others:
        log(f"(ComfyUI's own modules that did not import: {', '.join(others)})")
    if not ok:
        for r in rows:
            r.status, r.detail = "failed", f"the pack did not load: {line}"
        return 1

    # 2. every node type known?
    status, info = http(server.base, "/object_info", timeout=120)
    if status != 200 or not isinstance(info, dict):
        raise RuntimeError(f"/object_info answered {status}")
    ours = sorted(k for k, v in info.items() if v.get("python_module") == PACK_MODULE)
    log(f"/object_info: {len(info)} node types, {len(ours)} of them ours")
    converted: dict[str, tuple[dict, list[ModelNeed]]] = {}
    for path in templates:
        row = by_name[path.stem]
        if path.stem not in workflows:
            continue
        wf = workflows[path.stem]
        prompt, missing, notes = ui_to_api(wf, info)
        for n in notes:
            log(f"  {path.stem}: note: {n}")
        if missing:
            row.status, row.detail = "failed", f"missing node types: {', '.join(missing)}"
        elif not prompt:
            row.status, row.detail = "failed", "; ".join(notes) or "nothing to run"
        else:
            converted[path.stem] = (prompt, model_needs(prompt))
    status, listed = http(server.base, "/api/workflow_templates")
    listed = set(listed.get(PACK_NAME, [])) if isinstance(listed, dict) else set()
    ours_listed = Path(args.templates).expanduser().resolve() == REPO / "example_workflows"
    unlisted = [p.stem for p in templates if p.stem not in listed] if ours_listed else []
    log(f"/api/workflow_templates lists {len(listed)} template(s) for {PACK_NAME}"
        + (f"; not listed: {', '.join(unlisted)}" if unlisted else ""))
    for name in unlisted:
        if by_name[name].status == "pending":
            by_name[name].status = "failed"
            by_name[name].detail = "not in ComfyUI's template list (/api/workflow_templates)"
            converted.pop(name, None)
    missing_total = sum(r.detail.startswith("missing node types") for r in rows)
    log(f"missing node types: {missing_total} template(s) with missing nodes")

    # models the templates name
    for name, (prompt, needs) in list(converted.items()):
        made = []
        for need in needs:
            try:
                how = provisioner.provide(need)
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                by_name[name].status = "failed"
                by_name[name].detail = f"could not provide {need.value}: {e}"[:2000]
                converted.pop(name)
                break
            if how != "bundled":
                made.append(f"{need.value or '(empty)'}: {how}")
        by_name[name].models = "; ".join(made)
    if any(n.provider.startswith("tiny") for _, ns in converted.values() for n in ns):
        log("note: tiny-* models are random tiny checkpoints: their pictures are noise; the "
            "check is about the wiring")
    if provisioner.made:  # new model folders: ComfyUI caches its file lists; ask again
        status, info = http(server.base, "/object_info", timeout=120)

    # 3. queue each template
    for path in templates:
        row = by_name[path.stem]
        if path.stem not in converted:
            continue
        prompt, needs = converted[path.stem]
        placeholders = bool(needs_placeholder(needs, comfy))
        log(f"running {path.stem} ({len(prompt)} nodes) ...")
        changed: list[str] = []
        if args.quick and "(real architecture)" in row.models:
            prompt, changed = quicken(prompt)  # the web UI step compares the template's own
            if changed:
                log(f"  --quick: {'; '.join(changed)}")
        t0 = time.monotonic()
        entry, why = run_prompt(server, prompt, workflows[path.stem], args.timeout)
        row.seconds = time.monotonic() - t0
        if entry is None:
            row.status, row.detail = "failed", why
        else:
            row.status, row.detail = judge(entry, server.folders(), placeholders)
        if changed:
            row.detail += " (--quick: " + ", ".join(c.split(" ", 2)[2] for c in changed) + ")"
        log(f"  {row.status} in {row.seconds:.1f} s: {row.detail}")

    # 4. the web UI
    if args.no_browser:
        log("web UI step: skipped (--no-browser)")
    else:
        why = browser_available(args.chromium)
        if why:
            log(f"web UI step: skipped ({why})")
        else:
            log(f"web UI step: Chromium {args.chromium}, screenshots in {out / 'screenshots'}")
            items = [(p, workflows[p.stem], converted.get(p.stem, ({}, []))[0])
                     for p in templates if p.stem in workflows]
            try:
                ui = browser_check(server, items, out / "screenshots", args.chromium, log)
            except Exception as e:  # noqa: BLE001 -- the browser step failed as a whole
                log(f"web UI step failed: {type(e).__name__}: {str(e).splitlines()[0]}")
                ui = {p.stem: {"error": "browser step failed"} for p, _, _ in items}
            tb = ui.get("(template browser)", {})
            if tb.get("error"):
                log(f"  template browser: {tb['error']}")
            else:
                absent = [p.stem for p in templates if p.stem not in tb.get("text", "")] \
                    if ours_listed else []
                log(f"  template browser: {tb.get('screenshot')}; "
                    + (f"not shown: {', '.join(absent)}" if absent else "every template shown"))
            for p, _, prompt in items:
                r, row = ui.get(p.stem, {}), by_name[p.stem]
                if r.get("error"):
                    row.ui = "error"
                    row.detail += f" | ui: {r['error']}"
                    continue
                dialog = any("Nodes Are Missing" in d for d in r.get("dialogs") or [])
                if r.get("missing") or dialog:
                    row.ui = "missing"
                    row.detail += f" | ui: missing node types {', '.join(r.get('missing') or [])}"
                    if dialog:
                        row.detail += " ('Some Nodes Are Missing' dialog)"
                    continue
                invalid = [t for t in r.get("toasts") or [] if "Invalid workflow" in t]
                if invalid:  # the front end's schema check of the loaded file
                    row.ui = "invalid"
                    row.detail += " | ui: " + " ".join(invalid[0].split())[:300]
                    continue
                if r.get("page_errors"):  # e.g. a widget the front end could not build
                    row.ui = "js-error"
                    row.detail += " | ui: " + "; ".join(r["page_errors"][:3])[:300]
                    continue
                diffs = compare_prompts(prompt, r.get("output") or {}) if prompt else []
                row.ui = "ok" if not diffs else "differs"
                if diffs:
                    row.detail += f" | ui: graphToPrompt differs: {'; '.join(diffs[:3])}"
                    log(f"  {p.stem}: the front end's prompt differs from ours:")
                    for d in diffs:
                        log(f"    {d}")
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
