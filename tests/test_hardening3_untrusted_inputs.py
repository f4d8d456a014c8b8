"""A workflow stored in a PNG or a JSON file reads only files the user names again (--set),
files next to it, or with --trust-inputs the ones it records; the chunk naming the workflow
file it was made from is listed and never read beyond the stored text's length."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from test_untrusted import picture, run  # the same helpers
from unclip_nodes.graph import comfy
from unclip_nodes.graph.validate import load

WF = """inputs:
  image: {type: STRING, default: "x.png"}
nodes:
  load: {type: LoadImage, params: {image: $image}}
  save: {type: SaveImage, links: {images: load.image}, params: {filename_prefix: shot}}
"""




def crafted_png(path: Path, image: str, **chunks: str) -> Path:
    """A PNG whose stored workflow reads ``image`` (an absolute path it records)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(comfy.YAML_TEXT, WF)
    info.add_text(comfy.INPUTS, json.dumps({"image": image}))
    for k, v in chunks.items():
        info.add_text(k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(path, pnginfo=info)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    return picture(tmp_path / "private" / "photo.png", 77)


@pytest.fixture(autouse=True)
def _here(tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_a_png_may_not_read_a_recorded_file_the_user_did_not_name(tmp_path, secret, capsys):
    png = crafted_png(tmp_path / "downloads" / "nice.png", str(secret))
    code, out, err = run(["run", png, "--out", tmp_path / "out", "--no-cache"], capsys)
    assert code == 2 and "Traceback" not in err
    assert f"node 'load', field 'image': the stored workflow would read {secret}" in err
    assert "--set image=PATH" in err and "--trust-inputs" in err
    assert not (tmp_path / "out").exists() and "wrote" not in out
    # named again, the same file is read; so is one next to the PNG
    code, _, err = run(["run", png, "--set", f"image={secret}", "--out", tmp_path / "a",
                        "--no-cache"], capsys)
    assert code == 0, err
    beside = picture(tmp_path / "downloads" / "beside.png", 5)
    png2 = crafted_png(tmp_path / "downloads" / "two.png", str(beside))
    code, _, err = run(["run", png2, "--out", tmp_path / "b", "--no-cache"], capsys)
    assert code == 0, err


def test_trust_inputs_reads_the_recorded_files(tmp_path, secret, capsys):
    png = crafted_png(tmp_path / "downloads" / "nice.png", str(secret))
    code, _, err = run(["run", png, "--out", tmp_path / "out", "--no-cache", "--trust-inputs"],
                       capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "shot_00001_.png").exists()


def test_an_api_json_file_may_not_read_a_recorded_file_either(tmp_path, secret, capsys):
    wf = tmp_path / "src" / "wf.yaml"
    wf.parent.mkdir()
    wf.write_text(WF)
    api = comfy.to_api(load(wf, {"image": str(secret)}))
    doc = tmp_path / "downloads" / "shared.json"
    doc.parent.mkdir()
    doc.write_text(json.dumps(api))
    code, _, err = run(["run", doc, "--out", tmp_path / "out", "--no-cache"], capsys)
    assert code == 2 and f"would read {secret}" in err and "--trust-inputs" in err
    assert not (tmp_path / "out").exists()


def test_the_recorded_workflow_file_is_listed_before_the_run(tmp_path, secret, capsys):
    original = tmp_path / "elsewhere" / "made_from.yaml"
    png = crafted_png(tmp_path / "downloads" / "nice.png", str(secret),
                      **{comfy.YAML_FILE: str(original)})
    code, _, err = run(["run", png, "--out", tmp_path / "out", "--no-cache", "--trust-inputs"],
                       capsys)
    assert code == 0, err
    assert f"the workflow file it was made from: {original}" in err


def test_a_recorded_workflow_file_is_read_no_further_than_the_stored_text(tmp_path,
                                                                          monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text(WF + "#" * 100_000)
    asked = []
    real_open = open

    def spy(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if str(file) == str(big):
            read = f.read
            f.read = lambda n=-1: (asked.append(n), read(n))[1]
        return f
    monkeypatch.setattr("builtins.open", spy)
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: spy(self).read())
    assert comfy._same_text(big, WF) is False
    assert all(0 <= n <= len(WF.encode()) + 1 for n in asked)
