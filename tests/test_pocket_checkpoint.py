"""The bundled pocket checkpoint is a Karlo-layout unCLIP model that loads with no special case."""
import json
from pathlib import Path

import torch

from unclip_nodes.pocket import train, world

POCKET = Path(__file__).resolve().parent.parent / "models" / "pocket"
COMPONENTS = ["text_encoder", "tokenizer", "prior", "text_proj", "decoder", "super_res_first",
              "super_res_last", "prior_scheduler", "decoder_scheduler", "super_res_scheduler",
              "image_encoder", "feature_extractor"]



def test_pocket_checkpoint_has_every_karlo_component_in_safetensors_under_25_mb():
    index = json.loads((POCKET / "model_index.json").read_text())
    assert set(COMPONENTS) <= set(index)
    for c in COMPONENTS:
        assert (POCKET / c).is_dir(), c
    weights = list(POCKET.rglob("*.safetensors"))
    assert len(weights) == 7 and not list(POCKET.rglob("*.bin"))
    assert sum(f.stat().st_size for f in POCKET.rglob("*") if f.is_file()) <= 25 * 2 ** 20


def test_pocket_components_load_with_the_library_classes_and_fit_together():
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel, UnCLIPScheduler
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(POCKET / "tokenizer")
    text = CLIPTextModelWithProjection.from_pretrained(POCKET / "text_encoder")
    prior = PriorTransformer.from_pretrained(POCKET, subfolder="prior")
    proj = UnCLIPTextProjModel.from_pretrained(POCKET, subfolder="text_proj")
    dec = UNet2DConditionModel.from_pretrained(POCKET, subfolder="decoder")
    sr = UNet2DModel.from_pretrained(POCKET, subfolder="super_res_first")
    dsched = UnCLIPScheduler.from_pretrained(POCKET, subfolder="decoder_scheduler")
    assert tok.model_max_length == prior.config.num_embeddings
    assert text.config.eos_token_id == tok.eos_token_id and text.config.pad_token_id == tok.pad_token_id
    assert text.config.projection_dim == prior.config.embedding_dim == proj.config.clip_embeddings_dim
    assert dec.config.out_channels == 6 and dsched.config.variance_type == "learned_range"
    assert sr.config.in_channels == 2 * dec.config.in_channels
    assert sr.config.sample_size == 2 * dec.config.sample_size
    assert float(prior.clip_std.min()) > 0       # normalisation set from data, not left at zero
    # every caption word is one token
    ids = tok(world.caption("red", "circle", "white")).input_ids
    assert len(ids) == 2 + 7


def test_feature_extractor_reproduces_the_training_preprocessing_exactly():
    from transformers import CLIPImageProcessor
    fe = CLIPImageProcessor.from_pretrained(POCKET / "feature_extractor")
    imgs, _, _ = world.sample(0, 3, 32)
    got = fe(images=list(imgs), return_tensors="pt").pixel_values
    assert torch.allclose(got, train.to_tensor(imgs), atol=1e-5)


def test_training_script_writes_a_checkpoint_the_loader_accepts(tmp_path):
    out = tmp_path / "pocket"
    train.main(["--out", str(out), "--clip-minutes", "0.002", "--prior-minutes", "0.002",
                "--decoder-minutes", "0.002", "--upsampler-minutes", "0.002"])
    record = json.loads((out / "training.json").read_text())
    assert set(record) == set(train.STAGES) and all(r["steps"] >= 1 for r in record.values())
    from unclip_nodes.nodes.loaders import load_unclip
    clip_text, clip_vision, prior, decoder, upsampler = load_unclip(
        path=str(out), device="cpu", dtype="fp32", allow_pickle=False)
    assert None not in (clip_text, clip_vision, prior, decoder, upsampler)


def test_vlb_term_vanishes_only_when_the_model_matches_the_true_posterior():
    terms = train._vlb_terms(train.schedulers()["decoder_scheduler"])
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([1, 10, 300, 900])
    xt = terms[0][t].sqrt().view(-1, 1, 1, 1) * x0 + (1 - terms[0][t]).sqrt().view(-1, 1, 1, 1) * torch.randn(
        x0.shape, generator=g)
    v_post = -torch.ones_like(x0)            # learned_range at -1 is the posterior variance itself
    assert train.vlb_loss(terms, x0, v_post, x0, xt, t).item() < 1e-6
    assert train.vlb_loss(terms, x0 + 0.1, v_post, x0, xt, t).item() > 1e-4   # wrong mean
    assert train.vlb_loss(terms, x0, -v_post, x0, xt, t).item() > 1e-4        # wrong variance


def test_bundled_recipe_replays_every_run_in_order(tmp_path):
    out = tmp_path / "pocket"
    train.main(["--out", str(out), "--recipe", "bundled", "--time-scale", "0.0002"])
    decoder = json.loads((out / "training.json").read_text())["decoder"]
    # the last run fine-tunes in x0 what the two epsilon runs before it trained
    chain = [decoder, decoder["previous"], decoder["previous"]["previous"], decoder["previous"]["previous"]["previous"]]
    assert [r["prediction"] for r in chain] == ["sample", "sample", "epsilon", "epsilon"]
    assert [r.get("resume", False) for r in chain] == [True, True, True, False]
    scheduler = json.loads((out / "decoder_scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "sample"
