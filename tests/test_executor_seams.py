"""The executor's seams: it imports no host bridge, savers are known by their declaration, and
the package has no import cycles (not even through imports inside functions)."""
from __future__ import annotations

import ast
from pathlib import Path

import enginenodes  # noqa: F401  -- registers the Test* node types
import networkx as nx
import pytest
from PIL import Image

from unclip_nodes.graph import Cache
from unclip_nodes.graph.run import execute
from unclip_nodes.graph.sweep import run_sweep
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import declare, runtime
from unclip_nodes.nodes.declare import Input, Output, Param, node
from unclip_nodes.nodes.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("graph", "nodes", "nodes/core", "nodes/families", "pocket")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The package's own modules that ``path`` imports, anywhere in it (inside functions too);
    a package's ``__init__`` is left out (importing a sibling runs it anyway)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(n, ast.ImportFrom) and n.level):
            continue
        base = package[:len(package) - (n.level - 1)] if n.level > 1 else package
        target = ".".join(base + ([n.module] if n.module else []))
        subs = [f"{target}.{a.name}" for a in n.names]
        for name in [s for s in subs if _file(s)] or [target]:
            f = _file(name)
            if f is not None and f.name != "__init__.py":
                found.add(name)
    return found


def _file(name: str) -> Path | None:
    p = ROOT.joinpath(*name.split("."))
    for f in (p.with_suffix(".py"), p / "__init__.py"):
        if f.is_file():
            return f
    return None


def test_the_package_has_no_import_cycles_even_through_imports_inside_functions():
    g = nx.DiGraph()
    files = [f for pkg in PACKAGES for f in (ROOT / pkg).glob("*.py")]
    assert len(files) > 30  # the scan sees the package
    for f in files:
        g.add_node(module_name(f))
        for target in imports_of(f):
            g.add_edge(module_name(f), target)
    assert g.number_of_edges() > 50
    assert sorted(nx.simple_cycles(g)) == []


@pytest.mark.parametrize("module", ["run", "dag", "cache", "validate", "workflow", "preset",
                                    "sweep"])
def test_the_executor_imports_neither_a_host_bridge_nor_a_model_family(module):
    imported = imports_of(ROOT / "graph" / f"{module}.py")
    # sweep.run_sweep, like api.run_workflow, hands the PNG metadata of graph.comfy to execute
    banned = {m for m in imported if m in ("graph.comfy_presets", "graph.cli")
              or m.startswith("nodes.families") or (m == "graph.comfy" and module != "sweep")}
    assert banned == set()


WF = """
outputs:
  image: noise.image
nodes:
  noise: {type: TestNoise, params: {seed: 3, size: 4}}
  save: {type: SaveImage, links: {images: noise.image}, params: {filename_prefix: pic}}
"""


def test_execute_writes_the_metadata_its_caller_gives_and_none_unasked(tmp_path):
    rs = load(_file_with(tmp_path, WF))
    execute(rs, out_dir=tmp_path / "a", cache=Cache.off(), metadata=lambda run: {"mine": "x"})
    execute(rs, out_dir=tmp_path / "b", cache=Cache.off())
    with Image.open(tmp_path / "a" / "pic_00001_.png") as im:
        assert im.text == {"mine": "x"}
    with Image.open(tmp_path / "b" / "pic_00001_.png") as im:
        assert im.text == {}


def _file_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def stem_saver():
    """A saver whose prefix and file list go by other names than SaveImage's."""
    @node("TestStemSaver", category="test", description="Write a number under a stem.",
          inputs=[Input("image", "IMAGE")], params=[Param("stem", "STRING", "n")],
          outputs=[Output("written", "STRING")], output_node=True, cacheable=False,
          prefix="stem", files="written")
    def save(image, stem):
        folder = runtime.output_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.txt"
        path.write_text(f"{float(image.sum()):.4f}\n")
        return str(path.resolve())
    yield "TestStemSaver"
    declare.REGISTRY.pop("TestStemSaver", None)


def test_a_saver_is_known_by_its_declaration_not_by_its_field_names(stem_saver, tmp_path):
    wf = _file_with(tmp_path, """
inputs:
  seed: {type: INT, default: 1}
nodes:
  noise: {type: TestNoise, params: {seed: $seed, size: 4}}
  save: {type: TestStemSaver, links: {image: noise.image}, params: {stem: run}}
""")
    done = run_sweep(wf, ["seed=1,2"], out_dir=tmp_path / "out", cache=Cache.off(), grid=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run_seed-1.txt",
                                                                     "run_seed-2.txt"]
    assert sorted(Path(f).name for f in done.result.files) == ["run_seed-1.txt",
                                                               "run_seed-2.txt"]
    (tmp_path / "blocked").write_text("a file where a folder should be")
    rs = load(wf, {"seed": 1})
    rs.nodes["save"].params["stem"] = "blocked/run"
    with pytest.raises(UserError) as e:  # the place is checked before anything runs
        execute(rs, out_dir=tmp_path, cache=Cache.off())
    assert e.value.node == "save" and e.value.field == "stem"


def test_a_declared_prefix_or_file_list_must_be_a_string_field():
    with pytest.raises(TypeError, match="prefix='seed' is not a STRING parameter"):
        declare.NodeSpec(type="TestBadSaver", fn=lambda seed: "", category="t", description="t",
                         params=(Param("seed", "INT", 0),), outputs=(Output("p", "STRING"),),
                         output_node=True, prefix="seed")
    with pytest.raises(TypeError, match="files='n' is not a STRING output"):
        declare.NodeSpec(type="TestBadSaver", fn=lambda: 0, category="t", description="t",
                         outputs=(Output("n", "INT"),), output_node=True, files="n")
