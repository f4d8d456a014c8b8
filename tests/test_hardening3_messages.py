"""Messages name the file and what was expected, never a file's content, and quote at most a
bounded excerpt of any value (a 15 MB prefix does not put 15 MB on stderr)."""
from __future__ import annotations

import pytest
from conftest import write

from unclip_nodes.graph.cli import main

SECRET = "hunter2-do-not-show"
SHAPES = {
    "list": f"- {SECRET}\n- two\n",
    "scalar": f"{SECRET}\n",
    "mapping": f"password: {SECRET}\nuser: me\n",
    "description only": f"description: {SECRET}\n",
    "nodes a scalar": f"nodes: {SECRET}\n",
    "nodes a number": "nodes: 4242424242\n",
}


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


LEAKED_BEFORE = ["scalar", "mapping", "nodes a scalar", "nodes a number"]
"""(A list, or a mapping with only a description, showed nothing of the file already.)"""


@pytest.mark.parametrize("shape", LEAKED_BEFORE)
def test_a_workflow_path_to_yaml_of_another_shape_shows_none_of_it(shape, tmp_path, capsys):
    path = write(tmp_path / "conf.yaml", SHAPES[shape])
    code, out, err = run(["validate", path], capsys)
    assert code == 2 and "Traceback" not in err
    assert str(path) in err
    assert SECRET not in err + out and "password" not in err and "4242" not in err


@pytest.mark.parametrize("shape", SHAPES)
def test_a_preset_path_to_yaml_of_another_shape_shows_none_of_it(shape, tmp_path, capsys):
    write(tmp_path / "conf.yaml", SHAPES[shape])
    wf = write(tmp_path / "wf.yaml", 'nodes:\n  p: {type: "preset:conf.yaml"}\n')
    code, out, err = run(["validate", wf], capsys)
    assert code == 2 and "conf.yaml" in err
    assert SECRET not in err + out and "password" not in err and "4242" not in err
    assert "begins" not in err and "description" not in err.split("a preset is")[0]


def test_a_file_without_nodes_is_named_as_not_a_workflow_without_its_keys(tmp_path, capsys):
    path = write(tmp_path / "settings.yaml", "api_key: x\nregion: eu\n")
    code, _, err = run(["validate", path], capsys)
    assert code == 2 and "not a workflow file (a mapping without 'nodes')" in err
    assert "api_key" not in err and "region" not in err


def test_a_15_mb_prefix_puts_a_bounded_excerpt_on_stderr(tmp_path, capsys):
    wf = tmp_path / "wf.yaml"
    wf.write_text("nodes:\n  n: {type: TestNoise}\n"
                  "  s: {type: SaveImage, links: {images: n.image}, params: {filename_prefix: /"
                  + "p" * 15_000_000 + "}}\n")
    import enginenodes  # noqa: F401
    code, _, err = run(["validate", wf], capsys)
    assert code == 2 and "is absolute" in err and "(15,000,001 characters)" in err
    assert len(err) < 1000


def test_huge_names_and_values_in_a_workflow_are_cut_in_every_message(tmp_path, capsys):
    big = 1_000_000
    wf = tmp_path / "wf.yaml"
    wf.write_text("nodes:\n"
                  f"  n:\n    type: {'T' * big}\n"
                  f"  ? {'i' * big}\n  : {{type: LoadImage, params: {{image: {'q' * big}}}}}\n"
                  f"  s:\n    type: SaveImage\n    links:\n      images: {'x' * big}.image\n"
                  f"    params:\n      ? {'k' * big}\n      : 1\n"
                  f"? {'z' * big}\n: 1\n")
    code, _, err = run(["validate", wf], capsys)
    assert code == 2 and "Traceback" not in err
    assert len(err) < 5000, len(err)
    assert "1,000,000 characters" in err


def test_a_long_set_name_is_cut(tmp_path, capsys):
    wf = write(tmp_path / "wf.yaml", "nodes:\n  n: {type: TestNoise}\n")
    import enginenodes  # noqa: F401
    code, _, err = run(["validate", wf, "--set", "s" * 100_000 + "=1"], capsys)
    assert code == 2 and len(err) < 1000
