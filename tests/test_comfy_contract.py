"""The pack as ComfyUI sees it, without ComfyUI.

The pack is imported the way ComfyUI 0.3.x imports a custom-node folder (spec_from_file_location on
custom_nodes/unclip-nodes/__init__.py under a name derived from the path, in a fresh process where
``unclip_nodes`` cannot be imported and ComfyUI's own top-level modules ``nodes``, ``utils``, ...
are taken), and its classes are checked against ComfyUI's V1 contract.  Exported API JSON is
validated by a model of ComfyUI's validator (comfy_validator.py).  Progress, interruption and the
PNG chunks are checked against stand-ins for ComfyUI's modules.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from comfy_validator import validate_prompt, with_core
from stages_util import tiny_checkpoint  # noqa: F401  (fixture)
from unclip_nodes.graph import comfy, preset
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import declare, runtime

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "workflows"
COMFY_SHARED_TYPES = {"IMAGE", "MASK", "STRING", "INT", "FLOAT", "BOOLEAN", "CLIP_VISION_OUTPUT"}
PRESET = "unCLIP preset:"
OPTION_KEYS = {"default", "min", "max", "step", "multiline", "tooltip", "forceInput"}

IMPORT_AS_COMFY = textwrap.dedent(r"""
    import importlib.util, json, os, sys, types

    class NoAbsoluteImport:
        def find_spec(self, name, path=None, target=None):
            if name == "unclip_nodes" or name.startswith("unclip_nodes."):
                raise ImportError("the pack imported itself as unclip_nodes")

    sys.meta_path.insert(0, NoAbsoluteImport())
    for taken in ("nodes", "utils", "graph", "server", "execution"):  # ComfyUI's own modules
        sys.modules[taken] = types.ModuleType(taken)

    def load(folder, name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    folder = sys.argv[1]
    out = {}
    for name in (folder.replace(".", "_x_"), os.path.basename(folder)):  # 0.3.x; older releases
        m = load(folder, name)
        info = {}
        for key, cls in m.NODE_CLASS_MAPPINGS.items():
            info[key] = {
                "input_types": cls.INPUT_TYPES(), "return_types": list(cls.RETURN_TYPES),
                "return_names": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
                "output_tooltips": list(getattr(cls, "OUTPUT_TOOLTIPS", [])),
                "output_node": getattr(cls, "OUTPUT_NODE", False), "category": cls.CATEGORY,
                "description": getattr(cls, "DESCRIPTION", ""),
                "callable": callable(getattr(cls(), cls.FUNCTION, None)),
                "display_name": m.NODE_DISPLAY_NAME_MAPPINGS.get(key),
                "deprecated": bool(getattr(cls, "DEPRECATED", False))}
        out[name] = info
    out["modules"] = sorted(k for k in sys.modules if "unclip" in k and "editable" not in k)
    json.dump(out, sys.stdout)
""")


def pack_specs() -> list[declare.NodeSpec]:
    """The node declarations of the pack's own modules (not those of the tests' helper nodes)."""
    specs = [s for s in declare.REGISTRY.values() if s.fn.__module__.startswith("unclip_nodes.")]
    assert len(specs) > 20, "the pack's nodes are not registered"
    return specs


@pytest.fixture(scope="module")
def comfy_import(tmp_path_factory):
    """The pack's classes as a fresh ComfyUI-like process sees them (keyed by module name)."""
    root = tmp_path_factory.mktemp("comfy")
    folder = root / "custom_nodes" / "unclip-nodes"
    folder.parent.mkdir()
    folder.symlink_to(REPO, target_is_directory=True)
    mine = root / "my_presets"  # a user's preset folder: one usable preset, one broken
    mine.mkdir()
    (mine / "shrink.yaml").write_text(textwrap.dedent("""
        description: Shrink images.
        inputs:
          image: {type: IMAGE}
          width: {type: INT, default: 8}
        nodes:
          resize: {type: ResizeImage, links: {image: $image}, params: {width: $width, height: 0}}
        outputs:
          image: resize.image
        """))
    (mine / "broken.yaml").write_text("nodes: [oops\n")
    env = {k: v for k, v in os.environ.items() if k != "UNCLIP_PRESETS"}
    proc = subprocess.run([sys.executable, "-c", IMPORT_AS_COMFY, str(folder)], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**env, "UNCLIP_PRESETS": str(mine)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    data["stderr"] = proc.stderr
    return folder, data


@pytest.fixture(scope="module")
def object_info(comfy_import):
    folder, data = comfy_import
    return data[str(folder).replace(".", "_x_")]


def test_pack_imports_under_path_derived_names_with_relative_imports_only(comfy_import):
    folder, data = comfy_import
    path_name, short_name = str(folder).replace(".", "_x_"), "unclip-nodes"
    assert set(data[path_name]) == set(data[short_name])
    nodes = {k for k, v in data[path_name].items()
             if not k.startswith(PRESET) and not v["deprecated"]}
    assert nodes == {declare.comfy_id(s.type) for s in pack_specs()  # no test node is in the pack
                     if s.replaced_by is None}  # nor ours that ComfyUI has (GrowMask...)
    old = {k for k, v in data[path_name].items() if v["deprecated"]}  # kept for saved graphs
    assert old == {declare.comfy_id(s.type) for s in pack_specs() if s.replaced_by} | {
        declare.comfy_id(t) for t in declare.TYPE_ALIASES}
    assert not any(m.startswith("unclip_nodes") for m in data["modules"])
    assert all(m.startswith((path_name, short_name)) for m in data["modules"])


def test_every_class_id_display_name_and_category_is_ours(object_info):
    for key, cls in object_info.items():
        if key.startswith(PRESET):
            assert cls["display_name"] == "unCLIP preset " + key[len(PRESET):]
            assert preset.find_preset(key[len(PRESET):]) or key == PRESET + "shrink"
            assert cls["category"] == "unCLIP/presets"
        elif cls["deprecated"]:
            assert cls["display_name"].startswith("unCLIP ") and \
                cls["display_name"].endswith(" (old)")
            assert cls["description"].startswith("Kept so that graphs saved with it still load")
        else:
            assert key.startswith("unCLIP ") and declare.get(key[len("unCLIP "):]) is not None
            assert cls["display_name"] == declare.display_name(declare.get(key[len("unCLIP "):]))
            assert cls["display_name"].startswith("unCLIP ") and " " in cls["display_name"][7:] \
                or cls["display_name"].count(" ") == 1  # words, as ComfyUI's own names
        assert cls["category"].startswith("unCLIP/"), key
        assert cls["description"].strip(), key
        assert cls["callable"], key


def test_input_types_have_comfy_shapes(object_info):
    for key, cls in object_info.items():
        types_ = cls["input_types"]
        assert set(types_) <= {"required", "optional", "hidden"}, key
        for section in ("required", "optional"):
            for name, spec in types_.get(section, {}).items():
                assert isinstance(spec, list) and len(spec) in (1, 2), (key, name)
                assert isinstance(spec[0], str) or (
                    isinstance(spec[0], list) and spec[0]
                    and all(isinstance(c, str) for c in spec[0])), (key, name)
                if len(spec) == 2:
                    assert set(spec[1]) <= OPTION_KEYS, (key, name, spec[1])
        if cls["output_node"]:  # under other names where a preset has a 'prompt' widget
            assert sorted(set(types_["hidden"].values()) - {"UNCLIP_PROBLEM"}) == [
                "EXTRA_PNGINFO", "PROMPT"]
            assert not set(types_["hidden"]) & set(types_["required"])
        assert len(cls["return_names"]) == len(cls["return_types"])
        assert len(cls["output_tooltips"]) == len(cls["return_types"])


def test_every_parameter_has_a_tooltip(object_info):
    """Each widget says what it does; ComfyUI shows the "tooltip" option of INPUT_TYPES (and
    OUTPUT_TOOLTIPS for outputs), so the declared tooltips of widgets and sockets must get there."""
    specs = pack_specs()
    missing = [f"{s.type}.{p.name}" for s in specs for p in s.params if not p.tooltip.strip()]
    assert not missing, "parameters without a tooltip: " + ", ".join(missing)
    for spec in [s for s in specs if s.replaced_by is None]:  # the others are not in ComfyUI
        cls = object_info[declare.comfy_id(spec.type)]
        types_ = cls["input_types"]
        for p in spec.params:
            assert types_["required"][p.name][1].get("tooltip") == p.tooltip, (spec.type, p.name)
        for s in spec.inputs:
            entry = types_["optional" if s.optional else "required"][s.name]
            opts = entry[1] if len(entry) > 1 else {}
            assert opts.get("tooltip", "") == s.tooltip, (spec.type, s.name)
        assert cls["output_tooltips"] == [o.tooltip for o in spec.outputs], spec.type


def test_every_widget_default_lies_within_its_range_and_choices(object_info):
    checked = 0
    for key, cls in object_info.items():
        for section in ("required", "optional"):
            for name, spec in cls["input_types"].get(section, {}).items():
                typ, opts = spec[0], (spec[1] if len(spec) > 1 else {})
                if isinstance(typ, list):
                    assert opts.get("default", typ[0]) in typ, (key, name)
                elif typ in ("INT", "FLOAT") and not opts.get("forceInput"):
                    d = opts["default"]
                    assert opts["min"] <= d <= opts["max"], (key, name, opts)
                    assert opts["step"] > 0
                    if typ == "INT":
                        assert isinstance(d, int) and not isinstance(d, bool), (key, name)
                elif typ == "BOOLEAN":
                    assert isinstance(opts["default"], bool), (key, name)
                elif typ == "STRING" and not opts.get("forceInput"):
                    assert isinstance(opts["default"], str), (key, name)
                else:
                    continue
                checked += 1
    assert checked > 40


def test_seeds_take_comfys_full_seed_range(object_info):
    seeds = [(k, s[1]) for k, c in object_info.items()
             for s_name, s in c["input_types"]["required"].items() if s_name == "seed"]
    assert len(seeds) >= 3
    for key, opts in seeds:
        assert (opts["min"], opts["max"]) == (0, 0xFFFFFFFFFFFFFFFF), key


def test_model_handles_and_embeddings_have_their_own_socket_types(object_info):
    """Only ComfyUI's IMAGE/MASK, primitives and CLIP_VISION_OUTPUT (nodes/clipvision.py converts
    it on purpose) are shared; everything else is UNCLIP_*, so a
    ComfyUI MODEL or CONDITIONING can never be plugged into our nodes (or ours into theirs)."""
    seen = set()
    for cls in object_info.values():
        seen |= set(cls["return_types"])
        for section in ("required", "optional"):
            seen |= {s[0] for s in cls["input_types"].get(section, {}).values()
                     if isinstance(s[0], str)}
    ours = seen - COMFY_SHARED_TYPES
    assert ours and all(t.startswith("UNCLIP_") for t in ours), ours
    assert {"IMAGE", "MASK"} <= seen


def test_every_preset_with_inputs_and_outputs_is_a_node_and_a_broken_one_is_left_out(
        object_info, comfy_import):
    presets = {k[len(PRESET):] for k in object_info if k.startswith(PRESET)}
    assert presets == {"shrink", *preset.list_presets()}  # the shipped ones and the user's
    shrink = object_info[PRESET + "shrink"]
    assert shrink["input_types"] == {"required": {
        "image": ["IMAGE"],
        "width": ["INT", {"default": 8, "min": 0, "max": 16384, "step": 1}]}}
    assert (shrink["return_types"], shrink["return_names"], shrink["output_node"]) == (
        ["IMAGE"], ["image"], False)
    up = object_info[PRESET + "upscale"]
    assert up["input_types"]["required"]["image"][0] == "IMAGE"
    assert up["input_types"]["required"]["model"][1]["default"] == "pocket"
    assert up["return_types"] == ["IMAGE"]
    assert "unclip-nodes: preset 'broken' is left out of ComfyUI: " in comfy_import[1]["stderr"]
    assert "Traceback" not in comfy_import[1]["stderr"]


def test_prompt_with_a_preset_node_passes_comfys_validation(object_info):
    prompt = {"1": {"class_type": "unCLIP LoadImage", "inputs": {"image": "x.png"}},
              "2": {"class_type": PRESET + "shrink", "inputs": {"image": ["1", 0], "width": 4}},
              "3": {"class_type": PRESET + "upscale", "inputs": {
                  "image": ["2", 0], "model": "pocket", "steps": 7, "seed": 2}},
              "4": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["3", 0],
                                                                 "filename_prefix": "up"}}}
    assert validate_prompt(prompt, object_info) == {}
    prompt["3"]["inputs"]["image"] = ["1", 1]  # the MASK
    assert [e["type"] for e in validate_prompt(prompt, object_info)["3"]] == [
        "return_type_mismatch"]


# --- exported API JSON, validated as ComfyUI would ---------------------------------------------

def image_workflow(tmp_path: Path) -> Path:
    img = Image.new("RGBA", (12, 8), (200, 40, 10, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.save(tmp_path / "in.png")
    wf = tmp_path / "wf.yaml"
    wf.write_text(textwrap.dedent(f"""
        description: Small image workflow.
        inputs:
          width: {{type: INT, default: 16}}
        nodes:
          load: {{type: LoadImage, params: {{image: "{tmp_path / 'in.png'}"}}}}
          big: {{type: ResizeImage, links: {{image: load.image}}, params: {{width: $width, height: 0}}}}
          pad: {{type: OutpaintPad, links: {{image: big.image}}, params: {{left: 2, seed: 5}}}}
          inv: {{type: InvertMask, links: {{mask: load.mask}}}}
          show: {{type: MaskToImage, links: {{mask: inv.mask}}}}
          grid: {{type: ImageGrid, links: {{images: pad.image}}}}
          save: {{type: SaveImage, links: {{images: grid.image}}, params: {{filename_prefix: small}}}}
          save2: {{type: SaveImage, links: {{images: show.image}}, params: {{filename_prefix: mask}}}}
        """).lstrip())
    return wf


def test_exported_image_workflow_passes_comfys_validation(object_info, tmp_path):
    api = comfy.to_api(load(image_workflow(tmp_path), {"width": 20}))
    assert validate_prompt(api, with_core(object_info, api)) == {}
    big = next(n for n in api.values() if n["class_type"] == "ImageScale")  # ComfyUI's own
    assert big["inputs"]["width"] == 20  # the workflow input, --set honoured, as a literal


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.yaml")))
def test_shipped_workflows_export_to_prompts_comfy_accepts(name, object_info, tiny_checkpoint,
                                                           tmp_path):
    path = WORKFLOWS / f"{name}.yaml"
    api = comfy.to_api(load(path, shipped_workflow_sets(path, tiny_checkpoint, tmp_path)))
    assert validate_prompt(api, with_core(object_info, api)) == {}


def shipped_workflow_sets(path: Path, checkpoint: Path, tmp_path: Path) -> dict:
    """--set values that make a shipped workflow valid here: the tiny checkpoint as model, and a
    small real image for each input without a default (an image to start from)."""
    from unclip_nodes.graph.workflow import MISSING, read
    wf, _ = read(path)
    out = {}
    for name, wi in wf.inputs.items():
        if name == "model":
            out[name] = str(checkpoint)
        elif wi.default is MISSING and wi.type == "STRING":
            Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / f"{name}.png")
            out[name] = str(tmp_path / f"{name}.png")
    return out


def test_validator_model_reports_what_comfy_reports(object_info, tmp_path):
    """The validator is only worth its passes if it fails where ComfyUI fails."""
    good = comfy.to_api(load(image_workflow(tmp_path)))
    ids = {n["_meta"]["title"]: k for k, n in good.items()}

    def broken(node, name, value=None, drop=False):
        api = json.loads(json.dumps(good))
        if drop:
            del api[ids[node]]["inputs"][name]
        else:
            api[ids[node]]["inputs"][name] = value
        errs = validate_prompt(api, with_core(object_info, api))
        return [e["type"] for e in errs.get(ids[node], [])]

    assert broken("big", "width", 10**9) == ["value_bigger_than_max"]
    assert broken("big", "width", -1) == ["value_smaller_than_min"]
    assert broken("big", "upscale_method", "sinc") == ["value_not_in_list"]
    assert broken("big", "image", drop=True) == ["required_input_missing"]
    assert broken("big", "image", [ids["load"], 1]) == ["return_type_mismatch"]  # MASK
    assert broken("big", "image", [ids["load"], 5]) == ["linked_output_missing"]
    assert broken("big", "width", "wide") == ["invalid_input_type"]
    no_saver = {k: v for k, v in good.items() if v["class_type"] != "unCLIP SaveImage"}
    assert validate_prompt(no_saver, with_core(object_info, no_saver)) == {"": [{"type": "prompt_no_outputs",
                                                            "details": ""}]}


# --- ComfyUI's services, with stand-ins for its modules -------------------------------------------

class FakeInterrupt(Exception):
    """Stands for comfy.model_management.InterruptProcessingException."""


@pytest.fixture
def fake_comfy(monkeypatch, tmp_path):
    """Minimal stand-ins for the ComfyUI modules runtime.comfy_host uses."""
    state = types.SimpleNamespace(bars=[], interrupt=False, out=tmp_path / "comfy_out",
                                  disable_metadata=False)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.updates = []
            state.bars.append((total, self.updates))

        def update_absolute(self, value, total=None, preview=None):
            self.updates.append((value, total))

    def throw_exception_if_processing_interrupted():
        if state.interrupt:
            state.interrupt = False
            raise FakeInterrupt()

    comfy_pkg = types.ModuleType("comfy")
    comfy_pkg.__path__ = []
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.InterruptProcessingException = FakeInterrupt
    cli_args = types.ModuleType("comfy.cli_args")
    cli_args.args = state  # reads state.disable_metadata
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_output_directory = lambda: str(state.out)
    comfy_pkg.utils, comfy_pkg.model_management, comfy_pkg.cli_args = utils, mm, cli_args
    for name, mod in {"comfy": comfy_pkg, "comfy.utils": utils, "comfy.model_management": mm,
                      "comfy.cli_args": cli_args, "folder_paths": folder_paths}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return state


@pytest.fixture
def stepping_node():
    """A node whose function runs a runtime.steps loop (the sampling loops' progress hook)."""
    name = "ComfyContractSteps"
    if declare.get(name) is None:
        @declare.node(name, category="test/comfy", description="Count steps.",
                      params=[declare.Param("steps", "INT", default=5, min=1, max=50)],
                      outputs=[declare.Output("done", "INT")])
        def count(steps: int):
            done = 0
            for _ in runtime.steps(steps, "counting"):
                done += 1
            return done
    return declare.comfy_class(declare.get(name))


def test_sampling_progress_reaches_comfys_progress_bar(fake_comfy, stepping_node):
    assert stepping_node().run(steps=4) == (4,)
    assert fake_comfy.bars == [(4, [(1, 4), (2, 4), (3, 4), (4, 4)])]


def test_comfys_interrupt_stops_a_sampling_loop_with_its_own_exception(fake_comfy, stepping_node):
    fake_comfy.interrupt = True
    with pytest.raises(FakeInterrupt):
        stepping_node().run(steps=4)
    assert fake_comfy.bars[0][1] == []  # stopped before the first step finished


def test_saveimage_under_comfy_writes_prompt_and_workflow_chunks_like_comfys_own(fake_comfy):
    cls = declare.comfy_class(declare.get("SaveImage"))
    prompt = {"1": {"class_type": "unCLIP SaveImage", "inputs": {"prefix": "x"}}}
    extra = {"workflow": {"nodes": [], "links": [], "version": 0.4}}
    out = cls().run(images=torch.full((2, 3, 4, 3), 0.5), prefix="x", prompt=prompt,
                    extra_pnginfo=extra)
    files = [fake_comfy.out / i["filename"] for i in out["ui"]["images"]]
    assert [f.name for f in files] == ["x_00001_.png", "x_00002_.png"]
    assert out["result"] == ("\n".join(str(f.resolve()) for f in files),)
    with Image.open(files[0]) as img:
        assert img.text == {"prompt": json.dumps(prompt), "workflow": json.dumps(extra["workflow"])}


def test_saveimage_under_comfy_honours_disable_metadata(fake_comfy):
    fake_comfy.disable_metadata = True
    cls = declare.comfy_class(declare.get("SaveImage"))
    out = cls().run(images=torch.zeros(1, 2, 2, 3), prefix="y", prompt={"1": {}},
                    extra_pnginfo={"workflow": {}})
    with Image.open(fake_comfy.out / out["ui"]["images"][0]["filename"]) as img:
        assert img.text == {}


def test_images_from_comfys_loadimage_flow_through_our_nodes(fake_comfy):
    """ComfyUI's LoadImage gives float32 [1, H, W, 3] and a MASK of 1 - alpha; our nodes take them
    as they are (same conventions), and our LoadImage gives the same tensors for the same file."""
    import numpy as np
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[0, 0, 3] = 0
    image = torch.from_numpy(rgba[..., :3].astype(np.float32) / 255.0)[None]
    mask = 1.0 - torch.from_numpy(rgba[..., 3].astype(np.float32) / 255.0)[None]  # as ComfyUI
    resized, = declare.comfy_class(declare.get("ResizeImage"))().run(
        image=image, width=10, height=12, upscale_method="nearest", crop="none")
    assert resized.shape == (1, 12, 10, 3) and resized.dtype == torch.float32
    grown, = declare.comfy_class(declare.get("GrowMask"))().run(mask=mask, expand=1)
    assert grown.shape == mask.shape and grown[0, 1, 1] == 1.0 and grown[0, 5, 4] == 0.0
    Image.fromarray(rgba).save(fake_comfy.out.parent / "rgba.png")
    ours_image, ours_mask = declare.comfy_class(declare.get("LoadImage"))().run(
        path=str(fake_comfy.out.parent / "rgba.png"))
    assert torch.equal(ours_image, image) and torch.equal(ours_mask, mask)


def test_a_widget_named_prompt_reaches_the_node_not_comfys_hidden_prompt(fake_comfy):
    """ComfyUI passes hidden inputs as keywords too; only output nodes declare them, so a node's
    own 'prompt' parameter (CLIPTextEncode's) must arrive as the node's value."""
    name = "ComfyContractPrompt"
    if declare.get(name) is None:
        @declare.node(name, category="test/comfy", description="Echo a prompt.",
                      params=[declare.Param("prompt", "STRING", default="")],
                      outputs=[declare.Output("text", "STRING")])
        def echo(prompt: str):
            return prompt
    cls = declare.comfy_class(declare.get(name))
    assert cls.INPUT_TYPES()["hidden"] == {declare.PROBLEM: "UNCLIP_PROBLEM"}  # ComfyUI's: none
    assert cls().run(prompt="a red circle") == ("a red circle",)


def test_an_output_node_cannot_name_a_field_like_comfys_hidden_inputs():
    spec = declare.NodeSpec(type="ComfyContractBadSaver", fn=lambda prompt: None, category="x",
                            description="x", params=(declare.Param("prompt", "STRING", ""),),
                            output_node=True)
    with pytest.raises(TypeError, match="hidden input"):
        declare.comfy_class(spec)
