"""The PCA probe (paper §4): FitPCA's basis, PCAProject's truncations, their errors, and the
shipped workflow on the pocket model."""
from __future__ import annotations

from pathlib import Path

import PIL.Image
import pytest
import torch

from stages_util import one_thread  # noqa: F401
from unclip_nodes.graph.cache import Cache
from unclip_nodes.graph import run_workflow
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import loaders
from unclip_nodes.nodes.clip import clip_image_encode
from unclip_nodes.nodes.declare import REGISTRY
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.image import load_image, split_grid
from unclip_nodes.nodes.pca import PCABasis, fit, fit_pca, pca_project, project
from unclip_nodes.nodes.types import SOCKET_TYPES, ImageEmbeds

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
D = 16


def cloud(n: int, d: int = D, seed: int = 0) -> torch.Tensor:
    """n samples with a clear order of variances along d random directions, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.1, d)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ basis.T
    return (x + 5.0 * torch.randn(d, generator=g, dtype=torch.float64)).float()


def embeds(x: torch.Tensor, negative: torch.Tensor | None = None) -> ImageEmbeds:
    return ImageEmbeds(image_embeds=x, negative_image_embeds=negative)


def ks(k: int) -> str:
    return ",".join(str(i) for i in range(k + 1))


# --- the basis ------------------------------------------------------------------------------------

def test_basis_is_orthonormal_by_decreasing_variance_and_holds_the_sample_variance():
    x = cloud(200)
    b = fit_pca(embeds(x))
    v = b.components
    assert v.dtype == torch.float64 and b.mean.dtype == torch.float64
    assert b.size == D and b.samples == 200
    assert torch.allclose(v @ v.T, torch.eye(D, dtype=torch.float64), atol=1e-12)
    assert bool((b.variances[:-1] >= b.variances[1:]).all())
    coords = (x.double() - b.mean) @ v.T
    assert torch.allclose(coords.var(dim=0), b.variances, rtol=1e-9)
    assert torch.allclose(b.mean, x.double().mean(dim=0), atol=1e-12)


def test_the_basis_does_not_depend_on_the_order_of_the_samples():
    x = cloud(60)
    a, b = fit(x), fit(x[torch.randperm(60, generator=torch.Generator().manual_seed(1))])
    assert torch.allclose(a.components, b.components, atol=1e-9)  # signs fixed, not arbitrary
    assert torch.allclose(a.variances, b.variances, rtol=1e-9)


def test_fewer_samples_than_dimensions_give_n_minus_1_components_that_rebuild_the_samples():
    x, unseen = cloud(10), cloud(1, seed=5)
    b = fit_pca(embeds(x))
    assert b.size == 9 and b.describe() == "9 components, fitted on 10 embeddings of 16 dimensions"
    (out, _) = pca_project(b, embeds(x), k="9")
    assert torch.allclose(out.image_embeds, x, atol=1e-5)
    (far, _) = pca_project(b, embeds(unseen), k="9")
    assert (far.image_embeds - unseen).norm() > 0.1 * unseen.norm()


def test_repeated_samples_add_no_component():
    x = cloud(5)
    b = fit_pca(embeds(torch.cat([x, x, x])))
    assert b.size == 4


def test_the_basis_round_trips_through_the_cache_codec():
    b = fit(cloud(30))
    t = SOCKET_TYPES["UNCLIP_PCA"]
    tensors, meta = t.encode(b)
    back = t.decode({k: v.clone() for k, v in tensors.items()}, meta)
    assert isinstance(back, PCABasis) and back.samples == 30
    for name in ("mean", "components", "variances"):
        assert torch.equal(getattr(back, name), getattr(b, name))


# --- projections ----------------------------------------------------------------------------------

def test_reconstruction_error_never_grows_with_k_and_vanishes_at_full_dimension():
    b = fit_pca(embeds(cloud(100)))
    z = cloud(3, seed=7)
    (out, text) = pca_project(b, embeds(z), k=ks(D))
    assert text == ks(D)
    rows = out.image_embeds.reshape(3, D + 1, D)  # each input row's path, k = 0 .. D
    errors = (rows.double() - z.double()[:, None]).norm(dim=-1)
    assert bool((errors[:, 1:] <= errors[:, :-1] + 1e-5).all())
    assert bool((errors[:, 0] > 1.0).all()) and float(errors[:, -1].max()) < 1e-4
    # the float64 maths is monotone to round-off
    exact = torch.stack([(project(z, b, k) - z.double()).norm(dim=-1) for k in range(D + 1)])
    assert bool((exact[1:] <= exact[:-1] + 1e-12).all())


def test_full_dimension_on_a_complete_basis_gives_back_an_unseen_embedding():
    b = fit_pca(embeds(cloud(40)))
    z = cloud(2, seed=11)
    (out, _) = pca_project(b, embeds(z), k=str(D))
    assert out.image_embeds.dtype == torch.float32
    assert torch.allclose(out.image_embeds, z, atol=1e-5)


def test_k_zero_is_the_mean_and_k_one_moves_along_the_first_direction_only():
    x = cloud(50)
    b = fit(x)
    z = cloud(1, seed=3)
    (out, _) = pca_project(b, embeds(z), k="0,1")
    assert torch.allclose(out.image_embeds[0].double(), b.mean, atol=1e-5)
    step = out.image_embeds[1].double() - b.mean
    assert torch.allclose(step, (step @ b.components[0]) * b.components[0], atol=1e-5)


def test_each_input_row_gets_its_ks_in_order_and_the_negative_embedding_is_kept():
    b = fit(cloud(40))
    z = cloud(2, seed=4)
    neg_one = torch.full((1, D), -1.0)
    (out, text) = pca_project(b, embeds(z, neg_one), k="2, 8;16")
    assert text == "2,8,16" and out.image_embeds.shape == (6, D)
    assert torch.allclose(out.image_embeds[4], project(z[1:], b, 8)[0].float(), atol=1e-6)
    assert torch.equal(out.negative_image_embeds, neg_one)  # one row serves all
    neg_rows = torch.stack([torch.full((D,), -1.0), torch.full((D,), -2.0)])
    (out, _) = pca_project(b, embeds(z, neg_rows), k="2,8,16")
    assert torch.equal(out.negative_image_embeds, neg_rows.repeat_interleave(3, dim=0))
    (out, _) = pca_project(b, embeds(z), k="2")
    assert out.negative_image_embeds is None


# --- mistakes -------------------------------------------------------------------------------------

def test_k_above_the_basis_size_is_an_error_with_the_number_of_components():
    b = fit_pca(embeds(cloud(10)))
    with pytest.raises(UserError, match=r"k 12 is more than this basis has: 9 components, "
                                        r"fitted on 10 embeddings") as e:
        pca_project(b, embeds(cloud(1)), k="4,12")
    assert e.value.field == "k"


@pytest.mark.parametrize("text, message", [("", "give one or more"), ("2,x", "'x' is not a whole"),
                                           ("2.5", "'2.5' is not a whole"),
                                           ("-1", "k -1 is negative")])
def test_bad_k_values_are_errors_on_the_k_field(text, message):
    with pytest.raises(UserError, match=message) as e:
        pca_project(fit(cloud(20)), embeds(cloud(1)), k=text)
    assert e.value.field == "k"


def test_bad_k_text_is_reported_by_validation_before_anything_runs():
    with pytest.raises(UserError) as e:
        load(WORKFLOWS / "pca_probe.yaml", {"k": "1,two"})
    assert "field 'k'" in str(e.value) and "'two' is not a whole number" in str(e.value)


def test_fitting_needs_two_different_embeddings():
    with pytest.raises(UserError, match="at least 2 embeddings") as e:
        fit_pca(embeds(cloud(1)))
    assert e.value.field == "image_embeds"
    with pytest.raises(UserError, match="all 3 embeddings are the same"):
        fit_pca(embeds(cloud(1).expand(3, -1).contiguous()))
    with pytest.raises(UserError, match="NaN"):
        fit_pca(embeds(torch.full((3, D), float("nan"))))


def test_an_embedding_of_another_width_is_an_error_on_image_embeds():
    with pytest.raises(UserError, match="has 8 dimensions but the basis was fitted on 16-d") as e:
        pca_project(fit(cloud(20)), embeds(torch.randn(1, 8)), k="2")
    assert e.value.field == "image_embeds"


def test_the_nodes_are_registered_for_both_hosts():
    from unclip_nodes.nodes import NODE_CLASS_MAPPINGS
    for name in ("FitPCA", "PCAProject"):
        assert REGISTRY[name].category == "unCLIP/edit"
        assert f"unCLIP {name}" in NODE_CLASS_MAPPINGS
    assert NODE_CLASS_MAPPINGS["unCLIP FitPCA"].RETURN_TYPES == ("UNCLIP_PCA",)
    tooltip = NODE_CLASS_MAPPINGS["unCLIP PCAProject"].INPUT_TYPES()["required"]["k"][1]["tooltip"]
    assert "at most n - 1 components" in tooltip


# --- the pocket model -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pocket_vision():
    return loaders.load_clip_vision(path="pocket", device="cpu", dtype="fp32", allow_pickle=False)


def test_the_shipped_sample_sheet_makes_a_complete_basis_for_the_pocket_clip(pocket_vision,
                                                                             one_thread):
    sheet, _ = load_image(str(WORKFLOWS / "images" / "pocket_scenes_9x9.png"))
    cells = split_grid(sheet, 9, 9)
    b = fit_pca(clip_image_encode(pocket_vision, cells))
    assert b.samples == 81 and b.size == b.dim == 64
    picture, _ = load_image(str(WORKFLOWS / "images" / "red_circle_white.png"))
    z = clip_image_encode(pocket_vision, picture)
    (out, _) = pca_project(b, z, k="2,16,64")
    err = (out.image_embeds - z.image_embeds).norm(dim=-1)
    assert float(err[2]) < 1e-4 * float(z.image_embeds.norm()) and err[0] > err[1] > err[2]


def test_pca_probe_workflow_validates_and_runs_on_the_pocket_model(tmp_path, one_thread):
    rs = load(WORKFLOWS / "pca_probe.yaml")
    assert rs.inputs["model"] == "pocket"
    r = run_workflow(WORKFLOWS / "pca_probe.yaml",
                     {"steps": 2, "upsample_steps": 2, "k": "0,4,64"},
                     cache=Cache.off(), out_dir=tmp_path)
    assert r.outputs["frames"].shape == (3, 64, 64, 3)
    assert r.outputs["k"] == "0,4,64"
    (png,) = r.files
    assert PIL.Image.open(png).text["frames"] == "0,4,64"
    with pytest.raises(UserError, match="k 65 is more than this basis has: 64 components"):
        run_workflow(WORKFLOWS / "pca_probe.yaml", {"steps": 2, "upsample_steps": 2, "k": "65"},
                     cache=Cache.off(), out_dir=tmp_path)
