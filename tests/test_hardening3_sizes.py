"""Sizes that say nothing usable (inf, nan, 1e400) and allocations that cannot fit end in one
line with exit code 2: checked before anything is allocated, never a crash."""
from __future__ import annotations

import enginenodes  # noqa: F401  -- registers the Test* node types
import pytest
import torch
from conftest import write

from unclip_nodes.graph.cli import main
from unclip_nodes.nodes import image, mask
from unclip_nodes.nodes.errors import UserError

WF = """
nodes:
  noise: {type: TestNoise, params: {seed: 1}}
  save: {type: SaveImage, links: {images: noise.image}, params: {filename_prefix: shot}}
"""
NOT_FINITE = ["inf", "nan", "1e400", "infGiB"]


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def wf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return write(tmp_path / "wf.yaml", WF)


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize("flag", ["--ram-budget", "--vram-budget", "--cache-max-bytes"])
def test_a_size_flag_that_is_not_finite_is_one_line(wf, flag, value, capsys):
    code, _, err = run(["run", wf, f"{flag}={value}"], capsys)
    assert f"field '{flag[2:].replace('-', '_')}'" in one_line(code, err)
    assert "expected a finite size" in err


@pytest.mark.parametrize("value", NOT_FINITE)
def test_the_cache_budget_variable_that_is_not_finite_is_one_line(wf, value, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("UNCLIP_CACHE_MAX_BYTES", value)
    code, _, err = run(["run", wf], capsys)
    assert "UNCLIP_CACHE_MAX_BYTES" in one_line(code, err) and "finite" in err
    code, _, err = run(["cache", "prune", f"--max-bytes={value}"], capsys)
    assert "field 'max_bytes'" in one_line(code, err) and "finite" in err


@pytest.mark.parametrize("name", ["UNCLIP_MAX_FILE_BYTES", "UNCLIP_CACHE_MAX_BYTES"])
def test_a_limit_variable_is_quoted_cut_short(wf, name, monkeypatch, capsys):
    monkeypatch.setenv(name, "7" * 100_000 + "q")
    code, _, err = run(["run", wf], capsys)
    assert name in one_line(code, err) and len(err) < 400


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_cpus_per_worker_that_is_not_finite_is_refused_before_ray_starts(wf, value, capsys):
    code, _, err = run(["run", wf, "--sweep", "x=1,2", "--ray", "local",
                        f"--cpus-per-worker={value}"], capsys)
    assert "field 'cpus_per_worker'" in one_line(code, err) and "finite" in err


def test_a_huge_size_value_is_quoted_cut_short(wf, capsys):
    code, _, err = run(["run", wf, "--ram-budget", "9" * 100_000 + "x"], capsys)
    assert len(one_line(code, err)) < 400


# --- allocations: refused from the parameters, before any memory is taken --------------------

def refused(fn, *args, **kwargs) -> UserError:
    with pytest.raises(UserError) as e:
        fn(*args, **kwargs)
    return e.value


def test_a_16k_ellipse_mask_is_checked_against_the_pixel_limit(monkeypatch):
    e = refused(mask.ellipse_mask, width=16384, height=16384, w=16000, h=16000)
    assert "UNCLIP_MAX_IMAGE_PIXELS=268435456" in e.message and e.field == "width"


def test_a_batch_of_big_masks_is_checked_against_the_byte_limit(monkeypatch):
    monkeypatch.setenv("UNCLIP_MAX_IMAGE_PIXELS", str(16384 ** 2))
    e = refused(mask.rectangle_mask, width=16384, height=16384, batch=4096)
    assert "UNCLIP_MAX_TENSOR_BYTES=" in e.message


def test_a_big_ellipse_takes_no_canvas_sized_temporaries(monkeypatch):
    """With the limits raised, a tall ellipse is made a band of rows at a time: its result is
    exactly the whole-canvas formula's (checked on a canvas small enough for that)."""
    w, h, x, y, ew, eh = 300, 700, -10, 20, 290, 650
    got = mask.ellipse_mask(width=w, height=h, x=x, y=y, w=ew, h=eh)
    cy = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    cx = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    want = (((cx - (x + ew / 2)) / (ew / 2)) ** 2 + ((cy - (y + eh / 2)) / (eh / 2)) ** 2
            <= 1.0).float()
    assert mask.ELLIPSE_ROWS < h and torch.equal(got[0], want)


def test_a_resize_past_the_limits_is_refused_before_allocating():
    e = refused(image.resize, torch.zeros(64, 8, 8, 3), 16384, 16384)
    assert "UNCLIP_MAX_IMAGE_PIXELS" in e.message


def test_outpaint_padding_past_the_limits_is_refused_before_allocating():
    e = refused(mask.outpaint_pad, torch.zeros(1, 8, 8, 3), left=16384, right=16384,
                top=16384, bottom=16384)
    assert "UNCLIP_MAX_IMAGE_PIXELS" in e.message and e.field == "left"


def test_a_grid_past_the_byte_limit_is_refused(monkeypatch):
    monkeypatch.setenv("UNCLIP_MAX_TENSOR_BYTES", "1000")
    e = refused(image.grid, torch.zeros(4, 16, 16, 3))
    assert "UNCLIP_MAX_TENSOR_BYTES=" in e.message


def test_the_byte_limit_variable_must_be_a_whole_number(monkeypatch):
    monkeypatch.setenv("UNCLIP_MAX_TENSOR_BYTES", "inf")
    e = refused(mask.rectangle_mask, width=8, height=8)
    assert "UNCLIP_MAX_TENSOR_BYTES" in e.message
