"""``infer`` hooks shared by the stage nodes: what validation may know of a value before anything
runs (``declare.node(infer=...)``).  Facts are small dicts: ``family`` and ``label`` of the model
a value comes from, ``clip_dim`` (the width of its CLIP embeddings), and for handles what the
family lacks (``absent``: why a stage is missing).  Everything here is best effort: a value whose
origin has no facts is simply not checked."""
from __future__ import annotations

from .errors import UserError


def origin(f: dict) -> str:
    return f" ({f['label']})" if f.get("label") else ""


def handle(inputs: dict, name: str) -> dict | None:
    """The facts of a linked model handle; UserError when its family has no such stage."""
    f = inputs.get(name)
    if f and f.get("absent"):
        raise UserError(f["absent"], field=name)
    return f


def width(f: dict | None) -> dict | None:
    """Only what an embedding inherits from the model that made it."""
    if not f or "clip_dim" not in f:
        return None
    return {k: f[k] for k in ("family", "label", "clip_dim") if k in f}


def pass_width(source: str, output: str):
    """An encoder node: its output has the width of the handle it was encoded with."""
    def infer(params: dict, inputs: dict) -> dict:
        return {output: width(handle(inputs, source))}
    return infer


def same_width(inputs: dict, names, expected: dict | None = None, against: str = "") -> dict | None:
    """Check that the embeddings linked to ``names`` all have one width (and ``expected``'s, a
    handle's, when given); returns the facts of the first one known."""
    first, first_name = expected, against
    for name in names:
        f = width(inputs.get(name))
        if f is None:
            continue
        if first is None:
            first, first_name = f, name
            continue
        if f["clip_dim"] != first["clip_dim"]:
            what = f"this {first_name}" if first is expected else f"{first_name}"
            raise UserError(f"{name} holds {f['clip_dim']}-d CLIP embeddings{origin(f)} but "
                            f"{what} takes {first['clip_dim']}-d ones{origin(first)}; both must "
                            f"come from the same CLIP", field=name)
    return width(first)
