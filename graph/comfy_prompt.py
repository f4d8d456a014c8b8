"""A prompt on its way into ComfyUI: old names made current, and our checks run before it starts.

ComfyUI checks a prompt one node at a time (types of links, widget ranges, lists), so a Kandinsky
prior linked into a Karlo decoder, a checkpoint folder that lacks a stage, or a mask of the
wrong size would only fail once the run reaches them.  ComfyUI calls ``on_prompt`` with every
prompt it receives, before its own checks; we then

1. rewrite names that changed (an old exported graph's ``path`` is LoadImage's ``image`` now)
   and our nodes that ComfyUI's own now stand for (``unCLIP GrowMask`` becomes ``GrowMask``),
2. check our part of the graph as ``unclip validate`` would (declared links, parameters, the
   nodes' own checks and the facts that flow along links: families, CLIP spaces, widths), and
3. write each problem into the node's hidden ``unclip_problem`` input, which its
   VALIDATE_INPUTS returns: ComfyUI refuses the prompt, names the node and our message, and
   marks the node red, before anything runs.

Nodes of ComfyUI or of other packs are left to ComfyUI; an input of ours fed by one of them is
taken as unknown, never as missing.  Nothing here may break a prompt: on any failure of our
own the prompt goes on unchanged.
"""
from __future__ import annotations

import logging
from typing import Any

from ..nodes import declare
from ..nodes.declare import COMFY_PREFIX, PROBLEM, comfy_id
from ..nodes.errors import UserError, UserErrors

log = logging.getLogger(__name__)


def on_prompt(json_data: Any) -> Any:
    """ComfyUI's on_prompt handler: returns the request body, its prompt checked and marked."""
    try:
        prompt = json_data.get("prompt") if isinstance(json_data, dict) else None
        if isinstance(prompt, dict):
            from .comfy_map import api_to_core
            prompt = json_data["prompt"] = api_to_core(prompt)  # ComfyUI's nodes for ours
            current_names(prompt)
            for nid, message in problems(prompt).items():
                prompt[nid].setdefault("inputs", {})[PROBLEM] = message
    except Exception:  # noqa: BLE001 -- our check must never stop a prompt
        log.warning("unclip-nodes: the prompt was not checked", exc_info=True)
    return json_data


def _our_spec(node: Any) -> declare.NodeSpec | None:
    ct = node.get("class_type") if isinstance(node, dict) else None
    if not isinstance(ct, str) or not ct.startswith(COMFY_PREFIX):
        return None
    return declare.get(declare.current_type(ct[len(COMFY_PREFIX):]))


def current_names(prompt: dict) -> None:
    """Old node type and field names of our nodes, as they are now (in place)."""
    for node in prompt.values():
        spec = _our_spec(node)
        if spec is None:
            continue
        node["class_type"] = comfy_id(spec.type)
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for old, new in spec.renamed.items():
            if old in inputs and new not in inputs:
                inputs[new] = inputs.pop(old)


def problems(prompt: dict) -> dict[str, str]:
    """What our validation finds on our nodes of ``prompt``, per node id, as one message."""
    from .comfy import _is_link, _safe_ids, load_api
    kept: dict[str, dict] = {}
    for nid, node in prompt.items():
        ct = node.get("class_type") if isinstance(node, dict) else None
        if _our_spec(node) is not None or (isinstance(ct, str) and (
                ct.startswith(COMFY_PREFIX) or declare.get(declare.FOREIGN_PREFIX + ct))):
            kept[str(nid)] = node
    if not any(_our_spec(n) for n in kept.values()):
        return {}
    unknown: set[tuple[str, str]] = set()  # (node, field) fed from a node we cannot check
    sub: dict[str, dict] = {}
    for nid, node in kept.items():
        spec = _our_spec(node) or declare.get(declare.FOREIGN_PREFIX + node["class_type"])
        inputs = {}
        for name, value in (node.get("inputs") or {}).items():
            if name == PROBLEM:
                continue
            if _is_link(value) and (str(value[0]) not in kept or spec is None
                                    or spec.param(name) is not None):
                unknown.add((nid, name))  # another pack's node, or a widget given by a link
                continue
            inputs[name] = value
        sub[nid] = {**node, "inputs": inputs}
    try:
        load_api(sub)
        return {}
    except UserError as e:
        errors = e.errors if isinstance(e, UserErrors) else [e]
    original = {v: k for k, v in _safe_ids(list(sub)).items()}
    found: dict[str, list[str]] = {}
    for err in errors:
        nid = original.get(err.node, err.node) if err.node else None
        if nid not in sub or (nid, err.field) in unknown:
            continue  # not ours to say, or about an input we could not see
        where = f"{err.field}: " if err.field else ""
        if _our_spec(sub[nid]) is None:  # ComfyUI's node: said on ours that feeds it
            ours = _ours_upstream(sub, sub[nid]["inputs"].get(err.field))
            if ours is None:
                continue
            nid, where = ours, f"its output reaches {sub[nid]['class_type']} (node {nid}), {where}"
        found.setdefault(nid, []).append(where + err.message)
    return {nid: "; ".join(msgs) for nid, msgs in found.items()}


def _ours_upstream(sub: dict[str, dict], link: Any) -> str | None:
    """The nearest of our nodes that feeds ``link`` through ComfyUI's nodes: only ours can show
    a problem (in its hidden input), so a mismatch ComfyUI's KSampler would hit is said on our
    node whose embedding reaches it."""
    from .comfy import _is_link
    seen: set[str] = set()
    todo = [link]
    while todo:
        value = todo.pop(0)
        if not _is_link(value) or str(value[0]) not in sub or str(value[0]) in seen:
            continue
        src = str(value[0])
        seen.add(src)
        if _our_spec(sub[src]) is not None:
            return src
        todo.extend((sub[src].get("inputs") or {}).values())
    return None


_registered = False


def register() -> bool:
    """Inside a running ComfyUI: hook ``on_prompt`` into its server, once."""
    global _registered
    if _registered:
        return True
    try:
        from server import PromptServer  # type: ignore[import-not-found]
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None or not hasattr(instance, "add_on_prompt_handler"):
        return False
    instance.add_on_prompt_handler(on_prompt)
    _registered = True
    return True
