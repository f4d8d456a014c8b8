"""Our nodes that ComfyUI has too, written as ComfyUI's own when a workflow leaves for ComfyUI,
and read back as ours when a prompt comes from it.

Inside ComfyUI the pack registers only what ComfyUI lacks: GrowMask, InvertMask, MaskToImage,
ResizeImage and ImageBatch compute exactly what ComfyUI's GrowMask, InvertMask, MaskToImage,
ImageScale and ImageBatch compute (``replaced_by`` in their declarations), so an exported graph
names ComfyUI's nodes instead, and an exported graph must: it is opened in a ComfyUI where ours
are not registered.

* ``to_core(rs)``: a validated workflow with every such node rewritten into ComfyUI's
  (``comfy:``) node(s): one for one, or our four-input ImageBatch as a chain of ComfyUI's
  two-input one; OutpaintBorder with fill=grey and feather=0 as ImagePadForOutpaint
  (feathering 0).  Inserted nodes get new ids, links and named outputs follow.  graph/comfy.py
  calls it first thing in ``to_api`` and ``to_ui``.
* ``from_core(prompt)``: the reverse on an API prompt, for running it headless (``load_api``):
  ComfyUI's nodes that ours compute exactly become ours again (``unCLIP GrowMask``...); the
  others stay ComfyUI's, which only ComfyUI runs.
* ``api_to_core(prompt)``: an API prompt written before this (``unCLIP GrowMask`` with
  ``pixels``, ``unCLIP FeatherMask``...) as one ComfyUI runs today: replaced nodes become
  ComfyUI's, renamed ones get their new names (for a ComfyUI ``on_prompt`` hook).

docs/comfyui_core_nodes.md has the table.  Both sides' output indices agree for every one-for-one
mapping, so links in the API format need no re-pointing there.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from ..nodes import declare
from ..nodes.declare import COMFY_PREFIX, FOREIGN_PREFIX
from ..nodes.image import OLD_CROPS, OLD_METHODS
from .validate import Resolved, ResolvedNode


# --- the rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Up:
    """A link to an output of a node outside the rewrite: (node id, output index)."""
    ref: tuple[str, int]


@dataclass(frozen=True)
class Local:
    """Output ``index`` of piece ``key`` of the same rewrite."""
    key: int
    index: int


@dataclass
class Piece:
    """One ComfyUI node of a rewrite.  Key 0 takes the rewritten node's id; keys 1, 2, ... are
    inserted before it, in order."""
    key: int
    core: str                       # ComfyUI's class name
    inputs: dict[str, Any]          # name -> a value, an Up or a Local


Rewrite = tuple[list[Piece], dict[int, "Up | Local"]]
"""The pieces, and for each output index of our node what now gives it."""


def _lit(v: Any) -> bool:
    return not isinstance(v, (Up, Local))


def _one(core: str, *names: str, outputs: int = 1) -> Callable[[dict, dict], Rewrite]:
    """Our node is ComfyUI's ``core`` with the same sockets and widgets ``names``."""
    def rule(values: dict, links: dict) -> Rewrite:
        inputs = {n: links[n] if n in links else values[n] for n in names if n in links
                  or n in values}
        return [Piece(0, core, inputs)], {i: Local(0, i) for i in range(outputs)}
    return rule


def _resize(values: dict, links: dict) -> Rewrite:
    inputs = {"image": links.get("image"), **{n: values[n] for n in ("upscale_method", "width",
                                                                     "height", "crop")}}
    if _lit(inputs["upscale_method"]):
        inputs["upscale_method"] = OLD_METHODS.get(inputs["upscale_method"],
                                                   inputs["upscale_method"])
    if _lit(inputs["crop"]):
        inputs["crop"] = OLD_CROPS.get(inputs["crop"], inputs["crop"])
    return [Piece(0, "ImageScale", inputs)], {0: Local(0, 0)}


def _batch(values: dict, links: dict) -> Rewrite | None:
    given = [links[n] for n in ("image_a", "image_b", "image_c", "image_d") if n in links]
    if not given:
        return None
    if len(given) == 1:
        return [], {0: given[0]}  # nothing to join: the first image as it is
    pieces, prev = [], given[0]
    for i, nxt in enumerate(given[1:], 1):
        key = 0 if i == len(given) - 1 else i
        pieces.append(Piece(key, "ImageBatch", {"image1": prev, "image2": nxt}))
        prev = Local(key, 0)
    return pieces, {0: Local(0, 0)}


def _outpaint(values: dict, links: dict) -> Rewrite | None:
    if values.get("fill") != "grey" or values.get("feather") != 0:
        return None  # edge or noise fill, a linear feather: ComfyUI has no such node
    inputs = {"image": links.get("image"),
              **{s: values[s] for s in ("left", "top", "right", "bottom")}, "feathering": 0}
    return [Piece(0, "ImagePadForOutpaint", inputs)], {0: Local(0, 0), 1: Local(0, 1)}


TO_CORE: dict[str, Callable[[dict, dict], Rewrite | None]] = {
    "GrowMask": _one("GrowMask", "mask", "expand", "tapered_corners"),
    "InvertMask": _one("InvertMask", "mask"),
    "MaskToImage": _one("MaskToImage", "mask"),
    "ResizeImage": _resize,
    "ImageBatch": _batch,
    "OutpaintBorder": _outpaint,
}
"""Our node type -> its rewrite into ComfyUI's nodes (None: these values have none)."""

FROM_CORE: dict[str, tuple[str, dict[str, str], Callable[[dict], dict | None]]] = {
    "GrowMask": ("GrowMask", {}, dict),
    "InvertMask": ("InvertMask", {}, dict),
    "MaskToImage": ("MaskToImage", {}, dict),
    "ImageScale": ("ResizeImage", {}, dict),
    "ImageBatch": ("ImageBatch", {"image1": "image_a", "image2": "image_b"}, dict),
    "ImagePadForOutpaint": ("OutpaintBorder", {}, lambda inputs: None
                            if inputs.get("feathering", 40) != 0 else
                            {**{k: v for k, v in inputs.items() if k != "feathering"},
                             "fill": "grey", "feather": 0, "seed": 0}),
}
"""ComfyUI's class -> (our node type, renamed inputs, the inputs as ours take them; None: ours
would compute something else with these values)."""


# --- rewriting a graph ----------------------------------------------------------------------------

def _new_ids(owner: str, count: int, taken: set[str], numeric: bool) -> list[str]:
    out = []
    for k in range(1, count + 1):
        if numeric:
            cand = str(max((int(t) for t in taken if t.isdigit()), default=0) + 1)
        else:
            cand, i = f"{owner}_{k}", 2
            while cand in taken:
                cand, i = f"{owner}_{k}_{i}", i + 1
        taken.add(cand)
        out.append(cand)
    return out


class _Plan:
    """Rewrites of some nodes of a graph: the new ids of their pieces and where each link to
    a rewritten node's output now goes."""

    def __init__(self, rewrites: dict[str, Rewrite], taken: set[str], numeric: bool):
        self.rewrites = rewrites
        self.ids: dict[str, dict[int, str]] = {}
        for nid, (pieces, _) in rewrites.items():
            extra = sorted(p.key for p in pieces if p.key)
            self.ids[nid] = {0: nid, **dict(zip(extra, _new_ids(nid, len(extra), taken,
                                                                  numeric)))}

    def pieces(self, nid: str) -> list[tuple[str, Piece]]:
        """(id, piece) in the order they go in: inserted ones first, the node itself last."""
        pieces = sorted(self.rewrites[nid][0], key=lambda p: (p.key == 0, p.key))
        return [(self.ids[nid][p.key], p) for p in pieces]

    def follow(self, ref: tuple[str, int]) -> tuple[str, int]:
        """Where a link to output ref[1] of node ref[0] (an id before the rewrite) goes now."""
        seen = set()
        while ref[0] in self.rewrites and ref not in seen:
            seen.add(ref)
            target = self.rewrites[ref[0]][1].get(ref[1])
            if target is None:
                return ref
            if isinstance(target, Local):
                return self.ids[ref[0]][target.key], target.index
            ref = target.ref
        return ref

    def link(self, owner: str, v: Up | Local) -> tuple[str, int]:
        return (self.ids[owner][v.key], v.index) if isinstance(v, Local) else self.follow(v.ref)


def _numeric(ids) -> bool:
    return all(re.fullmatch(r"[1-9][0-9]*", i) for i in ids)


def to_core(rs: Resolved) -> Resolved:
    """``rs`` with every node that ComfyUI has (see the module text) as ComfyUI's node(s)."""
    from . import dag
    rewrites: dict[str, Rewrite] = {}
    for nid, rn in rs.nodes.items():
        rule = TO_CORE.get(rn.spec.type)
        if rule is None or declare.is_foreign(rn.spec):
            continue
        links = {name: Up((src, rs.nodes[src].spec.output_index(out)))
                 for name, (src, out) in rn.links.items() if src in rs.nodes}
        rw = rule(dict(rn.params), links)
        if rw is not None:
            rewrites[nid] = rw
    if not rewrites:
        return rs
    taken = set(rs.nodes) | set(rs.workflow.nodes)
    plan = _Plan(rewrites, taken, _numeric([n for n in rs.workflow.nodes if n in rs.nodes]))

    refs: dict[str, tuple[Any, dict[str, tuple[str, int]]]] = {}  # id -> (node, links by index)
    for nid, rn in rs.nodes.items():
        if nid not in rewrites:
            refs[nid] = (rn, {name: plan.follow((src, rs.nodes[src].spec.output_index(out)))
                              for name, (src, out) in rn.links.items() if src in rs.nodes})
            continue
        for pid, piece in plan.pieces(nid):
            spec = declare.get(FOREIGN_PREFIX + piece.core)
            params = {p.name: p.default for p in spec.params}
            params.update({k: v for k, v in piece.inputs.items() if _lit(v) and v is not None
                           and spec.param(k) is not None})
            links = {k: plan.link(nid, v) for k, v in piece.inputs.items() if not _lit(v)}
            decl = rn.decl if pid == nid else _inserted_decl(rn.decl, pid)
            decl = replace(decl, type=replace(decl.type, value=spec.type))
            refs[pid] = (ResolvedNode(pid, spec, params, {}, None, decl), links)
    nodes: dict[str, ResolvedNode] = {}
    for nid, (rn, links) in refs.items():
        named = {k: (src, refs[src][0].spec.outputs[i].name) for k, (src, i) in links.items()
                 if src in refs}
        nodes[nid] = replace(rn, links=named)

    def named(src: str, out: str) -> tuple[str, str]:
        if src not in rs.nodes:
            return src, out
        s, i = plan.follow((src, rs.nodes[src].spec.output_index(out)))
        return s, nodes[s].spec.outputs[i].name

    wf_nodes = {}
    for nid, decl in rs.workflow.nodes.items():
        if nid not in rewrites:
            wf_nodes[nid] = decl
            continue
        for pid, _ in plan.pieces(nid):
            wf_nodes[pid] = nodes[pid].decl
    order = []
    for nid in sorted(rs.graph.nodes, key=lambda n: rs.graph.nodes[n].get("index", 0)):
        order += [pid for pid, _ in plan.pieces(nid)] if nid in rewrites else [nid]
    edges = [(src, nid) for nid, rn in nodes.items() for src, _ in rn.links.values()]
    graph = dag.build(order, edges)
    return replace(rs, workflow=replace(rs.workflow, nodes=wf_nodes), nodes=nodes,
                   outputs={k: named(*v) for k, v in rs.outputs.items()}, graph=graph)


def _inserted_decl(decl, nid: str):
    """A declaration for an inserted node, placed where the node it came from was written."""
    from .workflow import NodeDecl
    return NodeDecl(nid, decl.type, {}, {}, decl.at)


# --- API prompts ----------------------------------------------------------------------------------

def _is_link(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 2 and isinstance(v[0], (str, int))
            and not isinstance(v[0], bool) and isinstance(v[1], int)
            and not isinstance(v[1], bool))


def _entries(prompt: Mapping) -> dict[str, dict]:
    return {str(k): v for k, v in prompt.items()}


def from_core(prompt: Mapping) -> dict:
    """An API prompt with ComfyUI's nodes that ours compute exactly as ours (``unCLIP ...``), so
    that it runs headless with the same pixels.  Anything else is left as it is (mistakes are
    reported by the reader)."""
    out = _entries(prompt)
    for key, entry in out.items():
        if not isinstance(entry, dict) or entry.get("class_type") not in FROM_CORE \
                or not isinstance(entry.get("inputs"), dict):
            continue
        ours, names, convert = FROM_CORE[entry["class_type"]]
        inputs = convert({names.get(k, k): v for k, v in entry["inputs"].items()})
        if inputs is None:
            continue
        out[key] = {**entry, "class_type": declare.comfy_id(ours), "inputs": inputs}
    return out


def api_to_core(prompt: Mapping) -> dict:
    """An API prompt that names our nodes as they were before ComfyUI's took over (``unCLIP
    GrowMask`` with ``pixels``, ``unCLIP FeatherMask``...), as ComfyUI runs it now: each node
    that has a ComfyUI equivalent as that node or chain, renamed nodes and fields by their new
    names, everything else untouched.  ``prompt`` is not changed."""
    entries = copy.deepcopy(_entries(prompt))
    rewrites: dict[str, Rewrite] = {}
    for key, entry in entries.items():
        ct = entry.get("class_type") if isinstance(entry, dict) else None
        if not isinstance(ct, str) or not ct.startswith(COMFY_PREFIX) \
                or not isinstance(entry.get("inputs"), dict):
            continue
        old = ct[len(COMFY_PREFIX):]
        spec = declare.get(declare.current_type(old))
        if spec is None or declare.is_foreign(spec):
            continue
        inputs = {spec.renamed.get(k, k): v for k, v in entry["inputs"].items()}
        entry["class_type"], entry["inputs"] = declare.comfy_id(spec.type), inputs
        rule = TO_CORE.get(spec.type)
        if rule is None:
            continue
        values = {p.name: p.default for p in spec.params}
        links = {}
        for k, v in inputs.items():
            up = Up((str(v[0]), v[1])) if _is_link(v) else None
            if spec.input(k) is not None and up is not None:
                links[k] = up
            elif spec.param(k) is not None:
                values[k] = up if up is not None else v
        rw = rule(values, links)
        if rw is not None:
            rewrites[key] = rw
    plan = _Plan(rewrites, set(entries), _numeric(entries))
    out: dict[str, dict] = {}
    for key, entry in entries.items():
        if key not in rewrites:
            if isinstance(entry, dict) and isinstance(entry.get("inputs"), dict):
                entry["inputs"] = {k: list(plan.follow((str(v[0]), v[1]))) if _is_link(v)
                                   else v for k, v in entry["inputs"].items()}
            out[key] = entry
            continue
        title = (entry.get("_meta") or {}).get("title", key)
        for pid, piece in plan.pieces(key):
            inputs = {k: list(plan.link(key, v)) if not _lit(v) else v
                      for k, v in piece.inputs.items() if v is not None}
            out[pid] = {"inputs": inputs, "class_type": piece.core,
                        "_meta": {"title": title if pid == key else f"{title} ({piece.key})"}}
    return out
