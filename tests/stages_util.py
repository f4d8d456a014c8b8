"""Helpers shared by the stage tests: diffusers' reference pipelines over our loaded components,
driven by per-stage generators the way our nodes draw their noise."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

try:
    from diffusers.pipelines.deprecated.unclip import (UnCLIPImageVariationPipeline,
                                                       UnCLIPPipeline)
    HAVE_REFERENCE = True
except ImportError:  # a diffusers release without the deprecated unCLIP pipelines
    HAVE_REFERENCE = False

needs_reference = pytest.mark.skipif(
    not HAVE_REFERENCE, reason="the installed diffusers no longer ships the deprecated unCLIP "
    "pipelines (UnCLIPPipeline, UnCLIPImageVariationPipeline) that the parity tests compare with")


def schedulers(handles):
    from diffusers import UnCLIPScheduler
    clip_text, clip_vision, prior, decoder, upsampler = handles
    out = {"decoder_scheduler": UnCLIPScheduler.from_config(decoder.scheduler_config),
           "super_res_scheduler": UnCLIPScheduler.from_config(upsampler.scheduler_config)}
    if prior is not None:
        out["prior_scheduler"] = UnCLIPScheduler.from_config(prior.scheduler_config)
    return out


def text_pipeline(handles) -> "UnCLIPPipeline":
    """diffusers' text-to-image pipeline built directly from the objects our loader loaded."""
    clip_text, _, prior, decoder, up = handles
    pipe = UnCLIPPipeline(prior=prior.prior, decoder=decoder.decoder,
                          text_encoder=clip_text.text_encoder, tokenizer=clip_text.tokenizer,
                          text_proj=decoder.text_proj, super_res_first=up.first,
                          super_res_last=up.last, **schedulers(handles))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def variation_pipeline(handles) -> "UnCLIPImageVariationPipeline":
    from transformers import CLIPImageProcessor
    clip_text, clip_vision, _, decoder, up = handles
    scheds = schedulers(handles)
    scheds.pop("prior_scheduler", None)
    pipe = UnCLIPImageVariationPipeline(
        decoder=decoder.decoder, text_encoder=clip_text.text_encoder,
        tokenizer=clip_text.tokenizer, text_proj=decoder.text_proj,
        feature_extractor=CLIPImageProcessor(**clip_vision.preprocess),
        image_encoder=clip_vision.image_encoder, super_res_first=up.first, super_res_last=up.last,
        **scheds)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def staged_generators(pipe, seeds: dict[str, int]):
    """Make ``pipe`` draw each stage's noise from its own generator (``seeds``: scheduler
    attribute name -> seed), as our nodes do with one seed per node.  The pipeline's code is
    untouched: its stage schedulers and prepare_latents just ignore the shared generator."""
    gens = {name: torch.Generator("cpu").manual_seed(s) for name, s in seeds.items()}
    by_sched = {id(getattr(pipe, name)): g for name, g in gens.items()}
    originals = {}
    for name, g in gens.items():
        sched = getattr(pipe, name)
        step = sched.step

        def staged_step(*args, _step=step, _g=g, generator=None, **kw):
            return _step(*args, generator=_g, **kw)
        originals[name] = step
        sched.step = staged_step
    prepare = pipe.prepare_latents

    def staged_prepare(shape, dtype, device, generator, latents, scheduler):
        return prepare(shape, dtype, device, by_sched[id(scheduler)], latents, scheduler)
    pipe.prepare_latents = staged_prepare
    try:
        yield pipe
    finally:
        del pipe.prepare_latents
        for name in gens:
            del getattr(pipe, name).step


def as_image_tensor(np_images) -> torch.Tensor:
    """The pipelines' numpy output [B, H, W, C] as our IMAGE tensor."""
    return torch.from_numpy(np.ascontiguousarray(np_images)).float()


_TINY: dict = {}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random checkpoint in the Karlo layout (with image encoder), written once per run."""
    if "path" not in _TINY:
        from unclip_nodes.nodes.tiny import save_tiny_checkpoint
        _TINY["path"] = save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")
    return _TINY["path"]


@pytest.fixture
def one_thread():
    """Both sides of a comparison on one thread: faster on the shared 2-core machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(path, **kw):
    from unclip_nodes.nodes.loaders import load_unclip
    params = dict(path=str(path), device="cpu", dtype="fp32", allow_pickle=False)
    params.update(kw)
    return load_unclip(**params)
