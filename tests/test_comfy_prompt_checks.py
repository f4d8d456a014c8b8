"""Inside ComfyUI: a prompt is checked as a whole before it starts, and LoadImage takes what
ComfyUI's mask editor writes back.

ComfyUI hands every prompt to ``on_prompt`` before its own node-by-node checks; what our
validation finds is written into the node's hidden ``unclip_problem`` input, and the node's
VALIDATE_INPUTS returns it, so ComfyUI refuses the prompt and names the node.  Tested against
models of ComfyUI's folder_paths and of its server's handler list.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from kandinsky_util import tiny_kandinsky  # noqa: F401  (fixture)
from unclip_nodes.graph import comfy_prompt
from unclip_nodes.nodes import NODE_CLASS_MAPPINGS, declare
from unclip_nodes.nodes.declare import PROBLEM


def prompt_k22_prior_into_pocket(k22: Path) -> dict:
    return {
        "1": {"class_type": "unCLIP LoadUnCLIP", "inputs": {"path": "pocket"}},
        "2": {"class_type": "unCLIP LoadUnCLIPPrior", "inputs": {"path": str(k22 / "prior")}},
        "3": {"class_type": "unCLIP LoadUnCLIPClipText",
              "inputs": {"path": str(k22 / "prior")}},
        "4": {"class_type": "unCLIP CLIPTextEncode", "inputs": {"clip": ["3", 0],
                                                                "text": "a red cat"}},
        "5": {"class_type": "unCLIP Prior", "inputs": {"prior": ["2", 0], "text": ["4", 0]}},
        "6": {"class_type": "unCLIP Decoder", "inputs": {"decoder": ["1", 3],
                                                         "image_embeds": ["5", 0]}},
        "7": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["6", 0]}},
    }


def test_another_familys_embedding_into_a_decoder_is_named_on_the_decoder(tiny_kandinsky):
    found = comfy_prompt.problems(prompt_k22_prior_into_pocket(tiny_kandinsky))
    assert list(found) == ["6"]
    msg = found["6"]
    assert msg.startswith("image_embeds: ")
    assert "Kandinsky" in msg and ("Karlo" in msg or "pocket" in msg), msg


def test_on_prompt_marks_the_node_and_validate_inputs_hands_comfyui_the_message(
        tiny_kandinsky):
    body = {"prompt": prompt_k22_prior_into_pocket(tiny_kandinsky), "client_id": "x"}
    out = comfy_prompt.on_prompt(body)
    assert out is body and out["client_id"] == "x"
    marked = {k for k, n in body["prompt"].items() if PROBLEM in n["inputs"]}
    assert marked == {"6"}
    decoder = NODE_CLASS_MAPPINGS["unCLIP Decoder"]
    message = body["prompt"]["6"]["inputs"][PROBLEM]
    assert decoder.VALIDATE_INPUTS(unclip_problem=message) == message
    assert decoder.VALIDATE_INPUTS() is True
    assert decoder.INPUT_TYPES()["hidden"] == {PROBLEM: PROBLEM.upper()}


def test_a_good_prompt_passes_unmarked_and_inputs_from_other_packs_count_as_unknown():
    prompt = {
        "1": {"class_type": "unCLIP LoadUnCLIP", "inputs": {"path": "pocket"}},
        "2": {"class_type": "SomePack ImageSource", "inputs": {}},
        "3": {"class_type": "unCLIP CLIPImageEncode", "inputs": {"clip_vision": ["1", 1],
                                                                  "image": ["2", 0]}},
        "4": {"class_type": "unCLIP Decoder", "inputs": {"decoder": ["1", 3],
                                                         "image_embeds": ["3", 0],
                                                         "steps": ["2", 1]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0],
                                                    "filename_prefix": "x"}},
    }
    assert comfy_prompt.problems(prompt) == {}
    prompt["4"]["inputs"]["guidance_scale"] = "lots"
    assert comfy_prompt.problems(prompt) == {"4": "guidance_scale: FLOAT parameter: expected a "
                                                  "number, got 'lots'"}


def test_on_prompt_brings_old_names_up_to_date():
    body = {"prompt": {"1": {"class_type": "unCLIP LoadImage", "inputs": {"path": "a.png"}},
                       "2": {"class_type": "unCLIP SaveImage",
                             "inputs": {"images": ["1", 0], "prefix": "old"}}}}
    comfy_prompt.current_names(body["prompt"])
    assert body["prompt"]["1"]["inputs"] == {"image": "a.png"}
    assert body["prompt"]["2"]["inputs"] == {"images": ["1", 0], "filename_prefix": "old"}


def test_on_prompt_never_breaks_a_prompt():
    weird = {"prompt": {"1": "not a node", "2": {"class_type": 5}}}
    assert comfy_prompt.on_prompt(weird) is weird
    assert comfy_prompt.on_prompt(None) is None


def test_the_handler_is_registered_with_comfyuis_server_once(monkeypatch):
    handlers = []
    server = types.ModuleType("server")
    server.PromptServer = type("PromptServer", (), {})
    server.PromptServer.instance = types.SimpleNamespace(add_on_prompt_handler=handlers.append)
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setattr(comfy_prompt, "_registered", False)
    assert comfy_prompt.register() and comfy_prompt.register()
    assert handlers == [comfy_prompt.on_prompt]


# --- the mask editor's results on our LoadImage -------------------------------------------------

def comfy_folders(base: Path) -> types.ModuleType:
    """ComfyUI's folder_paths as LoadImage uses it: ``name [input]`` / ``[output]`` / ``[temp]``
    pick the folder, a bare name is in the input folder."""
    fp = types.ModuleType("folder_paths")
    dirs = {"input": base / "input", "output": base / "output", "temp": base / "temp"}
    fp.get_input_directory = lambda: str(dirs["input"])
    fp.get_output_directory = lambda: str(dirs["output"])
    fp.get_temp_directory = lambda: str(dirs["temp"])
    fp.models_dir = str(base / "models")
    fp.folder_names_and_paths = {"unclip": ([str(base / "models" / "unclip")], set())}
    fp.add_model_folder_path = lambda *a, **k: None
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])

    def annotated(name: str) -> str:
        for kind, folder in dirs.items():
            tag = f" [{kind}]"
            if name.endswith(tag):
                return str(folder / name[:-len(tag)])
        return str(dirs["input"] / name)
    fp.get_annotated_filepath = annotated
    return fp


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch):
    for d in ("input/clipspace", "output", "temp", "models/unclip"):
        (tmp_path / d).mkdir(parents=True)
    monkeypatch.setitem(sys.modules, "folder_paths", comfy_folders(tmp_path))
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "input" / "red.png")
    painted = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    for x in range(4):
        for y in range(8):
            painted.putpixel((x, y), (255, 0, 0, 0))  # the left half painted: alpha 0
    painted.save(tmp_path / "input" / "clipspace" / "clipspace-mask-1.png")
    return tmp_path


def test_loadimage_takes_the_mask_editors_value_and_gives_its_painted_area_as_mask(comfy_dirs):
    cls = NODE_CLASS_MAPPINGS["unCLIP LoadImage"]
    value = "clipspace/clipspace-mask-1.png [input]"
    assert "image" in cls.INPUT_TYPES()["required"]  # the widget the mask editor writes to
    assert cls.VALIDATE_INPUTS(image=value) is True
    image, mask = cls().run(image=value)
    assert image.shape == (1, 8, 8, 3)
    assert mask[0, :, :4].eq(1).all() and mask[0, :, 4:].eq(0).all()  # 1 = painted = change


def test_loadimage_validation_refuses_missing_files_and_folders_outside_comfyui(comfy_dirs,
                                                                                tmp_path):
    cls = NODE_CLASS_MAPPINGS["unCLIP LoadImage"]
    assert "no such file" in cls.VALIDATE_INPUTS(image="clipspace/gone.png [input]")
    (tmp_path.parent / "secret.png").write_bytes((comfy_dirs / "input" / "red.png").read_bytes())
    assert "reads only from its input folder" in cls.VALIDATE_INPUTS(image="../secret.png")
    Image.new("RGB", (4, 4)).save(comfy_dirs / "output" / "made.png")
    assert cls.VALIDATE_INPUTS(image="made.png [output]") is True  # as ComfyUI's own LoadImage
    assert cls.VALIDATE_INPUTS(image="red.png", unclip_problem="x") == "x"


def test_only_the_upload_widget_named_image_gets_comfyuis_upload(comfy_dirs):
    uploads = [s for s in declare.REGISTRY.values()
               if any(p.comfy_upload for p in s.params)]
    assert [s.type for s in uploads] == ["LoadImage"]
    _, opts = NODE_CLASS_MAPPINGS["unCLIP LoadImage"].INPUT_TYPES()["required"]["image"]
    assert opts["image_upload"] is True
