"""The headless side of the ComfyUI bridge: export to API/UI JSON, run API JSON and PNGs."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from unclip_nodes.graph import comfy
from unclip_nodes.graph.cache import Cache
from unclip_nodes.graph.cli import main
from unclip_nodes.graph.run import execute
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import declare
from unclip_nodes.nodes.errors import UserError, UserErrors

WORKFLOW = """
description: Pad and grid a small image.
inputs:
  width: {type: INT, default: 16, description: New width.}
  label: {type: STRING, default: small}
nodes:
  load: {type: LoadImage, params: {image: "@IMAGE@"}}
  big: {type: ResizeImage, links: {image: load.image}, params: {width: $width, height: 0}}
  pad: {type: OutpaintPad, links: {image: big.image}, params: {left: 3, fill: noise, seed: 5}}
  grid: {type: ImageGrid, links: {images: pad.image}, params: {columns: 1}}
  save: {type: SaveImage, links: {images: grid.image}, params: {filename_prefix: $label}}
  inv: {type: InvertMask, links: {mask: load.mask}}
outputs:
  image: grid.image
  mask: inv.mask
"""


@pytest.fixture
def wf(tmp_path) -> Path:
    arr = np.zeros((6, 10, 4), np.uint8)
    arr[..., 0], arr[..., 2], arr[..., 3] = 220, 40, 255
    arr[:2, :3, 3] = 0
    Image.fromarray(arr).save(tmp_path / "in.png")
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(WORKFLOW).replace("@IMAGE@", str(tmp_path / "in.png")).lstrip())
    return path


def run(args: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


# --- API format ----------------------------------------------------------------------------------

def test_api_export_resolves_inputs_to_literals_and_links_to_output_indices(wf):
    api = comfy.to_api(load(wf, {"width": "20"}))
    assert list(api) == ["1", "2", "3", "4", "5", "6"]  # file order
    assert api["2"] == {"class_type": "ImageScale", "_meta": {"title": "big"},  # ComfyUI's own
                        "inputs": {"image": ["1", 0], "upscale_method": "bicubic", "width": 20,
                                   "height": 0, "crop": "disabled"}}
    assert api["6"]["inputs"] == {"mask": ["1", 1]}  # LoadImage's second output
    assert api["5"]["inputs"] == {"images": ["4", 0], "filename_prefix": "small"}
    assert api["3"]["inputs"]["seed"] == 5 and api["3"]["inputs"]["fill"] == "noise"


def test_numeric_node_ids_are_kept(tmp_path):
    text = "nodes:\n  '7': {type: RectangleMask, links: {like: '3.image'}}\n" \
           "  '3': {type: LoadImage, params: {image: '@A@'}}\n" \
           "  '9': {type: SaveImage, links: {images: '10.image'}}\n" \
           "  '10': {type: MaskToImage, links: {mask: '7.mask'}}\n"
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    path = tmp_path / "n.yaml"
    path.write_text(text.replace("@A@", str(tmp_path / "a.png")))
    api = comfy.to_api(load(path))
    assert set(api) == {"3", "7", "9", "10"} and api["9"]["inputs"]["images"] == ["10", 0]


def test_run_of_exported_api_json_gives_the_same_pixels_as_the_yaml(wf, tmp_path, capsys):
    assert run(["export", "--comfy-api", wf, "--set", "width=18", "-o", tmp_path / "api.json"],
               capsys)[0] == 0
    code, out, _ = run(["run", wf, "--set", "width=18", "--out", tmp_path / "a", "--no-cache"],
                       capsys)
    assert code == 0
    code, out, _ = run(["run", tmp_path / "api.json", "--out", tmp_path / "b", "--no-cache"],
                       capsys)
    assert code == 0, out
    a, b = pixels(tmp_path / "a" / "small_00001_.png"), pixels(tmp_path / "b" / "small_00001_.png")
    assert a.shape == (11, 21, 3)  # 10x6 -> 18x11, then 3 columns of padding
    assert np.array_equal(a, b)


def test_api_json_mistakes_name_the_node_id_and_field(wf, tmp_path, capsys):
    api = comfy.to_api(load(wf))
    api["2"]["inputs"]["width"] = -5
    api["3"]["inputs"]["image"] = ["9", 0]
    api["4"]["inputs"]["images"] = ["3", 4]
    api["6"]["class_type"] = "ImageSharpen"  # ComfyUI's own, neither ours nor one we declare
    (tmp_path / "bad.json").write_text(json.dumps(api))
    code, _, err = run(["validate", tmp_path / "bad.json"], capsys)
    assert code == 2 and "Traceback" not in err
    lines = err.splitlines()
    assert any("node '6', field 'class_type'" in s and "'ImageSharpen' is not a node of this pack"
               in s for s in lines)
    assert any("node '3', field 'image'" in s and "node '9'" in s for s in lines)
    assert any("node '4', field 'images'" in s and "output 4" in s for s in lines)
    assert all(s.startswith(str(tmp_path / "bad.json")) for s in lines[:-1])
    api = comfy.to_api(load(wf))
    api["2"]["inputs"]["width"] = -5
    (tmp_path / "bad2.json").write_text(json.dumps(api))
    code, _, err = run(["validate", tmp_path / "bad2.json"], capsys)
    assert code == 2 and "node '2', field 'width'" in err and "minimum" in err


def test_api_strings_starting_with_dollar_stay_literal(wf, tmp_path):
    api = comfy.to_api(load(wf))
    api["5"]["inputs"]["filename_prefix"] = "$HOME"
    rs = comfy.load_api(api, file="x.json")
    assert rs.nodes["5"].params["filename_prefix"] == "$HOME"


def test_ui_workflow_and_broken_json_are_refused_with_exit_2(wf, tmp_path, capsys):
    (tmp_path / "ui.json").write_text(json.dumps(comfy.to_ui(load(wf))))
    code, _, err = run(["run", tmp_path / "ui.json"], capsys)
    assert code == 2 and "Export (API)" in err
    (tmp_path / "broken.json").write_text('{"1": {"class_type": ')
    code, _, err = run(["run", tmp_path / "broken.json"], capsys)
    assert code == 2 and "broken.json:1:" in err and "JSON" in err


def test_api_link_into_a_widget_is_a_located_error(wf):
    api = comfy.to_api(load(wf))
    api["3"]["inputs"]["seed"] = ["1", 0]
    with pytest.raises(UserError) as e:
        comfy.load_api(api, file="p.json")
    assert (e.value.node, e.value.field) == ("3", "seed") and "widget" in e.value.message


# --- UI format -----------------------------------------------------------------------------------

def test_ui_export_is_a_consistent_litegraph_document(wf):
    rs = load(wf)
    ui = comfy.to_ui(rs)
    assert ui["version"] == 0.4 and ui["groups"] == [] and ui["last_link_id"] == len(ui["links"])
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes)
    for link_id, src, src_slot, dst, dst_slot, typ in ui["links"]:
        assert link_id in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert nodes[src]["outputs"][src_slot]["type"] == typ == nodes[dst]["inputs"][dst_slot]["type"]
    linked = sum(len(o["links"]) for n in nodes.values() for o in n.get("outputs", []))
    assert linked == len(ui["links"]) == sum(len(rn.links) for rn in rs.nodes.values())
    for n in ui["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "properties"} <= set(n)
    api = comfy.to_api(rs)
    assert {str(n["id"]) for n in ui["nodes"] if n["type"] != "Note"} == set(api)


def test_widgets_values_follow_input_types_order_with_a_fixed_seed_control(wf):
    ui = comfy.to_ui(load(wf, {"width": "24"}))
    by_type = {n["type"]: n for n in ui["nodes"]}
    pad = by_type["unCLIP OutpaintBorder"]
    spec = declare.get("OutpaintBorder")
    widget_names = [n for n in declare.comfy_input_types(spec)["required"] if spec.param(n)]
    assert widget_names[-1] == "seed"
    assert pad["widgets_values"] == [3, 0, 0, 0, "noise", 0, 5, "fixed"]
    assert by_type["ImageScale"]["widgets_values"] == ["bicubic", 24, 0, "disabled"]
    assert by_type["InvertMask"]["widgets_values"] == []


def test_ui_layout_puts_columns_by_dag_layer_and_stacks_without_overlap(wf):
    rs = load(wf)
    ui = comfy.to_ui(rs)
    ids = comfy.node_ids(rs)
    pos = {nid: next(n for n in ui["nodes"] if n["id"] == int(cid)) for nid, cid in ids.items()}
    layer = comfy.layers(rs)
    assert layer == {"load": 0, "big": 1, "inv": 1, "pad": 2, "grid": 3, "save": 4}
    xs = {k: pos[k]["pos"][0] for k in pos}
    assert xs["load"] < xs["big"] == xs["inv"] < xs["pad"] < xs["grid"] < xs["save"]
    for a in pos:  # no two boxes (title bar included) overlap
        for b in pos:
            if a < b:
                (ax, ay), (aw, ah) = pos[a]["pos"], pos[a]["size"]
                (bx, by), (bw, bh) = pos[b]["pos"], pos[b]["size"]
                assert (ax + aw <= bx or bx + bw <= ax or ay + ah <= by - 30
                        or by + bh <= ay - 30), (a, b)
    note = next(n for n in ui["nodes"] if n["type"] == "Note")
    assert "Pad and grid a small image." in note["widgets_values"][0]
    assert "width = 16  (big.width)" in note["widgets_values"][0]


def test_export_cli_writes_stdout_or_file_and_notes_unsaved_outputs(wf, tmp_path, capsys):
    code, out, err = run(["export", "--comfy-ui", wf], capsys)
    assert code == 0 and json.loads(out)["version"] == 0.4
    assert "output mask (inv.mask) is not saved" in err and "image (grid.image)" not in err
    code, _, _ = run(["export", "--comfy-api", wf, "-o", tmp_path / "sub" / "api.json"], capsys)
    assert code == 0 and comfy.is_api(json.loads((tmp_path / "sub" / "api.json").read_text()))
    code, _, err = run(["export", "--comfy-api", wf, "-o", tmp_path], capsys)
    assert code == 2 and "is a folder" in err
    with pytest.raises(SystemExit) as e:  # a format is required (argparse's usage error)
        main(["export", str(wf)])
    assert e.value.code == 2 and "--comfy-api" in capsys.readouterr().err


# --- PNG metadata --------------------------------------------------------------------------------

def test_headless_saveimage_writes_comfys_chunks_and_ours(wf, tmp_path):
    rs = load(wf, {"width": "14"})
    execute(rs, out_dir=tmp_path / "o", cache=Cache.off(), metadata=comfy.png_metadata)
    with Image.open(tmp_path / "o" / "small_00001_.png") as img:
        text = dict(img.text)
    assert set(text) == {"prompt", "workflow", "unclip_workflow", "unclip_inputs",
                         "unclip_workflow_file"}
    assert text["unclip_workflow_file"] == str(wf.resolve())
    assert json.loads(text["prompt"]) == comfy.to_api(rs)
    assert json.loads(text["workflow"]) == comfy.to_ui(rs)
    assert text["unclip_workflow"] == wf.read_text()
    assert json.loads(text["unclip_inputs"]) == {"width": 14, "label": "small"}


def test_run_png_reruns_its_workflow_with_the_stored_inputs(wf, tmp_path, capsys):
    assert run(["run", wf, "--set", "width=14", "--set", "label=first", "--out", tmp_path / "a",
                "--no-cache"], capsys)[0] == 0
    first = tmp_path / "a" / "first_00001_.png"
    code, out, err = run(["run", first, "--out", tmp_path / "b", "--no-cache", "--trust-inputs"],
                         capsys)  # our own PNG: the input file it names may be read
    assert code == 0, err
    assert np.array_equal(pixels(first), pixels(tmp_path / "b" / "first_00001_.png"))
    code, _, _ = run(["run", first, "--set", "label=again", "--out", tmp_path / "b",
                      "--no-cache", "--trust-inputs"], capsys)  # --set wins over stored values
    assert code == 0 and (tmp_path / "b" / "again_00001_.png").exists()


def test_run_png_falls_back_to_the_api_prompt_chunk(wf, tmp_path, capsys):
    execute(load(wf), out_dir=tmp_path / "a", cache=Cache.off(), metadata=comfy.png_metadata)
    src = tmp_path / "a" / "small_00001_.png"
    with Image.open(src) as img:
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", img.text["prompt"])  # what ComfyUI's own SaveImage leaves
        img.save(tmp_path / "comfy.png", pnginfo=info)
    code, _, err = run(["run", tmp_path / "comfy.png", "--out", tmp_path / "b", "--no-cache"],
                       capsys)
    assert code == 0, err
    assert np.array_equal(pixels(src), pixels(tmp_path / "b" / "small_00001_.png"))


def test_png_without_a_workflow_or_with_a_broken_one_is_a_user_error(wf, tmp_path, capsys):
    Image.new("RGB", (3, 3)).save(tmp_path / "plain.png")
    code, _, err = run(["run", tmp_path / "plain.png"], capsys)
    assert code == 2 and "carries no workflow" in err
    info = PngImagePlugin.PngInfo()
    info.add_text("unclip_workflow", "nodes:\n  a: {type: Nope}\n")
    Image.new("RGB", (3, 3)).save(tmp_path / "bad.png", pnginfo=info)
    code, _, err = run(["validate", tmp_path / "bad.png"], capsys)
    assert code == 2 and f"{tmp_path / 'bad.png'}[unclip_workflow]:2:" in err
    assert "unknown node type 'Nope'" in err


def test_errors_from_a_converted_prompt_are_all_reported_together(wf):
    api = comfy.to_api(load(wf))
    api["1"]["class_type"] = "ImageSharpen"
    api["2"]["inputs"]["image"] = ["1", 0, 0]
    with pytest.raises(UserErrors) as e:
        comfy.api_to_mapping(api, "f.json")
    assert {(x.node, x.field) for x in e.value.errors} == {("1", "class_type"), ("2", "image")}


def test_sample_files_found_via_the_workflow_folder_export_as_absolute_paths(tmp_path,
                                                                            monkeypatch):
    """ComfyUI resolves relative paths from its own start folder, so a path that only the
    workflow's folder explains (a shipped workflow's sample image) is exported absolute."""
    (tmp_path / "wf" / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "wf" / "images" / "a.png")
    (tmp_path / "run").mkdir()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(tmp_path / "run" / "here.png")
    path = tmp_path / "wf" / "w.yaml"
    path.write_text("nodes:\n"
                    "  a: {type: LoadImage, params: {image: images/a.png}}\n"
                    "  b: {type: LoadImage, params: {image: here.png}}\n"
                    "  s: {type: SaveImage, links: {images: a.image}}\n")
    monkeypatch.chdir(tmp_path / "run")
    api = comfy.to_api(load(path))
    assert api["1"]["inputs"]["image"] == str((tmp_path / "wf" / "images" / "a.png").resolve())
    assert api["2"]["inputs"]["image"] == "here.png"  # found from the current folder: as written


def test_run_png_of_a_workflow_with_sample_files_works_from_elsewhere(tmp_path, monkeypatch,
                                                                      capsys):
    (tmp_path / "wf" / "images").mkdir(parents=True)
    Image.new("RGB", (5, 3), (200, 9, 9)).save(tmp_path / "wf" / "images" / "a.png")
    path = tmp_path / "wf" / "w.yaml"
    path.write_text("nodes:\n  a: {type: LoadImage, params: {image: images/a.png}}\n"
                    "  s: {type: SaveImage, links: {images: a.image}, params: {filename_prefix: p}}\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run(["run", path, "--out", "o", "--no-cache"], capsys)[0] == 0
    code, _, err = run(["run", "o/p_00001_.png", "--out", "o2", "--no-cache", "--trust-inputs"],
                       capsys)
    assert code == 0, err
    # once the workflow file has changed, the stored text is what runs; its sample file is then
    # looked for from the current folder only, and the message names the PNG's chunk
    path.write_text(path.read_text() + "# edited\n")
    code, _, err = run(["validate", "o/p_00001_.png"], capsys)
    assert code == 2 and "o/p_00001_.png[unclip_workflow]:2:" in err and "no such file" in err
