"""Presets as ComfyUI nodes ('unCLIP preset:<name>'), without ComfyUI: the derived class's
inputs and outputs, and that running it is running the preset with our executor."""
from __future__ import annotations

import logging
import math
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from stages_util import tiny_checkpoint  # noqa: F401  (fixture)
from test_comfy_contract import FakeInterrupt, fake_comfy  # noqa: F401  (fixture)
from unclip_nodes.graph import Cache, cli, run_workflow
from unclip_nodes.graph.comfy import load_api
from unclip_nodes.graph.run import execute
from unclip_nodes.graph.comfy_presets import preset_class, preset_mappings
from unclip_nodes.nodes.declare import SEED_MAX
from unclip_nodes.nodes.image import load_image, to_uint8

SHRINK = """
description: Shrink images (a preset with an IMAGE socket and value widgets).
inputs:
  image: {type: IMAGE, description: The images.}
  width: {type: INT, default: 8, description: Target width.}
  method: {type: STRING, default: nearest}
  scale: {type: FLOAT, default: 1.0}
nodes:
  resize:
    type: ResizeImage
    links: {image: $image}
    params: {width: $width, height: 0, method: $method}
outputs:
  image: resize.image
"""

UPSCALE_AND_SAVE = """
description: The shipped upscale preset, and a saver.
inputs:
  image: {type: IMAGE}
  model: {type: STRING, default: pocket}
nodes:
  up: {type: "preset:upscale", links: {image: $image}, params: {model: $model, steps: 2, seed: 3}}
  save: {type: SaveImage, links: {images: up.image}, params: {filename_prefix: up}}
outputs:
  image: up.image
"""


def write(folder, **docs):
    folder.mkdir(exist_ok=True)
    for name, text in docs.items():
        (folder / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip())
    return folder


def picture(path, size=(12, 10)):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_preset_class_has_widgets_sockets_and_outputs_of_the_presets_inputs(tmp_path):
    write(tmp_path, shrink=SHRINK)
    cls = preset_class("shrink", tmp_path / "shrink.yaml")
    types = cls.INPUT_TYPES()
    assert list(types) == ["required"]  # no savers: not an output node, no hidden inputs
    assert types["required"]["image"] == ("IMAGE", {"tooltip": "The images."})
    # the range, step and choices come from the parameters the inputs feed (ResizeImage's)
    assert types["required"]["width"] == ("INT", {"default": 8, "min": 0, "max": 16384,
                                                  "step": 1, "tooltip": "Target width."})
    choices, opts = types["required"]["method"]
    assert "nearest" in choices and "bicubic" in choices and opts == {"default": "nearest"}
    assert types["required"]["scale"] == ("FLOAT", {"default": 1.0, "min": -1e10, "max": 1e10,
                                                    "step": 0.01})  # feeds nothing: no range
    assert (cls.RETURN_TYPES, cls.RETURN_NAMES, cls.CATEGORY, cls.OUTPUT_NODE) == (
        ("IMAGE",), ("image",), "unCLIP/presets", False)
    assert cls.DESCRIPTION.startswith("Shrink images")


def test_preset_class_run_equals_running_the_preset(tmp_path, monkeypatch):
    write(tmp_path, shrink=SHRINK)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    image = torch.rand(2, 10, 12, 3, generator=torch.Generator().manual_seed(1))
    cls = preset_class("shrink", tmp_path / "shrink.yaml")
    (got,) = cls().run(image=image, width=6, method="bilinear", scale=2.0)
    want = run_workflow(tmp_path / "shrink.yaml", {"width": 6, "method": "bilinear"},
                        values={"image": image}, cache=Cache.off()).outputs["image"]
    assert got.shape == (2, 5, 6, 3) and torch.equal(got, want)
    assert not (tmp_path / "xdg").exists()  # the executor's cache is memory only in ComfyUI


def test_shipped_upscale_preset_node_equals_unclip_run_of_the_preset(
        tiny_checkpoint, tmp_path, fake_comfy, monkeypatch):  # noqa: F811
    """The node of a preset with a saver, run as ComfyUI would (host, hidden inputs), against
    `unclip run` of the same file with the image given as a file: same pixels, same PNG."""
    write(tmp_path, upsave=UPSCALE_AND_SAVE)
    png = picture(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "upsave.yaml", "--set", "image=in.png", "--set",
                     f"model={tiny_checkpoint}", "--no-cache", "--out", "cli_out"]) == 0
    cls = preset_class("upsave", tmp_path / "upsave.yaml")
    types = cls.INPUT_TYPES()
    assert cls.OUTPUT_NODE and types["hidden"] == {"prompt": "PROMPT",
                                                   "extra_pnginfo": "EXTRA_PNGINFO"}
    image, _ = load_image(str(png))  # what ComfyUI's Load Image gives too
    prompt = {"7": {"class_type": "unCLIP preset:upsave", "inputs": {}}}
    out = cls().run(image=image, model=str(tiny_checkpoint), prompt=prompt,
                    extra_pnginfo={"workflow": {"nodes": []}})
    (result,) = out["result"]
    assert result.shape == (1, 64, 64, 3)
    saved = fake_comfy.out / out["ui"]["images"][0]["filename"]
    with Image.open(tmp_path / "cli_out" / "up_00001_.png") as a, Image.open(saved) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.array_equal(np.asarray(b), to_uint8(result[0]))
        assert b.text["prompt"] == '{"7": {"class_type": "unCLIP preset:upsave", "inputs": {}}}'
    assert [total for total, _ in fake_comfy.bars] == [2]  # the upsampler's steps, in ComfyUI
    # the shipped preset's own node: same inner node, so its run is a memory hit
    up = preset_mappings()[0]["unCLIP preset:upscale"]
    assert up.INPUT_TYPES()["required"]["seed"][1]["max"] == SEED_MAX
    (again,) = up().run(image=image, model=str(tiny_checkpoint), steps=2, seed=3)
    assert torch.equal(again, result) and len(fake_comfy.bars) == 1


def test_comfys_cancel_stops_a_preset_node_with_comfys_exception(
        tmp_path, fake_comfy):  # noqa: F811
    write(tmp_path, shrink=SHRINK)
    cls = preset_class("shrink", tmp_path / "shrink.yaml")
    fake_comfy.interrupt = True
    with pytest.raises(FakeInterrupt):
        cls().run(image=torch.rand(1, 4, 4, 3), width=2, method="nearest", scale=1.0)


def test_preset_nodes_rerun_when_a_file_they_read_changes(tmp_path):
    write(tmp_path, shrink=SHRINK, saves="""
        inputs: {path: {type: STRING, default: in.png}}
        nodes:
          load: {type: LoadImage, params: {image: $path}}
          save: {type: SaveImage, links: {images: load.image}}
        outputs: {image: load.image}
        """, loads="""
        inputs: {path: {type: STRING}}
        nodes:
          load: {type: LoadImage, params: {image: $path}}
        outputs: {image: load.image}
        """)
    picture(tmp_path / "in.png")
    assert math.isnan(preset_class("saves", tmp_path / "saves.yaml").IS_CHANGED())
    loads = preset_class("loads", tmp_path / "loads.yaml")
    first = loads.IS_CHANGED(path=str(tmp_path / "in.png"))
    assert loads.IS_CHANGED(path=str(tmp_path / "in.png")) == first
    picture(tmp_path / "in.png", size=(5, 5))
    assert loads.IS_CHANGED(path=str(tmp_path / "in.png")) != first
    assert loads.IS_CHANGED(path=str(tmp_path / "nothere.png")).startswith("error: ")


def test_presets_that_do_not_load_are_left_out_with_a_warning(tmp_path, monkeypatch, caplog):
    write(tmp_path / "mine", shrink=SHRINK, broken="nodes: [oops\n", unknown="""
        inputs: {x: {type: INT, default: 1}}
        nodes: {n: {type: NoSuchNode}}
        outputs: {image: n.image}
        """, saver_only="""
        inputs: {path: {type: STRING, default: in.png}}
        nodes:
          load: {type: LoadImage, params: {image: $path}}
          save: {type: SaveImage, links: {images: load.image}}
        """)
    monkeypatch.setenv("UNCLIP_PRESETS", str(tmp_path / "mine"))
    with caplog.at_level(logging.WARNING):
        classes, names = preset_mappings()
    assert names["unCLIP preset:shrink"] == "unCLIP preset shrink"
    assert "unCLIP preset:upscale" in classes and "unCLIP preset:text_to_image" in classes
    assert not {"unCLIP preset:broken", "unCLIP preset:unknown",
                "unCLIP preset:saver_only"} & set(classes)  # the last has no outputs
    warned = sorted(r.getMessage() for r in caplog.records)
    assert len(warned) == 2
    assert warned[0].startswith("unclip-nodes: preset 'broken' is left out of ComfyUI: ")
    assert "YAML syntax error" in warned[0]
    assert warned[1].startswith("unclip-nodes: preset 'unknown' is left out of ComfyUI: ")
    assert "unknown node type 'NoSuchNode'" in warned[1]


def test_comfy_prompt_with_a_preset_node_runs_headless_as_that_preset(tmp_path, monkeypatch):
    """A prompt (or a PNG's prompt chunk) made in ComfyUI with a preset node is read back as a
    'preset:' node of our own format, so `unclip run` repeats it."""
    write(tmp_path / "mine", shrink=SHRINK)
    monkeypatch.setenv("UNCLIP_PRESETS", str(tmp_path / "mine"))
    png = picture(tmp_path / "in.png")
    api = {"1": {"class_type": "unCLIP LoadImage", "inputs": {"path": str(png)}},
           "2": {"class_type": "unCLIP preset:shrink",
                 "inputs": {"image": ["1", 0], "width": 6, "method": "area", "scale": 1.0}},
           "3": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["2", 0]}}}
    rs = load_api(api)
    assert rs.nodes["2/resize"].params["width"] == 6 and rs.nodes["2/resize"].links == {
        "image": ("1", "image")}
    ran = execute(rs, out_dir=tmp_path / "out", cache=Cache.off())
    cls = preset_class("shrink", tmp_path / "mine" / "shrink.yaml")
    (want,) = cls().run(image=load_image(str(png))[0], width=6, method="area", scale=1.0)
    with Image.open(ran.files[0]) as saved:
        assert np.array_equal(np.asarray(saved), to_uint8(want[0]))
    api["2"]["class_type"] = "unCLIP preset:shrnk"
    with pytest.raises(Exception, match=r"node '2', field 'class_type': unknown preset 'shrnk' "
                                        r"\(did you mean 'shrink'\?\)"):
        load_api(api)
