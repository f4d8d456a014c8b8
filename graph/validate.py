"""Check a whole workflow before anything runs, and resolve it into what the executor needs.

Every problem found is collected and all of them are raised together (``UserErrors``), each
located at file:line:column with the node id and field.  Nothing here runs a node function; it
calls only the declarations' ``check`` and ``fingerprint`` hooks, which must be cheap.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import networkx as nx

from ..nodes import declare, runtime
from ..nodes.declare import NodeSpec, Output, Param, parse_literal
from ..nodes.errors import UserError, excerpt
from . import dag
from .preset import MAX_NODES, read_expanded  # noqa: F401 -- callers find them here too
from .workflow import (BAD, MISSING, NAME, At, NodeDecl, Problems, Workflow, link_target, place,
                       show, suggest, upstream_output)


@dataclass
class ResolvedNode:
    id: str
    spec: NodeSpec
    params: dict[str, Any]              # checked values, defaults filled in
    links: dict[str, tuple[str, str]]   # input name -> (upstream node id, output name)
    fingerprint: Any                    # spec.fingerprint(params), None when not declared
    decl: NodeDecl

    def where(self, file: str | None, field: str | None = None) -> dict:
        """Location keywords for a UserError about this node (or one of its fields)."""
        at = self._at(field)
        return {"file": file, "line": at.line, "column": at.column, "node": self.id}

    def locate(self, err: UserError, file: str | None) -> UserError:
        """``err`` placed at this node (or its field), in the preset file it came from if any."""
        return place(err, self._at(err.field), file, node=self.id)

    def _at(self, field: str | None) -> At:
        return self.decl.params.get(field) or self.decl.links.get(field) or self.decl.at


@dataclass
class Resolved:
    workflow: Workflow
    inputs: dict[str, Any]
    nodes: dict[str, ResolvedNode]
    outputs: dict[str, tuple[str, str]]
    graph: nx.DiGraph
    parts: dict[str, "Resolved"] = field(default_factory=dict)
    """A sweep's combined graph: per node id, the single run it belongs to.  Savers record that
    run's workflow and inputs, so each saved file can be run again on its own."""
    unbound: list[str] = field(default_factory=list)
    """Socket-typed workflow inputs left without a value (``load(..., preset=True)``): the
    workflow checks out as a preset definition but cannot run as it is."""


def load(source: str | Path | Mapping, overrides: Mapping[str, Any] | None = None, *,
         values: Mapping[str, Any] | None = None, preset: bool = False) -> Resolved:
    """Parse and validate ``source``; raise UserError(s) naming every problem.

    ``values``: Python values (tensors, embeddings, ...) for socket-typed workflow inputs
    (``image: {type: IMAGE}``); an IMAGE input also takes a file path in ``overrides``.
    ``preset``: check a preset definition: socket inputs may stay without a value."""
    wf, p = read_expanded(source)
    return resolve(wf, p, overrides, values=values, preset=preset)


def resolve(wf: Workflow, p: Problems, overrides: Mapping[str, Any] | None = None, *,
            values: Mapping[str, Any] | None = None, preset: bool = False) -> Resolved:
    """Validate an expanded workflow with ``overrides`` (and ``values`` for its socket inputs);
    raise every problem (``p``'s too)."""
    overrides, values = dict(overrides or {}), dict(values or {})
    files = {n: overrides.pop(n) for n in list(overrides)
             if n in wf.inputs and wf.inputs[n].socket}
    for name in [n for n, v in files.items() if not isinstance(v, str)]:
        values.setdefault(name, files.pop(name))  # a tensor given as an override: a value
    inputs = _resolve_inputs(wf, overrides, p)
    nodes: dict[str, ResolvedNode] = {}
    edges: list[tuple[str, str]] = []
    with runtime.use_base_dir(runtime.workflow_folder(wf.file)):  # relative file parameters
        sources, unbound = _socket_sources(wf, files, values, preset, inputs, p)
        nodes.update(sources)
        for decl in wf.nodes.values():
            rn = _check_node(wf, decl, inputs, edges, p, sources)
            if rn is not None:
                nodes[rn.id] = rn
    outputs = _check_outputs(wf, p)
    if not wf.outputs and not any(_spec(d) and _spec(d).output_node for d in wf.nodes.values()):
        p.add("nothing to run: name some 'outputs' or add an output node (a saver)")
    graph = dag.build([*sources, *wf.nodes], edges)
    cyclic = False
    for cyc in dag.cycles(graph):
        cyclic = True
        first = wf.nodes[cyc[0]]
        p.add("the links form a cycle: " + " -> ".join(cyc + cyc[:1]), first.at, node=cyc[0])
    if not cyclic:
        _infer(wf, nodes, graph, p)
    p.raise_any()
    return Resolved(wf, inputs, nodes, outputs, graph, unbound=unbound)


class Known(dict):
    """The facts of a node's linked inputs, as ``infer`` hooks get them.  ``lacking`` names the
    inputs whose source says there is nothing there: a node without links (a loader) whose hook
    maps that output to None, as the loaders do for a stage the checkpoint lacks.  A None from a
    node with links only means that its inputs were unknown, so it is not counted."""

    lacking: frozenset = frozenset()


def _infer(wf: Workflow, nodes: dict[str, ResolvedNode], graph: nx.DiGraph, p: Problems) -> None:
    """Run the declarations' ``infer`` hooks in link order, so that combinations that cannot
    work (another model family's embeddings, a stage a family lacks) are found before anything
    runs.  Facts are only what the hooks say; a node without a hook passes nothing on."""
    facts: dict[tuple[str, str], dict] = {}
    empty: set[tuple[str, str]] = set()
    for nid in nx.topological_sort(graph):
        rn = nodes.get(nid)
        if rn is None or rn.spec.infer is None:
            continue
        known = Known({name: facts.get(target) for name, target in rn.links.items()})
        known.lacking = frozenset(name for name, target in rn.links.items() if target in empty)
        try:
            out = rn.spec.infer(dict(rn.params), known) or {}
        except UserError as e:
            for err in getattr(e, "errors", [e]):
                p.extend([rn.locate(err, wf.file)])
            continue
        for name, value in out.items():
            if value is not None:
                facts[(nid, name)] = value
            elif not rn.links:
                empty.add((nid, name))


def _spec(decl: NodeDecl) -> NodeSpec | None:
    return declare.get(decl.type.value) if isinstance(decl.type.value, str) else None


# --- workflow inputs ----------------------------------------------------------------------------

def _resolve_inputs(wf: Workflow, overrides: Mapping[str, Any], p: Problems) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, wi in wf.inputs.items():
        if wi.default is MISSING or wi.socket:
            continue
        try:
            values[name] = Param(name, wi.type).check(wi.default)
        except ValueError as e:
            p.add(f"default of workflow input '{name}' ({wi.type}): {e}", wi.default_at, field=name)
    for name, raw in overrides.items():
        wi = wf.inputs.get(name)
        if wi is None:
            known = ", ".join(wf.inputs) or "none"
            p.errors.append(UserError(f"--set {name}: the workflow has no input '{name}'"
                                      f"{suggest(name, wf.inputs)}; its inputs: {known}",
                                      field=name))
            continue
        try:
            value = parse_literal(wi.type, raw) if isinstance(raw, str) else raw
            values[name] = Param(name, wi.type).check(value)
        except ValueError as e:
            p.errors.append(UserError(f"--set {name}={raw}: {e}", field=name))
    for name, wi in wf.inputs.items():
        if wi.default is MISSING and name not in overrides and not wi.socket:
            about = f" ({wi.description.rstrip('.')})" if wi.description else ""
            p.add(f"workflow input '{name}' has no default: give it with --set {name}=...{about}",
                  wi.at, field=name)
    return values


# --- socket inputs: values given from outside --------------------------------------------------

VALUE_NODE = "WorkflowValue"
"""The type shown for the node that hands a socket input's Python value to the graph."""
SOURCE_PREFIX = "$"
"""Node ids of socket-input sources are '$<input name>' (never a node id of a workflow file)."""


def is_source(nid: str) -> bool:
    """Whether a node id is the source of a socket-typed workflow input."""
    return nid.startswith(SOURCE_PREFIX)


def _socket_sources(wf: Workflow, files: dict[str, Any], values: dict[str, Any], preset: bool,
                    inputs: dict[str, Any], p: Problems) -> tuple[dict[str, ResolvedNode], list]:
    """One source node per socket-typed workflow input, so that ``$name`` links are checked and
    run like links to a node: a LoadImage node for an IMAGE input given a file path (``--set
    image=photo.png``), a value node for a Python value (keyed by its content), or -- when only
    checking a preset definition -- a placeholder that must never run."""
    nodes: dict[str, ResolvedNode] = {}
    unbound: list[str] = []
    for name in values:
        wi = wf.inputs.get(name)
        if wi is None or not wi.socket:
            sockets = ", ".join(n for n, i in wf.inputs.items() if i.socket) or "none"
            why = "is a value input: give it as an override" if wi else "does not exist"
            p.errors.append(UserError(f"value for '{name}': that workflow input {why}; socket "
                                      f"inputs: {sockets}", file=wf.file, field=name))
    for name, wi in wf.inputs.items():
        if not wi.socket:
            continue
        nid = SOURCE_PREFIX + name
        decl = NodeDecl(nid, At(VALUE_NODE), at=wi.at)
        if name in files:
            raw = files[name]
            load_image = declare.get("LoadImage")
            if wi.type != "IMAGE" or not isinstance(raw, str) or load_image is None:
                p.errors.append(UserError(
                    f"--set {name}: workflow input '{name}' is a socket ({wi.type}); only an "
                    "IMAGE input takes a value here (an image file); give others from Python "
                    f"(values={{'{name}': ...}}) or link them (preset use, ComfyUI)", field=name))
                continue
            rn = ResolvedNode(nid, load_image, {"image": raw}, {}, None,
                              _decl_as(decl, "LoadImage", {"image": At(raw)}))
            try:
                rn.fingerprint = load_image.fingerprint({"image": raw})
            except UserError as e:
                p.errors.append(UserError(f"--set {name}={raw}: {e.message}", field=name))
                continue
            inputs[name] = raw  # recorded with the run (PNG chunks): the run can be repeated
        elif name in values:
            try:
                rn = _value_node(nid, wi.type, values[name], decl)
            except ValueError as e:
                p.errors.append(UserError(f"value for '{name}' ({wi.type}): {e}", file=wf.file,
                                          field=name))
                continue
        elif preset:
            rn = _value_node(nid, wi.type, _UNBOUND, decl)
            unbound.append(name)
        else:
            p.add(f"workflow input '{name}' is a socket ({wi.type}) and has no value: use this "
                  "workflow as a preset (type: preset:...) and link it, or give it one "
                  f"(--set {name}=FILE for an IMAGE, values={{'{name}': ...}} from Python)",
                  wi.at, field=name)
            continue
        nodes[nid] = rn
    return nodes, unbound


def _decl_as(decl: NodeDecl, type_: str, params: dict[str, At]) -> NodeDecl:
    return NodeDecl(decl.id, At(type_, decl.type.line, decl.type.column, decl.type.origin),
                    {}, params, decl.at)


class _Unbound:
    def __repr__(self) -> str:
        return "UNBOUND"


_UNBOUND = _Unbound()


def _value_node(nid: str, type_: str, value: Any, decl: NodeDecl) -> ResolvedNode:
    """A node giving ``value``; its cache key is the value's content (None: not cacheable)."""
    digest = None if value is _UNBOUND else _digest(type_, value)

    def give(**_):
        if value is _UNBOUND:
            raise UserError(f"workflow input '{nid[1:]}' has no value", node=nid)
        return value

    spec = NodeSpec(type=VALUE_NODE, fn=give, category="workflow",
                    description="A value given to a socket-typed workflow input.",
                    outputs=(Output("value", type_),), cacheable=digest is not None)
    return ResolvedNode(nid, spec, {"sha256": digest} if digest else {}, {}, None, decl)


def _digest(type_: str, value: Any) -> str | None:
    """A content hash of a value fed in from outside (tensors by dtype, shape and bytes); None
    when the socket type has no codec (a model handle): such a value is never cached."""
    import torch

    from ..nodes.types import SOCKET_TYPES
    if type_ in ("IMAGE", "MASK"):
        dims = 4 if type_ == "IMAGE" else 3
        if not isinstance(value, torch.Tensor) or value.dim() != dims:
            raise ValueError(f"expected a tensor with {dims} dimensions "
                             f"({'[B, H, W, C]' if dims == 4 else '[B, H, W]'}), got "
                             f"{_describe(value)}")
    stype = SOCKET_TYPES.get(type_)
    if stype is None or not stype.storable:
        return None
    try:
        tensors, meta = stype.encode(value)
    except Exception as e:  # noqa: BLE001 -- a value the codec cannot take is the caller's
        raise ValueError(f"not a {type_} value ({_describe(value)}): {e}") from None
    h = hashlib.sha256(json.dumps([type_, meta], sort_keys=True, default=str).encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(t.dtype), list(t.shape)]).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"a {type(value).__name__}" + (f" of shape {list(shape)}" if shape is not None else "")


# --- nodes --------------------------------------------------------------------------------------

def _check_node(wf: Workflow, decl: NodeDecl, inputs: dict[str, Any],
                edges: list[tuple[str, str]], p: Problems,
                sources: dict[str, ResolvedNode]) -> ResolvedNode | None:
    nid = decl.id
    start = len(p.errors)
    spec = _spec(decl)
    t = decl.type.value
    if spec is None and t is not None and t is not BAD:
        if isinstance(t, str):
            p.add(f"unknown node type '{t}'{suggest(t, declare.REGISTRY)}; "
                  "`unclip nodes` lists them", decl.type, node=nid, field="type")
        else:
            p.add(f"node type must be text, got {show(t)}", decl.type, node=nid, field="type")
    links = _check_links(wf, decl, spec, edges, p, sources)
    params = _check_params(wf, decl, spec, inputs, p) if spec else {}
    unresolved = spec is not None and any(n not in params for n in decl.params if spec.param(n))
    if spec is None or len(p.errors) > start or unresolved:
        return None  # the hooks below would only see holes (already reported elsewhere)
    rn = ResolvedNode(nid, spec, params, links, None, decl)
    for field in PATH_PARAMS:  # no file can have such a name: say so before any stat does
        value = params.get(field)
        why = runtime.path_problem(value) if isinstance(value, str) and value.strip() else None
        if why:
            p.extend([rn.locate(UserError(f"the path {excerpt(value)} {why}", field=field),
                                wf.file)])
            return None
    for hook in ("check", "fingerprint"):
        fn = getattr(spec, hook)
        if fn is None:
            continue
        try:
            result = fn(dict(params))
        except UserError as e:
            for err in getattr(e, "errors", [e]):
                p.extend([rn.locate(err, wf.file)])
            return None
        except OSError as e:  # a file the node looked at refused (a loop, no permission, ...)
            p.extend([rn.locate(UserError(
                f"cannot use {excerpt(str(e.filename)) if e.filename else 'a file'}: "
                f"{e.strerror or e}", field=_path_field(params, e.filename)), wf.file)])
            return None
        if hook == "fingerprint":
            rn.fingerprint = result
    return rn


PATH_PARAMS = ("path", "prior_path", "image")
"""Parameters that name a file or folder to read (the loaders', LoadImage's)."""


def _path_field(params: dict, filename: object) -> str | None:
    """The path parameter an OSError's file name came from, when one did."""
    name = str(filename or "")
    return next((f for f in PATH_PARAMS if isinstance(params.get(f), str) and params[f]
                 and params[f] in name), None)


def _check_links(wf: Workflow, decl: NodeDecl, spec: NodeSpec | None,
                 edges: list[tuple[str, str]], p: Problems,
                 sources: dict[str, ResolvedNode]) -> dict[str, tuple[str, str]]:
    nid, links = decl.id, {}
    for name, at in decl.links.items():
        inp = spec.input(name) if spec else None
        if spec and inp is None:
            if spec.param(name):
                p.add(f"'{name}' is a parameter, not an input: put its value under 'params'", at,
                      node=nid, field=name)
            else:
                known = ", ".join(s.name for s in spec.inputs) or "none"
                p.add(f"{spec.type} has no input '{name}'"
                      f"{suggest(name, [s.name for s in spec.inputs])}; its inputs: {known}", at,
                      node=nid, field=name)
        source = sources.get(SOURCE_PREFIX + at.value[1:]) if isinstance(at.value, str) and \
            at.value.startswith(SOURCE_PREFIX) else None
        if source is not None:  # '$image': the socket input's source node
            wi = wf.inputs[at.value[1:]]
            target = (source.id, source.spec.outputs[0].name)
            out = Output(target[1], wi.type)
            written = at.value
        else:
            target = link_target(wf, at, p, node=nid, field=name)
            if target is None:
                continue
            out = upstream_output(wf, *target, at, p, node=nid, field=name)
            written = ".".join(target)
        src, out_name = target
        edges.append((src, nid))
        if out is None or inp is None:
            continue
        if out.type != inp.type:
            p.add(f"type mismatch: '{written}' gives {out.type} but input '{name}' of "
                  f"{spec.type} takes {inp.type}", at, node=nid, field=name)
            continue
        links[name] = target
    for inp in spec.inputs if spec else ():
        if not inp.optional and inp.name not in decl.links:
            p.add(f"missing required input '{inp.name}' ({inp.type}): link it under 'links' as "
                  "'<node>.<output>'", decl.at, node=nid, field=inp.name)
    return links


def _check_params(wf: Workflow, decl: NodeDecl, spec: NodeSpec, inputs: dict[str, Any],
                  p: Problems) -> dict[str, Any]:
    nid, params = decl.id, {}
    for name, at in decl.params.items():
        par = spec.param(name)
        if par is None:
            if spec.input(name):
                p.add(f"'{name}' is an input (a socket), not a parameter: link it under 'links' "
                      "as '<node>.<output>'", at, node=nid, field=name)
            else:
                names = [q.name for q in spec.params]
                p.add(f"{spec.type} has no parameter '{name}'{suggest(name, names)}; "
                      f"its parameters: {', '.join(names) or 'none'}", at, node=nid, field=name)
            continue
        value, origin = at.value, ""
        if value is BAD:
            continue
        if isinstance(value, str) and value.startswith("$$"):
            value = value[1:]
        elif isinstance(value, str) and value.startswith("$"):
            ref = value[1:]
            if not NAME.match(ref):
                p.add(f"{excerpt(value)} is not a workflow input reference ('$name'); write "
                      "'$$' for a literal '$'", at, node=nid, field=name)
                continue
            if ref not in wf.inputs:
                p.add(f"undefined workflow input '${ref}'{suggest(ref, wf.inputs)}; "
                      f"defined: {', '.join(wf.inputs) or 'none'}", at, node=nid, field=name)
                continue
            if wf.inputs[ref].socket:
                p.add(f"'{value}' is a socket input ({wf.inputs[ref].type}): link it under "
                      "'links', not 'params'", at, node=nid, field=name)
                continue
            if ref not in inputs:
                continue  # its own problem is reported on the input
            value, origin = inputs[ref], f" (from workflow input '${ref}')"
        try:
            params[name] = par.check(value)
        except ValueError as e:
            p.add(f"{par.type} parameter: {e}{origin}", at, node=nid, field=name)
    for par in spec.params:
        if par.name in decl.params:
            continue
        if par.required:
            p.add(f"missing required parameter '{par.name}' ({par.type})", decl.at, node=nid,
                  field=par.name)
        else:
            params[par.name] = par.default
    return params


def _check_outputs(wf: Workflow, p: Problems) -> dict[str, tuple[str, str]]:
    outputs = {}
    for name, at in wf.outputs.items():
        ref = at.value
        if isinstance(ref, str) and ref[1:] in wf.inputs and ref.startswith("$"):
            p.add(f"output '{name}': {excerpt(ref)} is a workflow input; an output names a node's "
                  "output, '<node id>.<output name>'", at, field=name)
            continue
        target = link_target(wf, at, p, field=name)
        if target and upstream_output(wf, *target, at, p, field=name) is not None:
            outputs[name] = target
    return outputs

