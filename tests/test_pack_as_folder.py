"""Inside a ComfyUI installation the pack is only a folder (``custom_nodes/unclip-nodes``), no
installed package: ``python <pack folder> ...`` with ComfyUI's Python runs the command line and
the tiny-checkpoint builders all the same."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pack(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_a_tiny_checkpoint_is_written_by_running_the_pack_folder(tmp_path):
    proc = run_pack("tiny", str(tmp_path / "tiny"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "tiny" / "model_index.json").read_text())
    assert index["_class_name"] == "UnCLIPPipeline"
    proc = run_pack("validate", "text_to_image", "--set", f"model={tmp_path / 'tiny'}",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_the_pack_folder_runs_the_command_line_and_its_user_errors(tmp_path):
    proc = run_pack("validate", "no-such-workflow", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
