"""The `unclip nodes` listings and how the CLI finds workflows."""
import json
from pathlib import Path

import enginenodes  # noqa: F401  -- registers the Test* node types

from unclip_nodes.graph import cli
from unclip_nodes.nodes import declare


def test_nodes_lists_types_grouped_by_category_with_their_fields(capsys):
    assert cli.main(["nodes"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("\ntest/engine\n"):]
    assert "  TestAdd: Add two images (b optional).\n" in block
    assert "      inputs:  a IMAGE, b IMAGE (optional)\n" in block
    assert "      outputs: image IMAGE, total FLOAT\n" in block
    assert ('      params:  seed INT [0..] = 0, size INT [1..64] = 4, channels rgb|gray = "rgb"\n'
            in block)
    assert "      params:  path STRING (required)\n" in block


def test_nodes_json_is_the_schema_of_every_registered_type(capsys):
    assert cli.main(["nodes", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == set(declare.REGISTRY)
    assert data["TestSave"] == declare.get("TestSave").schema()


def test_workflow_argument_may_name_a_shipped_preset(tmp_path, monkeypatch):
    (tmp_path / "demo.yaml").write_text("nodes: {}\n")
    monkeypatch.setattr(cli, "WORKFLOWS", tmp_path)
    monkeypatch.chdir(tmp_path / "..")
    assert cli.workflow_path("demo") == tmp_path / "demo.yaml"
    assert cli.workflow_path("demo.yaml") == tmp_path / "demo.yaml"
    assert cli.workflow_path("sub/demo") == Path("sub/demo")  # a path is taken as it is
    assert cli.workflow_path("nothing") == Path("nothing")  # so that "not found" names it
