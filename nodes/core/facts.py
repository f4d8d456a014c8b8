"""What validation may know of a value before anything runs (``declare.node(infer=...)``).

A loader's ``infer`` gives each model handle its ``Facts`` from the checkpoint's configs alone;
encoders and samplers hand on what an embedding inherits from the model that made it (family,
width, CLIP space).  Everything here is best effort: a value whose origin has no facts is simply
not checked.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UserError


@dataclass(frozen=True)
class Facts:
    """The facts of a model handle (or of an embedding, which keeps only the first four)."""

    family: str                      # the family's name
    label: str                       # how messages name it ("Kandinsky 2.2")
    clip_dim: int | None = None      # width of the CLIP embeddings it takes or gives
    space: str | None = None         # which CLIP those embeddings live in, when known
    takes_text: bool | None = None   # decoders: whether captions are read
    variant: str | None = None       # decoders: "text2img", "inpaint" or "controlnet"
    cannot_inpaint: str | None = None  # decoders: why Inpaint cannot use it (None: it can)
    absent: str | None = None        # the family has no such stage: why
    settings: tuple[str, ...] | None = None  # decoders: family-specific settings it reads

    def embedding(self) -> "Facts | None":
        """What an embedding made with this handle inherits."""
        if self.clip_dim is None:
            return None
        return Facts(self.family, self.label, self.clip_dim, self.space)

    def __getitem__(self, key: str):
        """Read like the dicts facts once were (``facts["clip_dim"]``)."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def origin(self) -> str:
        space = f", {self.space}" if self.space else ""
        return f" ({self.label}{space})"


def handle(inputs: dict, name: str) -> Facts | None:
    """The facts of a linked model handle; UserError when its family has no such stage."""
    f = inputs.get(name)
    if isinstance(f, Facts) and f.absent:
        raise UserError(f.absent, field=name)
    return f if isinstance(f, Facts) else None


def width(f: Facts | None) -> Facts | None:
    """Only what an embedding inherits from the model that made it."""
    return f.embedding() if isinstance(f, Facts) else None


def pass_width(source: str, output: str):
    """An encoder node: its output has the width and space of the handle it was encoded with."""
    def infer(params: dict, inputs: dict) -> dict:
        return {output: width(handle(inputs, source))}
    return infer


def same_clip(a: Facts, b: Facts) -> bool:
    """Whether two embeddings' facts may be the same CLIP: one width, and one space where both
    spaces are known."""
    return a.clip_dim == b.clip_dim and not (a.space and b.space and a.space != b.space)


def same_width(inputs: dict, names, expected: Facts | None = None,
               against: str = "") -> Facts | None:
    """Check that the embeddings linked to ``names`` all come from one CLIP (``expected``'s,
    a handle's, when given): the same width, and the same space where both are known.  Returns
    the facts of the first one known."""
    first, first_name = width(expected), against
    for name in names:
        f = width(inputs.get(name))
        if f is None:
            continue
        if first is None:
            first, first_name = f, name
            continue
        what = f"this {first_name}" if expected is not None and first_name == against \
            else first_name
        if f.clip_dim != first.clip_dim:
            raise UserError(f"{name} holds {f.clip_dim}-d CLIP embeddings{f.origin} but {what} "
                            f"takes {first.clip_dim}-d ones{first.origin}; both must come from "
                            f"the same CLIP", field=name)
        if f.space and first.space and f.space != first.space:
            raise UserError(f"{name} holds embeddings in {f.space} space{f.origin} but {what} "
                            f"takes {first.space} ones{first.origin}; both must come from the "
                            f"same CLIP", field=name)
    return width(first)


__all__ = ["Facts", "handle", "width", "pass_width", "same_clip", "same_width", "replace"]
