"""Check a whole workflow before anything runs, and resolve it into what the executor needs.

Every problem found is collected and all of them are raised together (``UserErrors``), each
located at file:line:column with the node id and field.  Nothing here runs a node function; it
calls only the declarations' ``check`` and ``fingerprint`` hooks, which must be cheap.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import networkx as nx

from ..nodes import declare, runtime
from ..nodes.declare import NodeSpec, Param, parse_literal
from ..nodes.errors import UserError
from . import dag
from .workflow import (BAD, MISSING, NAME, At, NodeDecl, Problems, Workflow, place, read, show,
                       suggest)


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

    def inputs_json(self) -> str:
        return json.dumps(self.inputs, sort_keys=True, ensure_ascii=False)


def load(source: str | Path | Mapping, overrides: Mapping[str, Any] | None = None) -> Resolved:
    """Parse and validate ``source``; raise UserError(s) naming every problem."""
    wf, p = read_expanded(source)
    return resolve(wf, p, overrides)


def read_expanded(source: str | Path | Mapping) -> tuple[Workflow, Problems]:
    """Parse ``source`` and expand its preset nodes inline; problems are collected in ``p``."""
    from .preset import expand
    wf, p = read(source)
    return expand(wf, p), p


def resolve(wf: Workflow, p: Problems, overrides: Mapping[str, Any] | None = None) -> Resolved:
    """Validate an expanded workflow with ``overrides``; raise every problem (``p``'s too)."""
    inputs = _resolve_inputs(wf, overrides or {}, p)
    nodes: dict[str, ResolvedNode] = {}
    edges: list[tuple[str, str]] = []
    with runtime.use_base_dir(runtime.workflow_folder(wf.file)):  # relative file parameters
        for decl in wf.nodes.values():
            rn = _check_node(wf, decl, inputs, edges, p)
            if rn is not None:
                nodes[rn.id] = rn
    outputs = _check_outputs(wf, p)
    if not wf.outputs and not any(_spec(d) and _spec(d).output_node for d in wf.nodes.values()):
        p.add("nothing to run: name some 'outputs' or add an output node (a saver)")
    graph = dag.build(wf.nodes, edges)
    for cyc in dag.cycles(graph):
        first = wf.nodes[cyc[0]]
        p.add("the links form a cycle: " + " -> ".join(cyc + cyc[:1]), first.at, node=cyc[0])
    p.raise_any()
    return Resolved(wf, inputs, nodes, outputs, graph)


def _spec(decl: NodeDecl) -> NodeSpec | None:
    return declare.get(decl.type.value) if isinstance(decl.type.value, str) else None


# --- workflow inputs ----------------------------------------------------------------------------

def _resolve_inputs(wf: Workflow, overrides: Mapping[str, Any], p: Problems) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, wi in wf.inputs.items():
        if wi.socket:
            p.add(f"workflow input '{name}' is a socket ({wi.type}): only a workflow used as a "
                  "preset (type: preset:...) can have one, and its user links it", wi.at,
                  field=name)
        if wi.default is MISSING:
            continue
        try:
            values[name] = Param(name, wi.type).check(wi.default)
        except ValueError as e:
            p.add(f"default of workflow input '{name}' ({wi.type}): {e}", wi.default_at, field=name)
    for name, raw in overrides.items():
        wi = wf.inputs.get(name)
        if wi is None or wi.socket:
            known = ", ".join(n for n, i in wf.inputs.items() if not i.socket) or "none"
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
            p.add(f"workflow input '{name}' has no default: give it with --set {name}=...", wi.at,
                  field=name)
    return values


# --- nodes --------------------------------------------------------------------------------------

def _check_node(wf: Workflow, decl: NodeDecl, inputs: dict[str, Any],
                edges: list[tuple[str, str]], p: Problems) -> ResolvedNode | None:
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
    links = _check_links(wf, decl, spec, edges, p)
    params = _check_params(wf, decl, spec, inputs, p) if spec else {}
    unresolved = spec is not None and any(n not in params for n in decl.params if spec.param(n))
    if spec is None or len(p.errors) > start or unresolved:
        return None  # the hooks below would only see holes (already reported elsewhere)
    rn = ResolvedNode(nid, spec, params, links, None, decl)
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
        if hook == "fingerprint":
            rn.fingerprint = result
    return rn


def _check_links(wf: Workflow, decl: NodeDecl, spec: NodeSpec | None,
                 edges: list[tuple[str, str]], p: Problems) -> dict[str, tuple[str, str]]:
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
        target = _link_target(wf, at, p, node=nid, field=name)
        if target is None:
            continue
        src, out_name = target
        edges.append((src, nid))
        out = _upstream_output(wf, src, out_name, at, p, node=nid, field=name)
        if out is None or inp is None:
            continue
        if out.type != inp.type:
            p.add(f"type mismatch: '{src}.{out_name}' gives {out.type} but input '{name}' of "
                  f"{spec.type} takes {inp.type}", at, node=nid, field=name)
            continue
        links[name] = target
    for inp in spec.inputs if spec else ():
        if not inp.optional and inp.name not in decl.links:
            p.add(f"missing required input '{inp.name}' ({inp.type}): link it under 'links' as "
                  "'<node>.<output>'", decl.at, node=nid, field=inp.name)
    return links


def _link_target(wf: Workflow, at: At, p: Problems, **where) -> tuple[str, str] | None:
    """``'node.output'`` -> (node, output) when the node exists; reports why not otherwise."""
    ref = at.value
    if ref is BAD:
        return None
    if isinstance(ref, str) and ref.startswith("$") and NAME.match(ref[1:]):
        wi = wf.inputs.get(ref[1:])
        if wi is None or not wi.socket:
            p.add(f"a link takes '<node id>.<output name>'; {ref!r} would need a socket-typed "
                  f"workflow input (e.g. '{ref[1:]}: {{type: IMAGE}}'), which only presets have",
                  at, **where)
        return None  # a socket input outside a preset is reported on the input
    if not isinstance(ref, str) or "." not in ref or ref.startswith(".") or ref.endswith("."):
        hint = ""
        if isinstance(ref, str) and ref in wf.nodes:
            spec = _spec(wf.nodes[ref])
            if spec and spec.outputs:
                hint = f", e.g. '{ref}.{spec.outputs[0].name}'"
        p.add(f"a link must be written '<node id>.<output name>'{hint}, got {show(ref)}", at,
              **where)
        return None
    src, out_name = ref.rsplit(".", 1)
    if src not in wf.nodes:
        p.add(f"link '{ref}': there is no node '{src}'{suggest(src, wf.nodes)}", at, **where)
        return None
    return src, out_name


def _upstream_output(wf: Workflow, src: str, out_name: str, at: At, p: Problems, **where):
    spec = _spec(wf.nodes[src])
    if spec is None:
        return None  # its unknown type is reported on that node
    out = spec.output(out_name)
    if out is None:
        names = [o.name for o in spec.outputs]
        p.add(f"link '{src}.{out_name}': {spec.type} has no output '{out_name}'"
              f"{suggest(out_name, names)}; its outputs: {', '.join(names) or 'none'}", at,
              **where)
    return out


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
                p.add(f"{value!r} is not a workflow input reference ('$name'); write '$$' for a "
                      "literal '$'", at, node=nid, field=name)
                continue
            if ref not in wf.inputs:
                p.add(f"undefined workflow input '${ref}'{suggest(ref, wf.inputs)}; "
                      f"defined: {', '.join(wf.inputs) or 'none'}", at, node=nid, field=name)
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
        target = _link_target(wf, at, p, field=name)
        if target and _upstream_output(wf, *target, at, p, field=name) is not None:
            outputs[name] = target
    return outputs

