"""Bad output places are found before anything runs; a failed write keeps what finished."""
import errno
import os
from pathlib import Path

import enginenodes  # noqa: F401  -- registers the Test* node types
import pytest
from PIL import Image

from unclip_nodes.graph import Cache, MemoryTier, run_workflow
from unclip_nodes.graph.sweep import run_sweep
from unclip_nodes.nodes.errors import UserError, UserErrors

WF = """
inputs:
  seed: {type: INT, default: 1}
nodes:
  noise: {type: TestNoise, params: {seed: $seed}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: 2.0}}
  save: {type: SaveImage, links: {images: scale.image}, params: {filename_prefix: PREFIX}}
outputs:
  image: scale.image
"""


@pytest.fixture
def ran(tmp_path, monkeypatch):
    """The node types that ran in this test, in order (the engine test nodes log them)."""
    log = tmp_path / "ran.log"
    monkeypatch.setenv("ENGINE_TEST_LOG", str(log))
    return lambda: log.read_text().split() if log.exists() else []


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def refused(path, out, cache) -> UserError:
    with pytest.raises(UserError) as e:
        run_workflow(path, out_dir=out, cache=cache)
    return e.value


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write in: a chmod 555 one, or where the tests run as root
    (which writes anywhere) /proc/sys; skipped when neither is there."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
    elif os.path.isdir("/proc/sys") and not os.access("/proc/sys", os.W_OK):
        yield Path("/proc/sys")
    else:
        pytest.skip("no folder here that this process cannot write in")


def test_output_folder_that_is_a_file_is_refused_before_any_node_runs(
        write_workflow, engine_cache, tmp_path, ran):
    (tmp_path / "taken").write_text("x")
    err = refused(write_workflow(WF.replace("PREFIX", "cat")), tmp_path / "taken", engine_cache)
    assert err.field == "out"
    assert f"output folder {tmp_path / 'taken'} is a file, not a folder" in err.message
    assert "--out" in err.message
    assert ran() == []


def test_output_folder_crossing_a_file_is_refused_and_names_the_file(
        write_workflow, engine_cache, tmp_path, ran):
    (tmp_path / "taken").write_text("x")
    err = refused(write_workflow(WF.replace("PREFIX", "cat")), tmp_path / "taken" / "sub",
                  engine_cache)
    assert f"crosses a file: {tmp_path / 'taken'} is a file, not a folder" in err.message
    assert ran() == []


def test_output_folder_name_over_the_file_system_limit_is_refused(
        write_workflow, engine_cache, tmp_path, ran):
    err = refused(write_workflow(WF.replace("PREFIX", "cat")), tmp_path / ("a" * 300),
                  engine_cache)
    assert "is too long: the name 'aaaaaaaaaaaaaaaaaaaa...' has 300 bytes" in err.message
    assert ran() == []


def test_read_only_output_folder_is_refused(write_workflow, engine_cache, read_only_dir, ran):
    err = refused(write_workflow(WF.replace("PREFIX", "cat")), read_only_dir, engine_cache)
    assert f"output folder {read_only_dir} is read-only" in err.message
    assert ran() == []


def test_missing_output_folder_under_a_read_only_one_cannot_be_created(
        write_workflow, engine_cache, read_only_dir, ran):
    err = refused(write_workflow(WF.replace("PREFIX", "cat")), read_only_dir / "new" / "deeper",
                  engine_cache)
    assert f"does not exist and cannot be created: {read_only_dir} is read-only" in err.message
    assert ran() == []


def test_prefix_crossing_a_file_is_a_located_error_and_nothing_is_written(
        write_workflow, engine_cache, tmp_path, ran):
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs").write_text("x")
    text = WF.replace("PREFIX", "runs/cat") + \
        "  first: {type: SaveImage, links: {images: noise.image}, params: {filename_prefix: fine}}\n"
    err = refused(write_workflow(text.replace("outputs:\n  image: scale.image\n", "")), out,
                  engine_cache)
    assert (err.node, err.field, err.line) == ("save", "prefix", 6)
    assert f"cannot save 'runs/cat' there: folder {out / 'runs'} is a file" in str(err)
    assert files_under(out) == ["runs"]  # the other saver wrote nothing either
    assert ran() == []


def test_prefix_whose_numbered_file_name_is_too_long_is_refused(
        write_workflow, engine_cache, tmp_path, ran):
    err = refused(write_workflow(WF.replace("PREFIX", "sub/" + "n" * 250)), tmp_path / "out",
                  engine_cache)
    assert err.node == "save" and "is too long: 262 bytes with the number" in err.message
    assert not (tmp_path / "out").exists()  # a failed check creates nothing
    assert ran() == []


def test_every_bad_saver_is_reported_at_once(write_workflow, engine_cache, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("x")
    text = WF.replace("PREFIX", "a/x") + \
        "  second: {type: SaveImage, links: {images: noise.image}, params: {filename_prefix: a/y}}\n"
    err = refused(write_workflow(text.replace("outputs:\n  image: scale.image\n", "")), out,
                  engine_cache)
    assert isinstance(err, UserErrors) and [e.node for e in err.errors] == ["save", "second"]


def test_sweep_into_an_output_folder_that_is_a_file_runs_nothing(
        write_workflow, engine_cache, tmp_path, ran):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        run_sweep(write_workflow(WF.replace("PREFIX", "cat")), {"seed": [1, 2]},
                  out_dir=tmp_path / "taken", cache=engine_cache)
    assert ran() == []


def test_disk_full_while_saving_is_a_user_error_and_finished_nodes_stay_cached(
        write_workflow, engine_cache, tmp_path, monkeypatch):
    path, out = write_workflow(WF.replace("PREFIX", "cat")), tmp_path / "out"

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", full)
        err = refused(path, out, engine_cache)
    assert (err.node, err.field) == ("save", "prefix")
    assert f"cannot write {out / 'cat_00001_.png'}: {os.strerror(errno.ENOSPC)}" in err.message
    assert files_under(out) == []  # no temp file left behind
    again = run_workflow(path, out_dir=out, cache=engine_cache)
    assert again.status() == {"noise": "not needed", "scale": "memory hit", "save": "ran"}
    fresh = Cache(engine_cache.disk.root, memory=MemoryTier())  # a new process: the disk tier
    assert run_workflow(path, out_dir=out, cache=fresh).status()["scale"] == "disk hit"


def test_os_error_in_any_saver_is_a_user_error_naming_the_file(
        write_workflow, engine_cache, tmp_path, monkeypatch):
    path = write_workflow(WF.replace("SaveImage, links: {images:", "TestSave, links: {image:")
                          .replace("PREFIX", "cat"))

    def denied(self, *args, **kwargs):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "write_text", denied)
    err = refused(path, tmp_path / "out", engine_cache)
    assert err.node == "save"
    assert f"cannot write {tmp_path / 'out' / 'cat.txt'}: {os.strerror(errno.EACCES)}" \
        in err.message


def test_cli_reports_a_bad_out_folder_in_one_line_with_exit_code_2(write_workflow, cli,
                                                                   tmp_path):
    path = write_workflow(WF.replace("PREFIX", "cat"))
    (tmp_path / "taken").write_text("x")
    proc = cli(["run", path, "--out", "taken"])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("field 'out': output folder taken is a file, not a folder; "
                                   "give another with --out (out_dir= from Python)")
