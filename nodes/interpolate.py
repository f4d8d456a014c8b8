"""Moving through CLIP space (paper §3): interpolations, text diffs, weighted mixes.

``slerp`` is the true spherical interpolation of two vectors,
    slerp(a, b, t) = sin((1 - t) W) / sin W * a + sin(t W) / sin W * b,
    W = arccos(a . b / (|a| |b|)),
falling back to linear interpolation when sin W is tiny (a and b nearly parallel or opposite).
It is computed on whole vectors, not element by element: that would not interpolate angles at all.

Every path node returns a batch of embeddings, one row per theta, plus the thetas as text
(``0,0.25,0.5``) to store with the saved frames (SaveAnimation/SaveImage ``frames``).  To keep
the decoder noise fixed along a path, set the Decoder's ``same_noise``.

A text embedding's pooled vector (z_t) may stand in for an image embedding wherever these nodes
take one; it lies in the same CLIP space (though not where image embeddings cluster), so a prior
usually gives better results (text -> Prior -> image_embeds).
"""
from __future__ import annotations

import re

import torch

from .declare import Input, Output, Param, node
from .core.facts import same_width
from .core.handles import COMFY_CLIP_VISION, clip_of_width
from .errors import UserError
from .core.sampling import plain
from .types import ImageEmbeds, TextEmbeds

CATEGORY = "unCLIP/edit"
PARALLEL_EPS = 1e-4
"""sin W below this: treat the two vectors as parallel (or opposite) and interpolate linearly."""


# --- maths ----------------------------------------------------------------------------------------

def slerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation of the rows of ``a`` and ``b`` ([..., D], broadcast) at ``t``
    (a number, or a tensor broadcasting against [...]).  Computed in float64."""
    a64, b64 = a.double(), b.double()
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.ndim > 0:
        t = t[..., None]
    na, nb = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / (na * nb).clamp(min=1e-300)).clamp(-1, 1)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    parallel = (sin < PARALLEL_EPS) | (na == 0) | (nb == 0)
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe)
    return (wa * a64 + wb * b64).to(a.dtype if a.is_floating_point() else torch.float32)


def text_diff(z_i: torch.Tensor, z_t0: torch.Tensor, z_t: torch.Tensor, thetas,
              match_norm: bool = True) -> torch.Tensor:
    """The paper's text diff: z_d = (z_t - z_t0) / |z_t - z_t0|, z_theta = slerp(z_i, z_d, theta).
    ``match_norm`` scales z_d to |z_i| first, so the path stays on z_i's sphere (CLIP image
    embeddings are not unit vectors, and a decoder expects their usual length).  Returns
    [len(thetas), ..., D]."""
    d = z_t.double() - z_t0.double()
    z_d = d / d.norm(dim=-1, keepdim=True)
    if match_norm:
        z_d = z_d * z_i.double().norm(dim=-1, keepdim=True)
    return torch.stack([slerp(z_i.double(), z_d, float(th)) for th in thetas]).float()


_SPLIT = re.compile(r"[,\s;]+")


def parse_thetas(text: str, frames: int, *, end: float = 1.0, field: str = "thetas") -> list[float]:
    """The path's theta values: the numbers in ``text`` ("0, 0.25, 0.5"), each in [0, 1]; when
    ``text`` is blank, ``frames`` values evenly spaced from 0 to ``end``."""
    items = [s for s in _SPLIT.split(text.strip()) if s] if isinstance(text, str) else []
    if not items:
        if frames < 1:
            raise UserError("give theta values (e.g. '0,0.25,0.5') or a number of frames >= 1",
                            field="frames")
        if frames == 1:
            return [0.0]
        return [end * i / (frames - 1) for i in range(frames)]
    out = []
    for s in items:
        try:
            v = float(s)
        except ValueError:
            raise UserError(f"{s!r} is not a number; give theta values like '0,0.25,0.5'",
                            field=field) from None
        if not 0.0 <= v <= 1.0:
            raise UserError(f"theta {s} is outside [0, 1]", field=field)
        out.append(v)
    return out


def show_thetas(thetas: list[float]) -> str:
    return ",".join(f"{t:g}" for t in thetas)


def _vectors(value, field: str) -> torch.Tensor:
    """[B, D] float32 from image embeddings or a text embedding's pooled vectors."""
    if isinstance(value, ImageEmbeds):
        v = value.image_embeds
    elif isinstance(value, TextEmbeds):
        v = value.text_embeds
    elif isinstance(value, torch.Tensor):
        v = value
    else:
        raise UserError(f"expected embeddings, got {type(value).__name__}", field=field)
    if v.ndim != 2 or v.shape[0] == 0:
        raise UserError(f"expected embeddings [B, D], got shape {tuple(v.shape)}", field=field)
    return v.float()


def _one_of(first, second, names: tuple[str, str]):
    """Exactly one of two alternative inputs, as [B, D] vectors, and the name it came from."""
    if first is not None and second is not None:
        raise UserError(f"link {names[0]} or {names[1]}, not both", field=names[1])
    if first is None and second is None:
        raise UserError(f"link {names[0]} (image embeddings) or {names[1]} (text embeddings)",
                        field=names[0])
    return (_vectors(first, names[0]), names[0]) if first is not None else \
        (_vectors(second, names[1]), names[1])


def _same_width(a: torch.Tensor, b: torch.Tensor, field_b: str, what_a: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserError(f"{field_b} has {b.shape[1]} dimensions{_looks(b.shape[1])} but {what_a} "
                        f"has {a.shape[1]}{_looks(a.shape[1])}; both must come from the same "
                        f"CLIP", field=field_b)


def _looks(dim: int) -> str:
    """Which known CLIP a width is (embeddings from ComfyUI's CLIPVisionEncode come unlabelled)."""
    name = clip_of_width(dim)
    return f" (the width of {name}, ComfyUI's {COMFY_CLIP_VISION[name]})" if name else ""


def _rows(a: torch.Tensor, b: torch.Tensor, field_b: str, what_a: str):
    """Broadcast two [B, D] batches against each other (equal sizes, or one of them is 1)."""
    if a.shape[0] == b.shape[0] or b.shape[0] == 1 or a.shape[0] == 1:
        n = max(a.shape[0], b.shape[0])
        return a.expand(n, -1), b.expand(n, -1)
    raise UserError(f"{field_b} has {b.shape[0]} rows but {what_a} has {a.shape[0]}; give one "
                    f"or as many", field=field_b)


def _negative(values, rows: int, per: int = 1) -> torch.Tensor | None:
    """The negative image embedding carried by the first of ``values`` that has one, for the
    output's rows: one row stays one row (it serves all); one per input row is repeated along
    each row's path (``per`` outputs per input row)."""
    for v in values:
        neg = getattr(v, "negative_image_embeds", None)
        if neg is None:
            continue
        if neg.shape[0] == 1:
            return neg
        if neg.shape[0] != rows:
            neg = neg[:1].expand(rows, -1)
        return plain(neg.repeat_interleave(per, dim=0)).contiguous()
    return None


def _path(rows: torch.Tensor) -> torch.Tensor:
    """[T, B, D] -> [B * T, D]: each input row's whole path, one after the other."""
    return rows.transpose(0, 1).reshape(-1, rows.shape[-1]).contiguous()


# --- nodes ----------------------------------------------------------------------------------------

_THETAS = Param("thetas", "STRING", default="",
                tooltip="comma-separated values in [0, 1], e.g. '0,0.25,0.5'; blank = use frames")


@node("Slerp", category=CATEGORY,
      description="Interpolate between two CLIP embeddings along the sphere (true slerp): one "
                  "embedding per theta, from a (0) to b (1).",
      inputs=[Input("a", "UNCLIP_IMAGE_EMBEDS", optional=True, tooltip="start (theta 0)"),
              Input("b", "UNCLIP_IMAGE_EMBEDS", optional=True, tooltip="end (theta 1)"),
              Input("text_a", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="start as a text embedding's pooled vector (instead of a)"),
              Input("text_b", "UNCLIP_TEXT_EMBEDS", optional=True,
                    tooltip="end as a text embedding's pooled vector (instead of b)")],
      params=[_THETAS,
              Param("frames", "INT", default=5, min=1, max=1024,
                    tooltip="evenly spaced thetas from 0 to 1, when thetas is blank")],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS", "one row per theta (per input row)"),
               Output("thetas", "STRING", "the theta values, for the saved files' metadata")],
      infer=lambda params, inputs: {"image_embeds": same_width(inputs, ("a", "text_a", "b",
                                                                        "text_b"))})
def slerp_node(a=None, b=None, text_a=None, text_b=None, thetas: str = "", frames: int = 5):
    va, name_a = _one_of(a, text_a, ("a", "text_a"))
    vb, name_b = _one_of(b, text_b, ("b", "text_b"))
    _same_width(va, vb, name_b, name_a)
    va, vb = _rows(va, vb, name_b, name_a)
    ts = parse_thetas(thetas, frames)
    out = torch.stack([slerp(va, vb, t) for t in ts]).float()
    neg = _negative((a, b), va.shape[0], len(ts))
    return ImageEmbeds(image_embeds=plain(_path(out)), negative_image_embeds=neg), show_thetas(ts)


@node("SlerpNoise", category=CATEGORY,
      description="Interpolate between two decoder noises (e.g. two DDIMInvert latents) along "
                  "the sphere, one per theta: with Slerp over the two images' embeddings and "
                  "DDIM eta 0, the path's ends reconstruct both images.",
      inputs=[Input("a", "UNCLIP_LATENT"), Input("b", "UNCLIP_LATENT")],
      params=[_THETAS, Param("frames", "INT", default=5, min=1, max=1024,
                             tooltip="evenly spaced thetas from 0 to 1, when thetas is blank")],
      outputs=[Output("noise", "UNCLIP_LATENT", "one row per theta (per input row)"),
               Output("thetas", "STRING", "the theta values")])
def slerp_noise_node(a: torch.Tensor, b: torch.Tensor, thetas: str = "", frames: int = 5):
    for name, v in (("a", a), ("b", b)):
        if not isinstance(v, torch.Tensor) or v.ndim != 4:
            raise UserError("expected decoder noise [B, C, S, S]", field=name)
    if a.shape[1:] != b.shape[1:]:
        raise UserError(f"b has shape {tuple(b.shape[1:])} per row but a has "
                        f"{tuple(a.shape[1:])}; both must be for the same decoder", field="b")
    shape = a.shape[1:]
    fa, fb = _rows(a.flatten(1).float(), b.flatten(1).float(), "b", "a")
    ts = parse_thetas(thetas, frames)
    out = _path(torch.stack([slerp(fa, fb, t) for t in ts]))
    return plain(out.reshape(-1, *shape)).contiguous(), show_thetas(ts)


@node("TextDiff", category=CATEGORY,
      description="Edit an image embedding toward a text change (paper §3): z_d = normalised "
                  "(target - caption), then slerp(z_i, z_d, theta) for each theta.",
      inputs=[Input("image_embeds", "UNCLIP_IMAGE_EMBEDS", tooltip="z_i, the image to edit"),
              Input("caption", "UNCLIP_TEXT_EMBEDS",
                    tooltip="z_t0: a caption of the image as it is (or a neutral 'a photo')"),
              Input("target", "UNCLIP_TEXT_EMBEDS", tooltip="z_t: the caption it should have")],
      params=[Param("thetas", "STRING", default="0,0.1,0.2,0.3,0.4,0.5",
                    tooltip="comma-separated values in [0, 1]; the paper goes to about "
                            "0.25-0.5; blank = use frames"),
              Param("frames", "INT", default=6, min=1, max=1024,
                    tooltip="evenly spaced thetas from 0 to end, when thetas is blank"),
              Param("end", "FLOAT", default=0.5, min=0.0, max=1.0, step=0.05,
                    tooltip="the last theta, when frames are used"),
              Param("match_norm", "BOOLEAN", default=True,
                    tooltip="scale z_d to the length of z_i (keeps the path on z_i's sphere); "
                            "off = the paper's formula with a unit z_d")],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS", "one row per theta (per image)"),
               Output("thetas", "STRING", "the theta values")],
      infer=lambda params, inputs: {"image_embeds": same_width(inputs, ("image_embeds", "caption",
                                                                        "target"))})
def text_diff_node(image_embeds: ImageEmbeds, caption: TextEmbeds, target: TextEmbeds,
                   thetas: str = "0,0.1,0.2,0.3,0.4,0.5", frames: int = 6, end: float = 0.5,
                   match_norm: bool = True):
    z_i = _vectors(image_embeds, "image_embeds")
    z_t0, z_t = _vectors(caption, "caption"), _vectors(target, "target")
    _same_width(z_i, z_t0, "caption", "image_embeds")
    _same_width(z_i, z_t, "target", "image_embeds")
    z_t0, z_t = _rows(z_t0, z_t, "target", "caption")
    z_i, z_t0 = _rows(z_i, z_t0, "caption", "image_embeds")
    z_i, z_t = _rows(z_i, z_t, "target", "image_embeds")
    if float((z_t - z_t0).norm(dim=-1).min()) < 1e-6:
        raise UserError("the target encodes exactly like the caption: there is no direction to "
                        "move in; change one of the two captions", field="target")
    ts = parse_thetas(thetas, frames, end=end)
    out = text_diff(z_i, z_t0, z_t, ts, match_norm)
    neg = _negative((image_embeds,), z_i.shape[0], len(ts))
    return ImageEmbeds(image_embeds=plain(_path(out)), negative_image_embeds=neg), show_thetas(ts)


SLOTS = 4


@node("MixEmbeds", category=CATEGORY,
      description="A weighted sum of up to four image or text embeddings (Kandinsky-style "
                  "mixing; the weights are used as given, not normalised).",
      inputs=[spec for k in range(1, SLOTS + 1) for spec in (
          Input(f"embeds_{k}", "UNCLIP_IMAGE_EMBEDS", optional=True),
          Input(f"text_{k}", "UNCLIP_TEXT_EMBEDS", optional=True,
                tooltip=f"instead of embeds_{k}: a text embedding's pooled vector"))],
      params=[Param(f"weight_{k}", "FLOAT", default=0.5, min=-100.0, max=100.0, step=0.05,
                    tooltip=f"Weight of embeds_{k} (or text_{k}) in the sum, used as given (not "
                            f"normalised; negative subtracts); ignored while slot {k} is empty.")
              for k in range(1, SLOTS + 1)],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS")],
      infer=lambda params, inputs: {"image_embeds": same_width(
          inputs, [f"{kind}_{k}" for k in range(1, SLOTS + 1) for kind in ("embeds", "text")])})
def mix_embeds_node(**kw):
    total, first = None, None
    for k in range(1, SLOTS + 1):
        e, t = kw.get(f"embeds_{k}"), kw.get(f"text_{k}")
        if e is None and t is None:
            continue
        v, name = _one_of(e, t, (f"embeds_{k}", f"text_{k}"))
        w = float(kw.get(f"weight_{k}", 0.5))
        if total is None:
            total, first = w * v.double(), name
            continue
        _same_width(total, v, name, first)
        total, v = _rows(total, v, name, first)
        total = total + w * v.double()
    if total is None:
        raise UserError("link at least one embedding (embeds_1 ... or text_1 ...)",
                        field="embeds_1")
    neg = _negative([kw.get(f"embeds_{k}") for k in range(1, SLOTS + 1)], total.shape[0])
    return ImageEmbeds(image_embeds=plain(total.float()).contiguous(), negative_image_embeds=neg)
