"""LoadUnCLIP and the per-stage loaders: layout checks, clear errors, the process-wide cache,
checkpoint-derived fingerprints."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from stages_util import load, tiny_checkpoint  # noqa: F401
from unclip_nodes.nodes import clip, decoder, loaders, prior, upsample
from unclip_nodes.nodes.declare import REGISTRY
from unclip_nodes.nodes.errors import UserError, UserErrors

PARAMS = dict(device="cpu", dtype="fp32", allow_pickle=False)


def fingerprint(node_type, path, **kw):
    return REGISTRY[node_type].fingerprint(dict(PARAMS, path=str(path), **kw))


@pytest.fixture
def copy(tiny_checkpoint, tmp_path):
    """A private copy of the tiny checkpoint that a test may damage."""
    def make(name="ckpt"):
        return Path(shutil.copytree(tiny_checkpoint, tmp_path / name))
    return make


def messages(err: UserError) -> list[str]:
    return [e.message for e in err.errors] if isinstance(err, UserErrors) else [err.message]


def test_pocket_means_the_bundled_model_directory():
    expected = Path(loaders.__file__).resolve().parent.parent / "models" / "pocket"
    assert loaders.resolve_path("pocket") == expected
    assert REGISTRY["LoadUnCLIP"].param("path").default == "pocket"


def test_missing_directory_is_reported_by_fingerprint_and_by_the_node(tmp_path):
    gone = tmp_path / "nowhere"
    for call in (lambda: fingerprint("LoadUnCLIP", gone), lambda: load(gone)):
        with pytest.raises(UserError) as e:
            call()
        assert e.value.field == "path" and "does not exist" in e.value.message
        assert str(gone) in e.value.message


def test_directory_without_model_index_is_not_a_karlo_layout(copy):
    root = copy()
    (root / "model_index.json").unlink()
    with pytest.raises(UserError) as e:
        fingerprint("LoadUnCLIP", root)
    assert e.value.field == "path" and "model_index.json is missing" in e.value.message


def test_missing_components_are_named(copy):
    root = copy()
    shutil.rmtree(root / "decoder")
    shutil.rmtree(root / "super_res_last")
    with pytest.raises(UserError) as e:
        fingerprint("LoadUnCLIP", root)
    assert "not a Karlo-layout" in e.value.message
    assert "decoder/" in e.value.message and "super_res_last/" in e.value.message
    assert "prior/" not in e.value.message


def test_prior_may_only_be_missing_from_an_image_variation_checkpoint(copy):
    variation = copy("variation")
    shutil.rmtree(variation / "prior")
    shutil.rmtree(variation / "prior_scheduler")
    index = json.loads((variation / "model_index.json").read_text())
    del index["prior"], index["prior_scheduler"]
    (variation / "model_index.json").write_text(json.dumps(index))
    clip_text, vision, pri, dec, up = load(variation)
    assert pri is None and vision is not None and dec is not None

    text_only = copy("text_only")
    for part in ("prior", "image_encoder", "feature_extractor"):
        shutil.rmtree(text_only / part)
    index = json.loads((text_only / "model_index.json").read_text())
    for part in ("prior", "image_encoder", "feature_extractor"):
        del index[part]
    (text_only / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserError) as e:
        load(text_only)
    assert "missing prior/" in e.value.message


def _edit(path: Path, **changes):
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_components_that_do_not_fit_together_are_all_reported(copy):
    root = copy()
    _edit(root / "tokenizer" / "tokenizer_config.json", model_max_length=12)
    _edit(root / "prior" / "config.json", embedding_dim=48)
    with pytest.raises(UserError) as e:
        fingerprint("LoadUnCLIP", root)
    found = "\n".join(messages(e.value))
    assert "tokenizer model_max_length 12 != prior num_embeddings 16" in found
    assert "prior embedding_proj_dim 48 != text_encoder projection_dim 32" in found
    assert all(err.field == "path" for err in getattr(e.value, "errors", [e.value]))


def test_decoder_and_text_proj_must_agree(copy):
    root = copy()
    _edit(root / "text_proj" / "config.json", cross_attention_dim=64)
    with pytest.raises(UserError) as e:
        fingerprint("LoadUnCLIPDecoder", root)
    assert "text_proj cross_attention_dim 64 != decoder cross_attention_dim 100" in e.value.message


def _to_pickle(folder: Path):
    from safetensors.torch import load_file
    for f in folder.glob("*.safetensors"):
        torch.save(load_file(str(f)), folder / (f.stem + ".bin"))
        f.unlink()


def test_pickle_weights_need_allow_pickle(copy):
    root = copy()
    _to_pickle(root / "super_res_last")
    with pytest.raises(UserError) as e:
        load(root)
    assert "super_res_last/ has only pickle weights" in e.value.message
    assert "allow_pickle" in e.value.message
    *_, up = load(root, allow_pickle=True)
    assert up.last.config.sample_size == 64


def test_model_cache_reads_each_component_once_per_process(tiny_checkpoint):
    loaders.clear_model_cache()
    start = len(loaders.LOADED)
    a = load(tiny_checkpoint)
    b = load(tiny_checkpoint)
    assert a[2].prior is b[2].prior and a[3].decoder is b[3].decoder
    only_prior = REGISTRY["LoadUnCLIPPrior"].fn(path=str(tiny_checkpoint), **PARAMS)
    assert only_prior.prior is a[2].prior
    read = [part for root, part in loaders.LOADED[start:]]
    assert sorted(read) == ["decoder", "prior"]  # lazily: only what was used, once


def test_fingerprint_follows_the_checkpoint_files(copy):
    root = copy()
    first = fingerprint("LoadUnCLIP", root)
    assert first == fingerprint("LoadUnCLIP", root)
    assert first["path"] == str(root.resolve())
    prior_fp = fingerprint("LoadUnCLIPPrior", root)
    weights = root / "super_res_first" / "diffusion_pytorch_model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint("LoadUnCLIP", root) != first
    assert fingerprint("LoadUnCLIPPrior", root) == prior_fp  # the prior did not change
    _edit(root / "prior_scheduler" / "scheduler_config.json", clip_sample_range=4.0)
    assert fingerprint("LoadUnCLIPPrior", root) != prior_fp


def test_changed_weights_are_reloaded_not_served_from_the_cache(copy):
    root = copy()
    before = load(root)[2].prior
    weights = root / "prior" / "diffusion_pytorch_model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load(root)[2].prior is not before


def test_per_stage_loaders_need_only_their_own_components(tiny_checkpoint, tmp_path):
    """Stages from different directories combine: here each stage has a folder of its own."""
    parts = {"clip": ("text_encoder", "tokenizer"), "prior": ("prior", "prior_scheduler"),
             "dec": ("decoder", "text_proj", "decoder_scheduler"),
             "up": ("super_res_first", "super_res_last", "super_res_scheduler")}
    for name, subs in parts.items():
        for s in subs:
            shutil.copytree(tiny_checkpoint / s, tmp_path / name / s)
    call = lambda t, d: REGISTRY[t].fn(path=str(tmp_path / d), **PARAMS)  # noqa: E731
    clip_text = call("LoadUnCLIPClipText", "clip")
    pri = call("LoadUnCLIPPrior", "prior")
    dec = call("LoadUnCLIPDecoder", "dec")
    up = call("LoadUnCLIPUpsampler", "up")
    text = clip.clip_text_encode(clip_text, "a red circle")
    z = prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=0, candidates=1)
    img = decoder.decoder_node(dec, z, text, steps=2, guidance_scale=8.0, seed=0,
                               images_per_embedding=1)
    assert upsample.upsample_node(up, img, steps=2, seed=0).shape == (1, 64, 64, 3)
    # without a text encoder next to it, a decoder needs its text linked
    with pytest.raises(UserError) as e:
        decoder.decoder_node(dec, z, None, steps=2, guidance_scale=8.0, seed=0,
                             images_per_embedding=1)
    assert e.value.field == "text"
    with pytest.raises(UserError) as e:
        call("LoadUnCLIPClipVision", "clip")
    assert "missing image_encoder/" in e.value.message
    with pytest.raises(UserError) as e:  # a component folder instead of its parent
        REGISTRY["LoadUnCLIPPrior"].fn(path=str(tmp_path / "prior" / "prior"), **PARAMS)
    assert "give its parent directory" in e.value.message


@pytest.mark.parametrize("node_type", ["LoadUnCLIP", "LoadUnCLIPPrior", "LoadUnCLIPDecoder"])
def test_cuda_on_a_machine_without_it_is_a_validation_error(node_type, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # whatever this machine has
    with pytest.raises(UserError) as e:
        REGISTRY[node_type].check(dict(PARAMS, path="pocket", device="cuda"))
    assert e.value.field == "device" and "cuda" in e.value.message.lower()
    for device in ("cpu", "auto"):
        REGISTRY[node_type].check(dict(PARAMS, path="pocket", device=device))


def test_cuda_on_a_machine_with_it_passes_validation(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # no CUDA call is made
    REGISTRY["LoadUnCLIP"].check(dict(PARAMS, path="pocket", device="cuda"))


def test_lower_precision_weights_load_and_sample(tiny_checkpoint):
    clip_text, _, pri, *_ = load(tiny_checkpoint, dtype="bf16")
    assert pri.prior.dtype == torch.bfloat16
    text = clip.clip_text_encode(clip_text, "a red circle")
    z = prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=0, candidates=1)
    assert z.image_embeds.dtype == torch.float32 and torch.isfinite(z.image_embeds).all()




def test_the_pocket_checkpoint_loads_and_samples_with_no_special_case():
    clip_text, vision, pri, dec, up = load("pocket")
    text = clip.clip_text_encode(clip_text, "a red circle on a blue background")
    z = prior.prior_node(pri, text, None, steps=2, guidance_scale=4.0, seed=0, candidates=2)
    img = decoder.decoder_node(dec, z, text, steps=2, guidance_scale=8.0, seed=0,
                               images_per_embedding=1)
    assert img.shape[1] == dec.sample_size
    big = upsample.upsample_node(up, img, steps=2, seed=0)
    assert big.shape[1] == up.sample_size
    assert clip.clip_image_encode(vision, big).image_embeds.shape == z.image_embeds.shape


def test_tiny_command_writes_a_checkpoint_that_loads(tmp_path, capsys):
    from unclip_nodes.nodes import tiny
    assert tiny.main([str(tmp_path / "mine"), "--no-image-encoder"]) == 0
    assert "mine" in capsys.readouterr().out
    clip_text, vision, pri, dec, up = load(tmp_path / "mine")
    assert vision is None and pri is not None
    assert REGISTRY["LoadUnCLIP"].fingerprint(dict(PARAMS, path=str(tmp_path / "mine")))
