"""No hangs and no deaths by signal: a --ray address where something listens but never
answers is a user error within seconds, and a Ctrl-C that arrives as unclip exits leaves the
exit code, not a death by SIGINT."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli_env, require_module

WF = str(Path(__file__).resolve().parents[1] / "workflows" / "text_to_image.yaml")


def test_a_ray_address_that_listens_but_never_answers_is_a_quick_user_error(tmp_path):
    require_module("ray", "needs Ray")
    with socket.socket() as silent:  # accepts connections (the kernel does) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "unclip_nodes", "run", WF, "--sweep",
                                   "seed=0..1", "--ray", f"127.0.0.1:{port}", "--out",
                                   str(tmp_path / "out")], capture_output=True, text=True,
                                  timeout=90, env=cli_env(tmp_path))
        except subprocess.TimeoutExpired:
            raise AssertionError("still waiting for the silent address after 90 s") from None
    assert done.returncode == 2, done.stderr
    assert time.monotonic() - t0 < 60
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in done.stderr
    assert "does not answer" in done.stderr and "Traceback" not in done.stderr


def test_a_ctrl_c_as_unclip_exits_keeps_the_exit_code(tmp_path):
    """What the ``unclip`` script runs, with a Ctrl-C arriving once the command is over
    (the user pressed it twice, the second one late)."""
    code = ("import os, signal, sys, time\n"
            "from unclip_nodes.__main__ import main\n"
            "code = main()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(0.5)\n"
            "sys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", code, "validate", WF], cwd=tmp_path,
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.returncode != -signal.SIGINT and "Traceback" not in done.stderr
