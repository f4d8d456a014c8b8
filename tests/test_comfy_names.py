"""ComfyUI's naming conventions, with the old names still working.

LoadImage's file widget is ``image`` (the name ComfyUI's mask editor writes back to),
CLIPTextEncode's prompt is ``text``, savers take ``filename_prefix`` with ``%date:...%``;
display names are words.  Workflows, API prompts and Python callers written with the old
names keep loading, and give the same result.
"""
from __future__ import annotations

import json
import time

import pytest
import torch

from unclip_nodes.graph import comfy
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import NODE_DISPLAY_NAME_MAPPINGS, declare
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.image import expand_prefix

OLD = """
nodes:
  load: {type: LoadImage, params: {path: PIC}}
  model: {type: LoadUnCLIP, params: {path: pocket}}
  text: {type: CLIPTextEncode, links: {clip: model.clip_text}, params: {prompt: a red circle}}
  save: {type: SaveImage, links: {images: load.image}, params: {prefix: old}}
"""


@pytest.fixture
def picture(tmp_path):
    from PIL import Image
    path = tmp_path / "pic.png"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)
    return path


def test_a_workflow_with_the_old_field_names_loads_under_the_new_ones(tmp_path, picture):
    path = tmp_path / "old.yaml"
    path.write_text(OLD.replace("PIC", str(picture)))
    rs = load(path)
    assert rs.nodes["load"].params == {"image": str(picture)}
    assert rs.nodes["text"].params == {"text": "a red circle"}
    assert rs.nodes["save"].params == {"filename_prefix": "old"}
    new = tmp_path / "new.yaml"
    new.write_text(OLD.replace("PIC", str(picture)).replace("{path: " + str(picture), "{image: "
                   + str(picture)).replace("prompt:", "text:").replace("prefix:",
                                                                         "filename_prefix:"))
    assert comfy.to_api(load(new)) == comfy.to_api(rs)  # the same prompt, new names only


def test_old_and_new_name_together_is_refused_naming_both(tmp_path, picture):
    path = tmp_path / "both.yaml"
    path.write_text(OLD.replace("PIC", str(picture)).replace("{prefix: old}",
                                                             "{prefix: old, filename_prefix: x}"))
    with pytest.raises(UserError) as e:
        load(path)
    assert "node 'save', field 'filename_prefix'" in str(e.value)
    assert "'prefix' is the old name of 'filename_prefix': give only 'filename_prefix'" \
        in str(e.value)


def test_an_api_prompt_exported_before_the_renames_still_runs(tmp_path, picture):
    old_api = {"1": {"class_type": "unCLIP LoadImage", "inputs": {"path": str(picture)}},
               "2": {"class_type": "unCLIP SaveImage",
                     "inputs": {"images": ["1", 0], "prefix": "again"}}}
    rs = comfy.load_api(json.loads(json.dumps(old_api)))
    assert rs.nodes["1"].params["image"] == str(picture)
    assert rs.nodes["2"].params["filename_prefix"] == "again"


def test_python_callers_with_old_keywords_get_the_same_values(picture):
    spec = declare.get("LoadImage")
    old, _ = spec.call(path=str(picture))
    new, _ = spec.call(image=str(picture))
    assert torch.equal(old, new)


def test_date_codes_in_a_filename_prefix_become_the_date():
    t = time.mktime((2026, 3, 4, 5, 6, 7, 0, 0, -1))
    assert expand_prefix("runs/%date:yyyy-MM-dd%/cat", t) == "runs/2026-03-04/cat"
    assert expand_prefix("%date:hhmmss%_%date%", t) == "050607_2026-03-04"
    assert expand_prefix("%date:yy%_100%", t) == "26_100%"
    assert expand_prefix("plain%name%", t) == "plain%name%"  # other codes are left as written


def test_a_saver_writes_where_the_date_prefix_says(tmp_path):
    from unclip_nodes.nodes import runtime
    host = runtime.Host(output_dir=tmp_path)
    with runtime.use_host(host):
        (path,) = declare.get("SaveImage").call(images=torch.rand(1, 2, 2, 3),
                                                filename_prefix="%date:yyyy%/shot")
    assert path.startswith(str(tmp_path / time.strftime("%Y") / "shot_"))


def test_display_names_are_words_with_the_packs_name_first():
    names = set(NODE_DISPLAY_NAME_MAPPINGS.values())
    assert {"unCLIP Load Image", "unCLIP Text Encode", "unCLIP Load Prior", "unCLIP DDIM Invert",
            "unCLIP Load Checkpoint", "unCLIP Decoder"} <= names
    assert not [n for n in names if not n.startswith("unCLIP ")
                or any(w[:1].isupper() and w[1:].islower() is False and w.isalpha()
                       and w not in ("CLIP", "DDIM", "PCA", "unCLIP") and not w.isupper()
                       for w in n.split())]


def test_every_socket_type_of_ours_has_a_colour_in_the_front_end_extension():
    import re
    from pathlib import Path

    import unclip_nodes
    from unclip_nodes.nodes.types import SOCKET_COLORS, SOCKET_TYPES
    ours = {t for t in SOCKET_TYPES if t.startswith("UNCLIP_")}
    assert set(SOCKET_COLORS) == ours
    js = (Path(unclip_nodes.__file__).parent / unclip_nodes.WEB_DIRECTORY / "unclip.js").read_text()
    assert dict(re.findall(r"(UNCLIP_\w+): \"(#[0-9A-F]{6})\"", js)) == SOCKET_COLORS
