"""ComfyUI runs every node under ``torch.inference_mode()``: our preset nodes (which run our
executor inside ComfyUI) work there, cache hits included, and so do the stage nodes that hand
cached values on."""
from __future__ import annotations

import pytest
import torch

from stages_util import tiny_checkpoint  # noqa: F401  (fixture)
from test_comfy_contract import fake_comfy  # noqa: F401  (fixture)
from unclip_nodes.graph.cache import MISS, CacheWarning, MemoryTier, versions
from unclip_nodes.graph.comfy_presets import preset_mappings


def test_preset_nodes_run_under_comfyuis_inference_mode(fake_comfy, tiny_checkpoint):
    up = preset_mappings()[0]["unCLIP preset:upscale"]
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        (first,) = up().run(image=image, model=str(tiny_checkpoint), steps=2, seed=3)
        (again,) = up().run(image=image, model=str(tiny_checkpoint), steps=2, seed=3)
    (outside,) = up().run(image=image, model=str(tiny_checkpoint), steps=2, seed=3)
    assert first.shape == (1, 64, 64, 3)
    assert torch.equal(first, again) and torch.equal(first, outside)


def test_inference_tensors_are_cached_and_served_without_version_counters():
    tier = MemoryTier()
    with torch.inference_mode():
        value = torch.ones(3)
        assert value.is_inference()
        tier.put("k", value)
        assert versions(value) == (-1,)
    assert torch.equal(tier.get("k"), torch.ones(3))
    plain = torch.ones(3)
    tier.put("p", plain)
    plain.add_(1)  # an ordinary tensor changed in place is never served again
    with pytest.warns(CacheWarning):
        assert tier.get("p") is MISS
