"""One declaration per node; both hosts' views are derived from it.

A node is a plain function plus a ``NodeSpec``: typed input sockets (take links), parameters
(literals with type, default, range or choices), typed outputs, a category, a description and a
version that enters cache keys.  From the spec come

* the executor's schema (``spec.inputs`` / ``spec.params`` / ``spec.outputs``, ``Param.check``), and
* ComfyUI's V1 class attributes (``comfy_class``): ``INPUT_TYPES``, ``RETURN_TYPES``,
  ``RETURN_NAMES``, ``FUNCTION``, ``CATEGORY``, ``DESCRIPTION``, ``OUTPUT_NODE``.

Nothing host-specific lives in the stage modules: they only declare.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .errors import UserError, excerpt

PARAM_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_MAX = 2**64 - 1  # what torch.Generator.manual_seed accepts, and ComfyUI's seed widget range


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
"""Default of a parameter the user must give."""


@dataclass(frozen=True)
class Input:
    """A socket: its value comes from a link to another node's output."""

    name: str
    type: str
    optional: bool = False
    tooltip: str = ""

    def __post_init__(self):
        if not isinstance(self.optional, bool):  # Input(name, type, "a tip") lands here
            raise TypeError(f"input {self.name!r}: optional must be True or False; "
                            f"give a tooltip as tooltip=...")


@dataclass(frozen=True)
class Output:
    name: str
    type: str
    tooltip: str = ""


@dataclass(frozen=True)
class Param:
    """A literal (a widget in ComfyUI).  ``check`` turns a user value into the node's value."""

    name: str
    type: str
    default: Any = REQUIRED
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[str, ...] | None = None
    multiline: bool = False
    tooltip: str = ""
    comfy_choices: Callable[[], list[str]] | None = field(default=None, compare=False)
    """Inside ComfyUI, a STRING parameter shown as a drop-down of these values (model folders,
    input files), computed when ComfyUI asks for the node's inputs."""
    comfy_upload: bool = False
    """Inside ComfyUI, the drop-down also gets ComfyUI's image upload button."""

    def __post_init__(self):
        if self.type not in PARAM_TYPES:
            raise TypeError(f"parameter {self.name!r}: type must be one of {PARAM_TYPES}")
        if (self.type == "COMBO") != (self.choices is not None):
            raise TypeError(f"parameter {self.name!r}: choices go with type COMBO and only with it")
        if self.default is not REQUIRED:
            self.check(self.default)  # a bad default is a bug in the declaration

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, value: Any) -> Any:
        """Return ``value`` as this parameter's Python type, or raise ValueError saying why not."""
        t = self.type
        if t == "INT":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ValueError(f"expected an integer, got {_show(value)}")
        elif t == "FLOAT":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {_show(value)}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {value}")
        elif t == "STRING":
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {_show(value)}")
        elif t == "BOOLEAN":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {_show(value)}")
        elif t == "COMBO":
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{_show(value)} is not one of: {', '.join(self.choices)}")
        if t in ("INT", "FLOAT"):
            if self.min is not None and value < self.min:
                raise ValueError(f"{value} is below the minimum {self.min}")
            if self.max is not None and value > self.max:
                raise ValueError(f"{value} is above the maximum {self.max}")
        return value

    def parse(self, text: str) -> Any:
        """Parse a command-line string (``--set name=value``) into this parameter's type."""
        return parse_literal(self.type, text, self.choices)


def parse_literal(type_: str, text: str, choices: Iterable[str] | None = None) -> Any:
    """A command-line string as a value of ``type_``; ValueError when it is not one."""
    if type_ == "INT":
        try:
            return int(text.replace("_", ""), 0)
        except ValueError:
            raise ValueError(f"expected an integer, got {excerpt(text)}") from None
    if type_ == "FLOAT":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {excerpt(text)}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {excerpt(text)}")
        return value
    if type_ == "BOOLEAN":
        low = text.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"expected true or false, got {excerpt(text)}")
    if type_ == "COMBO" and choices is not None and text not in choices:
        raise ValueError(f"{excerpt(text)} is not one of: {', '.join(choices)}")
    return text


def _show(value: Any) -> str:
    """A value as a message quotes it: cut short (a value may be megabytes long)."""
    if isinstance(value, str):
        return excerpt(value)
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else f"{text[:36]}... ({len(text):,} digits)"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class NodeSpec:
    """Everything a host needs to know about one node type."""

    type: str
    fn: Callable[..., Any]
    category: str
    description: str
    inputs: tuple[Input, ...] = ()
    params: tuple[Param, ...] = ()
    outputs: tuple[Output, ...] = ()
    version: str = "1"
    display_name: str = ""
    output_node: bool = False
    cacheable: bool = True
    disk_cache: bool = True
    """False: outputs are cached in memory only, never written to the disk cache: for nodes that
    are cheap to recompute from a file that is already the source of truth (LoadImage)."""
    fingerprint: Callable[[dict], Any] | None = None
    check: Callable[[dict], None] | None = None
    infer: Callable[[dict, dict], dict | None] | None = None
    batch: str | None = None
    """A parameter (``seed``) that may be given as a tuple: the function then runs once per
    value in one batched call and returns one result per value (``call_batch``)."""
    prefix: str | None = None
    """A saver's STRING parameter that names its files under the output folder: the executor
    checks the place before anything runs, and a sweep adds the swept values to it."""
    files: str | None = None
    """A saver's STRING output that lists the files it wrote, one per line (the run report's
    ``files``)."""
    renamed: Mapping[str, str] = field(default_factory=dict)
    """Old field names that still work (``path`` -> ``image``): workflows, API prompts and
    exported graphs written before a rename keep loading."""
    replaced_by: str | None = None
    """The ComfyUI core node that does this node's job inside ComfyUI (GrowMask, ImageScale...):
    the pack does not register this node there, and exports write the core node instead."""
    old_widget_order: tuple[str, ...] | None = None
    """The widgets' order before a change reordered them: the deprecated class that keeps old
    ComfyUI graphs loading (``comfy_mappings``) lists them so, since a saved graph gives widget
    values by position."""
    comfy_types: Mapping[str, Any] | None = field(default=None, compare=False)
    """A node of ComfyUI itself (``FOREIGN``): its INPUT_TYPES as ComfyUI gives them, in
    ComfyUI's order (sockets and widgets interleaved)."""
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        names = [s.name for s in self.inputs] + [p.name for p in self.params]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise TypeError(f"node {self.type}: duplicate field names {sorted(dup)}")
        outs = [o.name for o in self.outputs]
        if len(set(outs)) != len(outs):
            raise TypeError(f"node {self.type}: duplicate output names")
        self._by_name.update({s.name: s for s in self.inputs})
        self._by_name.update({p.name: p for p in self.params})
        if self.prefix is not None and (self.param(self.prefix) is None
                                        or self.param(self.prefix).type != "STRING"):
            raise TypeError(f"node {self.type}: prefix={self.prefix!r} is not a STRING parameter")
        for old, new in self.renamed.items():
            if self._by_name.get(new) is None or old in self._by_name:
                raise TypeError(f"node {self.type}: renamed {old!r} -> {new!r} does not name a "
                                f"current field, or the old name is still taken")
        if self.files is not None and (self.output(self.files) is None
                                       or self.output(self.files).type != "STRING"):
            raise TypeError(f"node {self.type}: files={self.files!r} is not a STRING output")

    def field(self, name: str) -> Input | Param | None:
        return self._by_name.get(name)

    def input(self, name: str) -> Input | None:
        f = self._by_name.get(name)
        return f if isinstance(f, Input) else None

    def param(self, name: str) -> Param | None:
        f = self._by_name.get(name)
        return f if isinstance(f, Param) else None

    def output(self, name: str) -> Output | None:
        return next((o for o in self.outputs if o.name == name), None)

    def output_index(self, name: str) -> int:
        return [o.name for o in self.outputs].index(name)

    def call(self, **kwargs) -> tuple:
        """Run the node function; always returns a tuple with one value per output."""
        for old, new in self.renamed.items():  # a caller that still uses an old name
            if old in kwargs and new not in kwargs:
                kwargs[new] = kwargs.pop(old)
        result = self.fn(**kwargs)
        if len(self.outputs) == 1 and not (isinstance(result, tuple) and len(result) == 1):
            result = (result,)
        if result is None:
            result = ()
        if not isinstance(result, tuple) or len(result) != len(self.outputs):
            raise TypeError(f"node {self.type} returned {type(result).__name__}, "
                            f"expected a tuple of {len(self.outputs)} outputs")
        return result

    def call_batch(self, values: tuple, **kwargs) -> list[tuple]:
        """Run the function once for all ``values`` of the ``batch`` parameter; one result
        tuple per value, in order."""
        results = self.fn(**kwargs, **{self.batch: tuple(values)})
        if not isinstance(results, tuple) or len(results) != len(values):
            raise TypeError(f"node {self.type} returned {type(results).__name__} for a batch of "
                            f"{len(values)}")
        return [r if isinstance(r, tuple) else (r,) for r in results]

    def schema(self) -> dict:
        """The machine view of this node (for ``unclip nodes --json``), like ComfyUI's object_info."""
        def param_json(p: Param) -> dict:
            d = {"name": p.name, "type": p.type}
            if not p.required:
                d["default"] = p.default
            for k in ("min", "max", "step"):
                if getattr(p, k) is not None:
                    d[k] = getattr(p, k)
            if p.choices is not None:
                d["choices"] = list(p.choices)
            if p.multiline:
                d["multiline"] = True
            if p.tooltip:
                d["tooltip"] = p.tooltip
            d["required"] = p.required
            return d

        return {
            "type": self.type,
            "display_name": self.display_name or self.type,
            "category": self.category,
            "description": self.description,
            "version": self.version,
            "inputs": [{"name": s.name, "type": s.type, "required": not s.optional,
                        **({"tooltip": s.tooltip} if s.tooltip else {})} for s in self.inputs],
            "params": [param_json(p) for p in self.params],
            "outputs": [{"name": o.name, "type": o.type,
                         **({"tooltip": o.tooltip} if o.tooltip else {})} for o in self.outputs],
            "output_node": self.output_node,
            "cacheable": self.cacheable,
        }


REGISTRY: dict[str, NodeSpec] = {}


def node(type: str, *, category: str, description: str, inputs: Iterable[Input] = (),
         params: Iterable[Param] = (), outputs: Iterable[Output] = (), version: str = "1",
         display_name: str = "", output_node: bool = False, cacheable: bool = True,
         disk_cache: bool = True, fingerprint: Callable[[dict], Any] | None = None,
         check: Callable[[dict], None] | None = None,
         infer: Callable[[dict, dict], dict | None] | None = None,
         batch: str | None = None, prefix: str | None = None, files: str | None = None,
         renamed: Mapping[str, str] | None = None, replaced_by: str | None = None,
         old_widget_order: tuple[str, ...] | None = None):
    """Declare a node type.  Decorates the function that does the work and registers the spec.

    A saver (``output_node``) names the parameter that prefixes its files (``prefix``) and the
    output that lists what it wrote (``files``).

    ``fingerprint(params)`` returns extra JSON-able cache-key material computed before running
    (a checkpoint's identity, an input file's hash); it may raise UserError (missing file).
    ``check(params)`` validates several parameters together; it raises UserError with ``field``.
    ``infer(params, inputs)`` runs during validation, in link order: ``inputs`` maps each linked
    input to what is known of its value (a dict of facts such as a model family or an embedding
    width, or None), and it returns such facts per output name, or raises UserError with
    ``field`` for combinations that cannot work (a 768-d embedding into a 1280-d decoder).  It
    must be cheap: configs, never weights.
    """
    def wrap(fn):
        spec = NodeSpec(type=type, fn=fn, category=category, description=description,
                        inputs=tuple(inputs), params=tuple(params), outputs=tuple(outputs),
                        version=version, display_name=display_name, output_node=output_node,
                        cacheable=cacheable, disk_cache=disk_cache, fingerprint=fingerprint,
                        check=check, infer=infer, batch=batch, prefix=prefix, files=files,
                        renamed=dict(renamed or {}), replaced_by=replaced_by,
                        old_widget_order=old_widget_order)
        from .types import SOCKET_TYPES  # registered before any node module is imported
        for s in (*spec.inputs, *spec.outputs):
            if s.type not in SOCKET_TYPES:
                raise TypeError(f"node {type}: unknown socket type {s.type!r}")
        if type in REGISTRY and REGISTRY[type].fn is not fn:
            raise TypeError(f"node type {type!r} declared twice")
        REGISTRY[type] = spec
        fn.spec = spec
        return fn
    return wrap


FOREIGN: dict[str, NodeSpec] = {}
"""ComfyUI's own nodes that our workflows may name (``comfy:KSampler``): they are checked and
exported like ours, and run only inside ComfyUI (nodes/comfy_core.py declares them when the
pack is imported)."""
FOREIGN_PREFIX = "comfy:"

TYPE_ALIASES: dict[str, str] = {}
"""Old node type names that still load, mapped to the current ones."""


def get(type: str) -> NodeSpec | None:
    """Our node type, or one of ComfyUI's (``comfy:Name``), or None."""
    return REGISTRY.get(type) or FOREIGN.get(type)


def is_foreign(spec: NodeSpec) -> bool:
    """Whether ``spec`` is one of ComfyUI's own nodes (runs only inside ComfyUI)."""
    return spec.comfy_types is not None


def current_type(type: str) -> str:
    """A node type as it is named now (an old name maps to its new one)."""
    return TYPE_ALIASES.get(type, type)


# ---------------------------------------------------------------------------------------------
# ComfyUI's view

COMFY_PREFIX = "unCLIP "
"""ComfyUI's node ids are global: ours carry a prefix so that e.g. our LoadImage never shadows
ComfyUI's own.  The executor uses the bare names."""

_INT_LIMIT = 2**63 - 1


def comfy_id(type: str) -> str:
    return COMFY_PREFIX + type


def class_type(spec: NodeSpec) -> str:
    """The node's class_type in ComfyUI: ours prefixed, ComfyUI's own as they are."""
    return spec.type[len(FOREIGN_PREFIX):] if is_foreign(spec) else comfy_id(spec.type)


def comfy_input_types(spec: NodeSpec) -> dict:
    if spec.comfy_types is not None:
        return {k: dict(v) for k, v in spec.comfy_types.items()}
    required: dict[str, tuple] = {}
    optional: dict[str, tuple] = {}
    for s in spec.inputs:
        opts = {"tooltip": s.tooltip} if s.tooltip else {}
        if s.type in PARAM_TYPES:  # a socket, never a widget, even for ComfyUI's widget types
            opts["forceInput"] = True
        (optional if s.optional else required)[s.name] = (s.type, opts) if opts else (s.type,)
    for p in spec.params:
        opts: dict[str, Any] = {}
        default = p.default
        if p.required:
            default = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False,
                       "COMBO": p.choices[0] if p.choices else ""}[p.type]
        opts["default"] = default
        if p.type in ("INT", "FLOAT"):
            lim = _INT_LIMIT if p.type == "INT" else 1e10
            opts["min"] = p.min if p.min is not None else -lim
            opts["max"] = p.max if p.max is not None else lim
            opts["step"] = p.step if p.step is not None else (1 if p.type == "INT" else 0.01)
        if p.multiline:
            opts["multiline"] = True
        if p.tooltip:
            opts["tooltip"] = p.tooltip
        listed = _comfy_list(p)
        if listed is not None:
            if p.comfy_upload:
                opts["image_upload"] = True
            opts["default"] = opts["default"] if opts["default"] in listed else listed[0]
            required[p.name] = (listed, opts)
            continue
        required[p.name] = (list(p.choices), opts) if p.type == "COMBO" else (p.type, opts)
    out: dict[str, dict] = {"required": required}
    if optional:
        out["optional"] = optional
    out["hidden"] = {PROBLEM: PROBLEM.upper()}
    if spec.output_node:
        out["hidden"].update(_COMFY_HIDDEN)
    return out


PROBLEM = "unclip_problem"
"""A hidden input of every node of ours inside ComfyUI.  ComfyUI checks one node at a time, so
our check of the whole prompt (graph/comfy_prompt.py, run as the prompt arrives) writes what
it finds on a node into this input, and the node's VALIDATE_INPUTS hands it to ComfyUI, which
then refuses the prompt and marks the node before anything runs."""


def _comfy_list(p: Param) -> list[str] | None:
    """The drop-down values of a parameter with ``comfy_choices``, inside ComfyUI only."""
    if p.comfy_choices is None:
        return None
    from .folders import comfy_folder_paths
    if comfy_folder_paths() is None:
        return None
    values = list(p.comfy_choices())
    return values or [p.default if isinstance(p.default, str) else ""]


_COMFY_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
"""What ComfyUI passes to output nodes besides their inputs: the API prompt and the PNG extras
(the UI workflow), which savers write as text chunks."""


def comfy_class(spec: NodeSpec) -> type:
    """A ComfyUI V1 node class for ``spec``."""
    from . import runtime

    def INPUT_TYPES(cls):
        return comfy_input_types(spec)

    hidden = _COMFY_HIDDEN if spec.output_node else {}
    clash = [n for n in hidden if spec.field(n) is not None]
    if clash:
        raise TypeError(f"node {spec.type}: an output node cannot have a field named "
                        f"{clash[0]!r}: ComfyUI passes its hidden input of that name")

    def run(self, **kwargs):
        # Hidden inputs come as keywords like the others, and only to the nodes that declare
        # them: a node's own "prompt" widget must stay the node's.
        kwargs.pop(PROBLEM, None)
        extra = {n: kwargs.pop(n, None) for n in hidden}
        with runtime.comfy_host(**extra):
            for s in spec.inputs:
                kwargs.setdefault(s.name, None)
            result = spec.call(**kwargs)
            ui = runtime.take_ui() if spec.output_node else None  # inside: the run's own host
        if ui:
            return {"ui": ui, "result": result}
        return result

    attrs: dict[str, Any] = {
        "INPUT_TYPES": classmethod(INPUT_TYPES),
        "RETURN_TYPES": tuple(o.type for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in spec.outputs),
        "FUNCTION": "run",
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "OUTPUT_NODE": spec.output_node,
        "run": run,
        "__doc__": spec.description,
        "__module__": __name__,
    }
    upload = next((p for p in spec.params if p.comfy_upload), None)
    if upload is not None:
        if upload.name != "image":
            raise TypeError(f"node {spec.type}: ComfyUI's upload and mask editor work on a "
                            f"widget named 'image', not {upload.name!r}")

        def VALIDATE_INPUTS(cls, image=None, unclip_problem=None):
            # Naming 'image' here makes ComfyUI leave its list check to us: the mask editor's
            # 'clipspace/... [input]' is in no list, and must be taken like a listed file.
            if unclip_problem:
                return unclip_problem
            return _readable_input(spec, image)
    else:
        def VALIDATE_INPUTS(cls, unclip_problem=None):
            return unclip_problem or True
    attrs["VALIDATE_INPUTS"] = classmethod(VALIDATE_INPUTS)
    if not spec.cacheable:
        attrs["IS_CHANGED"] = classmethod(lambda cls, **kw: float("nan"))
    elif spec.fingerprint is not None:
        def IS_CHANGED(cls, **kw):
            params = {p.name: kw.get(p.name, p.default) for p in spec.params}
            try:
                return json.dumps(spec.fingerprint(params), sort_keys=True, default=str)
            except UserError as e:  # let VALIDATE/run report it; never crash ComfyUI's cache check
                return f"error: {e}"
        attrs["IS_CHANGED"] = classmethod(IS_CHANGED)
    return type(spec.type, (), attrs)


def _readable_input(spec: NodeSpec, value: Any) -> bool | str:
    """True when the upload widget's value names a file the node may read (ComfyUI's message
    for it otherwise)."""
    try:
        if spec.fingerprint is not None:
            spec.fingerprint({"image": value})
    except UserError as e:
        return e.message
    return True


def comfy_mappings(specs: Iterable[NodeSpec]) -> tuple[dict, dict]:
    """Our classes for ComfyUI.  A node that ComfyUI's own does the job of (``replaced_by``), and
    an old name of a renamed node (``TYPE_ALIASES``), get a DEPRECATED class: ComfyUI's search
    and node library leave it out (no doubles), while a graph saved with it still opens and runs
    (a prompt of one is turned into ComfyUI's node as it arrives, graph/comfy_prompt.py)."""
    classes, names = {}, {}
    for spec in specs:
        key = comfy_id(spec.type)
        if spec.replaced_by is not None:
            classes[key] = _deprecated(spec, f"ComfyUI's {spec.replaced_by}")
            names[key] = f"{display_name(spec)} (old)"
            continue
        classes[key] = comfy_class(spec)
        names[key] = display_name(spec)
    by_type = {spec.type: spec for spec in specs}
    for old, new in TYPE_ALIASES.items():
        if new in by_type and comfy_id(old) not in classes:
            classes[comfy_id(old)] = _deprecated(by_type[new], display_name(by_type[new]))
            names[comfy_id(old)] = f"{_spaced(old)} (old)"
    return classes, names


def _deprecated(spec: NodeSpec, instead: str) -> type:
    """``spec``'s class, hidden from ComfyUI's search, its widgets in their old order."""
    base = comfy_class(spec)
    order = spec.old_widget_order

    def INPUT_TYPES(cls):
        types = base.INPUT_TYPES()
        if order:
            req = types["required"]
            sockets = {k: v for k, v in req.items() if spec.param(k) is None}
            types["required"] = {**sockets, **{k: req[k] for k in order},
                                 **{k: v for k, v in req.items()
                                    if k not in sockets and k not in order}}
        return types
    return type(spec.type, (base,), {
        "DEPRECATED": True, "INPUT_TYPES": classmethod(INPUT_TYPES),
        "DESCRIPTION": f"Kept so that graphs saved with it still load; use {instead}. "
                       + spec.description})


_WORD = re.compile(r"UnCLIP|CLIP|Clip|DDIM|PCA|[A-Z][a-z]*|[a-z]+|\d+")


def display_name(spec: NodeSpec) -> str:
    """What ComfyUI's search and title bar show: words, as ComfyUI's own names are ("unCLIP
    Load Prior", "unCLIP DDIM Invert"), the pack's name first so ours are found together."""
    return spec.display_name or _spaced(spec.type)


def _spaced(type: str) -> str:
    words = [{"Clip": "CLIP"}.get(w, w) for w in _WORD.findall(type) if w != "UnCLIP"]
    return "unCLIP " + " ".join(words)



