"""The example workflows for ComfyUI's template browser stay in sync with the shipped YAML, have
their thumbnails, and name their sample images so that ComfyUI finds them."""
from __future__ import annotations

import json

from PIL import Image

from test_comfy_contract import comfy_import, object_info  # noqa: F401  (fixtures)
from unclip_nodes.graph import examples
from unclip_nodes.nodes import runtime
from unclip_nodes.nodes.image import PACK_DIR, resolve_input_path


def test_committed_example_workflows_equal_a_fresh_export(tmp_path):
    written = examples.write_examples(tmp_path)
    assert [p.name for p in written] == [f"{n}.json" for n in examples.TEMPLATES]
    for path in written:
        committed = examples.FOLDER / path.name
        assert committed.read_text(encoding="utf-8") == path.read_text(encoding="utf-8"), (
            f"{committed} is out of date: run python -m unclip_nodes.graph.examples")


def test_every_example_has_a_jpeg_thumbnail_and_the_folder_holds_nothing_else():
    expected = {f"{n}.{ext}" for n in examples.TEMPLATES for ext in ("json", "jpg")}
    assert {p.name for p in examples.FOLDER.iterdir()} == expected
    for name in examples.TEMPLATES:
        with Image.open(examples.FOLDER / f"{name}.jpg") as img:
            assert img.format == "JPEG" and min(img.size) >= examples.PREVIEW_SIDE


def test_examples_name_sample_images_relative_to_the_pack_and_comfy_finds_them(tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # ComfyUI's start folder: not the pack, and no workflow folder
    seen = 0
    for name in examples.TEMPLATES:
        text = (examples.FOLDER / f"{name}.json").read_text(encoding="utf-8")
        assert str(PACK_DIR) not in text
        doc = json.loads(text)
        for n in doc["nodes"]:
            if n["type"] != "unCLIP LoadImage":
                continue
            (path,) = n["widgets_values"]
            assert path.startswith("workflows/images/")
            with runtime.use_base_dir(None):
                assert resolve_input_path(path) == (PACK_DIR / path).resolve()
            assert (PACK_DIR / path).is_file()
            seen += 1
    assert seen >= 5


def test_examples_command_rejects_a_workflow_that_is_not_shipped(tmp_path, capsys):
    assert examples.main(["--folder", str(tmp_path), "no_such_workflow"]) == 2
    assert "no template 'no_such_workflow'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_kandinsky_templates_are_wired_for_that_family():
    """No text into the decoder (Kandinsky 2.2's reads only image embeddings), no Upsample
    (it has none), and the model names ComfyUI's models/unclip drop-down lists."""
    for name, (_, sets) in examples.MODEL_TEMPLATES.items():
        if not name.startswith("kandinsky_2_2_"):
            continue
        doc = json.loads((examples.FOLDER / f"{name}.json").read_text(encoding="utf-8"))
        types = [n["type"] for n in doc["nodes"]]
        assert "unCLIP Upsample" not in types
        for n in doc["nodes"]:
            if n["type"] in ("unCLIP Decoder", "unCLIP Inpaint"):
                linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
                assert "text" not in linked and "upsampler" not in linked, name
            if n["type"] == "unCLIP LoadUnCLIP":
                assert n["widgets_values"][:2] == [sets["decoder"], sets["prior"]]


def test_interop_templates_mix_our_nodes_with_comfyuis_and_pass_its_validation(object_info):
    """The templates that join ComfyUI's graph: our prior into its native unCLIP checkpoints,
    its CLIPVisionEncode into our decoder; ComfyUI's validation (modelled) accepts their
    prompts as the front end would make them."""
    from comfy_validator import validate_prompt, with_core
    from unclip_nodes.graph import comfy
    from unclip_nodes.graph.validate import load
    wanted = {"karlo_prior_to_sd21_unclip": {"unCLIPConditioning", "KSampler",
                                             "unCLIP ImageEmbedsToClipVision"},
              "kandinsky_prior_to_sdxl_revision": {"unCLIPConditioning",
                                                   "unCLIP ImageEmbedsToClipVision"},
              "clip_vision_encode_to_decoder": {"CLIPVisionEncode",
                                                "unCLIP ClipVisionToImageEmbeds"}}
    for name, types in wanted.items():
        doc = json.loads((examples.FOLDER / f"{name}.json").read_text(encoding="utf-8"))
        assert types <= {n["type"] for n in doc["nodes"]}, name
        workflow, sets = examples.MODEL_TEMPLATES[name]
        with examples._stand_in_models():
            api = comfy.to_api(load(examples.WORKFLOWS / f"{workflow}.yaml", sets))
        assert validate_prompt(api, with_core(object_info, api)) == {}, name
