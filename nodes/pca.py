"""The PCA probe of the DALL-E 2 paper (§4): what the first principal components of CLIP image
embeddings carry.

``FitPCA`` fits a basis to a batch of image embeddings z_1 .. z_n (e.g. ``CLIPImageEncode`` of
an image batch): their mean m and the principal directions v_0, v_1, ... (unit vectors,
orthogonal to each other, by decreasing variance).  ``PCAProject`` keeps the first k of them,

    z_k = m + sum_{j<k} <z - m, v_j> v_j,

the orthogonal projection of z onto the affine subspace through m spanned by v_0 .. v_{k-1}, so
decoding z_k for growing k shows how much of an image the leading directions hold (the paper
decodes 20 to 320 of 1024 dimensions; the pocket model's CLIP has 64).

How many components a basis has.  n samples, centred, span at most n - 1 directions: a basis
fitted on n embeddings of D dimensions has at most min(n - 1, D) components (fewer when some
samples are the same or lie on a line).  With n > D the basis is complete (D components) and
k = D gives back any embedding, up to float error; with n <= D, k = n - 1 gives back the fitted
samples themselves, but an embedding outside their span only approximately.

Everything is computed in float64 on the CPU (the SVD of the centred samples); the projected
embeddings leave as float32, like every other embedding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .declare import Input, Output, Param, node
from .errors import UserError
from .core.facts import same_width
from .interpolate import _negative, _path
from .core.sampling import plain
from .types import ImageEmbeds, _record_codec, socket_type

CATEGORY = "unCLIP/edit"


@dataclass(frozen=True)
class PCABasis:
    """A PCA basis of CLIP image embeddings.

    mean: [D] float64, the mean of the fitted samples.
    components: [K, D] float64, orthonormal rows (the principal directions), by decreasing
    variance; K <= min(samples - 1, D).
    variances: [K] float64, the samples' variance along each direction.
    samples: how many embeddings the basis was fitted on.
    """

    mean: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor
    samples: int = 0

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def size(self) -> int:
        """The number of components."""
        return int(self.components.shape[0])

    def describe(self) -> str:
        return (f"{self.size} components, fitted on {self.samples} embeddings of {self.dim} "
                f"dimensions")


PCA = socket_type("UNCLIP_PCA", "a PCA basis of CLIP image embeddings (mean, principal "
                                "directions, variances)", *_record_codec(PCABasis))


# --- maths ----------------------------------------------------------------------------------------

def fit(samples: torch.Tensor) -> PCABasis:
    """The PCA basis of the rows of ``samples`` ([n, D], n >= 2, not all equal).

    Components whose singular value is at round-off level (samples that are the same, or lie in
    a smaller subspace) are left out, and never more than n - 1 are kept.  Each direction's sign
    is fixed so that its largest entry (in absolute value) is positive, which makes the basis
    reproducible wherever the SVD is computed.
    """
    x = samples.detach().to("cpu", torch.float64)
    n, d = x.shape
    mean = x.mean(dim=0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    tol = float(s[0]) * max(n, d) * torch.finfo(torch.float64).eps
    keep = min(n - 1, d, int((s > tol).sum()))
    vh, s = vh[:keep], s[:keep]
    lead = vh.abs().argmax(dim=1)
    signs = torch.sign(vh.gather(1, lead[:, None]))
    vh = vh * signs
    return PCABasis(mean=mean.contiguous(), components=vh.contiguous(),
                    variances=(s.square() / (n - 1)).contiguous(), samples=n)


def project(z: torch.Tensor, basis: PCABasis, k: int) -> torch.Tensor:
    """m + sum_{j<k} <z - m, v_j> v_j for each row of ``z`` ([B, D]), in float64."""
    z64 = z.detach().to("cpu", torch.float64)
    v = basis.components[:k]
    return basis.mean + ((z64 - basis.mean) @ v.T) @ v


_SPLIT = re.compile(r"[,\s;]+")


def parse_ks(text: str, available: int | None = None, basis: PCABasis | None = None,
             field: str = "k") -> list[int]:
    """The k values in ``text`` ("2,4,8"), each a whole number from 0 to ``available``."""
    items = [s for s in _SPLIT.split(text.strip()) if s] if isinstance(text, str) else []
    if not items:
        raise UserError("give one or more numbers of components, e.g. '2,4,8,16'", field=field)
    out = []
    for s in items:
        try:
            k = int(s)
        except ValueError:
            raise UserError(f"{s!r} is not a whole number; give numbers of components like "
                            f"'2,4,8,16'", field=field) from None
        if k < 0:
            raise UserError(f"k {k} is negative; k counts components (0 = the mean alone)",
                            field=field)
        if available is not None and k > available:
            what = basis.describe() if basis is not None else f"{available} components"
            raise UserError(f"k {k} is more than this basis has: {what}; a basis fitted on n "
                            f"embeddings has at most n - 1 components (fit on more to reach "
                            f"{k})", field=field)
        out.append(k)
    return out


def _embeddings(value, field: str) -> torch.Tensor:
    if not isinstance(value, ImageEmbeds):
        raise UserError(f"expected image embeddings, got {type(value).__name__}", field=field)
    v = value.image_embeds
    if v.ndim != 2 or v.shape[0] == 0:
        raise UserError(f"expected image embeddings [B, D], got shape {tuple(v.shape)}",
                        field=field)
    if not bool(torch.isfinite(v).all()):
        raise UserError("the embeddings hold NaN or infinite values", field=field)
    return v


# --- nodes ----------------------------------------------------------------------------------------

_FEW = ("A basis fitted on n embeddings has at most n - 1 components (min(n - 1, D) for D-d "
        "embeddings): with fewer samples than dimensions it is incomplete.")


@node("FitPCA", category=CATEGORY,
      description="Fit a PCA basis (mean and principal directions) to a batch of CLIP image "
                  "embeddings, for PCAProject (DALL-E 2 paper, §4). " + _FEW,
      inputs=[Input("image_embeds", "UNCLIP_IMAGE_EMBEDS",
                    tooltip="the samples, at least 2: e.g. CLIPImageEncode of an image batch "
                            "(ImageBatch, SplitImageGrid). " + _FEW)],
      outputs=[Output("basis", "UNCLIP_PCA", "mean, principal directions by decreasing "
                                             "variance, and their variances")],
      infer=lambda params, inputs: {"basis": same_width(inputs, ("image_embeds",))})
def fit_pca(image_embeds: ImageEmbeds):
    x = _embeddings(image_embeds, "image_embeds")
    n = x.shape[0]
    if n < 2:
        raise UserError("a basis needs at least 2 embeddings to fit, got 1; encode a batch of "
                        "images (ImageBatch, SplitImageGrid)", field="image_embeds")
    if float((x - x[:1]).abs().max()) == 0.0:
        raise UserError(f"all {n} embeddings are the same: there is no direction to fit",
                        field="image_embeds")
    return fit(x)


@node("PCAProject", category=CATEGORY,
      description="Keep the first k principal components of image embeddings: mean + "
                  "sum_{j<k} <z - mean, v_j> v_j, one row per k (DALL-E 2 paper, §4). "
                  "k = 0 is the mean; k = the embedding width gives z back when the basis is "
                  "complete. " + _FEW,
      inputs=[Input("basis", "UNCLIP_PCA", tooltip="from FitPCA"),
              Input("image_embeds", "UNCLIP_IMAGE_EMBEDS", tooltip="the embeddings to project")],
      params=[Param("k", "STRING", default="1,2,4,8,16",
                    tooltip="numbers of components to keep, comma-separated, e.g. '2,4,8,16' "
                            "(0 = the mean alone); each at most the basis's size. " + _FEW)],
      outputs=[Output("image_embeds", "UNCLIP_IMAGE_EMBEDS", "one row per k (per input row)"),
               Output("k", "STRING", "the k values, for the saved files' metadata (frames)")],
      check=lambda params: parse_ks(params["k"]) if "k" in params else None,
      infer=lambda params, inputs: {"image_embeds": same_width(inputs, ("basis",
                                                                        "image_embeds"))})
def pca_project(basis: PCABasis, image_embeds: ImageEmbeds, k: str = "1,2,4,8,16"):
    if not isinstance(basis, PCABasis):
        raise UserError(f"expected a PCA basis (FitPCA), got {type(basis).__name__}",
                        field="basis")
    z = _embeddings(image_embeds, "image_embeds")
    if z.shape[1] != basis.dim:
        raise UserError(f"image_embeds has {z.shape[1]} dimensions but the basis was fitted on "
                        f"{basis.dim}-d embeddings; both must come from the same CLIP",
                        field="image_embeds")
    ks = parse_ks(k, basis.size, basis)
    rows = torch.stack([project(z, basis, kk) for kk in ks])  # [K, B, D]
    neg = _negative((image_embeds,), z.shape[0], len(ks))
    out = ImageEmbeds(image_embeds=plain(_path(rows)).contiguous(), negative_image_embeds=neg)
    return out, ",".join(str(kk) for kk in ks)
