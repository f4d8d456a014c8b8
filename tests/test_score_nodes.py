"""CLIPScore and CLIPImageSimilarity: cosines in a checkpoint's own CLIP, checked against the towers
run directly from the checkpoint's folders (transformers' classes and image processor, not our
loaders or preprocessing), on the pocket model, a tiny Karlo and a tiny Kandinsky 2.2 checkpoint;
validation of a checkpoint without an image tower; and the scores a sweep reports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kandinsky_util import tiny_kandinsky  # noqa: F401  (fixture)
from stages_util import load, tiny_checkpoint  # noqa: F401  (fixture)
from unclip_nodes.nodes import score
from unclip_nodes.nodes.clip import clip_text_encode
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.pocket import world

POCKET = Path(__file__).resolve().parent.parent / "models" / "pocket"
PROMPTS = ["a red circle on a white background", "a blue square on a black background",
           "a yellow triangle on a grey background"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_scores(folder: Path, processor: str, images: np.ndarray, prompts: list[str]):
    """Cosines computed with transformers alone, from the checkpoint's folder: its image
    processor on 8-bit pictures, its projection towers, its tokenizer padded to max length."""
    from transformers import (CLIPImageProcessor, CLIPTextModelWithProjection, CLIPTokenizer,
                              CLIPVisionModelWithProjection)
    proc = CLIPImageProcessor.from_pretrained(folder / processor)
    vision = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").eval()
    text_model = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    pixels = proc(images=[Image.fromarray(im) for im in images], return_tensors="pt")
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    with torch.no_grad():
        z_i = vision(pixel_values=pixels.pixel_values).image_embeds.double()
        z_t = text_model(ids).text_embeds.double()
    z_i, z_t = (torch.nn.functional.normalize(z, dim=-1) for z in (z_i, z_t))
    return z_i, z_t


def as_image(uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8.astype(np.float32) / 255.0)


def pictures(size: int, n: int = 3, seed: int = 0) -> np.ndarray:
    """World pictures whose captions are PROMPTS, at ``size`` px, 8 bits."""
    labels = [("red", "circle", "white"), ("blue", "square", "black"),
              ("yellow", "triangle", "grey")][:n]
    return np.stack([world.sample(seed + i, 1, size, combos=[lab])[0][0]
                     for i, lab in enumerate(labels)])


CHECKPOINTS = ["pocket", "tiny_karlo", "tiny_kandinsky"]


@pytest.fixture
def checkpoint(request, tiny_checkpoint, tiny_kandinsky):  # noqa: F811
    """(clip_text, clip_vision handles, folder with the towers, its processor folder, size)."""
    if request.param == "pocket":
        ct, cv, *_ = load(POCKET)
        return ct, cv, POCKET, "feature_extractor", 32
    if request.param == "tiny_karlo":
        ct, cv, *_ = load(tiny_checkpoint)
        return ct, cv, tiny_checkpoint, "feature_extractor", 32
    ct, cv, *_ = load(tiny_kandinsky / "decoder", prior_path=str(tiny_kandinsky / "prior"))
    return ct, cv, tiny_kandinsky / "prior", "image_processor", 224


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, indirect=True)
def test_clip_score_is_the_cosine_of_the_checkpoints_own_towers(checkpoint):
    ct, cv, folder, processor, size = checkpoint
    images = pictures(size)
    z_i, z_t = reference_scores(folder, processor, images, PROMPTS)
    text = clip_text_encode(clip=ct, text="\n".join(PROMPTS))
    mean, rows = score.clip_score_node(clip_vision=cv, image=as_image(images), text=text)
    got = torch.tensor([float(x) for x in rows.split(",")], dtype=torch.float64)
    want = (z_i * z_t).sum(-1)
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    assert mean == pytest.approx(float(want.mean()), abs=1e-5)
    # the full-precision values behind the text output, and the clip_text + prompt route
    exact = score.clip_scores(cv, as_image(images), text)
    assert torch.allclose(exact, want, atol=1e-5)
    again, _ = score.clip_score_node(clip_vision=cv, image=as_image(images), clip_text=ct,
                                     prompt="\n".join(PROMPTS))
    assert again == pytest.approx(mean, abs=1e-9)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS, indirect=True)
def test_image_similarity_is_the_cosine_of_the_image_embeddings(checkpoint):
    _, cv, folder, processor, size = checkpoint
    images = pictures(size)
    others = pictures(size, seed=50)  # the same captions, other sizes and places
    z_a, _ = reference_scores(folder, processor, images, PROMPTS)
    z_b, _ = reference_scores(folder, processor, others, PROMPTS)
    mean, rows = score.clip_image_similarity_node(clip_vision=cv, image=as_image(others),
                                                  reference=as_image(images))
    got = torch.tensor([float(x) for x in rows.split(",")], dtype=torch.float64)
    assert torch.allclose(got, (z_a * z_b).sum(-1), atol=1e-4)
    same, _ = score.clip_image_similarity_node(clip_vision=cv, image=as_image(images),
                                               reference=as_image(images))
    assert same == pytest.approx(1.0, abs=1e-6)


def test_on_the_pocket_model_the_right_caption_scores_highest():
    """What makes the score useful: among all 45 captions of the world, each picture's own
    caption is the best or close to it (the pocket CLIP retrieves the right caption 98 % of the
    time on trained combinations)."""
    ct, cv, *_ = load(POCKET)
    imgs, _, labels = world.sample(7, 12, 32, split="train", as_float=True)
    captions = [world.caption(*c) for c in world.ALL_COMBOS]
    text = clip_text_encode(clip=ct, text="\n".join(captions))
    image = torch.from_numpy(imgs).repeat_interleave(len(captions), dim=0)
    table = score.clip_scores(cv, image, clip_text_encode(
        clip=ct, text="\n".join(captions * len(labels)))).view(len(labels), len(captions))
    best = [captions[int(i)] for i in table.argmax(dim=1)]
    right = sum(b == world.caption(*lab) for b, lab in zip(best, labels))
    assert right >= 10, list(zip(best, labels))
    assert text.text_embeds.shape[0] == len(captions)


def test_captions_serve_consecutive_images_and_other_counts_are_refused():
    ct, cv, *_ = load(POCKET)
    images = as_image(pictures(32))
    text = clip_text_encode(clip=ct, text="a red circle on a white background")
    one = score.clip_scores(cv, images, text)
    two = clip_text_encode(clip=ct, text="\n".join(PROMPTS[:2]))
    six = torch.cat([images[:1]] * 3 + [images[1:2]] * 3)
    paired = score.clip_scores(cv, six, two)  # 3 images per caption, in a row
    alone = score.clip_scores(cv, images[1:2], clip_text_encode(clip=ct, text=PROMPTS[1]))
    assert torch.allclose(paired[:3], one[:1].expand(3))
    assert torch.allclose(paired[3:], alone.expand(3))
    assert torch.allclose(one[1:], score.clip_scores(cv, images[1:], text))  # one serves all
    with pytest.raises(UserError) as e:
        score.clip_scores(cv, images[:2], clip_text_encode(clip=ct, text="\n".join(PROMPTS)))
    assert e.value.field == "text" and "3 captions for 2 images" in str(e.value)


def test_the_node_refuses_both_or_neither_caption_sources():
    ct, cv, *_ = load(POCKET)
    images = as_image(pictures(32))
    text = clip_text_encode(clip=ct, text="a red circle on a white background")
    with pytest.raises(UserError) as e:
        score.clip_score_node(clip_vision=cv, image=images, text=text, clip_text=ct,
                              prompt="x")
    assert e.value.field == "clip_text"
    with pytest.raises(UserError) as e:
        score.clip_score_node(clip_vision=cv, image=images)
    assert e.value.field == "text"
    with pytest.raises(UserError) as e:
        score.clip_score_node(clip_vision=None, image=images, text=text)
    assert e.value.field == "clip_vision" and "no CLIP image encoder" in str(e.value)


# --- validation ---------------------------------------------------------------------------------

def picture_file(folder: Path) -> Path:
    path = folder / "red.png"
    Image.fromarray(pictures(32, n=1)[0]).save(path)
    return path


def scored_workflow(write_workflow, model: str, node: str = "CLIPScore"):
    links = ("{clip_vision: m.clip_vision, image: img.image, text: t.text}" if node == "CLIPScore"
             else "{clip_vision: m.clip_vision, image: img.image, reference: img.image}")
    picture = picture_file(write_workflow("").parent)
    return write_workflow(f"""
        nodes:
          m: {{type: LoadUnCLIP, params: {{path: "{model}"}}}}
          t: {{type: CLIPTextEncode, links: {{clip: m.clip_text}}, params: {{text: a cat}}}}
          img: {{type: LoadImage, params: {{image: "{picture}"}}}}
          s: {{type: {node}, links: {links}}}
        outputs:
          score: s.score
        """)


@pytest.mark.parametrize("node", ["CLIPScore", "CLIPImageSimilarity"])
def test_validation_names_the_missing_image_tower(node, write_workflow, tmp_path):
    from unclip_nodes.graph.validate import load as validate
    from unclip_nodes.nodes.tiny import save_tiny_checkpoint
    bare = save_tiny_checkpoint(tmp_path / "no_vision", image_variation=False)
    with pytest.raises(UserError) as e:
        validate(scored_workflow(write_workflow, str(bare), node))
    errs = getattr(e.value, "errors", [e.value])
    assert len(errs) == 1, [str(x) for x in errs]
    text = str(errs[0])
    assert "node 's', field 'clip_vision'" in text and "no CLIP image encoder" in text
    assert f"which {node} needs" in text
    validate(scored_workflow(write_workflow, str(POCKET), node))  # with the tower: fine


def test_a_loader_that_fails_is_not_also_reported_as_a_missing_tower(write_workflow, tmp_path):
    from unclip_nodes.graph.validate import load as validate
    with pytest.raises(UserError) as e:
        validate(scored_workflow(write_workflow, str(tmp_path / "nowhere")))
    errs = getattr(e.value, "errors", [e.value])
    assert all("image encoder" not in str(x) for x in errs), [str(x) for x in errs]
    assert any("node 'm'" in str(x) for x in errs)


def wf_dir(write_workflow) -> Path:
    return write_workflow("", "empty.yaml").parent


@pytest.mark.parametrize("captions", ["text: t.text", "clip_text: k.clip_text"])
def test_validation_refuses_captions_from_another_clip(captions, write_workflow,
                                                      tiny_checkpoint):  # noqa: F811
    from unclip_nodes.graph.validate import load as validate
    prompt = "{prompt: a cat}" if captions.startswith("clip_text") else "{}"
    wf = write_workflow(f"""
        nodes:
          m: {{type: LoadUnCLIP, params: {{path: pocket}}}}
          k: {{type: LoadUnCLIP, params: {{path: "{tiny_checkpoint}"}}}}
          t: {{type: CLIPTextEncode, links: {{clip: k.clip_text}}, params: {{text: a cat}}}}
          img: {{type: LoadImage, params: {{image: "{picture_file(wf_dir(write_workflow))}"}}}}
          s:
            type: CLIPScore
            links: {{clip_vision: m.clip_vision, image: img.image, {captions}}}
            params: {prompt}
        outputs:
          score: s.score
        """)
    with pytest.raises(UserError) as e:
        validate(wf)
    field = captions.split(":")[0]
    assert f"node 's', field '{field}'" in str(e.value) and "32-d" in str(e.value) \
        and "64-d" in str(e.value)


def test_validation_wants_one_source_of_captions(write_workflow):
    from unclip_nodes.graph.validate import load as validate
    picture = picture_file(wf_dir(write_workflow))

    def problem(links: str, params: str = "{}") -> str:
        wf = write_workflow(f"""
            nodes:
              m: {{type: LoadUnCLIP, params: {{path: pocket}}}}
              t: {{type: CLIPTextEncode, links: {{clip: m.clip_text}}, params: {{text: a cat}}}}
              img: {{type: LoadImage, params: {{image: "{picture}"}}}}
              s:
                type: CLIPScore
                links: {{clip_vision: m.clip_vision, image: img.image{links}}}
                params: {params}
            """)
        with pytest.raises(UserError) as e:
            validate(wf)
        return str(e.value)
    assert "field 'clip_text'" in problem(", text: t.text, clip_text: m.clip_text",
                                          "{prompt: a cat}")
    assert "field 'text'" in problem("")
    assert "field 'prompt'" in problem(", clip_text: m.clip_text")
    assert "field 'prompt'" in problem(", text: t.text", "{prompt: a dog}")


# --- sweeps -------------------------------------------------------------------------------------

def test_a_sweep_reports_each_combinations_score_and_draws_it_on_the_contact_sheet(tmp_path):
    from unclip_nodes.graph import run_sweep
    from unclip_nodes.graph.cache import Cache
    from unclip_nodes.graph.sweep import score_table
    wf = Path(__file__).resolve().parent.parent / "workflows" / "text_to_image_scored.yaml"
    report = tmp_path / "r.json"
    done = run_sweep(wf, ["decoder_guidance=1,8"], overrides={"steps": 4, "upsample_steps": 2},
                     out_dir=tmp_path / "out", device="cpu", cache=Cache.off(), report=report)
    combos = done.plan.combinations
    values = [done.scores(c)["clip_score"] for c in combos]
    # each value is the score of that combination's own image
    ct, cv, *_ = load(POCKET)
    text = clip_text_encode(clip=ct, text="a red circle on a white background")
    for c, v in zip(combos, values):
        image = done.outputs(c)["image"]
        assert v == pytest.approx(float(score.clip_scores(cv, image, text).mean()), abs=1e-9)
    assert values[0] != values[1]
    section = json.loads(report.read_text())["sweep"]
    assert section["scores"] == ["clip_score"]
    assert [x["scores"]["clip_score"] for x in section["combinations"]] == values
    table = score_table(done.plan, done.result.outputs).splitlines()
    assert table[0].split() == ["decoder_guidance", "clip_score"]
    assert [row.split() for row in table[1:]] == [["1", f"{values[0]:.4f}"],
                                                 ["8", f"{values[1]:.4f}"]]
    # the sheet's label strip has a second line (the score) under each cell's combination
    sheet = np.asarray(Image.open(done.grid).convert("L"))
    cell = 128  # 64 px images, doubled to reach the sheet's smallest cell
    assert sheet.shape[0] == cell + 2 * 12 + 2
    first_line, second_line = sheet[cell:cell + 12, :cell], sheet[cell + 13:, :cell]
    assert (first_line < 128).any() and (second_line < 128).any()


def test_a_sweep_without_score_outputs_has_one_label_line_and_no_table(tmp_path):
    from unclip_nodes.graph import run_sweep
    from unclip_nodes.graph.cache import Cache
    from unclip_nodes.graph.sweep import score_table
    picture = picture_file(tmp_path)
    wf = {"inputs": {"w": {"type": "INT", "default": 8}},
          "nodes": {"load": {"type": "LoadImage", "params": {"path": str(picture)}},
                    "img": {"type": "ResizeImage", "links": {"image": "load.image"},
                            "params": {"width": "$w", "height": "$w"}}},
          "outputs": {"image": "img.image"}}
    done = run_sweep(wf, ["w=8,16"], out_dir=tmp_path, device="cpu", cache=Cache.off())
    assert score_table(done.plan, done.result.outputs) == ""
    assert "scores" not in done.result.extra["sweep"]
    sheet = Image.open(done.grid)
    assert sheet.height == 96 + 12  # the 16 px cell enlarged to MIN_CELL, one label line


def test_unclip_run_prints_the_sweeps_score_table(cli, tmp_path):
    done = cli(["run", "text_to_image_scored", "--sweep", "decoder_guidance=1,4", "--set",
                "steps=2", "--set", "upsample_steps=2", "--no-cache", "--out", "out",
                "--report", "r.json"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    at = lines.index(next(x for x in lines if x.split() == ["decoder_guidance", "clip_score"]))
    section = json.loads((tmp_path / "r.json").read_text())["sweep"]
    values = [c["scores"]["clip_score"] for c in section["combinations"]]
    assert [x.split() for x in lines[at + 1:at + 3]] == [["1", f"{values[0]:.4f}"],
                                                       ["4", f"{values[1]:.4f}"]]
