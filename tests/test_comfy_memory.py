"""Inside ComfyUI our components go through ComfyUI's memory management: ComfyUI frees room before
one loads, counts it (load_models_gpu) every time it is used, unloads it when asked (/free), and
picks the dtype for 'auto'.  Tested against a model of comfy.model_management (no ComfyUI here)."""
from __future__ import annotations

import sys
import types
import weakref

import pytest
import torch

from kandinsky_util import tiny_kandinsky  # noqa: F401
from unclip_nodes.nodes import clip, decoder, loaders, prior, runtime
from unclip_nodes.nodes.core import constants
from unclip_nodes.nodes.declare import REGISTRY
from unclip_nodes.nodes.core.manager import MANAGER


class FakeComfy:
    """What our code uses of ComfyUI's model management, with its semantics: a list of loaded
    ModelPatchers, most recent first; unloading detaches a patcher (weights to its offload
    device)."""

    def __init__(self, dtype=torch.float32):
        self.loaded: list = []
        self.calls: list[tuple] = []
        self.dtype = dtype
        fake = self

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0):
                self.model, self.load_device, self.offload_device = model, load_device, \
                    offload_device

            def detach(self, unpatch_all=True):
                fake.calls.append(("detach", unpatch_all))
                self.model.to(self.offload_device)
                return self.model

            def __del__(self):  # as ComfyUI's: a collected patcher detaches, not unpatching
                self.detach(unpatch_all=False)

        mm = types.ModuleType("comfy.model_management")
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.unet_dtype = lambda device=None, **kw: fake.dtype
        mm.throw_exception_if_processing_interrupted = lambda: None

        def free_memory(memory_required, device, keep_loaded=()):
            fake.calls.append(("free_memory", memory_required, device.type))

        def cleanup_models():  # ComfyUI's finalizer: forget models that were collected
            fake.loaded[:] = [m for m in fake.loaded if m() is not None]

        def load_models_gpu(models, memory_required=0, force_full_load=False, **kw):
            for m in models:
                fake.calls.append(("load_models_gpu", m))
                known = [ref for ref in fake.loaded if ref() is m]
                for ref in known:  # ComfyUI re-registers a patcher it holds: detach, no unpatch
                    fake.loaded.remove(ref)
                    m.detach(unpatch_all=False)
                ref = weakref.ref(m)
                fake.loaded.insert(0, ref)
                weakref.finalize(m.model, cleanup_models)
                m.model.to(m.load_device)

        def unload_all_models():
            for i in range(len(fake.loaded) - 1, -1, -1):  # as free_memory: by index
                fake.loaded[i]().detach(unpatch_all=True)
            fake.loaded.clear()

        mm.free_memory, mm.load_models_gpu = free_memory, load_models_gpu
        mm.unload_all_models = unload_all_models
        patcher = types.ModuleType("comfy.model_patcher")
        patcher.ModelPatcher = ModelPatcher
        utils = types.ModuleType("comfy.utils")

        class ProgressBar:
            def __init__(self, total):
                pass

            def update_absolute(self, done, total):
                pass

        utils.ProgressBar = ProgressBar
        comfy = types.ModuleType("comfy")
        comfy.model_management, comfy.model_patcher, comfy.utils = mm, patcher, utils
        folder_paths = types.ModuleType("folder_paths")
        folder_paths.get_output_directory = lambda: "/tmp/unclip-fake-comfy-output"
        self.modules = {"comfy": comfy, "comfy.model_management": mm,
                        "comfy.model_patcher": patcher, "comfy.utils": utils,
                        "folder_paths": folder_paths}
        self.mm = mm


@pytest.fixture
def comfy(monkeypatch):
    fake = FakeComfy()
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(runtime, "_COMFY_MEMORY", [])
    # the zero-image embedding is a constant of the checkpoint: unless it is computed afresh, the CLIP
    # vision tower never runs (nor goes through ComfyUI) once any earlier test computed it
    monkeypatch.setattr(constants, "_KEPT", {})
    loaders.clear_model_cache()
    yield fake
    loaders.clear_model_cache()


def load(root, dtype="auto"):
    return REGISTRY["LoadUnCLIP"].fn(path=str(root / "decoder"), prior_path=str(root / "prior"),
                                     device="auto", dtype=dtype, allow_pickle=False)


def text_to_image(root):
    clip_text, _, pri, dec, _ = load(root)
    text = clip.clip_text_encode(clip_text, "a red cat")
    z = prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=1, candidates=1)
    return decoder.decoder_node(dec, z, None, steps=2, guidance_scale=4.0, seed=1,
                                images_per_embedding=1)


def test_each_use_of_a_component_goes_through_comfyuis_load_models_gpu(comfy, tiny_kandinsky):
    with runtime.comfy_host():
        assert runtime.host().memory is not None
        text_to_image(tiny_kandinsky)
        registered = {type(ref().model.inner).__name__ for ref in comfy.loaded}
        assert {"CLIPTextModelWithProjection", "PriorTransformer", "UNet2DConditionModel",
                "VQModel", "CLIPVisionModelWithProjection"} <= registered
        uses = sum(1 for c in comfy.calls if c[0] == "load_models_gpu")
        text_to_image(tiny_kandinsky)   # loaded already: ComfyUI is asked again, nothing reads
    assert sum(1 for c in comfy.calls if c[0] == "load_models_gpu") > uses


def test_comfyui_unloading_our_models_frees_them_and_they_load_again(comfy, tiny_kandinsky):
    with runtime.comfy_host():
        first = text_to_image(tiny_kandinsky)
        held = len(MANAGER._entries)
        comfy.mm.unload_all_models()     # what /free with unload_models does
        assert len(MANAGER._entries) == held     # dropped on our next use, not inside its loop
        runtime.comfy_memory().settle(MANAGER.forget)
        assert len(MANAGER._entries) < held
        assert ("unloaded", "decoder/unet") in MANAGER.events
        start = len(loaders.LOADED)
        again = text_to_image(tiny_kandinsky)
    assert len(loaders.LOADED) > start   # read from disk again
    assert torch.equal(first, again)


def test_reusing_a_component_keeps_it_loaded_in_both_caches(comfy, tiny_kandinsky):
    """ComfyUI detaches (without unpatching) a patcher it is asked to load again; that is no
    unload, and nothing is read again."""
    with runtime.comfy_host():
        text_to_image(tiny_kandinsky)
        start, loaded, events = len(loaders.LOADED), len(comfy.loaded), len(MANAGER.events)
        text_to_image(tiny_kandinsky)
    assert ("detach", False) in comfy.calls
    assert len(loaders.LOADED) == start and len(comfy.loaded) == loaded
    assert not any(what == "unloaded" for what, _ in MANAGER.events[events:])


def test_comfyui_frees_room_on_its_device_before_a_component_loads(comfy):
    memory = runtime.comfy_memory()
    memory.before_load(123456, torch.device("cuda"))
    memory.before_load(999, torch.device("cpu"))   # ComfyUI does not manage RAM this way
    assert comfy.calls == [("free_memory", 123456, "cuda")]


def test_dtype_auto_is_comfyuis_choice_inside_comfyui_and_float32_headless(comfy,
                                                                          tiny_kandinsky):
    comfy.dtype = torch.bfloat16
    with runtime.comfy_host():
        assert load(tiny_kandinsky)[3].dtype == torch.bfloat16
        assert load(tiny_kandinsky, "fp32")[3].dtype == torch.float32   # a node overrides it
    assert load(tiny_kandinsky)[3].dtype == torch.float32
