"""bench/paper.py at its tiny setting (--quick): every section runs, paper.md has its tables, and
the numbers are in their ranges; paper.md is written again from paper.json unchanged."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from conftest import require_module
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "paper.py"


@pytest.fixture(scope="module")
def paper():
    spec = importlib.util.spec_from_file_location("bench_paper", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick_run(paper, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    before = torch.get_num_threads()
    try:
        res = paper.main(["--quick", "--out", str(out), "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    return out, res


def fractions(d: dict, keys=("colour", "shape", "background", "all")):
    return [d[k] for k in keys]


def test_every_section_writes_its_table_and_the_command(quick_run):
    out, res = quick_run
    md = (out / "paper.md").read_text()
    for heading in ("## 1. Conditioning ablation", "## 2. Guidance", "## 3. PCA probe",
                    "## 4. Variations and edits", "### Variations against eta",
                    "### Interpolating between two images", "### Text diffs"):
        assert heading in md
    assert "- Command: `python bench/paper.py --quick" in md and "- Wall time: " in md
    assert md.count("**Paper.**") == 6 and md.count("**Here.**") == 6
    assert md.count("|---|") >= 6
    assert set(res.sections) == {"ablation", "guidance", "pca", "eta", "slerp", "text_diff"}


def test_the_numbers_are_in_their_ranges(quick_run, paper):
    _, res = quick_run
    s, sec = res.setting, res.sections
    values = []
    for name, by in sec["ablation"].items():
        if name.startswith("_"):
            continue
        assert by["seen"]["n"] == 40 * s.seen_seeds and by["held-out"]["n"] == 5 * s.held_seeds
        for r in by.values():
            values += fractions(r)
            assert -1 <= r["clip_score"] <= 1
    for name, by in sec["guidance"].items():
        if name.startswith("_"):
            continue
        assert sorted(by) == sorted(s.guidances)
        for r in by.values():
            values += fractions(r)
            assert 0 <= r["position_spread"] <= math.sqrt(2) and 0 <= r["size_spread"] <= 1
            assert 0 <= r["clip_spread"] <= 2 and -1 <= r["clip_score"] <= 1
    ks = [k for k in sec["pca"] if not isinstance(k, str)]
    assert ks == [k for k in s.pca_ks if k <= sec["pca"]["_basis"]["size"]]
    values += [v for k in ks for v in fractions(sec["pca"][k])]
    for key, r in sec["eta"].items():
        if key != "_n":
            values += fractions(r)
            assert 0 <= r["mae"] <= 1
    for attr in paper.ATTRS:
        r = sec["slerp"][attr]
        values += [r["ends"], r["single_switch"]]
        assert r["single_switch"] <= r["ends"]
        assert math.isnan(r["switch_theta"]) or 0 <= r["switch_min"] <= r["switch_theta"] \
            <= r["switch_max"] <= 1
    for key, r in sec["text_diff"].items():
        if key != "_n":
            values += list(r.values())
            assert r["edit"] <= min(r["square"], r["colour_kept"], r["background_kept"])
    assert len(values) > 50 and all(0 <= v <= 1 for v in values), values


def test_paper_md_is_rewritten_from_the_json_unchanged(quick_run, paper):
    out, _ = quick_run
    first = (out / "paper.md").read_text()
    (out / "paper.md").unlink()
    paper.main(["--rewrite", "--out", str(out)])
    assert (out / "paper.md").read_text() == first
    res, command, wall = paper.load(out / "paper.json")
    assert command.startswith("python bench/paper.py --quick") and wall > 0
    assert res.setting == paper.QUICK and res.threads == 1


def test_the_plots_are_written_when_matplotlib_is_there(quick_run):
    require_module("matplotlib", "the bench extra (pip install -e '.[bench]'; make installs it)")
    out, _ = quick_run
    md = (out / "paper.md").read_text()
    for name in ("paper_guidance.png", "paper_pca.png", "paper_edits.png"):
        assert (out / name).stat().st_size > 1000 and f"]({name})" in md
