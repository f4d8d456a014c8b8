"""Limits on what a workflow file can ask for: checked before any work, each saying how to
raise it."""
import io
import struct
import time
import zlib
from types import SimpleNamespace

import enginenodes  # noqa: F401  -- registers the Test* node types
import numpy as np
import pytest
import torch
from PIL import Image

from unclip_nodes.graph import load
from unclip_nodes.graph.sweep import plan_sweep
from unclip_nodes.nodes import clip as clip_nodes
from unclip_nodes.nodes.core import text as text_core
from unclip_nodes.nodes import image as image_nodes
from unclip_nodes.nodes.declare import REGISTRY
from unclip_nodes.nodes.errors import UserError

WF = """
inputs:
  seed: {type: INT, default: 0}
  label: {type: STRING, default: x}
nodes:
  noise: {type: TestNoise, params: {seed: $seed}}
  save: {type: TestSave, links: {image: noise.image}, params: {prefix: $label}}
"""


def test_sweep_over_the_combination_limit_says_how_to_raise_it(write_workflow, monkeypatch):
    path = write_workflow(WF)
    monkeypatch.setenv("UNCLIP_MAX_COMBINATIONS", "8")
    with pytest.raises(UserError) as e:
        plan_sweep(path, ["seed=0..2", "label=a,b,c"])
    assert e.value.message == (
        "the sweep makes 9 combinations (split it, or pair lists with --zip), more than the "
        "limit of 8; to allow it, set UNCLIP_MAX_COMBINATIONS=9 (or --max-combinations=9)")
    assert len(plan_sweep(path, ["seed=0..2", "label=a,b,c"],
                          max_combinations=9).combinations) == 9
    monkeypatch.setenv("UNCLIP_MAX_COMBINATIONS", "9")
    assert len(plan_sweep(path, ["seed=0..2", "label=a,b,c"]).combinations) == 9


def test_zipped_sweep_is_limited_too(write_workflow):
    with pytest.raises(UserError, match=r"makes 5 combinations \(split it\), more than the "
                                        r"limit of 4"):
        plan_sweep(write_workflow(WF), ["seed=0,1,2,3,4", "label=a,b,c,d,e"], zip=True,
                   max_combinations=4)


def test_bad_limit_in_the_environment_is_a_user_error(write_workflow, monkeypatch):
    monkeypatch.setenv("UNCLIP_MAX_COMBINATIONS", "lots")
    with pytest.raises(UserError, match="UNCLIP_MAX_COMBINATIONS='lots': give a whole number"):
        plan_sweep(write_workflow(WF), ["seed=0,1"])


def test_duplicate_check_of_a_50000_line_sweep_file_is_quick(write_workflow, tmp_path):
    lines = [f"prompt number {i}" for i in range(50_000)] + ["prompt number 7"]
    (tmp_path / "many.txt").write_text("\n".join(lines))
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="'prompt number 7' given more than once"):
        plan_sweep(write_workflow(WF), [f"label=@{tmp_path / 'many.txt'}"])
    (tmp_path / "many.txt").write_text("\n".join(lines[:-1]))
    with pytest.raises(UserError, match="makes 50,000 combinations"):
        plan_sweep(write_workflow(WF), [f"label=@{tmp_path / 'many.txt'}"])
    assert time.perf_counter() - t0 < 5  # the quadratic check took about 30 s for one


def test_workflow_with_more_nodes_than_the_limit_is_refused(write_workflow, monkeypatch):
    extra = "".join(f"  n{i}: {{type: TestNoise}}\n" for i in range(4))
    path = write_workflow(WF + extra)
    monkeypatch.setenv("UNCLIP_MAX_NODES", "5")
    with pytest.raises(UserError) as e:
        load(path)
    assert e.value.file == str(path)
    assert e.value.message == ("the workflow has 6 nodes (presets expanded), more than the "
                               "limit of 5; to allow it, set UNCLIP_MAX_NODES=6")
    monkeypatch.setenv("UNCLIP_MAX_NODES", "6")
    assert len(load(path).nodes) == 6


def test_node_limit_counts_the_nodes_presets_expand_to(write_workflow, monkeypatch):
    write_workflow("""
    nodes:
      a: {type: TestNoise}
      b: {type: TestScale, links: {image: a.image}}
    outputs:
      image: b.image
    """, "pair.yaml")
    path = write_workflow("""
    nodes:
      one: {type: "preset:pair.yaml"}
      two: {type: "preset:pair.yaml"}
      save: {type: TestSave, links: {image: two.image}}
    """)
    monkeypatch.setenv("UNCLIP_MAX_NODES", "4")
    with pytest.raises(UserError, match="has 5 nodes .presets expanded.*UNCLIP_MAX_NODES=5"):
        load(path)


def test_workflow_file_larger_than_the_limit_is_refused_before_reading(write_workflow,
                                                                       monkeypatch):
    path = write_workflow(WF + "# padding\n" * 20)
    size = path.stat().st_size
    monkeypatch.setenv("UNCLIP_MAX_FILE_BYTES", str(size - 1))
    with pytest.raises(UserError) as e:
        load(path)
    assert e.value.message == (f"workflow file {path} has {size:,} bytes, more than the limit "
                               f"of {size - 1:,}; to allow it, set UNCLIP_MAX_FILE_BYTES={size}")
    monkeypatch.setenv("UNCLIP_MAX_FILE_BYTES", str(size))
    load(path)


def test_sweep_value_file_larger_than_the_limit_is_refused(write_workflow, tmp_path,
                                                           monkeypatch):
    (tmp_path / "v.txt").write_text("a\nb\n" * 100)
    monkeypatch.setenv("UNCLIP_MAX_FILE_BYTES", "100")
    with pytest.raises(UserError, match=r"--sweep label=@.*v.txt: value file .*v.txt has 400 "
                                        r"bytes, more than the limit of 100; to allow it, set "
                                        r"UNCLIP_MAX_FILE_BYTES=400"):
        plan_sweep(write_workflow(WF), [f"label=@{tmp_path / 'v.txt'}"])


# --- images -------------------------------------------------------------------------------------

IMAGE_WF = """
nodes:
  img: {type: LoadImage, params: {image: PATH}}
  save: {type: TestSave, links: {image: img.image}}
"""


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(path)
    return path


def test_image_over_the_pixel_limit_is_refused_at_validation(write_workflow, picture,
                                                             monkeypatch):
    decoded = []
    monkeypatch.setattr(image_nodes, "pil_to_tensor", lambda img: decoded.append(img))
    monkeypatch.setenv("UNCLIP_MAX_IMAGE_PIXELS", "11999")
    with pytest.raises(UserError) as e:
        load(write_workflow(IMAGE_WF.replace("PATH", str(picture))))
    assert (e.value.node, e.value.field) == ("img", "path")
    assert e.value.message == (f"{picture} is too large to load: 120 x 100 = 12,000 pixels, "
                               "more than the limit of 11,999; to allow it, set "
                               "UNCLIP_MAX_IMAGE_PIXELS=12000")
    assert decoded == []


def test_raised_pixel_limit_is_not_overruled_by_pillows_own(write_workflow, picture,
                                                            monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over twice this
    monkeypatch.setenv("UNCLIP_MAX_IMAGE_PIXELS", "12000")
    (image, _), = [REGISTRY["LoadImage"].call(path=str(picture))]
    assert image.shape == (1, 100, 120, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (its pixel data is a 1 x 1 image's)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's fields, then its CRC
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_default_pixel_limit_is_pillows_threshold(tmp_path, monkeypatch):
    """Without UNCLIP_MAX_IMAGE_PIXELS, LoadImage refuses a header one pixel row past Pillow's
    decompression-bomb threshold (89,478,485 px) before decoding, and not one exactly at it."""
    monkeypatch.delenv("UNCLIP_MAX_IMAGE_PIXELS", raising=False)
    at, over = tmp_path / "at.png", tmp_path / "over.png"
    at.write_bytes(_png_header(5, 17_895_697))     # 89,478,485 pixels
    over.write_bytes(_png_header(5, 17_895_698))   # 89,478,490 pixels
    with pytest.raises(UserError) as e:
        REGISTRY["LoadImage"].call(path=str(over))
    assert "too large to load" in e.value.message and "limit of 89,478,485" in e.value.message
    with pytest.raises(UserError) as e:  # past the size check: its pixel data is not there
        REGISTRY["LoadImage"].call(path=str(at))
    assert "too large" not in e.value.message and e.value.field == "path"


# --- prompts ------------------------------------------------------------------------------------

def test_too_many_prompt_lines_are_refused_before_anything_runs(monkeypatch):
    monkeypatch.setenv("UNCLIP_MAX_PROMPTS", "4")
    spec = REGISTRY["CLIPTextEncode"]
    spec.check({"prompt": "a\nb\n\nc\nd\n"})  # blank lines are no prompts
    with pytest.raises(UserError) as e:
        spec.check({"prompt": "a\nb\nc\nd\ne"})
    assert e.value.field == "prompt"
    assert e.value.message == ("5 prompt lines in one node (each is a batch entry), more than "
                               "the limit of 4; to allow it, set UNCLIP_MAX_PROMPTS=5")


def test_prompts_encoded_in_chunks_equal_one_batch(monkeypatch):
    from unclip_nodes.nodes.tiny import WORDS, build_tiny_components
    parts = build_tiny_components(image_variation=False)
    clip = SimpleNamespace(tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
                           device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    prompts = [" ".join(rng.choice(WORDS, size=1 + i % 5)) for i in range(11)]
    calls = []
    encoder = clip.text_encoder
    clip.text_encoder = lambda ids: calls.append(len(ids)) or encoder(ids)
    monkeypatch.setattr(text_core, "ENCODE_CHUNK", 4)
    chunked = clip_nodes.encode_prompts(clip, prompts)
    assert calls == [4, 4, 3, 4, 4, 3]  # never more than a chunk at once
    monkeypatch.setattr(text_core, "ENCODE_CHUNK", 1000)
    whole = clip_nodes.encode_prompts(clip, prompts)
    for name in ("text_embeds", "hidden_states", "uncond_text_embeds", "uncond_hidden_states"):
        a, b = getattr(chunked, name), getattr(whole, name)
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-6, name
    assert torch.equal(chunked.attention_mask, whole.attention_mask)
    assert torch.equal(chunked.uncond_attention_mask, whole.uncond_attention_mask)


def test_an_image_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path)
    size = path.stat().st_size
    monkeypatch.setenv("UNCLIP_MAX_IMAGE_FILE_BYTES", str(size - 1))
    read = []
    monkeypatch.setattr(type(path), "read_bytes", lambda self: read.append(self) or b"")
    with pytest.raises(UserError) as e:
        image_nodes.load_image(str(path))
    assert e.value.field == "path" and not read
    assert f"{path} is {size:,} bytes, too big for an image file" in e.value.message
    assert f"UNCLIP_MAX_IMAGE_FILE_BYTES={size}" in e.value.message
    monkeypatch.undo()
    monkeypatch.setenv("UNCLIP_MAX_IMAGE_FILE_BYTES", str(size))
    assert image_nodes.load_image(str(path))[0].shape == (1, 64, 64, 3)
