"""A Ray sweep's resume journal lies in the output folder, where anyone may edit it: names in
it never send a file outside --out (they are checked against what the plan's savers write),
and lines of another shape or a damaged contact-sheet cell make that combination run again
instead of a traceback.  (No Ray needed: the journal is the driver's.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from unclip_nodes.graph import cluster

TAGS = {"seed-0", "seed-1"}
GOOD = {"tag": "seed-0", "state": "done", "files": ["t2i_seed-0_00001_.png"], "cell": None,
        "worker": "worker-0", "records": [{"node": "save", "type": "SaveImage",
                                           "status": "ran", "files": []}],
        "outputs": {"image": {"tensor": [1, 8, 8, 3], "dtype": "float32"}}}


def journal_with(out: Path, *lines) -> cluster.Journal:
    folder = out / cluster.STATE_DIR / "p"
    folder.mkdir(parents=True)
    (folder / "journal.jsonl").write_text(
        "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return cluster.Journal(out, "p", TAGS)


@pytest.mark.parametrize("name", ["../../x_00001_.png", "/tmp/x_00001_.png",
                                  "sub/../../x_00001_.png", "a\\..\\..\\x_00001_.png",
                                  "other_00001_.png", "t2i_seed-0_00001_.txt"])
def test_a_reserved_name_the_plan_would_not_write_is_not_used(tmp_path, name):
    j = journal_with(tmp_path, {"tag": "seed-0", "state": "writing", "files": [name]})
    staged = ["t2i_seed-0_00001_.png"]
    got = cluster._targets(tmp_path, staged, j.reserved.get("seed-0"), cluster._Numbers())
    assert got == ["t2i_seed-0_00001_.png"]
    assert all((tmp_path / g).resolve().is_relative_to(tmp_path.resolve()) for g in got)


def test_a_reserved_name_that_is_the_staged_file_renumbered_is_kept(tmp_path):
    j = journal_with(tmp_path, {"tag": "seed-1", "state": "writing",
                                "files": ["t2i_seed-1_00007_.png"]})
    got = cluster._targets(tmp_path, ["t2i_seed-1_00001_.png"], j.reserved["seed-1"],
                           cluster._Numbers())
    assert got == ["t2i_seed-1_00007_.png"]


@pytest.mark.parametrize("line", [
    [1, 2, 3], "42", '"text"', {"tag": 5, "state": "done"},
    {"tag": "seed-0", "state": "done"},                             # no files
    {"tag": "seed-0", "state": "done", "files": "t2i_seed-0_00001_.png"},
    {"tag": "seed-9", "state": "done", "files": []},                # not this plan's
    {"tag": "seed-0", "state": "weird", "files": []},
    dict(GOOD, records=[{"node": "save", "type": "SaveImage", "hacked": 1}]),
    dict(GOOD, records="none"),
    dict(GOOD, outputs={"image": {"tensor": [1, -8], "dtype": "float32"}}),
    dict(GOOD, outputs={"image": {"tensor": [1, 8], "dtype": "nn"}}),
    dict(GOOD, cell="../../../etc/passwd"),
    dict(GOOD, files=["../outside_00001_.png"]),
])
def test_a_journal_line_of_another_shape_is_ignored_and_said(tmp_path, line, capsys):
    j = journal_with(tmp_path, line)
    assert j.done == {} and j.reserved == {}
    assert "ignored 1 line(s)" in capsys.readouterr().err


def test_a_good_line_is_believed(tmp_path):
    (tmp_path / "t2i_seed-0_00001_.png").write_bytes(b"png")
    j = journal_with(tmp_path, GOOD)
    assert j.complete(tmp_path, "seed-0")
    state = cluster._Driver.__new__(cluster._Driver)
    state.records, state.outputs, state.workers, state.cell_files = {}, {}, {}, {}
    state.adopt(0, j.done["seed-0"])
    assert state.outputs["image"].shape == (1, 8, 8, 3)


def test_a_damaged_cell_makes_its_combination_run_again_under_its_names(tmp_path):
    (tmp_path / "t2i_seed-0_00001_.png").write_bytes(b"png")
    j = journal_with(tmp_path, dict(GOOD, cell="cell-0.png"))
    (j.dir / "cell-0.png").write_bytes(b"\x89PNG\r\n\x1a\n-- not the rest of it")
    assert not j.complete(tmp_path, "seed-0", cell=True)
    assert j.reserved["seed-0"] == ["t2i_seed-0_00001_.png"]  # the same names next time
    assert "seed-0" not in j.done


def test_a_cell_damaged_after_it_was_checked_leaves_the_sheet_without_it(tmp_path, capsys):
    j = journal_with(tmp_path, {"tag": "seed-1", "state": "writing", "files": []})
    (j.dir / "cell-0.png").write_bytes(b"\x89PNG\r\n\x1a\n-- cut")
    state = cluster._Driver.__new__(cluster._Driver)
    state.journal, state.cell_files = j, {0: "cell-0.png"}
    state.plan = type("Plan", (), {"combinations": [type("C", (), {"tag": "seed-0"})()]})()
    assert state.cells() == []
    assert "cell of seed-0 cannot be read" in capsys.readouterr().err
