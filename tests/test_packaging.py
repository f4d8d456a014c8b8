"""Packaging for ComfyUI: requirements.txt (for installing the pack into ComfyUI's Python) covers
every third-party module the package imports that ComfyUI's own requirements do not bring and
follows pyproject.toml; the registry metadata follows the Comfy Registry's rules."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
NOT_RUNTIME = {"tests", "bench", "build", "dist", "docs", "output"}
"""Top-level folders whose code never runs inside ComfyUI."""

COMFYUI_REQUIREMENTS = """
comfyui-frontend-package==1.27.10
comfyui-workflow-templates==0.1.95
comfyui-embedded-docs==0.2.6
torch
torchsde
torchvision
torchaudio
numpy>=1.25.0
einops
transformers>=4.37.2
tokenizers>=0.13.3
sentencepiece
safetensors>=0.4.2
aiohttp>=3.11.8
yarl>=1.18.0
pyyaml
Pillow
scipy
tqdm
psutil
alembic
SQLAlchemy
av>=14.2.0
kornia>=0.7.1
spandrel
pydantic~=2.0
pydantic-settings~=2.0
"""
"""ComfyUI 0.3.64's requirements.txt (commit a125cd8), the release the pack is checked against."""

COMFYUI_MODULES = {"comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths",
                   "execution", "latent_preview", "node_helpers", "nodes", "server"}
"""ComfyUI's own top-level modules: importable only inside ComfyUI, never installed."""

DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "cv2":
                "opencv-python"}
"""Import names that differ from the name of the distribution that provides them."""


def names(text: str) -> dict[str, Requirement]:
    reqs = {}
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def runtime_sources() -> list[Path]:
    files = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in NOT_RUNTIME or any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        files.append(path)
    return files


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the absolute imports in a file, wherever they are (also inside
    functions and try blocks)."""
    found = set()
    for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(n, ast.Import):
            found |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            found.add(n.module.split(".")[0])
    return found


def third_party_imports() -> dict[str, set[str]]:
    """Distribution name -> the files that import it."""
    own = {"unclip_nodes", *(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())}
    out: dict[str, set[str]] = {}
    for path in runtime_sources():
        for mod in imported_modules(path):
            if mod in sys.stdlib_module_names or mod in own or mod in COMFYUI_MODULES:
                continue
            dist = canonicalize_name(DISTRIBUTION.get(mod, mod))
            out.setdefault(dist, set()).add(str(path.relative_to(ROOT)))
    return out


def ours() -> dict[str, Requirement]:
    return names((ROOT / "requirements.txt").read_text(encoding="utf-8"))


def test_requirements_cover_every_runtime_import_that_comfyui_does_not_bring():
    imports = third_party_imports()
    assert {"torch", "diffusers", "networkx", "pillow"} <= set(imports)  # the scan sees them
    comfy = names(COMFYUI_REQUIREMENTS)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = {name for extra, reqs in project["optional-dependencies"].items() if extra != "test"
              for name in names("\n".join(reqs))}  # optional: imported only where it is used
    missing = {dist: sorted(files) for dist, files in imports.items()
               if dist not in comfy and dist not in ours() and dist not in extras}
    assert missing == {}, "add these to requirements.txt (imported by the listed files)"


def test_requirements_are_the_declared_dependencies_comfyui_lacks_with_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    comfy = names(COMFYUI_REQUIREMENTS)
    declared = names("\n".join(project["dependencies"]))
    expected = {name: str(req) for name, req in declared.items() if name not in comfy}
    assert {name: str(req) for name, req in ours().items()} == expected
    assert "torch" not in ours()  # never replace ComfyUI's own torch build


def test_registry_metadata_follows_the_comfy_registry_rules():
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    name, comfy = doc["project"]["name"], doc["tool"]["comfy"]
    # the node id: under 100 characters of letters, digits, - _ and ., starting with a letter,
    # no two special characters in a row, and no "ComfyUI" in it
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*",
                                            name)
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", doc["project"]["version"])
    assert comfy["PublisherId"] and comfy["DisplayName"]
    for path in comfy["includes"]:  # force-included in the archive: must exist, with files
        assert (ROOT / path).is_dir() and any((ROOT / path).iterdir())
