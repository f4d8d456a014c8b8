"""The family seam: dependencies point one way (core <- families <- stage nodes), nothing outside
``nodes/families/`` names a family or uses what only one family's handles have, and a checkpoint
is opened once per run."""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

from unclip_nodes.graph import Cache, run_workflow
from unclip_nodes.nodes.core import backends, handles
from unclip_nodes.nodes.core.family import FAMILIES, Family
from unclip_nodes.nodes.core.facts import Facts
from unclip_nodes.nodes import families, loaders

ROOT = Path(__file__).resolve().parents[1]
NODES = ROOT / "nodes"
EXEMPT = {"textproj.py", "comfy_core.py", "examples.py"}
"""Outside the seam, with the tiny-checkpoint builders for tests and docs (``tiny*.py``, one per
family): the class of Karlo's text_proj (loaded by name through ``core.checkpoint.OWN_CLASSES``),
the declarations of ComfyUI's own nodes, whose sockets have ComfyUI's names (``vae``), and the
template list (graph/examples.py), data about shipped workflows: which become ComfyUI
templates and the published model folders they load (``karlo-v1-alpha``)."""


def own_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (relative imports, also inside functions), as
    dotted names under the package root: ``nodes.core.sampling``, ``nodes.declare``."""
    here = path.relative_to(ROOT).with_suffix("").parts[:-1]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.level:
            base = list(here[:len(here) - n.level + 1])
            target = base + (n.module.split(".") if n.module else [])
            if n.module:
                out.add(".".join(target))
            for alias in n.names:  # from . import decoder: the module itself
                out.add(".".join(target + [alias.name]))
    return {m for m in out if (ROOT / (m.replace(".", "/") + ".py")).is_file()
            or (ROOT / m.replace(".", "/") / "__init__.py").is_file()}


def node_modules() -> set[str]:
    """Modules that declare nodes (they import the declaration module)."""
    return {f"nodes.{p.stem}" for p in NODES.glob("*.py")
            if "nodes.declare" in own_imports(p)} | {"nodes.declare"}


def outside_families() -> list[Path]:
    files = [p for p in NODES.rglob("*.py") if "families" not in p.parts
             and p.name not in EXEMPT and not p.name.startswith("tiny")]
    return files + sorted(p for p in (ROOT / "graph").glob("*.py") if p.name not in EXEMPT)


def family_words() -> tuple[set[str], set[str]]:
    """What only a family knows: (names: its name, module and class, and its own parts, those
    no other family has; attributes: what its handles have beyond the core handles and the
    backend protocols)."""
    names: set[str] = set()
    attrs: set[str] = set()
    shared = set()
    for base in (handles.ModelHandle, handles.ClipTextModel, handles.ClipVisionModel,
                 handles.PriorModel):
        shared |= set(dir(base))
    for proto in (backends.TextBackend, backends.VisionBackend, backends.PriorBackend,
                  backends.DecoderBackend, backends.UpsamplerBackend):
        shared |= set(getattr(proto, "__annotations__", {})) | set(dir(proto))
    for fam in FAMILIES:
        module = type(fam).__module__.rsplit(".", 1)[-1]
        names |= {fam.name, module, type(fam).__name__}
        for stage in fam.stages.values():
            attrs |= {a for a in vars(stage.handle) if not a.startswith("_")} - shared
        others = set().union(*(set(g.parts) for g in FAMILIES if g is not fam))
        names |= set(fam.parts) - others
    return names, attrs


def test_the_core_declares_no_node_and_imports_no_node_module_nor_family():
    banned = node_modules() | {"nodes.families"}
    for path in sorted((NODES / "core").glob("*.py")):
        bad = {m for m in own_imports(path) if m in banned or m.startswith("nodes.families")}
        assert bad == set(), f"{path.name} imports {sorted(bad)}"
        assert "@node(" not in path.read_text()


def test_families_import_the_core_but_no_node_module():
    banned = node_modules()
    for path in sorted((NODES / "families").glob("*.py")):
        imported = own_imports(path)
        assert imported & banned == set(), f"{path.name} imports {sorted(imported & banned)}"
        if path.name != "__init__.py":  # one family never imports another
            assert {m for m in imported if m.startswith("nodes.families.")} == set()


def test_nothing_outside_families_imports_a_family_module():
    for path in outside_families():
        bad = {m for m in own_imports(path) if m.startswith("nodes.families.")}
        assert bad == set(), f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_family_name_or_family_specific_attribute_appears_outside_families():
    names, attrs = family_words()
    assert {"karlo", "kandinsky22", "text_proj", "movq", "super_res_first"} <= names
    assert {"text_proj", "movq", "empty_text", "first", "last"} <= attrs
    found = []
    for path in outside_families():
        tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
        imports = {t.start[0] for t in tokens if t.type == tokenize.NAME
                   and t.string in ("from", "import") and t.start[1] == t.line.find(t.string)
                   and not t.line[:t.start[1]].strip()}
        for before, tok in zip([None] + tokens, tokens):
            if tok.start[0] in imports:  # a module named like an attribute (.decoder)
                continue
            # code only: names, attributes, and strings that are exactly such a word; prose in
            # comments, docstrings and tooltips may name a family
            text = tok.string
            if tok.type == tokenize.STRING:
                text = text.strip("rbfRBF").strip("\"'")
            dotted = before is not None and before.string == "."
            if tok.type in (tokenize.NAME, tokenize.STRING) and (
                    text in names or (dotted and tok.type == tokenize.NAME and text in attrs)):
                found.append(f"{path.relative_to(ROOT)}:{tok.start[0]} {text}")
    assert found == []


def test_every_family_is_one_registered_class_with_its_tables():
    names = {f.name for f in FAMILIES}
    assert {"karlo", "kandinsky22"} <= names
    assert len(names) == len(FAMILIES)
    for fam in FAMILIES:
        assert isinstance(fam, Family) and fam.label and fam.pipelines
        assert set(fam.stages) | set(fam.absent) == {"clip_text", "clip_vision", "prior",
                                                     "decoder", "upsampler"}
        for stage in fam.stages.values():
            assert set(stage.needs) | set(stage.uses) <= set(fam.parts)
    # the registration line is the registry: the module lists exactly what is registered
    assert [type(f).__module__ for f in families.FAMILIES] == \
        [type(f).__module__ for f in FAMILIES]


def test_facts_are_typed_and_name_the_family_and_its_clip():
    ck = loaders.open_checkpoint("pocket", ("decoder",), layout=False)
    f = families.by_name(ck.family).facts(ck, ("decoder",))["decoder"]
    assert isinstance(f, Facts)
    assert (f.family, f.takes_text, f.variant, f.cannot_inpaint) == ("karlo", True,
                                                                    "text2img", None)
    assert f.clip_dim == f["clip_dim"] == 64
    assert f.embedding() == Facts("karlo", "Karlo unCLIP", 64, None)


@pytest.fixture
def opens(monkeypatch):
    """Every call of a family's ``open``, counted by folder."""
    seen: list[str] = []
    for fam in FAMILIES:
        original = type(fam).open

        def counted(self, root, *args, _original=original, **kw):
            seen.append(str(root))
            return _original(self, root, *args, **kw)
        monkeypatch.setattr(type(fam), "open", counted)
    from unclip_nodes.nodes.core import checkpoint
    checkpoint._OPENED.clear()
    return seen


def test_a_checkpoint_is_opened_once_per_run_although_fingerprint_validation_and_load_read_it(
        opens, tmp_path):
    run_workflow(ROOT / "workflows" / "text_to_image.yaml", out_dir=tmp_path, cache=Cache.off(),
                 overrides={"steps": 2, "upsample_steps": 2})
    assert len(opens) == 1


def test_a_changed_config_is_read_again(opens, tmp_path):
    import shutil
    from unclip_nodes.nodes.core.checkpoint import POCKET
    copy = tmp_path / "pocket"
    shutil.copytree(POCKET, copy)
    first = loaders.open_checkpoint(str(copy), ("prior",), layout=False)
    again = loaders.open_checkpoint(str(copy), ("prior",), layout=False)
    cfg = copy / "prior_scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text().replace("\n", "\n "))  # same meaning, new file
    changed = loaders.open_checkpoint(str(copy), ("prior",), layout=False)
    assert again is first and changed is not first
    assert changed.stamp("prior_scheduler") != first.stamp("prior_scheduler")
