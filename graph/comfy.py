"""ComfyUI's two workflow formats, to and from our validated workflows.

* ``to_api(rs)``: the API format that ComfyUI's ``POST /prompt`` takes and that its images carry
  in the ``prompt`` text chunk: ``{"<id>": {"class_type": "unCLIP <Type>", "inputs": {name:
  literal | ["<source id>", output index]}}}``.  Workflow inputs are already resolved to values.
* ``to_ui(rs)``: the UI (LiteGraph, schema 0.4) workflow the front end opens and that images
  carry in the ``workflow`` chunk, laid out automatically: the column is the node's layer in the
  DAG (longest path from a source), nodes are stacked within a column.
* ``load_source(path, overrides)``: what ``unclip run/validate/export`` accept besides our YAML:
  an API-format JSON file that uses our nodes, and a PNG written by our SaveImage (its YAML chunk,
  else its API ``prompt`` chunk).

Node ids are the same in both formats: the YAML ids when they are all plain numbers (a workflow
that came from ComfyUI keeps its ids), else 1, 2, ... in file order.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

from ..nodes import declare, runtime
from ..nodes.declare import (COMFY_PREFIX, FOREIGN_PREFIX, NodeSpec, class_type, comfy_id,
                             comfy_input_types)
from ..nodes.errors import (UserError, UserErrors, excerpt, file_limit, over_limit,
                             parse_json)
from ..nodes.image import PACK_DIR
from .comfy_presets import PRESET_PREFIX
from .preset import list_presets, preset_spec
from .validate import SOURCE_PREFIX, VALUE_NODE, Resolved, load
from .workflow import NODE_ID, suggest

PROMPT, WORKFLOW, YAML_TEXT, INPUTS = "prompt", "workflow", "unclip_workflow", "unclip_inputs"
YAML_FILE = "unclip_workflow_file"
"""PNG text chunks: ComfyUI's API JSON and UI JSON (what ComfyUI itself writes and reads back),
then ours: the workflow text as written, the values of its inputs for this run, and the file it
was read from (its folder is where relative sample-file paths were found)."""

PATH_FIELDS = ("path", "prior_path", "image")
"""Node parameters that name a file or folder to read (the loaders', LoadImage's)."""
SEED_WIDGETS = ("seed", "noise_seed")  # INT widgets the front end gives a control_after_generate
UI_VERSION = 0.4
_PRIMITIVE = ("INT", "FLOAT", "STRING", "BOOLEAN")


# --- what ComfyUI sees of a node -----------------------------------------------------------------

def _slots(spec: NodeSpec) -> tuple[list[str], list[str]]:
    """(socket names, widget names) in the order ComfyUI builds them: required, then optional."""
    types = comfy_input_types(spec)
    names = [*types.get("required", {}), *types.get("optional", {})]
    sockets = [n for n in names if spec.input(n) is not None]
    widgets = [n for n in names if spec.param(n) is not None]
    return sockets, widgets


def _portable(name: str, value: Any, base: Path | None) -> Any:
    """A ``path`` that only the workflow's folder makes sense of, as a path that ComfyUI finds
    too (it has no workflow folder; relative paths start at its own start folder): relative to
    the pack when the file is inside it (a shipped workflow's sample image; LoadImage looks in
    the pack's folder last), else absolute."""
    if name not in ("path", "image") or base is None or not isinstance(value, str) or not value.strip():
        return value
    p = Path(value).expanduser()
    if p.is_absolute() or (Path.cwd() / p).exists() or not (base / p).exists():
        return value  # found where LoadImage looks first, or nowhere: as written
    found = (base / p).resolve()
    if found.is_relative_to(PACK_DIR):
        return found.relative_to(PACK_DIR).as_posix()
    return str(found)


def _input_order(spec: NodeSpec) -> list[str]:
    types = comfy_input_types(spec)
    return [n for n in (*types.get("required", {}), *types.get("optional", {}))
            if spec.field(n) is not None]


def node_ids(rs: Resolved) -> dict[str, str]:
    """Our node id -> the ComfyUI id (a decimal string).  A Python value given to a socket input
    (``values=``) has no ComfyUI node: it is left out, and so are links from it."""
    ids = [nid for nid in rs.workflow.nodes if nid in rs.nodes]
    ids += [nid for nid in rs.nodes if nid not in rs.workflow.nodes  # made by expansion
            and rs.nodes[nid].spec.type != VALUE_NODE]
    if all(re.fullmatch(r"[1-9][0-9]*", nid) for nid in ids):
        return {nid: nid for nid in ids}
    return {nid: str(i) for i, nid in enumerate(ids, 1)}


def to_api(rs: Resolved) -> dict[str, dict]:
    """The workflow in ComfyUI's API format (what /prompt takes)."""
    ids = node_ids(rs)
    base = runtime.workflow_folder(rs.workflow.file)
    out: dict[str, dict] = {}
    for nid, cid in ids.items():
        rn = rs.nodes[nid]
        inputs: dict[str, Any] = {}
        for name in _input_order(rn.spec):
            if name in rn.links:
                src, out_name = rn.links[name]
                if src in ids:
                    inputs[name] = [ids[src], rs.nodes[src].spec.output_index(out_name)]
            elif name in rn.params:
                inputs[name] = _portable(name, rn.params[name], base)
        out[cid] = {"inputs": inputs, "class_type": class_type(rn.spec),
                    "_meta": {"title": nid}}
    return out


# --- the UI workflow -------------------------------------------------------------------------------

_SLOT_H, _WIDGET_H, _TEXT_H, _TITLE_H = 20, 24, 110, 30
_GAP_X, _GAP_Y, _MARGIN = 80, 50, 50


def _node_size(spec: NodeSpec, title: str) -> list[int]:
    """About what LiteGraph computes (title bar excluded), a little generous so nothing clips."""
    sockets, widgets = _slots(spec)
    rows = max(len(sockets), len(spec.outputs), 1)
    height = rows * _SLOT_H + 10
    for name in widgets:
        p = spec.param(name)
        height += _TEXT_H if p.multiline else _WIDGET_H
        if p.type == "INT" and name in SEED_WIDGETS:
            height += _WIDGET_H
    slot_text = max((len(a) + len(b) for a, b in _pairs(sockets, [o.name for o in spec.outputs])),
                    default=0)
    width = max(320 if widgets else 240, 8 * len(title) + 60, 8 * slot_text + 80)
    return [width, height]


def _pairs(a: list[str], b: list[str]):
    for i in range(max(len(a), len(b))):
        yield (a[i] if i < len(a) else ""), (b[i] if i < len(b) else "")


def layers(rs: Resolved) -> dict[str, int]:
    """Each node's layer: the length of the longest path from a node without inputs."""
    from . import dag
    layer: dict[str, int] = {}
    for nid in dag.order(rs.graph):
        layer[nid] = max((layer[p] + 1 for p in rs.graph.predecessors(nid)), default=0)
    return layer


def to_ui(rs: Resolved) -> dict:
    """The workflow as a ComfyUI front-end (LiteGraph) document with an automatic layout."""
    from . import dag
    ids = node_ids(rs)
    file_index = {nid: i for i, nid in enumerate(ids)}
    topo = {nid: i for i, nid in enumerate(n for n in dag.order(rs.graph) if n in ids)}
    layer = layers(rs)
    api = to_api(rs)  # the widget values, as the API format has them
    entries: dict[str, dict] = {}
    for nid, cid in ids.items():
        rn = rs.nodes[nid]
        sockets, widgets = _slots(rn.spec)
        values: list[Any] = []
        for name in widgets:
            values.append(api[cid]["inputs"][name])
            if rn.spec.param(name).type == "INT" and name in SEED_WIDGETS:
                values.append("fixed")  # the same seed next time, as the workflow says
        title = class_type(rn.spec)
        entries[nid] = {
            "id": int(cid), "type": class_type(rn.spec), "pos": [0, 0],
            "size": _node_size(rn.spec, title), "flags": {}, "order": topo[nid], "mode": 0,
            "inputs": [{"name": s, "type": rn.spec.input(s).type, "link": None} for s in sockets],
            "outputs": [{"name": o.name, "type": o.type, "links": [], "slot_index": i}
                        for i, o in enumerate(rn.spec.outputs)],
            "properties": {"Node name for S&R": class_type(rn.spec)},
            "widgets_values": values,
        }
    links: list[list] = []
    for nid in ids:
        rn = rs.nodes[nid]
        for slot, inp in enumerate(entries[nid]["inputs"]):
            if inp["name"] not in rn.links:
                continue
            src, out_name = rn.links[inp["name"]]
            if src not in ids:
                continue
            out_slot = rs.nodes[src].spec.output_index(out_name)
            link_id = len(links) + 1
            links.append([link_id, int(ids[src]), out_slot, int(ids[nid]), slot, inp["type"]])
            inp["link"] = link_id
            entries[src]["outputs"][out_slot]["links"].append(link_id)

    note = _note_text(rs)
    y0 = _MARGIN
    nodes = list(entries.values())
    if note:
        note_id = max((int(c) for c in ids.values()), default=0) + 1
        nodes.append({"id": note_id, "type": "Note", "pos": [_MARGIN, _MARGIN], "size": [400, 160],
                      "flags": {}, "order": len(entries), "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "widgets_values": [note], "color": "#432",
                      "bgcolor": "#653"})
        y0 += 160 + _TITLE_H + _GAP_Y
    # columns by layer; within a column, order by where the sources sit, then by file order
    columns: dict[int, list[str]] = {}
    for nid in ids:
        columns.setdefault(layer[nid], []).append(nid)
    row: dict[str, float] = {}
    x = _MARGIN
    for k in sorted(columns):
        col = sorted(columns[k], key=lambda n: (
            _mean([row[p] for p in rs.graph.predecessors(n) if p in row], file_index[n]),
            file_index[n]))
        y = y0 if k == 0 else _MARGIN
        for i, nid in enumerate(col):
            e = entries[nid]
            e["pos"] = [x, y + _TITLE_H]
            y += e["size"][1] + _TITLE_H + _GAP_Y
            row[nid] = i
        x += max(entries[n]["size"][0] for n in col) + _GAP_X
    return {
        "last_node_id": max((n["id"] for n in nodes), default=0),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
        "version": UI_VERSION,
    }


def _mean(xs: list[float], default: float) -> float:
    return sum(xs) / len(xs) if xs else default


def _note_text(rs: Resolved) -> str:
    """The workflow's description and where its inputs went (ComfyUI has no workflow inputs)."""
    parts = []
    if rs.workflow.description:
        parts.append(rs.workflow.description.strip())
    uses: dict[str, list[str]] = {}
    for nid, decl in rs.workflow.nodes.items():
        for field, at in decl.params.items():
            v = at.value
            if isinstance(v, str) and v.startswith("$") and not v.startswith("$$"):
                uses.setdefault(v[1:], []).append(f"{nid}.{field}")
    if rs.workflow.inputs:
        base = runtime.workflow_folder(rs.workflow.file)
        lines = ["Workflow inputs, as exported:"]
        for name in rs.workflow.inputs:
            where = ", ".join(uses.get(name, [])) or "unused"
            value = rs.inputs.get(name)
            if any(use.endswith((".path", ".image")) for use in uses.get(name, [])):
                value = _portable("image", value, base)  # as the nodes' widgets show it
            lines.append(f"  {name} = {json.dumps(value, ensure_ascii=False)}  ({where})")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def png_metadata(rs: Resolved) -> dict[str, str]:
    """The text chunks our savers write for a headless run, as ComfyUI's SaveImage would (the
    ``prompt`` and ``workflow`` JSON) plus our own workflow text and input values."""
    meta = {PROMPT: json.dumps(to_api(rs)), WORKFLOW: json.dumps(to_ui(rs)),
            YAML_TEXT: rs.workflow.text, INPUTS: recorded_inputs(rs)}
    if runtime.workflow_folder(rs.workflow.file) is not None:
        meta[YAML_FILE] = str(Path(rs.workflow.file).resolve())
    return meta


def recorded_inputs(rs: Resolved) -> str:
    """The input values of a run as the PNG records them (JSON), with every input that names a
    file or folder to read (a LoadImage ``path``, a loader's ``path``/``prior_path``, an IMAGE
    input given as a file) as the node found it, so the PNG runs again from any folder: an
    absolute path, or for a file of the pack itself (the shipped sample images) a path relative
    to the pack, which LoadImage finds in any installation.  Model names (``pocket``, a folder
    of UNCLIP_MODELS) stay names."""
    values = dict(rs.inputs)
    base = runtime.workflow_folder(rs.workflow.file)
    for name, kind in _path_inputs(rs).items():
        if isinstance(values.get(name), str) and values[name].strip():
            values[name] = _recorded_path(kind, values[name], base)
    return json.dumps(values, sort_keys=True, ensure_ascii=False)


def _path_inputs(rs: Resolved) -> dict[str, str]:
    """Workflow input name -> "image" | "model" for the inputs that reach a path field."""
    kinds: dict[str, str] = {}
    for nid, rn in rs.nodes.items():
        kind = "image" if rn.spec.type == "LoadImage" else "model"
        if nid.startswith(SOURCE_PREFIX) and rn.spec.type == "LoadImage":
            kinds.setdefault(nid[len(SOURCE_PREFIX):], kind)  # --set image=FILE
            continue
        decl = rs.workflow.nodes.get(nid)
        for field in PATH_FIELDS:
            at = decl.params.get(field) if decl is not None else None
            ref = at.value if at is not None else None
            if isinstance(ref, str) and ref.startswith("$") and not ref.startswith("$$") \
                    and ref[1:] in rs.inputs:
                kinds.setdefault(ref[1:], kind)
    return kinds


def _recorded_path(kind: str, value: str, base: Path | None) -> str:
    p = Path(value).expanduser()
    if p.is_absolute() or (kind == "model" and value.strip() == "pocket"):
        return value
    if kind == "model":  # a loader reads a relative path from the current folder, else a name
        return str(p.resolve()) if p.exists() else value
    from ..nodes.image import resolve_input_path
    try:
        with runtime.use_base_dir(base):
            found = resolve_input_path(value)
    except UserError:
        return value
    if not found.exists():
        return value
    return found.relative_to(PACK_DIR).as_posix() if found.is_relative_to(PACK_DIR) \
        else str(found)


def unsaved_outputs(rs: Resolved) -> list[str]:
    """Named workflow outputs that no output node consumes: ComfyUI would not compute them."""
    saved = {ref for rn in rs.nodes.values() if rn.spec.output_node for ref in rn.links.values()}
    return [f"{name} ({src}.{out})" for name, (src, out) in rs.outputs.items()
            if (src, out) not in saved and not rs.nodes[src].spec.output_node]


# --- reading ComfyUI's formats -----------------------------------------------------------------------

def is_api(data: Any) -> bool:
    """Whether a JSON document is an API-format prompt (every value a node with class_type)."""
    return (isinstance(data, dict) and bool(data)
            and any(isinstance(v, dict) and "class_type" in v for v in data.values()))


def is_ui(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int)
            and not isinstance(value[1], bool))


def api_to_mapping(api: Mapping, file: str | None = None) -> dict:
    """An API-format prompt as our workflow mapping ("unCLIP X" -> X, links -> "id.output").

    Problems that only the API format can have are raised here (all at once), each naming the
    node id and field; everything else is left to the usual validation.
    """
    errors: list[UserError] = []

    def err(msg: str, node: str | None = None, field: str | None = None) -> None:
        errors.append(UserError(msg, file=file, node=node, field=field))

    safe = _safe_ids([str(k) for k in api])
    specs: dict[str, NodeSpec | None] = {}
    for key, entry in api.items():
        key = str(key)
        ct = entry.get("class_type") if isinstance(entry, dict) else None
        specs[key] = None
        if not isinstance(entry, dict):
            err(f"a node must be an object with class_type and inputs, got {type(entry).__name__}",
                node=key)
        elif not isinstance(ct, str):
            err("the node has no class_type", node=key, field="class_type")
        elif ct.startswith(PRESET_PREFIX):  # a preset node: read back as 'type: preset:NAME'
            try:
                specs[key] = preset_spec(ct[len(PRESET_PREFIX):])
            except UserError as e:
                err(f"preset '{ct[len(PRESET_PREFIX):]}' does not load: {e}", node=key,
                    field="class_type")
                continue
            if specs[key] is None:
                err(f"unknown preset '{ct[len(PRESET_PREFIX):]}'"
                    f"{suggest(ct[len(PRESET_PREFIX):], list_presets())}: ComfyUI had it, this "
                    "machine's preset folders do not", node=key, field="class_type")
        elif not ct.startswith(COMFY_PREFIX):
            specs[key] = declare.get(FOREIGN_PREFIX + ct)  # one of ComfyUI's own that we know
            if specs[key] is None:
                ours = f" (ours is '{comfy_id(ct)}')" if declare.get(ct) else ""
                err(f"'{ct}' is not a node of this pack{ours}, nor one of ComfyUI's that "
                    f"workflows may name; the headless executor runs only the "
                    f"'{COMFY_PREFIX}...' nodes", node=key, field="class_type")
        elif declare.get(declare.current_type(ct[len(COMFY_PREFIX):])) is None:
            err(f"unknown class_type '{ct}'"
                f"{suggest(ct, [comfy_id(t) for t in declare.REGISTRY])}", node=key,
                field="class_type")
        else:
            specs[key] = declare.get(declare.current_type(ct[len(COMFY_PREFIX):]))
    nodes: dict[str, dict] = {}
    for key, entry in api.items():
        key = str(key)
        spec = specs[key]
        if spec is None:
            continue
        inputs = entry.get("inputs", {})
        if not isinstance(inputs, dict):
            err(f"'inputs' must be an object, got {type(inputs).__name__}", node=key,
                field="inputs")
            continue
        links, params = {}, {}
        for name, value in inputs.items():
            if isinstance(value, dict) and "__value__" in value:  # how ComfyUI wraps list values
                value = value["__value__"]
            elif _is_link(value):
                src, index = str(value[0]), value[1]
                if src not in specs:
                    err(f"linked to node '{src}', which is not in the workflow", node=key,
                        field=name)
                    continue
                if spec.param(name) is not None:
                    err(f"'{name}' is a widget; the headless executor takes it as a value, not as "
                        f"a link from node '{src}'", node=key, field=name)
                    continue
                src_spec = specs[src]
                if src_spec is None:
                    continue  # reported on that node
                if not 0 <= index < len(src_spec.outputs):
                    names = ", ".join(f"{i}: {o.name}" for i, o in enumerate(src_spec.outputs))
                    err(f"linked to output {index} of node '{src}' ({class_type(src_spec)}), "
                        f"which has outputs {names or 'none'}", node=key, field=name)
                    continue
                links[name] = f"{safe[src]}.{src_spec.outputs[index].name}"
                continue
            elif isinstance(value, list):
                err("a linked input must be [\"<node id>\", <output index>], got "
                    f"{json.dumps(value)[:60]}", node=key, field=name)
                continue
            if isinstance(value, str) and value.startswith("$"):
                value = "$" + value  # a literal, not one of our $input references
            params[name] = value
        nodes[safe[key]] = {"type": spec.type, "links": links, "params": params}
    if errors:
        raise errors[0] if len(errors) == 1 else UserErrors(errors)
    where = f" {file}" if file else ""
    return {"description": f"Converted from the ComfyUI API-format workflow{where}.",
            "nodes": nodes}


def _safe_ids(keys: list[str]) -> dict[str, str]:
    """ComfyUI ids that our format cannot take as they are (a subgraph's '12:5') get '_'s."""
    out: dict[str, str] = {}
    taken = {k for k in keys if NODE_ID.match(k)}
    for k in keys:
        if NODE_ID.match(k):
            out[k] = k
            continue
        base = re.sub(r"[^A-Za-z0-9_-]", "_", k) or "node"
        base = base if NODE_ID.match(base) else "n" + base
        cand, i = base, 2
        while cand in taken:
            cand, i = f"{base}_{i}", i + 1
        taken.add(cand)
        out[k] = cand
    return out


def load_api(api: Mapping, overrides: Mapping[str, Any] | None = None, *,
             file: str | None = None) -> Resolved:
    """Validate an API-format prompt as one of our workflows."""
    mapping = api_to_mapping(api, file)
    rs = _relocated(lambda: load(mapping, overrides), None, file)
    rs.workflow.file = file
    return rs


def _relocated(fn, old: str | None, new: str | None):
    """Run ``fn``; user errors located in ``old`` (a temp file, a mapping) name ``new``."""
    try:
        return fn()
    except UserError as e:
        errs = e.errors if isinstance(e, UserErrors) else [e]
        for x in errs:
            if x.file == old:
                x.file = new
        if isinstance(e, UserErrors):
            raise UserErrors(errs) from None
        raise


def read_json(path: Path) -> Any:
    from .workflow import read_text
    try:
        text = read_text(path, "workflow file")
    except FileNotFoundError:
        raise UserError(f"workflow file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return parse_json(text, str(path))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
TEXT_TOTAL = 4
"""The wanted text chunks of one PNG together may hold this many times the file limit (ours
carry the workflow four times: our text, the API and UI JSON, the input values)."""


class _Damaged(Exception):
    pass


def _not_png(path: Path) -> UserError:
    """The error for a file without the PNG signature: what it is, if Pillow knows."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            fmt = img.format
    except Exception:  # noqa: BLE001 -- not an image, or one Pillow refuses (a bomb): no name
        fmt = None
    if fmt:
        return UserError(f"{path} is a {fmt} image; workflows are read from PNG files written "
                         "by SaveImage")
    return UserError(f"cannot read {path}: not a PNG image (nor any image Pillow can read); "
                     "workflows are read from PNG files written by SaveImage")


def _unpack(data: bytes, limit: int) -> tuple[bytes | None, int]:
    """(text, size) of a zlib stream, or (None, size) when it unpacks to more than ``limit``
    bytes (size then counts on to 16 times the limit, at most)."""
    import zlib
    try:
        d = zlib.decompressobj()
        out = d.decompress(data, limit + 1)
        if len(out) <= limit and not d.unconsumed_tail:
            return out, len(out)
        size, rest = len(out), d.unconsumed_tail
        while rest and size <= 16 * limit:
            size += len(d.decompress(rest, limit))
            rest = d.unconsumed_tail
        return None, size
    except zlib.error as e:
        raise _Damaged(f"a compressed text chunk is damaged ({e})") from None


def _text_chunk(ctype: bytes, data: bytes, limit: int) -> tuple[str, str | None, int]:
    """(key, text or None when over ``limit``, its size in bytes) of one text chunk; size -1
    for an iTXt chunk that is not UTF-8 (Pillow skips those)."""
    key, _, rest = data.partition(b"\0")
    name = key.decode("latin-1")
    if ctype == b"tEXt":
        return name, rest.decode("latin-1") if len(rest) <= limit else None, len(rest)
    if ctype == b"zTXt":
        if rest[:1] != b"\0":
            raise _Damaged(f"text chunk '{name}' uses an unknown compression method")
        raw, size = _unpack(rest[1:], limit)
        return name, None if raw is None else raw.decode("latin-1"), size
    flag, method, rest = rest[:1], rest[1:2], rest[2:]  # iTXt
    _, _, rest = rest.partition(b"\0")  # language tag
    _, _, rest = rest.partition(b"\0")  # translated keyword
    if flag == b"\1":
        if method != b"\0":
            raise _Damaged(f"text chunk '{name}' uses an unknown compression method")
        raw, size = _unpack(rest, limit)
    else:
        raw, size = (rest if len(rest) <= limit else None), len(rest)
    if raw is None:
        return name, None, size
    try:
        return name, raw.decode("utf-8"), size
    except UnicodeDecodeError:
        return name, "", -1


def png_text(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, str]:
    """The text chunks of a PNG file (only those named ``keys``, when given), read without
    decoding the image; a UserError when it is not a PNG, is damaged, or a wanted chunk holds
    more than UNCLIP_MAX_FILE_BYTES (what a workflow file may have; Pillow's own limit, 1 MB
    unpacked, would refuse big workflows that our SaveImage wrote) or all of them more than
    four times that."""
    import struct
    import zlib
    limit = file_limit()
    out: dict[str, str] = {}
    total, pictured = 0, False
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                raise _not_png(path)
            while True:
                head = f.read(8)
                if len(head) < 8 and pictured:
                    break  # no IEND after the image data: Pillow takes such files too
                if len(head) < 8:
                    raise _Damaged("the file is truncated (it ends before its image data)")
                length, ctype = struct.unpack(">I4s", head)
                if length > 0x7FFFFFFF:
                    raise _Damaged(f"a chunk claims {length:,} bytes")
                if ctype == b"IEND":
                    break
                if ctype not in _TEXT_CHUNKS:
                    pictured = pictured or ctype == b"IDAT"
                    f.seek(length + 4, 1)
                    continue
                start = f.read(min(length, 80))  # the keyword: 1 to 79 bytes and a NUL
                name = start.partition(b"\0")[0].decode("latin-1")
                if keys is not None and name not in keys:
                    f.seek(length - len(start) + 4, 1)
                    continue
                if ctype != b"zTXt" and length > limit + 512:  # refused before it is read
                    raise over_limit(f"{path}: its text chunk '{name}' holds {length:,} bytes",
                                     length, limit, "FILE_BYTES")
                data = start + f.read(length - len(start))
                crc = f.read(4)
                if len(data) < length or len(crc) < 4:
                    raise _Damaged("the file is truncated")
                if zlib.crc32(ctype + data) != struct.unpack(">I", crc)[0]:
                    raise _Damaged(f"text chunk '{name}' is damaged (its checksum is wrong)")
                name, text, size = _text_chunk(ctype, data, limit)
                if size < 0:
                    continue
                if text is None:
                    more = "more than " if size > 16 * limit else ""
                    raise UserError(f"{path}: its text chunk '{name}' holds {more}{size:,} "
                                    f"bytes, more than the limit of {limit:,}; to allow it, "
                                    f"set UNCLIP_MAX_FILE_BYTES={size}")
                total += size
                if total > TEXT_TOTAL * limit:
                    need = -(-total // TEXT_TOTAL)
                    raise UserError(f"{path}: its text chunks hold more than {total:,} bytes, "
                                    f"more than the limit of {TEXT_TOTAL * limit:,} ({TEXT_TOTAL} "
                                    f"x UNCLIP_MAX_FILE_BYTES); to allow it, set "
                                    f"UNCLIP_MAX_FILE_BYTES={need}")
                out[name] = text
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except _Damaged as e:
        raise UserError(f"cannot read {path} as a PNG image: {e}") from None
    return out


def load_png(path: Path, overrides: Mapping[str, Any] | None = None) -> Resolved:
    """The workflow a PNG was made with: our YAML chunk with the input values of that run
    (``--set`` still overrides them), else ComfyUI's API ``prompt`` chunk."""
    text = png_text(path, (YAML_TEXT, INPUTS, YAML_FILE))
    if YAML_TEXT not in text:
        text = png_text(path, (PROMPT,))  # a PNG of ComfyUI's (its chunks: read only now)
    if YAML_TEXT in text:
        label = f"{path}[{YAML_TEXT}]"
        stored: dict[str, Any] = {}
        if INPUTS in text:
            stored = parse_json(text[INPUTS], f"{path}[{INPUTS}]", f"the {INPUTS} chunk: JSON")
            if not isinstance(stored, dict):
                raise UserError(f"the {INPUTS} chunk must be a JSON object", file=str(path))
        original = Path(text.get(YAML_FILE, ""))
        if text.get(YAML_FILE) and _same_text(original, text[YAML_TEXT]):
            # the file is still as it was: read it there (its folder finds its sample files)
            return load(original, {**stored, **(overrides or {})})
        with tempfile.TemporaryDirectory(prefix="unclip-png-") as tmp:
            wf_path = Path(tmp) / "workflow.yaml"
            wf_path.write_text(text[YAML_TEXT], encoding="utf-8")
            rs = _relocated(lambda: load(wf_path, {**stored, **(overrides or {})}),
                            str(wf_path), label)
        rs.workflow.file = label
        return rs
    if PROMPT in text:
        label = f"{path}[{PROMPT}]"
        api = parse_json(text[PROMPT], label, f"the {PROMPT} chunk: JSON")
        if not is_api(api):
            raise UserError(f"the {PROMPT} chunk is not an API-format workflow", file=str(path))
        return load_api(api, overrides, file=label)
    raise UserError(f"{path} carries no workflow (no {YAML_TEXT} or {PROMPT} text chunk); "
                    "only PNGs saved by SaveImage (ours or ComfyUI's) do")


def _same_text(path: Path, text: str) -> bool:
    """Whether the regular file ``path`` holds exactly ``text``; read only when its size is the
    text's, and then no more than that (a device, a pipe or a huge file named by a crafted
    chunk is never read whole, nor waited on)."""
    import stat
    data = text.encode("utf-8")
    try:
        if runtime.path_problem(str(path)):
            return False
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
            return False
        return runtime.read_bounded(path, len(data)) == data
    except (OSError, ValueError):
        return False


def load_source(path: Path, overrides: Mapping[str, Any] | None = None, *,
                preset: bool = False) -> Resolved:
    """Validate what the CLI was given: a YAML workflow, an API-format JSON file or a PNG.
    ``preset``: a YAML file's socket inputs may stay without a value (``unclip validate``)."""
    suffix = path.suffix.lower()
    if suffix == ".png" and path.is_file():
        return load_png(path, overrides)
    if suffix == ".json" and path.is_file():
        data = read_json(path)
        if isinstance(data, dict) and is_api(data.get("prompt")):  # a saved /prompt request
            data = data["prompt"]
        if is_api(data):
            return load_api(data, overrides, file=str(path))
        if is_ui(data):
            raise UserError("this is a ComfyUI UI workflow; the headless executor runs the API "
                            "format: in ComfyUI use Workflow > Export (API), or `unclip export "
                            "--comfy-api` on the YAML", file=str(path))
    return load(path, overrides, preset=preset)  # YAML, or JSON in our own format (JSON is YAML)


# --- workflows from elsewhere (a PNG, a ComfyUI JSON) ------------------------------------------

def recorded_file(path: Path) -> Path | None:
    """The workflow file a PNG of ours was made from (None if it does not say)."""
    if path.suffix.lower() != ".png" or not path.is_file():
        return None
    try:
        name = png_text(path, (YAML_FILE,)).get(YAML_FILE)
    except UserError:
        return None
    return Path(name) if name else None



def reads(rs: Resolved) -> list[tuple[str, str, str, Path | None]]:
    """What a workflow reads from disk: (node id, field, value as written, resolved path or None
    for a model name) for every LoadImage ``path`` and loader ``path``/``prior_path``."""
    from ..nodes.core.checkpoint import POCKET, resolve_path
    from ..nodes.image import resolve_input_path
    out = []
    with runtime.use_base_dir(runtime.workflow_folder(rs.workflow.file)):  # as the run will
        for nid, rn in rs.nodes.items():
            for field in PATH_FIELDS:
                value = rn.params.get(field)
                if not isinstance(value, str) or not value.strip():
                    continue
                try:
                    found = (resolve_input_path(value) if rn.spec.type == "LoadImage"
                             else resolve_path(value))
                except UserError:
                    found = None
                if found == POCKET:
                    found = None  # the bundled model: nothing of the user's
                out.append((nid, field, value, found))
    return out


def describe_reads(rs: Resolved) -> list[str]:
    """``reads`` as lines for the terminal, preset files included."""
    lines = []
    for nid, field, value, found in reads(rs):
        where = f" -> {found}" if found is not None and str(found) != value else ""
        if found is None:
            where = " (the bundled model)" if value.strip() == "pocket" else " (not found)"
        lines.append(f"  {nid}.{field}: {value}{where}")
    presets = sorted({d.type.origin.file for d in rs.workflow.nodes.values()
                      if d.type.origin is not None and d.type.origin.file})
    lines += [f"  preset file: {f}" for f in presets]
    return lines


def pickle_problems(rs: Resolved, file: str) -> list[UserError]:
    """A node that would load pickle weights, which can run code: not from a stored workflow
    unless the user says so."""
    return [UserError(f"{rn.spec.type} would load pickle weights (allow_pickle: true), which "
                      "can run any code; this workflow comes from a file you may not have "
                      "written: run it only if you trust it and its model files, with "
                      "--allow-pickle", file=file, node=nid, field="allow_pickle")
            for nid, rn in rs.nodes.items() if rn.params.get("allow_pickle") is True]


def moved_paths(rs: Resolved, folder: Path, file: str) -> list[UserError]:
    """Stored relative paths that here name another file than in ``folder``, the folder of the
    workflow the PNG was made from (or that are missing there): reading them would silently
    use some other file."""
    from ..nodes.core.checkpoint import POCKET
    problems = []
    for nid, field, value, found in reads(rs):
        if found is None or found == POCKET or Path(value).expanduser().is_absolute():
            continue
        kind = "image" if rs.nodes[nid].spec.type == "LoadImage" else "model"
        if kind == "model" and not Path(value).expanduser().exists():
            continue  # a model name, not a path
        there = (folder / Path(value).expanduser()).resolve()
        if found == there:
            continue
        if kind == "image" and not there.exists() and found.is_relative_to(PACK_DIR):
            continue  # a sample image of the pack, the same in every installation
        how = _how_to_give(rs, nid, field)
        state = "which is missing here" if not there.exists() else "a different file"
        problems.append(UserError(
            f"the stored relative path {excerpt(value)} names {found} here, but the workflow was "
            f"recorded in {folder}, where it names {there} ({state}); not reading another file "
            f"than the one recorded: {how}", file=file, node=nid, field=field))
    return problems


def unnamed_reads(rs: Resolved, stored: Path, named: set[str]) -> list[UserError]:
    """The files a stored workflow (a PNG's, a JSON file's) would read that the user did not
    name: only those given again with ``--set`` (``named``), those next to ``stored`` (in its
    folder), the pack's own sample files and models found by name may be read without
    ``--trust-inputs``; a crafted workflow could otherwise read any local file into a run."""
    from ..nodes import folders
    from ..nodes.core.checkpoint import POCKET
    here = Path(os.path.realpath(stored)).parent
    problems = []
    for nid, field, value, found in reads(rs):
        if found is None or found == POCKET or _input_name(rs, nid, field) in named:
            continue
        real = Path(os.path.realpath(found))
        if real.parent == here or real.is_relative_to(PACK_DIR.resolve()):
            continue
        if rs.nodes[nid].spec.type != "LoadImage" and folders.find_model(value) is not None:
            continue  # a model name, looked up in the model folders the user set up
        name = _input_name(rs, nid, field)
        how = (f"give it again with --set {name}=PATH" if name
               else "put the file next to it")
        problems.append(UserError(
            f"the stored workflow would read {found}, a file you did not name; {how}, or run "
            "with --trust-inputs to read the files it names", file=str(stored), node=nid,
            field=field))
    return problems


def _input_name(rs: Resolved, nid: str, field: str) -> str | None:
    """The workflow input that gives ``nid``'s ``field`` (``--set NAME=`` changes it), if any."""
    decl = rs.workflow.nodes.get(nid)
    at = decl.params.get(field) if decl is not None else None
    return nid[len(SOURCE_PREFIX):] if nid.startswith(SOURCE_PREFIX) else (
        at.value[1:] if at is not None and isinstance(at.value, str)
        and at.value.startswith("$") and not at.value.startswith("$$") else None)


def _how_to_give(rs: Resolved, nid: str, field: str) -> str:
    name = _input_name(rs, nid, field)
    if name:
        return f"give it with --set {name}=PATH, or run from that folder"
    return "run it from that folder, or edit the workflow to give an absolute path"
