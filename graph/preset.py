"""Presets: a workflow file used as one node of another workflow (``type: preset:NAME``).

A preset's workflow inputs become the node's parameters (socket-typed inputs such as
``{type: IMAGE}`` become its linked inputs) and its outputs become the node's outputs.  Presets
are expanded inline when a workflow is read: the preset's nodes join the using workflow with ids
``<node>/<inner id>``, its ``$input`` references are replaced by what the using node gives, and
links to the node's outputs are redirected to the inner nodes that make them.  So validation,
the DAG, cache keys and the run report need nothing new -- a node that comes from a preset has
the same cache key as the same node written out by hand -- and every place keeps its own file:
a mistake inside a preset is reported in the preset's file, naming the node(s) that use it.

``preset:NAME`` (letters, digits, ``_``, ``-``) is looked up in the shipped ``workflows/`` and
``workflows/presets/`` folders, then in each folder of ``$UNCLIP_PRESETS`` (os.pathsep
separated); anything else is a file path relative to the file that uses it.  ``unclip run NAME``
uses the same lookup (``find_preset``).

A workflow from someone else may name any file as a preset (``preset:/etc/passwd``), so a file is
screened before it is parsed as a workflow (``screen``): one that is not a workflow mapping fails
with a message that shows nothing of its content, except a short, sanitised first line for a
``.yaml``/``.yml`` file.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..nodes import declare
from ..nodes.declare import REQUIRED, Input, NodeSpec, Output, Param
from ..nodes.errors import UserError, excerpt
from .workflow import (BAD, MISSING, NAME, TOP_KEYS, At, NodeDecl, Origin, PresetError, Problems,
                       Workflow, WorkflowInput, link_target, read, show, suggest,
                       upstream_output)

PREFIX = "preset:"
CATEGORY = "unCLIP/presets"
"""Where presets appear as nodes (ComfyUI's menu)."""
SHIPPED = Path(__file__).resolve().parent.parent / "workflows"
ENV = "UNCLIP_PRESETS"
MAX_NODES = 10_000
"""The most nodes a workflow may have once its presets are expanded, unless UNCLIP_MAX_NODES
says otherwise (presets that use presets several times over grow fast)."""
_PRESET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
SUFFIXES = (".yaml", ".yml")


# --- finding presets ----------------------------------------------------------------------------

def user_dirs() -> list[Path]:
    """The folders named in $UNCLIP_PRESETS, in order."""
    raw = os.environ.get(ENV, "")
    return [Path(d).expanduser() for d in raw.split(os.pathsep) if d.strip()]


def preset_dirs(shipped: Path | None = None) -> list[Path]:
    """Where ``preset:NAME`` is looked up, first match wins: the shipped folders, then the
    user's (so a user folder can add presets but never changes what a shipped workflow uses).
    ``shipped``: another folder in place of the installed ``workflows/``."""
    root = SHIPPED if shipped is None else Path(shipped)
    return [root, root / "presets", *user_dirs()]


def find_preset(name: str, *, shipped: Path | None = None) -> Path | None:
    """The file that ``preset:NAME`` and ``unclip run NAME`` mean: ``NAME.yaml``, else
    ``NAME.yml``, in the first folder of ``preset_dirs`` holding either.  A name ending in
    ``.yaml``/``.yml`` looks for that file only.  None when there is none, and for anything but
    a plain name (no folders, so nothing outside the preset folders is reachable)."""
    stem, tails = name, SUFFIXES
    for tail in SUFFIXES:
        if name.endswith(tail):
            stem, tails = name[:-len(tail)], (tail,)
    if not _PRESET_NAME.match(stem):
        return None
    for d in preset_dirs(shipped):
        for tail in tails:
            cand = d / f"{stem}{tail}"
            if cand.is_file():
                return cand
    return None


def list_presets() -> dict[str, Path]:
    """Every preset name that ``preset:NAME`` can reach, with its file (first match wins)."""
    found: dict[str, Path] = {}
    for d in preset_dirs():
        try:
            files = sorted(d.iterdir())
        except OSError:
            continue
        for f in files:
            if f.suffix in SUFFIXES and f.is_file() and _PRESET_NAME.match(f.stem):
                found.setdefault(f.stem, f)
    return found


def is_preset(type_: Any) -> bool:
    return isinstance(type_, str) and type_.startswith(PREFIX)


def locate(ref: str, base: Path) -> tuple[Path | None, str]:
    """The file ``preset:ref`` names (relative paths from ``base``), or None and why not."""
    ref = ref.strip()
    if not ref:
        return None, f"write the preset after '{PREFIX}': a name or a file path"
    if _PRESET_NAME.match(ref):
        path = find_preset(ref)
        if path is not None:
            return path, ""
        where = ", ".join(str(d) for d in preset_dirs())
        return None, (f"no preset named '{ref}'{suggest(ref, list_presets())} (looked in {where}; "
                      f"add folders with {ENV}, or give a file path such as '{ref}.yaml')")
    from ..nodes.runtime import path_problem
    why = path_problem(ref)
    if why:  # before any stat, which would raise instead
        return None, f"the preset path {excerpt(ref)} {why}"
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file() and not path.suffix and path.with_suffix(".yaml").is_file():
        path = path.with_suffix(".yaml")
    if not path.is_file():
        return None, f"preset file not found: {path}"
    return path, ""


def screen(path: Path) -> str | None:
    """Why ``path`` cannot be a workflow file, or None when it may be one: a YAML (or JSON)
    mapping with ``nodes`` and no other keys than a workflow's.  The reason quotes nothing of
    the file, except the start of its first line, made printable, for a ``.yaml``/``.yml``
    file: a workflow from elsewhere may name any file as a preset, and its content must not
    reach an error message."""
    try:
        from ..nodes.errors import env_limit
        from .workflow import MAX_FILE_BYTES
        limit = env_limit("FILE_BYTES", MAX_FILE_BYTES)
        size = path.stat().st_size
        if size > limit:
            return (f"{size:,} bytes, more than the limit of {limit:,} for a workflow file "
                    f"(UNCLIP_MAX_FILE_BYTES)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except OSError as e:
        return f"cannot read it ({e.strerror or type(e).__name__})"
    why = _shape(text)
    if why is None:
        return None
    if path.suffix.lower() in SUFFIXES and why.startswith("not YAML ("):
        return None  # one's own workflow file with a typo: the reader reports it at its line
    return why  # what the file is, never what it holds


def _shape(text: str) -> str | None:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)  # nodes only: no value is built
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        return "not YAML" + (f" (a syntax error at line {mark.line + 1})" if mark else "")
    except RecursionError:
        return "not YAML (nested too deeply)"
    if node is None:
        return "empty"
    if isinstance(node, yaml.SequenceNode):
        return "a list, not a mapping"
    if not isinstance(node, yaml.MappingNode):
        return "a single value, not a mapping"
    keys = [k.value if isinstance(k, yaml.ScalarNode) else None for k, _ in node.value]
    unknown = sum(1 for k in keys if k not in (*TOP_KEYS, "<<"))
    if unknown:
        return f"a mapping with {unknown} key(s) that a workflow does not have"
    if "nodes" not in keys:
        return "a mapping without 'nodes'"
    return None


def not_a_workflow(why: str, path: Path | None = None) -> str:
    what = f"{path} is" if path is not None else "this is"
    return (f"{what} not a workflow file ({why}); a preset is a workflow: a YAML mapping "
            "with 'nodes' (and 'description', 'inputs', 'outputs')")


# --- what a preset looks like from outside ------------------------------------------------------

@dataclass
class PresetSignature:
    """A preset as a node type: its inputs (values and sockets) and its typed outputs."""

    path: Path
    description: str
    inputs: dict[str, WorkflowInput]
    outputs: dict[str, str]               # output name -> socket type
    workflow: Workflow | None = None      # the preset, expanded (its nodes use the inputs)


def signature(path: str | Path) -> PresetSignature:
    """Read (and expand) a preset file; raise UserError(s) when it is not usable."""
    why = screen(Path(path))
    if why is not None:
        raise UserError(not_a_workflow(why, Path(path)))
    wf, p = read_expanded(path)
    for nid, decl in wf.nodes.items():  # the rest is checked when it runs
        t = decl.type.value
        if t is not BAD and (not isinstance(t, str) or declare.get(t) is None):
            p.add(f"unknown node type {show(t)}{suggest(str(t), declare.REGISTRY)}", decl.type,
                  node=nid, field="type")
    p.raise_any()
    outputs: dict[str, str] = {}
    for name, at in wf.outputs.items():
        spec, out = _output_of(wf.nodes, at.value)
        if spec is None or out is None:
            p.add(f"output '{name}': {show(at.value)} is not '<node id>.<output name>' of a "
                  "node in this workflow", at, field=name)
            continue
        outputs[name] = out.type
    p.raise_any()
    return PresetSignature(Path(path), wf.description, dict(wf.inputs), outputs, wf)


def _output_of(nodes: dict[str, NodeDecl], ref: Any):
    if not isinstance(ref, str) or "." not in ref:
        return None, None
    src, out = ref.rsplit(".", 1)
    decl = nodes.get(src)
    spec = declare.get(decl.type.value) if decl and isinstance(decl.type.value, str) else None
    return spec, spec.output(out) if spec else None


# --- expansion ----------------------------------------------------------------------------------

@dataclass
class _Use:
    """A preset node: the preset read and expanded for it."""

    decl: NodeDecl
    child: Workflow
    label: str                            # how messages name the preset: 'b.yaml'
    origin: Origin


@dataclass
class _Ctx:
    p: Problems
    nodes: int = 0
    stack: tuple[tuple[str, str], ...] = ()   # (resolved path, shown name) of files being expanded
    too_big: bool = False
    seen: set = field(default_factory=set)

    def add(self, message: str, at: At | None, **who) -> None:
        """Report once: a mistake inside a preset used twice is still one mistake."""
        o = at.origin if at else None
        key = (o.file if o else None, at and at.line, at and at.column, message,
               who.get("field"))
        if o is not None and key in self.seen:
            return
        self.seen.add(key)
        self.p.add(message, at, **who)


def expand(wf: Workflow, p: Problems) -> Workflow:
    """``wf`` with every preset node replaced by the preset's own nodes; problems go to ``p``."""
    if not any(is_preset(d.type.value) for d in wf.nodes.values()):
        return wf
    stack = ((_key(Path(wf.file)), wf.file),) if wf.file else ()
    return _flatten(wf, _Ctx(p, len(wf.nodes), stack), None)


def _key(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def _flatten(wf: Workflow, ctx: _Ctx, origin: Origin | None) -> Workflow:
    """Expand the preset nodes of ``wf`` (whose places carry ``origin`` when it is a preset)."""
    prefix = origin.prefix if origin else ""  # messages name nodes by their final ids
    uses: dict[str, _Use] = {}
    broken: set[str] = set()
    for nid, decl in wf.nodes.items():
        if is_preset(decl.type.value):
            use = _load(wf, decl, ctx, origin)
            if use is None:
                broken.add(nid)
            else:
                uses[nid] = use
    if not uses and not broken:
        return wf

    def redirect(at: At, **who) -> At:
        """A link to a preset node's output -> a link to the inner node that makes it."""
        ref = at.value
        if not isinstance(ref, str) or "." not in ref:
            return at
        src, out = ref.rsplit(".", 1)
        if src in broken:
            return replace(at, value=BAD)
        use = uses.get(src)
        if use is None:
            return at
        target = use.child.outputs.get(out)
        if target is None:
            names = list(use.child.outputs)
            ctx.add(f"link '{ref}': preset {use.label} has no output '{out}'{suggest(out, names)}"
                    f"; its outputs: {', '.join(names) or 'none'}", at, **who)
            return replace(at, value=BAD)
        if target.value is BAD:
            return replace(at, value=BAD)
        return replace(at, value=f"{src}/{target.value}")

    def source_type(ref: Any) -> str | None:
        """The socket type a (redirected) link delivers, when it is known already."""
        if isinstance(ref, str) and ref.startswith("$"):
            wi = wf.inputs.get(ref[1:])
            return wi.type if wi is not None and wi.socket else None
        if not isinstance(ref, str) or "." not in ref:
            return None
        head, _, rest = ref.partition("/")
        nodes = uses[head].child.nodes if rest and head in uses else wf.nodes
        _, out = _output_of(nodes, rest if rest and head in uses else ref)
        return out.type if out is not None else None

    nodes: dict[str, NodeDecl] = {}
    for nid, decl in wf.nodes.items():
        if nid in broken:  # reported; an unknown type with no fields keeps the rest quiet
            nodes[nid] = NodeDecl(nid, replace(decl.type, value=BAD), at=decl.at)
        elif nid in uses:
            nodes.update(_bind(wf, uses[nid], set(uses) | broken, redirect, source_type, ctx))
        else:
            links = {k: redirect(v, node=prefix + nid, field=k) for k, v in decl.links.items()}
            nodes[nid] = replace(decl, links=links)
    outputs = {k: redirect(v, field=k) for k, v in wf.outputs.items()}
    return replace(wf, nodes=nodes, outputs=outputs)


def _load(wf: Workflow, decl: NodeDecl, ctx: _Ctx, origin: Origin | None) -> _Use | None:
    """Read and expand the preset ``decl`` names, or report why it cannot be used."""
    nid, here = decl.id, origin.file if origin else wf.file
    prefix = origin.prefix if origin else ""
    if ctx.too_big:
        return None
    base = Path(here).parent if here else Path.cwd()
    ref = decl.type.value[len(PREFIX):].strip()
    path, why = locate(ref, base)
    if path is None:
        ctx.add(why, decl.type, node=prefix + nid, field="type")
        return None
    key = _key(path)
    keys = [k for k, _ in ctx.stack]
    if key in keys:
        chain = [shown for _, shown in ctx.stack[keys.index(key):]] + [str(path)]
        ctx.add("presets use each other in a cycle: " + " -> ".join(chain), decl.type,
                node=prefix + nid, field="type")
        return None
    big = float("inf")
    use_at = f"{here}:{decl.at.line}:{decl.at.column}" if here and decl.at.line else here
    entry = f"{use_at} node '{nid}'" if use_at else f"node '{nid}'"
    use_origin = Origin(str(path), (entry, *(origin.via if origin else ())),
                        (*(origin.order if origin else ()), decl.at.line or big,
                         decl.at.column or 0), f"{prefix}{nid}/")
    why = screen(path)
    if why is not None:  # nothing of the file goes into the message
        ctx.p.extend([PresetError(not_a_workflow(why), file=str(path), via=use_origin.via,
                                  order=use_origin.order)])
        return None
    try:
        child, cp = read(path, use_origin)
    except UserError as e:  # unreadable file, YAML syntax: nothing inside to check
        ctx.p.extend([PresetError(e.message, file=e.file, line=e.line, column=e.column,
                                  via=use_origin.via, order=use_origin.order)])
        return None
    for err in cp.errors:
        ctx.add(err.message, At(None, err.line, err.column, use_origin), node=err.node,
                field=err.field)
    if cp.errors:
        return None
    ctx.nodes += len(child.nodes) - 1
    from ..nodes.errors import env_limit
    most = max(MAX_NODES, env_limit("NODES", MAX_NODES))  # below that, validation reports it
    if ctx.nodes > most:
        ctx.too_big = True
        ctx.add(f"presets expand to more than {most:,} nodes here; a preset is probably used "
                "many times over at several levels (UNCLIP_MAX_NODES raises the limit)",
                decl.type, node=prefix + nid, field="type")
        return None
    outer_stack = ctx.stack
    ctx.stack = (*outer_stack, (key, str(path)))
    try:
        child = _flatten(child, ctx, use_origin)
    finally:
        ctx.stack = outer_stack
    _check_preset(child, ctx)
    return _Use(decl, child, f"'{ref}'", use_origin)


def _check_preset(child: Workflow, ctx: _Ctx) -> None:
    """What only a preset needs: good defaults and outputs that name a node's output."""
    for name, wi in child.inputs.items():
        if wi.default is MISSING or wi.socket:
            continue
        try:
            Param(name, wi.type).check(wi.default)
        except ValueError as e:
            ctx.add(f"default of workflow input '{name}' ({wi.type}): {e}", wi.default_at,
                    field=name)
    for name, at in child.outputs.items():
        if at.value is BAD:
            continue
        spec, out = _output_of(child.nodes, at.value)
        if out is None:
            if spec is not None or not isinstance(at.value, str) or "." not in at.value or \
                    at.value.rsplit(".", 1)[0] not in child.nodes:
                ctx.add(f"{show(at.value)} is not '<node id>.<output name>' of a node of this "
                        f"preset{suggest(str(at.value), _refs(child))}", at, field=name)
            child.outputs[name] = replace(at, value=BAD)


def _refs(wf: Workflow) -> list[str]:
    out = []
    for nid, d in wf.nodes.items():
        spec = declare.get(d.type.value) if isinstance(d.type.value, str) else None
        out += [f"{nid}.{o.name}" for o in spec.outputs] if spec else []
    return out


def _bind(wf: Workflow, use: _Use, presets: set[str], redirect, source_type, ctx: _Ctx
          ) -> dict[str, NodeDecl]:
    """The preset's nodes for one use: ids prefixed, ``$input`` replaced by what it is given."""
    decl, child, label = use.decl, use.child, use.label
    nid = decl.id
    who = use.origin.prefix[:-1]  # the using node's final id, for messages
    values: dict[str, At] = {}
    sockets: dict[str, At] = {}
    value_names = [n for n, i in child.inputs.items() if not i.socket]
    socket_names = [n for n, i in child.inputs.items() if i.socket]
    for name, at in decl.params.items():
        wi = child.inputs.get(name)
        if wi is None:
            ctx.add(f"preset {label} has no input '{name}'{suggest(name, value_names)}; its "
                    f"inputs: {', '.join(value_names) or 'none'}", at, node=who, field=name)
        elif wi.socket:
            ctx.add(f"'{name}' is a socket input ({wi.type}) of preset {label}, not a value: "
                    "link it under 'links' as '<node>.<output>'", at, node=who, field=name)
        else:
            values[name] = _value(wf, wi, at, label, ctx, who)
    for name, at in decl.links.items():
        wi, written = child.inputs.get(name), at.value
        if _plain_link(at.value, presets):
            target = link_target(wf, at, ctx.p, node=who, field=name)
            if target is None or upstream_output(wf, *target, at, ctx.p, node=who,
                                                  field=name) is None:
                at = replace(at, value=BAD)  # reported (or its node's type is)
        at = redirect(at, node=who, field=name)
        if wi is None:
            ctx.add(f"preset {label} has no socket input '{name}'{suggest(name, socket_names)}; "
                    f"its socket inputs: {', '.join(socket_names) or 'none'}", at, node=who,
                    field=name)
        elif not wi.socket:
            ctx.add(f"'{name}' is a value input ({wi.type}) of preset {label}: put its value "
                    "under 'params'", at, node=who, field=name)
        else:
            got = source_type(at.value)
            if got is not None and got != wi.type:
                ctx.add(f"type mismatch: '{written}' gives {got} but input '{name}' of preset "
                        f"{label} takes {wi.type}", at, node=who, field=name)
                at = replace(at, value=BAD)
            sockets[name] = at
    for name, wi in child.inputs.items():
        if wi.socket and name not in decl.links:
            ctx.add(f"missing input '{name}' ({wi.type}) of preset {label}: link it under "
                    "'links' as '<node>.<output>'", decl.at, node=who, field=name)
        elif not wi.socket and name not in decl.params and wi.default is MISSING:
            ctx.add(f"missing parameter '{name}' ({wi.type}) of preset {label}, which has no "
                    "default for it", decl.at, node=who, field=name)

    def sub_link(cid: str, name: str, at: At) -> At:
        ref = at.value
        if isinstance(ref, str) and ref.startswith("$"):
            wi = child.inputs.get(ref[1:])
            if wi is None:
                ctx.add(f"undefined workflow input '{ref}'{suggest(ref[1:], socket_names)}; "
                        f"socket inputs: {', '.join(socket_names) or 'none'}", at, node=cid,
                        field=name)
            elif not wi.socket:
                ctx.add(f"'{ref}' is a value input ({wi.type}), not a socket: use it under "
                        "'params'", at, node=cid, field=name)
            else:
                return sockets.get(ref[1:], replace(at, value=BAD))
            return replace(at, value=BAD)
        if isinstance(ref, str) and "." in ref:
            return replace(at, value=f"{nid}/{ref}")
        return at

    def sub_param(cid: str, name: str, at: At) -> At:
        v = at.value
        if not isinstance(v, str) or not v.startswith("$") or v.startswith("$$") \
                or not NAME.match(v[1:]):
            return at
        wi = child.inputs.get(v[1:])
        if wi is None:
            ctx.add(f"undefined workflow input '{v}'{suggest(v[1:], child.inputs)}; defined: "
                    f"{', '.join(child.inputs) or 'none'}", at, node=cid, field=name)
        elif wi.socket:
            ctx.add(f"'{v}' is a socket input ({wi.type}): link it under 'links', not 'params'",
                    at, node=cid, field=name)
        elif wi.name in values:
            return values[wi.name]
        elif wi.default is not MISSING:
            d = wi.default
            return replace(wi.default_at, value="$" + d if isinstance(d, str) and
                           d.startswith("$") else d)
        return replace(at, value=BAD)

    out: dict[str, NodeDecl] = {}
    for cid, cd in child.nodes.items():
        new = f"{nid}/{cid}"
        full = use.origin.prefix + cid
        out[new] = NodeDecl(new, cd.type,
                            {k: sub_link(full, k, v) for k, v in cd.links.items()},
                            {k: sub_param(full, k, v) for k, v in cd.params.items()}, cd.at)
    return out


def _plain_link(ref: Any, presets: set[str]) -> bool:
    """Not a link to a preset node nor a ``$socket``: checked here, where it was written."""
    if ref is BAD or isinstance(ref, str) and ref.startswith("$"):
        return False
    return not (isinstance(ref, str) and ref.rsplit(".", 1)[0] in presets)


def _value(wf: Workflow, wi: WorkflowInput, at: At, label: str, ctx: _Ctx, nid: str) -> At:
    """What the using node gives a value input, checked against the input's type."""
    v = at.value
    if v is BAD:
        return at
    if isinstance(v, str) and v.startswith("$") and not v.startswith("$$") and NAME.match(v[1:]):
        outer = wf.inputs.get(v[1:])
        if outer is None:
            ctx.add(f"undefined workflow input '{v}'{suggest(v[1:], wf.inputs)}; defined: "
                    f"{', '.join(wf.inputs) or 'none'}", at, node=nid, field=wi.name)
        elif outer.socket:
            ctx.add(f"'{v}' is a socket input ({outer.type}): link it under 'links'", at,
                    node=nid, field=wi.name)
        elif outer.type != wi.type and (outer.type, wi.type) != ("INT", "FLOAT"):
            ctx.add(f"input '{wi.name}' of preset {label} takes {wi.type} but '{v}' is "
                    f"{outer.type}", at, node=nid, field=wi.name)
        else:
            return at
        return replace(at, value=BAD)
    literal = v[1:] if isinstance(v, str) and v.startswith("$$") else v
    try:
        Param(wi.name, wi.type).check(literal)
    except ValueError as e:
        ctx.add(f"input '{wi.name}' of preset {label} ({wi.type}): {e}", at, node=nid,
                field=wi.name)
        return replace(at, value=BAD)
    return at


# --- a workflow with its presets expanded ---------------------------------------------------

def read_expanded(source: str | Path | Mapping) -> tuple[Workflow, Problems]:
    """Parse ``source`` and expand its preset nodes inline; problems are collected in ``p``.
    More nodes than the limit is an error raised at once (nothing else is checked then)."""
    from ..nodes.errors import env_limit
    wf, p = read(source)
    limit = env_limit("NODES", MAX_NODES)
    if len(wf.nodes) > limit:  # before expanding: presets only add nodes
        raise _too_many_nodes(wf, len(wf.nodes), limit)
    wf = expand(wf, p)
    if len(wf.nodes) > limit:
        raise _too_many_nodes(wf, len(wf.nodes), limit)
    return wf, p


def _too_many_nodes(wf: Workflow, count: int, limit: int) -> UserError:
    from ..nodes.errors import over_limit
    return over_limit(f"the workflow has {count:,} nodes (presets expanded)", count, limit,
                      "NODES", file=wf.file)


# --- a preset as a node type -------------------------------------------------------------------

def preset_spec(name: str) -> NodeSpec | None:
    """A preset seen as a node type, for reading ComfyUI prompts that use its class: its value
    inputs as parameters, its socket inputs as inputs, its outputs.  None if there is no such
    preset; UserError if it does not load."""
    path = find_preset(name)
    if path is None:
        return None
    sig = signature(path)
    params = []
    for n, wi in sig.inputs.items():
        if wi.socket:
            continue
        try:
            params.append(Param(n, wi.type, REQUIRED if wi.default is MISSING else wi.default))
        except (TypeError, ValueError):
            params.append(Param(n, wi.type))
    return NodeSpec(type=PREFIX + name, fn=lambda **_: None, category=CATEGORY,
                    description=sig.description,
                    inputs=tuple(Input(n, wi.type) for n, wi in sig.inputs.items() if wi.socket),
                    params=tuple(params),
                    outputs=tuple(Output(n, t) for n, t in sig.outputs.items()))
