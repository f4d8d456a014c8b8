"""Paths the user gives on the command line: nothing is written where it should not be (an
empty --out, the workflow itself, a device node, a link), and a path no file can have ends in a
one-line error with exit code 2, never a traceback."""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import enginenodes  # noqa: F401  -- registers the Test* node types
import pytest
from conftest import write

from unclip_nodes.graph import cache
from unclip_nodes.graph.cli import main

WF = """
nodes:
  noise: {type: TestNoise, params: {seed: 1}}
  save: {type: SaveImage, links: {images: noise.image}, params: {filename_prefix: shot}}
"""
LONG = "x" * 300


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture
def wf(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return write(tmp_path / "wf.yaml", WF)


def test_an_empty_out_is_an_error_not_the_current_folder(wf, tmp_path, capsys):
    code, _, err = run(["run", wf, "--out", ""], capsys)
    assert "field 'out'" in one_line_error(code, err) and "empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wf.yaml"]


@pytest.mark.parametrize("flag", ["--out", "--report", "--cache-dir"])
def test_a_name_longer_than_the_file_system_allows_is_one_line(wf, flag, capsys):
    code, _, err = run(["run", wf, flag, LONG], capsys)
    assert "too long" in one_line_error(code, err)
    assert LONG not in err  # quoted cut short


def test_a_workflow_name_too_long_is_one_line(wf, capsys):
    code, _, err = run(["run", LONG + ".yaml"], capsys)
    assert "field 'workflow'" in one_line_error(code, err) and "too long" in err


def test_a_lone_surrogate_in_a_path_is_one_line(wf, capsys):
    code, _, err = run(["run", wf, "--out", "a\ud800b"], capsys)
    assert "lone surrogate" in one_line_error(code, err)


def test_a_nul_in_a_path_is_one_line(wf, capsys):
    code, _, err = run(["run", wf, "--report", "a\0b.json"], capsys)
    assert "NUL" in one_line_error(code, err)


def test_a_report_through_a_link_loop_is_refused_before_the_run(wf, tmp_path, capsys):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    code, out, err = run(["run", wf, "--report", "a"], capsys)
    assert "symbolic links" in one_line_error(code, err)
    assert not (tmp_path / "output").exists() and "wrote" not in out
    assert (tmp_path / "a").is_symlink()  # not replaced by a file


def test_a_report_in_a_folder_that_refuses_files_is_refused_before_the_run(
        wf, tmp_path, capsys):
    if os.geteuid() == 0:
        folder = Path("/sys")  # refuses new files even to root
        if not folder.is_dir():
            pytest.skip("no /sys here, and root writes in any other folder")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    code, out, err = run(["run", wf, "--report", folder / "r.json"], capsys)
    assert "field 'report'" in one_line_error(code, err)
    assert not (tmp_path / "output").exists() and "wrote" not in out


def test_the_report_through_a_link_writes_the_file_it_points_at(wf, tmp_path, capsys):
    (tmp_path / "link.json").symlink_to("real.json")
    code, _, err = run(["run", wf, "--report", "link.json"], capsys)
    assert code == 0, err
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["nodes"]


def test_writing_to_a_device_writes_in_place_and_keeps_it_a_device(tmp_path):
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null here")
    before = os.stat("/dev/null")
    cache.write_output(Path("/dev/null"), b"{}\n")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_writing_to_a_pipe_writes_in_place_or_refuses_without_a_reader(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="nothing reads"):
        cache.write_output(fifo, b"x")
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    for _ in range(200):  # until the reader has it open
        try:
            cache.write_output(fifo, b"hello")
            break
        except OSError:
            threading.Event().wait(0.01)
    reader.join(10)
    assert got == [b"hello"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_socket_is_never_replaced_by_a_file(tmp_path):
    import socket
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(OSError, match="not a regular file"):
            cache.write_output(path, b"x")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_export_onto_the_workflow_itself_is_refused(wf, tmp_path, capsys):
    before = wf.read_text()
    code, _, err = run(["export", "--comfy-api", wf, "-o", wf], capsys)
    assert "field 'output'" in one_line_error(code, err) and "being exported" in err
    (tmp_path / "same.yaml").symlink_to(wf)
    code, _, err = run(["export", "--comfy-api", wf, "-o", "same.yaml"], capsys)
    one_line_error(code, err)
    assert wf.read_text() == before


def test_export_to_a_new_file_still_works(wf, tmp_path, capsys):
    code, _, err = run(["export", "--comfy-api", wf, "-o", tmp_path / "sub" / "api.json"],
                       capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "sub" / "api.json").read_text())


def test_a_sweep_contact_sheet_name_too_long_is_refused_before_any_combination(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    name = "w" * 245 + ".yaml"  # fits, but not with "_sweep_00001_.png"
    write(tmp_path / name, """
        inputs:
          seed: {type: INT, default: 1}
        nodes:
          noise: {type: TestNoise, params: {seed: $seed}}
        outputs:
          image: noise.image
        """)
    log = tmp_path / "ran.log"
    monkeypatch.setenv("ENGINE_TEST_LOG", str(log))
    code, _, err = run(["run", name, "--sweep", "seed=1,2"], capsys)
    assert "contact sheet" in one_line_error(code, err) and "too long" in err
    assert not log.exists()  # no combination ran


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_a_device_this_pack_does_not_run_on_is_refused_up_front(wf, tmp_path, device, capsys):
    code, out, err = run(["run", wf, "--device", device], capsys)
    assert "field 'device'" in one_line_error(code, err)
    assert "wrote" not in out and not (tmp_path / "output").exists()


# --- paths a workflow holds ------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    'nodes:\n  p: {type: "preset:' + LONG + '.yaml"}\n',
    "nodes:\n  m: {type: LoadUnCLIP, params: {path: " + LONG + "}}\n",
    'nodes:\n  m: {type: LoadUnCLIP, params: {path: "a\\0b"}}\n',
    "nodes:\n  i: {type: LoadImage, params: {image: " + LONG + "}}\n"
    "  s: {type: SaveImage, links: {images: i.image}}\n",
])
def test_a_path_in_a_workflow_that_no_file_can_have_is_located_not_a_traceback(
        wf, tmp_path, text, capsys):
    path = tmp_path / "holds.yaml"
    path.write_text(text)
    code, _, err = run(["validate", path], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"{path}:" in err and ("too long" in err or "NUL" in err)
    assert LONG not in err


def test_a_named_pipe_nothing_writes_is_read_as_empty_not_waited_on(wf, tmp_path, capsys):
    fifo = tmp_path / "values.txt"
    os.mkfifo(fifo)
    result = []
    worker = threading.Thread(target=lambda: result.append(
        run(["run", wf, "--sweep", f"seed=@{fifo}"], capsys)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # blocked opening the pipe: let it go, then fail
        with open(fifo, "w"):
            pass
        worker.join(30)
        pytest.fail("waited on a pipe that nothing writes")
    code, _, err = result[0]
    assert "has no values" in one_line_error(code, err)


def test_an_out_folder_that_refuses_files_even_to_root_is_refused_before_the_run(
        wf, tmp_path, monkeypatch, capsys):
    if os.geteuid() != 0:
        pytest.skip("tests a folder whose permissions allow root but whose file system "
                    "does not; as another user the permission checks already find it")
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys here")
    log = tmp_path / "ran.log"
    monkeypatch.setenv("ENGINE_TEST_LOG", str(log))
    code, out, err = run(["run", wf, "--out", "/sys/unclip-test"], capsys)
    assert "field 'out'" in one_line_error(code, err) and "does not take new files" in err
    assert not log.exists() and "wrote" not in out


def test_a_report_onto_the_workflow_being_run_is_refused(wf, tmp_path, capsys):
    before = wf.read_text()
    code, out, err = run(["run", wf, "--report", wf], capsys)
    assert "being run" in one_line_error(code, err) and "wrote" not in out
    assert wf.read_text() == before
