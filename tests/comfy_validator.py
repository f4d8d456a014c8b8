"""What ComfyUI's ``execution.validate_prompt`` / ``validate_inputs`` would say about an API prompt.

A small model of ComfyUI 0.3.x's checks, in our own code, so the contract tests need no ComfyUI:
class_type known, at least one output node, then from each output node upwards: every required
input present, a link is ``[id, index]`` to an existing node with the index in range and the
same type as the input, a literal converts to the input's type (int(), float(), str(), bool())
and lies within min/max, a combo value is one of the choices.  Errors carry ComfyUI's type names.
"""
from __future__ import annotations

from typing import Any

PRIMITIVE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _types_match(received: Any, wanted: Any) -> bool:
    """ComfyUI's non-strict rule: equal, or comma-separated type lists that overlap; '*' = any."""
    if received == wanted or "*" in (received, wanted):
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in wanted.split(",")})


def validate_prompt(prompt: dict, classes: dict) -> dict[str, list[dict]]:
    """Errors per node id ({} when ComfyUI would queue the prompt); ``classes`` maps class_type to
    a dict with ``input_types`` (INPUT_TYPES()), ``return_types`` and ``output_node``."""
    errors: dict[str, list[dict]] = {}
    outputs = []
    for nid, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return {nid: [{"type": "invalid_prompt", "details": "missing class_type"}]}
        cls = classes.get(node["class_type"])
        if cls is None:
            return {nid: [{"type": "invalid_prompt",
                           "details": f"node {node['class_type']} does not exist"}]}
        if cls["output_node"]:
            outputs.append(nid)
    if not outputs:
        return {"": [{"type": "prompt_no_outputs", "details": ""}]}
    done: set[str] = set()
    for nid in outputs:
        _validate_node(prompt, classes, nid, done, errors)
    return errors


def _validate_node(prompt, classes, nid, done, errors) -> None:
    if nid in done:
        return
    done.add(nid)
    node = prompt[nid]
    cls = classes[node["class_type"]]
    types = cls["input_types"]
    inputs = node.get("inputs", {})
    found: list[dict] = []

    def add(kind: str, name: str, details: str = "") -> None:
        found.append({"type": kind, "input_name": name, "details": details})

    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            wanted = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if name not in inputs:
                if section == "required":
                    add("required_input_missing", name)
                continue
            value = inputs[name]
            if isinstance(value, list):
                if len(value) != 2:
                    add("bad_linked_input", name, repr(value))
                    continue
                src, index = value
                if src not in prompt:
                    add("linked_node_missing", name, f"node {src!r} is not in the prompt")
                    continue
                src_cls = classes[prompt[src]["class_type"]]
                if not isinstance(index, int) or not 0 <= index < len(src_cls["return_types"]):
                    add("linked_output_missing", name, f"output {index!r} of {src!r}")
                    continue
                received = src_cls["return_types"][index]
                if not _types_match(received, wanted):
                    add("return_type_mismatch", name, f"{received} != {wanted}")
                    continue
                _validate_node(prompt, classes, src, done, errors)
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            if isinstance(wanted, str) and wanted in PRIMITIVE:
                try:
                    value = PRIMITIVE[wanted](value)
                except (TypeError, ValueError) as e:
                    add("invalid_input_type", name, str(e))
                    continue
            elif isinstance(wanted, str):  # a socket type given a literal: ComfyUI passes it on
                add("literal_for_socket", name, f"{wanted} needs a link")
                continue
            if "min" in opts and value < opts["min"]:
                add("value_smaller_than_min", name, f"{value} < {opts['min']}")
                continue
            if "max" in opts and value > opts["max"]:
                add("value_bigger_than_max", name, f"{value} > {opts['max']}")
                continue
            if isinstance(wanted, list) and value not in wanted:
                add("value_not_in_list", name, f"{value!r} not in {wanted}")
    if found:
        errors[nid] = found


def with_core(classes: dict, prompt: dict) -> dict:
    """``classes`` plus ComfyUI's own nodes that our workflows may name (nodes/comfy_core.py),
    as a ComfyUI that has the files the prompt names would list them: a drop-down of files on
    ComfyUI's disk (``ckpt_name``) offers what the prompt uses."""
    from unclip_nodes.nodes import declare
    from unclip_nodes.nodes.comfy_core import Files
    declare.get("comfy:KSampler")  # declares them
    used: dict[tuple[str, str], list] = {}
    for node in prompt.values():
        for name, value in node.get("inputs", {}).items():
            used.setdefault((node["class_type"], name), []).append(value)
    out = dict(classes)
    for spec in declare.FOREIGN.values():
        ct = declare.class_type(spec)
        types = declare.comfy_input_types(spec)
        for section in types.values():
            for name, entry in list(section.items()):
                if isinstance(entry, tuple) and isinstance(entry[0], Files):
                    section[name] = (sorted({str(v) for v in used.get((ct, name), [])}),
                                     *entry[1:])
        out[ct] = {"input_types": types, "return_types": [o.type for o in spec.outputs],
                   "return_names": [o.name for o in spec.outputs],
                   "output_node": spec.output_node}
    return out
