"""Workflow documents: YAML (or a Python mapping) -> a ``Workflow`` whose pieces know their place.

Parsing keeps PyYAML's node marks so that later checks can say ``file:line:column``.  This module
only checks the *shape* of the document (which keys, which kinds of values); what the names mean
(node types, links, parameter values) is ``validate``'s job.  Shape problems are collected in an
``Problems`` list rather than raised one by one, so the user sees all of them at once.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..nodes.declare import _show as show  # how parameter errors name a value; same wording
from ..nodes.errors import excerpt
from ..nodes.errors import MAX_FILE_BYTES, UserError, UserErrors  # noqa: F401 -- and a home
# for MAX_FILE_BYTES: the largest file read whole, refused before reading (UNCLIP_MAX_FILE_BYTES)

TOP_KEYS = ("description", "inputs", "nodes", "outputs")
NODE_KEYS = ("type", "links", "params")
INPUT_KEYS = ("type", "default", "description")
INPUT_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
"""Value inputs (``--set``, parameters).  Any registered socket type (IMAGE, MASK, ...) is also
accepted: such an input is linked, so only a workflow used as a preset can have one."""
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NODE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
MISSING = object()
"""Default of a workflow input that must be given with ``--set``."""
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present; both keep marks


@dataclass(frozen=True)
class Origin:
    """The file a value was written in when that is a preset, and the chain of nodes using it
    (innermost use first, e.g. ``("a.yaml:12:3 node 'up'",)``); ``order`` sorts by those uses."""

    file: str | None
    via: tuple[str, ...] = ()
    order: tuple = ()
    prefix: str = ""      # what the preset's node ids get in the end: 'up/' or 'up/inner/'


@dataclass(frozen=True)
class At:
    """A value and where it was written (1-based line and column; None for Python mappings).
    ``origin`` is set for values that come from a preset file."""

    value: Any
    line: int | None = None
    column: int | None = None
    origin: Origin | None = None


@dataclass
class WorkflowInput:
    name: str
    type: str
    default: Any          # MISSING when the workflow has none
    description: str
    at: At                # the name's place
    default_at: At

    @property
    def socket(self) -> bool:
        """A linked input (IMAGE, MASK, ...) rather than a value: only presets have them."""
        return self.type not in INPUT_TYPES


@dataclass
class NodeDecl:
    id: str
    type: At
    links: dict[str, At] = field(default_factory=dict)
    params: dict[str, At] = field(default_factory=dict)
    at: At = At(None)     # the id's place


@dataclass
class Workflow:
    file: str | None
    text: str             # the YAML source (a dump of the mapping for API callers)
    description: str = ""
    inputs: dict[str, WorkflowInput] = field(default_factory=dict)
    nodes: dict[str, NodeDecl] = field(default_factory=dict)
    outputs: dict[str, At] = field(default_factory=dict)


class PresetError(UserError):
    """A mistake inside a preset: placed in the preset's file and naming the node(s) that use
    it -- ``b.yaml:7:5 (used by a.yaml:12:3 node 'up'): node 'up/dec', field 'x': ...``."""

    def __init__(self, message: str, *, via: tuple[str, ...] = (), order: tuple = (), **where):
        super().__init__(message, **where)
        self.via = tuple(via)
        self.order = tuple(order)

    def located(self, **where) -> "PresetError":
        err = super().located(**where)
        err.via, err.order = self.via, self.order
        return err

    def where(self) -> str:
        text = super().where()
        if not self.via:
            return text
        pos, sep, who = text.partition(": ") if self.file else ("", "", text)
        used = " (used by " + ", used by ".join(self.via) + ")"
        return f"{pos}{used}{sep}{who}" if pos else f"{used.strip()}: {who}"


def error_at(message: str, at: At | None, file: str | None, **who) -> UserError:
    """A UserError placed at ``at``: in its preset file (with the using nodes) when it has an
    origin, else in ``file``."""
    at = at or At(None)
    o = at.origin
    if o is None:
        return UserError(message, file=file, line=at.line, column=at.column, **who)
    return PresetError(message, file=o.file, line=at.line, column=at.column, via=o.via,
                       order=o.order, **who)


def place(err: UserError, at: At | None, file: str | None, **who) -> UserError:
    """``err`` (raised by a node's hook or function) with the unknown parts of its location
    taken from ``at`` -- in the preset file, naming its users, when ``at`` is in one."""
    if isinstance(err, UserErrors):
        return UserErrors([place(e, at, file, **who) for e in err.errors])
    at = at or At(None)
    if at.origin is None or err.file is not None:
        return err.located(file=file, line=at.line, column=at.column, **who)
    line, column = (err.line, err.column) if err.line is not None else (at.line, at.column)
    new = PresetError(err.message, file=at.origin.file, line=line, column=column,
                      via=at.origin.via, order=at.origin.order,
                      node=err.node if err.node is not None else who.get("node"),
                      field=err.field if err.field is not None else who.get("field"))
    new.__cause__ = err.__cause__
    return new


def _order(e: UserError) -> tuple:
    big = float("inf")
    return tuple(big if v is None else v for v in (*getattr(e, "order", ()), e.line, e.column))


class Problems:
    """Collects user mistakes so that validation reports all of them at once."""

    def __init__(self, file: str | None, origin: Origin | None = None):
        self.file = file
        self.origin = origin  # set while reading a preset file
        self.errors: list[UserError] = []

    def add(self, message: str, at: At | None = None, *, node: str | None = None,
            field: str | None = None) -> None:
        at = at or At(None)
        if at.origin is None and self.origin is not None:
            at = At(at.value, at.line, at.column, self.origin)
        self.errors.append(error_at(message, at, self.file, node=node, field=field))

    def extend(self, errors: Iterable[UserError]) -> None:
        self.errors.extend(errors)

    def raise_any(self) -> None:
        if not self.errors:
            return
        errs, seen = [], set()
        for e in sorted(self.errors, key=_order):
            if isinstance(e, PresetError):  # the same mistake seen through two uses of a preset
                key = (e.file, e.line, e.column, e.field, e.message)
                if key in seen:
                    continue
                seen.add(key)
            errs.append(e)
        raise errs[0] if len(errs) == 1 else UserErrors(errs)


def suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a close name (spelling, case, or words in another order)."""
    name = str(name)
    cands = [c for c in candidates if isinstance(c, str)]
    same = [c for c in cands if c.lower() == name.lower() or _words(c) == _words(name)]
    close = same + [c for c in difflib.get_close_matches(name, cands, n=3, cutoff=0.6)
                    if c not in same]
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close[:3]) + "?)"


def _words(name: str) -> list[str]:
    """'ImageResize' and 'resize_image' -> ['image', 'resize']."""
    return sorted(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", name))


# --- reading ------------------------------------------------------------------------------------

def read(source: str | Path | Mapping, origin: Origin | None = None
         ) -> tuple[Workflow, Problems]:
    """Parse a workflow file (path) or a mapping.  Shape problems are collected, not raised,
    except those that leave nothing to check (unreadable file, YAML syntax, not a mapping).
    ``origin``: the file is a preset; its places (and problems) carry the chain of users."""
    if isinstance(source, Mapping):
        file, text, tree = None, _dump(source), _Tree.from_python(source)
    else:
        path = Path(source)
        file = str(source)
        try:
            text = read_text(path, "workflow file")
        except FileNotFoundError:
            raise UserError(f"workflow file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read workflow file {file}: {e}") from None
        tree = _Tree.from_yaml(text, file)
    problems = Problems(file, origin)
    wf = Workflow(file=file, text=text)
    _read_top(tree, wf, problems)
    if origin is not None:
        _stamp(wf, origin)
    return wf, problems


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 file read whole, refused with a UserError (before reading) when it is larger
    than the limit.  OSError and UnicodeDecodeError are left to the caller."""
    from ..nodes.errors import env_limit, over_limit
    limit = env_limit("FILE_BYTES", MAX_FILE_BYTES)
    # not waiting to open a named pipe that nothing writes (it then reads as empty); one with
    # a writer, such as a shell's <(command), reads as usual
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1)  # a file that grows meanwhile, or that stat cannot size
    if max(size, len(data)) > limit:
        size = max(size, len(data))
        raise over_limit(f"{what} {path} has {size:,} bytes", size, limit, "FILE_BYTES")
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as text mode


def _stamp(wf: Workflow, origin: Origin) -> None:
    """Mark every place in ``wf`` as written in the preset file ``origin`` describes."""
    def s(at: At) -> At:
        return At(at.value, at.line, at.column, origin)

    for wi in wf.inputs.values():
        wi.at, wi.default_at = s(wi.at), s(wi.default_at)
    for d in wf.nodes.values():
        d.type, d.at = s(d.type), s(d.at)
        d.links = {k: s(v) for k, v in d.links.items()}
        d.params = {k: s(v) for k, v in d.params.items()}
    wf.outputs = {k: s(v) for k, v in wf.outputs.items()}


def _dump(mapping: Mapping) -> str:
    """The mapping as text for PNG metadata: JSON, which is also YAML, and far quicker to write."""
    try:
        return json.dumps(mapping, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # keys JSON cannot take, circular values
        return repr(mapping)


def _opened(context) -> str | None:
    """What PyYAML's context names when its mark is where something was opened (a quote, a
    '[' or '{') that the parser found unclosed, or badly continued, only further on."""
    context = str(context or "")
    if "quoted scalar" in context:
        return "quote"
    return {"while parsing a flow sequence": "'['",
            "while parsing a flow mapping": "'{'"}.get(context)


def _syntax_error(e: yaml.MarkedYAMLError, text: str, file: str | None) -> UserError:
    """A YAML syntax error placed where the user has to look.  A quote, '[' or '{' that is
    never closed makes the parser run to the end of the file: the error is placed where it was
    opened (PyYAML's context mark) and says where the parser noticed (its problem mark).  Other
    errors are placed where the parser noticed, naming where the quote or bracket concerned
    began."""
    ctx, prob = e.context_mark, e.problem_mark
    problem = str(e.problem or "invalid YAML")
    opened = _opened(e.context)
    if opened and ctx is not None and prob is not None and \
            (ctx.line, ctx.column) != (prob.line, prob.column):
        if prob.index >= len(text.rstrip()):  # ran to the end: the opener is what is wrong
            what = "quote" if opened == "quote" else opened
            return UserError(f"YAML syntax error: unclosed {what} started here (the parser "
                             f"noticed at the end of the file, line {prob.line + 1}: "
                             f"{problem})", file=file, line=ctx.line + 1,
                             column=ctx.column + 1)
        began = (f"column {ctx.column + 1}" if ctx.line == prob.line
                 else f"line {ctx.line + 1}, column {ctx.column + 1}")
        where = (f"in the quoted text that began at {began}" if opened == "quote" else
                 f"in the {opened} that began at {began}: is it closed, and are its items "
                 "separated by ','?")
        return UserError(f"YAML syntax error: {problem}, {where}", file=file,
                         line=prob.line + 1, column=prob.column + 1)
    mark = prob or ctx
    msg = " ".join(str(p) for p in (e.context, e.problem) if p) or "invalid YAML"
    if ctx is not None and prob is not None and ctx.line != prob.line and e.context:
        msg += f" (that began at line {ctx.line + 1})"
    return UserError(f"YAML syntax error: {msg}", file=file,
                     line=mark.line + 1 if mark else None,
                     column=mark.column + 1 if mark else None)


class _Tree:
    """A uniform view of YAML nodes (with marks) and plain Python values (without)."""

    def __init__(self, kind: str, value: Any, at: At, loader=None):
        self.kind = kind      # "map" | "seq" | "scalar"
        self.raw = value
        self.at = at
        self._loader = loader

    @classmethod
    def from_yaml(cls, text: str, file: str | None) -> "_Tree":
        try:
            loader = _Loader(text)
            node = loader.get_single_node()
        except yaml.reader.ReaderError as e:  # a character YAML does not allow
            pos = e.position
            raise UserError(f"YAML syntax error: character {e.character:#x} is not allowed",
                            file=file, line=text.count("\n", 0, pos) + 1,
                            column=pos - text.rfind("\n", 0, pos)) from None
        except yaml.MarkedYAMLError as e:
            raise _syntax_error(e, text, file) from None
        except yaml.YAMLError as e:
            raise UserError(f"YAML syntax error: {e}", file=file) from None
        except RecursionError:  # PyYAML's pure-Python composer recurses into nested values
            try:
                mark = loader.get_mark()
            except Exception:  # noqa: BLE001 -- only a place for the message
                mark = None
            raise UserError("YAML syntax error: nested too deeply (lists and mappings inside "
                            "each other)", file=file, line=mark.line + 1 if mark else None,
                            column=mark.column + 1 if mark else None) from None
        if node is None:
            raise UserError("the workflow is empty", file=file)
        return cls._wrap(node, loader)

    @classmethod
    def _wrap(cls, node, loader) -> "_Tree":
        at = At(None, node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return cls("map", node, at, loader)
        if isinstance(node, yaml.SequenceNode):
            return cls("seq", node, at, loader)
        return cls("scalar", node, at, loader)

    @classmethod
    def from_python(cls, value: Any) -> "_Tree":
        if isinstance(value, Mapping):
            return cls("map", value, At(None))
        if isinstance(value, (list, tuple)):
            return cls("seq", value, At(None))
        return cls("scalar", value, At(None))

    def items(self, problems: Problems, what: str, node: str | None = None
              ) -> list[tuple[str, At, "_Tree"]]:
        """The (key, key place, value) pairs of a mapping whose keys must be text."""
        out: list[tuple[str, At, _Tree]] = []
        seen: dict[str, At] = {}
        if self._loader is None:
            pairs = [(k, At(k), _Tree.from_python(v)) for k, v in self.raw.items()]
        else:
            try:
                self._loader.flatten_mapping(self.raw)  # honours YAML merge keys (<<: *anchor)
            except (yaml.YAMLError, RecursionError) as e:  # a bad or self-including merge
                problems.add(f"cannot merge into {what}: {getattr(e, 'problem', None) or e}",
                             self.at, node=node)
                return out
            pairs = []
            for knode, vnode in self.raw.value:
                k = _Tree._wrap(knode, self._loader)
                pairs.append((k.value(problems), k.at, _Tree._wrap(vnode, self._loader)))
        for key, kat, val in pairs:
            kat = At(key, kat.line, kat.column)
            if not isinstance(key, str):
                hint = f" (write '{key}' in quotes)" if isinstance(key, (int, float)) else ""
                problems.add(f"keys of {what} must be text, got {show(key)}{hint}", kat,
                             node=node)
                continue
            if key in seen:
                first = f" (first given at line {seen[key].line})" if seen[key].line else ""
                problems.add(f"'{key}' is given twice in {what}{first}", kat, node=node)
                continue
            seen[key] = kat
            out.append((key, kat, val))
        return out

    def value(self, problems: Problems) -> Any:
        """The plain Python value (PyYAML's safe construction for YAML nodes)."""
        if self._loader is None:
            return self.raw
        try:
            value = self._loader.construct_object(self.raw, deep=True)
        except RecursionError:
            problems.add("cannot read this value: it is nested too deeply (lists and mappings "
                         "inside each other)", self.at)
            return BAD
        except ValueError as e:
            if "integer string conversion" in str(e):  # more digits than Python converts
                e = _too_many_digits()
            problems.add(f"cannot read this value: {getattr(e, 'problem', None) or e}", self.at)
            return BAD
        except Exception as e:  # noqa: BLE001 -- any failure to build a user value is their YAML
            problems.add(f"cannot read this value: {getattr(e, 'problem', None) or e}", self.at)
            return BAD
        why = _unusable_number(value)
        if why:
            problems.add(f"cannot read this value: {why}", self.at)
            return BAD
        return value


BAD = object()
"""Placeholder for a value that could not be read (already reported)."""


def _max_digits() -> int:
    import sys
    return sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0


def _too_many_digits() -> ValueError:
    return ValueError(f"a number with more than {_max_digits() or 4300:,} digits is too long")


def _unusable_number(value: Any) -> str | None:
    """Why a number in ``value`` (a YAML scalar, or lists and mappings of them) cannot be used,
    or None: a hex, octal or binary integer too long to be written in decimal (Python refuses
    to print it, so every message and cache key would fail; decimal ones fail to parse)."""
    most = _max_digits()
    todo, seen = [value], 0
    while todo and seen < 100_000:
        v = todo.pop()
        seen += 1
        if isinstance(v, bool):
            continue
        if isinstance(v, int) and most and v.bit_length() > most * 3:  # near the limit
            try:
                str(v)
            except ValueError:
                return str(_too_many_digits())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
    return None


def _socket_types() -> dict:
    from ..nodes.types import SOCKET_TYPES
    return SOCKET_TYPES


def _check_keys(problems: Problems, items, allowed: tuple[str, ...], what: str,
                node: str | None = None) -> dict[str, tuple[At, _Tree]]:
    got: dict[str, tuple[At, _Tree]] = {}
    for key, kat, val in items:
        if key not in allowed:
            problems.add(f"unknown key '{key}' in {what}{suggest(key, allowed)}; "
                         f"allowed: {', '.join(allowed)}", kat, node=node, field=key)
        else:
            got[key] = (kat, val)
    return got


def _expect_map(tree: _Tree, problems: Problems, what: str, node: str | None = None,
                field: str | None = None) -> bool:
    if tree.kind == "map":
        return True
    problems.add(f"{what} must be a mapping (name: value), got {_kind(tree, problems)}", tree.at,
                 node=node, field=field)
    return False


def _kind(tree: _Tree, problems: Problems) -> str:
    """What a tree is, never what it holds: the file may be anything a path named (a key
    file, /etc/passwd), and its content must not reach a message."""
    if tree.kind == "seq":
        return "a list"
    value = tree.value(problems)
    if value is None:
        return "nothing (null)"
    kinds = ((bool, "true or false"), (int, "a number"), (float, "a number"), (str, "text"))
    return "a single value (" + next((k for t, k in kinds if isinstance(value, t)),
                                      "a value") + ")"


def _read_top(tree: _Tree, wf: Workflow, p: Problems) -> None:
    if not _expect_map(tree, p, "a workflow"):
        p.raise_any()
    items = tree.items(p, "the workflow")
    if all(key != "nodes" for key, _, _ in items):
        # another kind of YAML file (settings, a key store): what it is, not what it holds
        p.add("this is not a workflow file (a mapping without 'nodes'); a workflow is a YAML "
              "mapping with 'nodes' (and 'description', 'inputs', 'outputs')", tree.at)
        p.raise_any()
    top = _check_keys(p, items, TOP_KEYS, "the workflow")
    if "description" in top:
        kat, val = top["description"]
        desc = val.value(p)
        if isinstance(desc, str):
            wf.description = desc
        elif desc is not BAD:
            p.add(f"description must be text, got {show(desc)}", val.at, field="description")
    if "inputs" in top:
        _read_inputs(top["inputs"][1], wf, p)
    _read_nodes(top["nodes"][1], wf, p)
    if "outputs" in top:
        val = top["outputs"][1]
        if _expect_map(val, p, "outputs", field="outputs"):
            for name, kat, v in val.items(p, "outputs"):
                ref = v.value(p)
                wf.outputs[name] = At(ref, v.at.line, v.at.column)


def _read_inputs(tree: _Tree, wf: Workflow, p: Problems) -> None:
    if not _expect_map(tree, p, "inputs", field="inputs"):
        return
    for name, kat, val in tree.items(p, "inputs"):
        if not NAME.match(name):
            p.add(f"workflow input name '{name}' must be a name (letters, digits, _)", kat,
                  field=name)
            continue
        if not _expect_map(val, p, f"workflow input '{name}'", field=name):
            continue
        got = _check_keys(p, val.items(p, f"workflow input '{name}'"), INPUT_KEYS,
                          f"workflow input '{name}'")
        if "type" not in got:
            p.add(f"workflow input '{name}' needs a type ({', '.join(INPUT_TYPES)}, or a socket "
                  "type such as IMAGE in a preset)", kat, field=name)
            continue
        tat, tval = got["type"]
        typ = tval.value(p)
        if not isinstance(typ, str) or typ not in (*INPUT_TYPES, *_socket_types()):
            p.add(f"workflow input '{name}': type must be one of {', '.join(INPUT_TYPES)} or a "
                  f"socket type, got {show(typ)}"
                  f"{suggest(str(typ).upper(), (*INPUT_TYPES, *_socket_types()))}", tval.at,
                  field=name)
            continue
        default, dat = MISSING, kat
        if "default" in got and typ not in INPUT_TYPES:
            p.add(f"workflow input '{name}' ({typ}) is linked, so it takes no default",
                  got["default"][1].at, field=name)
            continue
        if "default" in got:
            dtree = got["default"][1]
            default, dat = dtree.value(p), dtree.at
            if default is BAD:
                continue
        desc = ""
        if "description" in got:
            d = got["description"][1].value(p)
            desc = d if isinstance(d, str) else ""
        wf.inputs[name] = WorkflowInput(name, typ, default, desc, At(name, kat.line, kat.column),
                                        At(default, dat.line, dat.column))


def _read_nodes(tree: _Tree, wf: Workflow, p: Problems) -> None:
    if not _expect_map(tree, p, "nodes", field="nodes"):
        return
    items = tree.items(p, "nodes")
    if not items:
        p.add("'nodes' is empty: a workflow needs at least one node", tree.at)
    for nid, kat, val in items:
        if not NODE_ID.match(nid):
            p.add(f"node id '{nid}' must be a name (letters, digits, _ or -)", kat, node=nid)
            continue
        if not _expect_map(val, p, f"node '{nid}'", node=nid):
            continue
        got = _check_keys(p, val.items(p, f"node '{nid}'", node=nid), NODE_KEYS, f"node '{nid}'",
                          node=nid)
        decl = NodeDecl(id=nid, type=At(None, kat.line, kat.column), at=kat)
        if "type" not in got:
            p.add("the node has no 'type'", kat, node=nid)
        else:
            t = got["type"][1]
            decl.type = At(t.value(p), t.at.line, t.at.column)
        for section in ("links", "params"):
            if section not in got:
                continue
            sect = got[section][1]
            if not _expect_map(sect, p, f"'{section}' of node '{nid}'", node=nid, field=section):
                continue
            target = decl.links if section == "links" else decl.params
            for name, fat, v in sect.items(p, f"'{section}' of node '{nid}'", node=nid):
                target[name] = At(v.value(p), v.at.line or fat.line, v.at.column or fat.column)
        _current_names(decl, p)
        wf.nodes[nid] = decl


def _current_names(decl: NodeDecl, p: Problems) -> None:
    """Old names (a node type or field renamed since the workflow was written) as they are now:
    what was written keeps working and is validated, exported and recorded under the new name."""
    from ..nodes import declare
    t = decl.type.value
    if not isinstance(t, str):
        return
    if t in declare.TYPE_ALIASES:
        decl.type = replace(decl.type, value=declare.current_type(t))
    spec = declare.get(decl.type.value)
    if spec is None or not spec.renamed:
        return
    for section in (decl.links, decl.params):
        for old in [n for n in section if n in spec.renamed]:
            new = spec.renamed[old]
            if new in decl.links or new in decl.params:
                p.add(f"'{old}' is the old name of '{new}': give only '{new}'", section[old],
                      node=decl.id, field=new)
                del section[old]
                continue
            at = section.pop(old)
            target = decl.links if spec.input(new) else decl.params
            target[new] = at


# --- links --------------------------------------------------------------------------------------

def node_spec(decl: NodeDecl):
    """The registered NodeSpec of a declaration's type, or None (unknown or not a string)."""
    from ..nodes import declare
    return declare.get(decl.type.value) if isinstance(decl.type.value, str) else None


def link_target(wf: Workflow, at: At, p: Problems, **where) -> tuple[str, str] | None:
    """``'node.output'`` -> (node, output) when the node exists; reports why not otherwise."""
    ref = at.value
    if ref is BAD:
        return None
    if isinstance(ref, str) and ref.startswith("$") and NAME.match(ref[1:]):
        wi = wf.inputs.get(ref[1:])
        if wi is None or not wi.socket:
            p.add(f"a link takes '<node id>.<output name>'; {excerpt(ref)} would need a "
                  f"socket-typed workflow input (e.g. '{ref[1:]}: {{type: IMAGE}}'), which only "
                  "presets have", at, **where)
        return None  # a socket input outside a preset is reported on the input
    if not isinstance(ref, str) or "." not in ref or ref.startswith(".") or ref.endswith("."):
        hint = ""
        if isinstance(ref, str) and ref in wf.nodes:
            spec = node_spec(wf.nodes[ref])
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


def upstream_output(wf: Workflow, src: str, out_name: str, at: At, p: Problems, **where):
    spec = node_spec(wf.nodes[src])
    if spec is None:
        return None  # its unknown type is reported on that node
    out = spec.output(out_name)
    if out is None:
        names = [o.name for o in spec.outputs]
        p.add(f"link '{src}.{out_name}': {spec.type} has no output '{out_name}'"
              f"{suggest(out_name, names)}; its outputs: {', '.join(names) or 'none'}", at,
              **where)
    return out
