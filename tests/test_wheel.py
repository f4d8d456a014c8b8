"""A real wheel (``pip wheel``, not an editable install) carries every shipped workflow, preset,
sample image and the whole pocket model, and installed from it ``unclip`` finds them by name."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("workflows/", "models/pocket/")


def tree_files() -> list[str]:
    """The repository's files (tracked, and new ones git does not ignore)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs the git checkout")
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the tree (a build/ folder of the checkout stays out)."""
    tmp = tmp_path_factory.mktemp("wheel")
    for f in tree_files():
        (tmp / "src" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tmp / "src" / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(tmp / "src"), "--no-deps", "-q",
                    "-w", str(tmp / "dist")], check=True, timeout=300)
    return next((tmp / "dist").glob("unclip_nodes-*.whl"))


def test_the_wheel_carries_the_workflows_presets_samples_and_pocket_model(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    wanted = [f for f in tree_files() if f.startswith(SHIPPED)]
    assert any(f.startswith("workflows/presets/") for f in wanted)
    assert any(f.startswith("workflows/kandinsky/") for f in wanted)
    assert any(f.startswith("workflows/images/") for f in wanted)
    assert any(f.endswith(".safetensors") for f in wanted)
    missing = [f for f in wanted if f"unclip_nodes/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}"


def test_installed_from_the_wheel_unclip_finds_shipped_workflows_by_name(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of the editable checkout
    env.pop("UNCLIP_PRESETS", None)
    code = ("import sys; from unclip_nodes.graph.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    for name in ("upscale", "inpaint", "text_to_image.yaml"):
        done = subprocess.run([sys.executable, "-c", code, "validate", name], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(str(target / "unclip_nodes" / "workflows")), done.stdout
