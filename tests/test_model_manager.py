"""The model manager: byte budgets per device, least recently used out first, GPU components
offloaded to RAM before anything is dropped, referenced components left alone, changed files
replacing their old copy, and identical results whatever the budget."""
from __future__ import annotations

import shutil

import pytest
import torch

from kandinsky_util import load_text_to_image, tiny_kandinsky  # noqa: F401
from unclip_nodes.nodes import clip, decoder, loaders, prior
from unclip_nodes.nodes.core.checkpoint import estimate_bytes
from unclip_nodes.nodes.core.manager import MANAGER, ModelManager, module_bytes, parse_bytes


class Weights(torch.nn.Module):
    """A stand-in component of a known size whose device moves are recorded."""

    def __init__(self, n: int):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n // 4), requires_grad=False)
        self.moves: list[str] = []

    def to(self, device, *args, **kw):
        self.moves.append(torch.device(device).type)
        return self  # stays in RAM: the test machine has no GPU


def put(m: ModelManager, name: str, device: str, n: int):
    dev = torch.device(device)
    key = (name, device)
    return m.get(key, key, dev, lambda: Weights(n), n, name=name)


@pytest.fixture
def budgeted():
    """The process-wide manager with budgets, restored afterwards."""
    saved = dict(MANAGER._budgets)
    yield MANAGER
    MANAGER._budgets.clear()
    MANAGER._budgets.update(saved)


def test_sizes_are_read_as_people_write_them():
    assert parse_bytes("12GB") == 12 * 10 ** 9
    assert parse_bytes("500 MiB") == 500 * 2 ** 20
    assert parse_bytes("8g") == 8 * 10 ** 9 and parse_bytes("1e9") == 10 ** 9
    with pytest.raises(ValueError, match="expected a size"):
        parse_bytes("12XB")


def test_least_recently_used_cpu_components_are_dropped_to_fit_the_budget():
    m = ModelManager()
    m.set_budgets(ram=10_000)
    put(m, "a", "cpu", 4000)
    put(m, "b", "cpu", 4000)
    put(m, "a", "cpu", 4000)           # a is now the most recently used
    put(m, "c", "cpu", 4000)           # does not fit: b goes, not a
    assert list(m.resident()) == ["a", "c"]
    assert ("drop", "b") in m.events and m.used("cpu") == 8000


def test_gpu_components_go_to_ram_before_ram_components_are_dropped():
    m = ModelManager()
    m.set_budgets(ram=10_000, vram=6000)
    put(m, "a", "cuda", 4000)
    put(m, "b", "cuda", 4000)          # no room on the GPU: a moves to RAM
    assert m.resident() == {"a": "cpu", "b": "cuda"}
    assert ("offload", "a") in m.events
    again = put(m, "a", "cuda", 4000)  # back to the GPU; b makes room
    assert again.moves == ["cpu", "cuda"]
    assert m.resident() == {"b": "cpu", "a": "cuda"}
    assert ("reload", "a") in m.events


def test_a_component_still_in_use_is_never_moved_or_dropped():
    m = ModelManager()
    m.set_budgets(ram=5000)
    held = put(m, "a", "cpu", 4000)    # like a loop still running with it
    put(m, "b", "cpu", 4000)
    assert set(m.resident()) == {"a", "b"} and ("over-budget", "cpu") in m.events
    del held
    m.set_budgets(ram=5000)            # the next fit can drop it
    assert list(m.resident()) == ["b"]


def test_free_gives_everything_back_that_nothing_holds():
    m = ModelManager()
    put(m, "a", "cpu", 1000)
    kept = put(m, "b", "cpu", 1000)
    m.free()
    assert list(m.resident()) == ["b"] and kept is not None


def test_estimate_from_safetensors_headers_matches_the_loaded_size(tiny_kandinsky):
    h = load_text_to_image(tiny_kandinsky)
    folder = tiny_kandinsky / "decoder" / "unet"
    assert estimate_bytes(folder, torch.float32) == module_bytes(h[3].unet)
    assert estimate_bytes(folder, torch.float16) == module_bytes(h[3].unet) // 2


def kandinsky_image(root, seed=0):
    clip_text, _, pri, dec, _ = load_text_to_image(root)
    text = clip.clip_text_encode(clip_text, "a red cat")
    z = prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=seed, candidates=1)
    return decoder.decoder_node(dec, z, None, steps=2, guidance_scale=4.0, seed=seed,
                                images_per_embedding=1)


def test_a_tight_budget_reloads_components_and_gives_the_same_image(tiny_kandinsky, budgeted):
    loaders.clear_model_cache()
    free = kandinsky_image(tiny_kandinsky)
    largest = max(module_bytes(obj) for obj in [e.obj for e in MANAGER._entries.values()])
    loaders.clear_model_cache()
    budgeted.set_budgets(ram=largest)  # one component at a time
    start, events = len(loaders.LOADED), len(budgeted.events)
    tight = kandinsky_image(tiny_kandinsky)
    assert torch.equal(free, tight)
    # the UNet is still held by the decoding loop while the MoVQ loads, so the budget is
    # exceeded during the last stage; once the stage is over it fits again
    budgeted.settle()
    assert budgeted.used("cpu") <= largest
    dropped = [name for what, name in budgeted.events[events:] if what == "drop"]
    assert dropped, "nothing had to make room"
    again = len(loaders.LOADED)
    kandinsky_image(tiny_kandinsky)     # everything but the last stage was dropped: read again
    assert len(loaders.LOADED) > again > start


def test_a_changed_weight_file_replaces_the_old_copy(tiny_kandinsky, tmp_path):
    root = tmp_path / "k22"
    shutil.copytree(tiny_kandinsky, root)
    from unclip_nodes.nodes.declare import REGISTRY
    load = lambda: REGISTRY["LoadUnCLIPDecoder"].fn(  # noqa: E731
        path=str(root / "decoder"), device="cpu", dtype="fp32", allow_pickle=False)
    first = load().movq
    n = len(MANAGER.events)
    weights = root / "decoder" / "movq" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same bytes, new mtime: a new file to us
    second = load().movq
    assert second is not first
    assert ("replaced", "decoder/movq") in MANAGER.events[n:]
    assert all(e.obj is not first for e in MANAGER._entries.values())  # the old copy is gone


def test_clearing_the_model_cache_also_forgets_the_empty_prompt_encoding():
    """Memoised per checkpoint, it may sit on the GPU: /free (clear_model_cache) must drop it."""
    handles = loaders.load_unclip("pocket", "cpu", "fp32", False)
    dec = next(h for h in handles if hasattr(h, "empty_text"))
    first = dec.empty_text(1)
    assert dec.empty_text(1) is first  # memoised
    loaders.clear_model_cache()
    again = dec.empty_text(1)
    assert again is not first
    assert torch.equal(again.text_embeds, first.text_embeds)
