"""A node declaration yields both the executor's schema and ComfyUI's V1 class attributes."""
import enginenodes  # noqa: F401  -- registers the Test* node types
import pytest

from unclip_nodes.nodes import declare
from unclip_nodes.nodes.declare import comfy_class, comfy_id


def test_declaration_gives_comfy_input_types_with_widgets_and_optional_sockets():
    cls = comfy_class(declare.get("TestAdd"))
    assert cls.INPUT_TYPES() == {"required": {"a": ("IMAGE",)}, "optional": {"b": ("IMAGE",)},
                                 "hidden": {declare.PROBLEM: "UNCLIP_PROBLEM"}}
    noise = comfy_class(declare.get("TestNoise")).INPUT_TYPES()["required"]
    assert noise["size"] == ("INT", {"default": 4, "min": 1, "max": 64, "step": 1})
    assert noise["channels"] == (["rgb", "gray"], {"default": "rgb"})


def test_declaration_gives_comfy_return_types_names_function_category_description():
    spec = declare.get("TestAdd")
    cls = comfy_class(spec)
    assert cls.RETURN_TYPES == ("IMAGE", "FLOAT")
    assert cls.RETURN_NAMES == ("image", "total")
    assert cls.FUNCTION == "run" and callable(getattr(cls(), cls.FUNCTION))
    assert cls.CATEGORY == "test/engine"
    assert cls.DESCRIPTION == "Add two images (b optional)."
    assert cls.OUTPUT_NODE is False


def test_comfy_class_runs_the_declared_function():
    import torch
    cls = comfy_class(declare.get("TestAdd"))
    image, total = cls().run(a=torch.ones(1, 2, 2, 3))  # unlinked optional input -> None
    assert total == pytest.approx(12.0) and image.shape == (1, 2, 2, 3)


def test_output_node_and_uncacheable_node_are_marked_for_comfy():
    cls = comfy_class(declare.get("TestSave"))
    assert cls.OUTPUT_NODE is True
    assert "hidden" in cls.INPUT_TYPES()
    assert cls.IS_CHANGED() != cls.IS_CHANGED()  # NaN: ComfyUI re-runs it every time
    assert comfy_id("TestSave") == "unCLIP TestSave"


def test_schema_is_the_machine_view_of_the_declaration():
    schema = declare.get("TestNoise").schema()
    assert schema["type"] == "TestNoise" and schema["category"] == "test/engine"
    assert [p["name"] for p in schema["params"]] == ["seed", "size", "channels"]
    assert schema["outputs"] == [{"name": "image", "type": "IMAGE"}]
    assert schema["params"][2]["choices"] == ["rgb", "gray"]
