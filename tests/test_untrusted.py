"""Workflows from someone else (a PNG, a ComfyUI JSON, a preset path they chose) are safe to
run: nothing of an arbitrary file reaches an error message, pickle weights need --allow-pickle,
what will be read is listed first, and stored paths either name the recorded files or are
refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write
from PIL import Image

from unclip_nodes.graph import cli, comfy, preset
from unclip_nodes.graph.cli import main
from unclip_nodes.graph.validate import load

SECRET = "hunter2-do-not-show"


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def picture(path: Path, red: int) -> Path:
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[..., 0] = red
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def chunks(path: Path) -> dict:
    with Image.open(path) as img:
        return dict(img.text)


def using_preset(tmp_path: Path, ref: str) -> Path:
    return write(tmp_path / "wf.yaml", f"""
        nodes:
          p: {{type: "preset:{ref}"}}
        """)


# --- preset files that are not workflows ---------------------------------------------------------

@pytest.mark.parametrize("name", ["passwd", "notes.txt", "conf.json", "settings.toml"])
def test_a_preset_file_that_is_not_a_workflow_shows_none_of_its_content(name, tmp_path,
                                                                         capsys):
    texts = [f"root:x:0:0:{SECRET}:/root:/bin/bash\ndaemon:x:1:1\n",  # a plain value
             f"password: {SECRET}\nuser: me\n",                       # a mapping, not a workflow
             f'{{"token": "{SECRET}"}}',                              # JSON, not a workflow
             f"[server]\nkey = '{SECRET}'\n"]                         # not YAML at all
    for i, text in enumerate(texts):
        secret = tmp_path / f"{i}" / name
        secret.parent.mkdir()
        secret.write_text(text)
        code, out, err = run(["validate", using_preset(tmp_path, str(secret))], capsys)
        assert code == 2
        assert "is not a workflow file" in err and str(secret) in err
        assert SECRET not in err + out and "begins" not in err
        assert "root:x" not in err and "password" not in err and "token" not in err


def test_a_yaml_preset_that_is_not_a_workflow_shows_not_even_its_first_key(tmp_path, capsys):
    secret = write(tmp_path / "conf.yaml", f"api_key: {SECRET}\n\x7fother: 1\n")
    code, _, err = run(["validate", using_preset(tmp_path, "conf.yaml")], capsys)
    assert code == 2 and "is not a workflow file" in err
    assert "api_key" not in err and SECRET not in err and "begins" not in err
    listed = write(tmp_path / "list.yml", "- " + "x" * 200 + "\n")
    code, _, err = run(["validate", using_preset(tmp_path, str(listed))], capsys)
    assert code == 2 and "a list, not a mapping" in err and "xx" not in err
    escapes = write(tmp_path / "esc.yaml", "\x1b[31m red\n")
    code, _, err = run(["validate", using_preset(tmp_path, str(escapes))], capsys)
    assert code == 2 and "not YAML" in err and "red" not in err
    assert "\x1b" not in err
    assert secret.read_text().startswith("api_key")  # (the file is only read)


def test_a_preset_name_never_reaches_outside_the_preset_folders(tmp_path, monkeypatch):
    write(tmp_path / "outside.yaml", "nodes: {}\n")
    monkeypatch.setenv(preset.ENV, str(tmp_path / "presets"))
    (tmp_path / "presets").mkdir()
    assert preset.find_preset("../outside") is None  # what ComfyUI's 'preset:NAME' class uses
    assert preset.find_preset("../outside.yaml") is None


# --- `unclip run NAME`: the lookup of preset:NAME ------------------------------------------------

def test_unclip_run_name_finds_what_preset_name_finds_yml_included(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    yml = write(mine / "tiny.yml", "nodes: {}\n")
    monkeypatch.setenv(preset.ENV, str(mine))
    monkeypatch.chdir(tmp_path)
    assert preset.find_preset("tiny") == yml
    assert preset.locate("tiny", tmp_path) == (yml, "")
    assert cli.workflow_path("tiny") == yml
    assert cli.workflow_path("tiny.yml") == yml
    assert cli.workflow_path("upscale") == preset.SHIPPED / "presets" / "upscale.yaml"


# --- stored workflows: what they read, pickle weights ------------------------------------------

def image_workflow(folder: Path, image: str, *, pickle: bool = False) -> Path:
    """LoadImage -> SaveImage; with ``pickle``, also a loader that asks for pickle weights
    (never run: no output needs it)."""
    model = ("  model: {type: LoadUnCLIP, params: {path: pocket, allow_pickle: true}}\n"
             if pickle else "")
    return write(folder / "wf.yaml", f"""
        inputs:
          image: {{type: STRING, default: "{image}"}}
        nodes:
          load: {{type: LoadImage, params: {{image: $image}}}}
          save: {{type: SaveImage, links: {{images: load.image}}, params: {{filename_prefix: shot}}}}
        """ + model)


def saved_png(wf: Path, out: Path, capsys, *extra) -> Path:
    code, _, err = run(["run", wf, "--out", out, "--no-cache", *extra], capsys)
    assert code == 0, err
    return out / "shot_00001_.png"


def test_run_png_lists_what_the_stored_workflow_reads_before_running(tmp_path, monkeypatch,
                                                                      capsys):
    pic = picture(tmp_path / "proj" / "pic.png", 200)
    png = saved_png(image_workflow(tmp_path / "proj", str(pic), pickle=True),
                    tmp_path / "a", capsys)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    code, out, err = run(["run", png, "--out", tmp_path / "b", "--no-cache", "--allow-pickle",
                          "--trust-inputs"], capsys)
    assert code == 0, err
    assert f"{png}: the stored workflow reads these files and folders:" in err
    assert f"  load.image: {pic}\n" in err
    assert "  model.path: pocket (the bundled model)\n" in err
    assert np.array_equal(pixels(tmp_path / "b" / "shot_00001_.png"), pixels(pic))


def test_run_png_refuses_pickle_weights_without_allow_pickle(tmp_path, capsys):
    pic = picture(tmp_path / "proj" / "pic.png", 90)
    wf = image_workflow(tmp_path / "proj", str(pic), pickle=True)
    png = saved_png(wf, tmp_path / "a", capsys)  # our own YAML file: no flag needed
    code, out, err = run(["run", png, "--out", tmp_path / "b", "--no-cache"], capsys)
    assert code == 2
    assert "node 'model', field 'allow_pickle'" in err and "--allow-pickle" in err
    assert not (tmp_path / "b").exists() and "wrote" not in out


def test_run_json_refuses_pickle_weights_without_allow_pickle(tmp_path, capsys):
    pic = picture(tmp_path / "pic.png", 90)
    api = comfy.to_api(load(image_workflow(tmp_path, str(pic), pickle=True)))
    model_id = next(k for k, v in api.items() if v["class_type"] == "unCLIP LoadUnCLIP")
    doc = tmp_path / "shared.json"
    doc.write_text(json.dumps(api))
    code, _, err = run(["run", doc, "--out", tmp_path / "b", "--no-cache"], capsys)
    assert code == 2 and f"node '{model_id}', field 'allow_pickle'" in err
    assert "the stored workflow reads these files and folders:" in err
    code, _, err = run(["run", doc, "--out", tmp_path / "b", "--no-cache", "--allow-pickle"],
                       capsys)
    assert code == 0, err


# --- stored paths ---------------------------------------------------------------------------

def test_png_records_input_files_as_absolute_paths_so_it_reruns_from_anywhere(
        tmp_path, monkeypatch, capsys):
    pic = picture(tmp_path / "proj" / "pic.png", 150)
    wf = image_workflow(tmp_path / "proj", "pic.png")  # relative: found via the workflow folder
    (tmp_path / "run1").mkdir()
    monkeypatch.chdir(tmp_path / "run1")
    png = saved_png(wf, tmp_path / "a", capsys)
    assert json.loads(chunks(png)["unclip_inputs"]) == {"image": str(pic.resolve())}
    wf.write_text(wf.read_text() + "# edited since\n")  # re-run from the text the PNG stores
    (tmp_path / "run2").mkdir()
    monkeypatch.chdir(tmp_path / "run2")
    code, _, err = run(["run", png, "--out", tmp_path / "b", "--no-cache", "--trust-inputs"],
                       capsys)
    assert code == 0, err
    assert np.array_equal(pixels(tmp_path / "b" / "shot_00001_.png"), pixels(pic))


def test_png_records_a_sample_image_of_the_pack_relative_to_the_pack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rs = load(preset.SHIPPED / "inpaint.yaml")  # image: images/... from the workflow's folder
    stored = json.loads(comfy.png_metadata(rs)[comfy.INPUTS])
    assert stored["image"] == "workflows/images/red_circle_white.png"  # found in any install
    assert stored["model"] == "pocket"  # a model name stays a name


def test_run_png_reports_a_stored_relative_path_that_now_names_another_file(
        tmp_path, monkeypatch, capsys):
    picture(tmp_path / "proj" / "pic.png", 10)
    wf = write(tmp_path / "proj" / "wf.yaml", """
        nodes:
          load: {type: LoadImage, params: {image: pic.png}}
          save: {type: SaveImage, links: {images: load.image}, params: {filename_prefix: shot}}
        """)
    png = saved_png(wf, tmp_path / "a", capsys)
    picture(tmp_path / "other" / "pic.png", 250)  # same name, another picture
    monkeypatch.chdir(tmp_path / "other")
    code, out, err = run(["run", png, "--out", tmp_path / "b", "--no-cache", "--trust-inputs"],
                         capsys)  # trusted, and still refused: not the file recorded
    assert code == 2, err
    assert "node 'load', field 'image'" in err and "'pic.png'" in err
    assert str((tmp_path / "other" / "pic.png").resolve()) in err
    assert str((tmp_path / "proj").resolve()) in err
    assert not (tmp_path / "b").exists()
    monkeypatch.chdir(tmp_path / "proj")  # from the recorded folder it names the same file
    code, _, err = run(["run", png, "--out", tmp_path / "b", "--no-cache", "--trust-inputs"],
                       capsys)
    assert code == 0, err
