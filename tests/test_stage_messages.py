"""What a node says when a stage it needs is missing at run time (inside ComfyUI, where our
validation does not run before the prompt): it names the empty link and why it is empty, not a
missing link."""
from __future__ import annotations

import pytest
import torch

from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.prior import prior_node
from unclip_nodes.nodes.types import TextEmbeds
from unclip_nodes.nodes.upsample import upsample_node


def test_an_empty_upsampler_link_says_the_checkpoint_has_none_and_what_to_do():
    with pytest.raises(UserError) as e:
        upsample_node(None, torch.zeros(1, 8, 8, 3), steps=2, seed=0)
    assert e.value.field == "upsampler"
    assert "linked upsampler is empty" in e.value.message
    assert "width and height" in e.value.message and "no upsampler is linked" not in e.value.message


def test_an_empty_prior_link_says_which_checkpoints_have_none():
    text = TextEmbeds(torch.zeros(1, 4), torch.zeros(1, 3, 4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(UserError) as e:
        prior_node(None, text, None, steps=2, guidance_scale=1.0, seed=0, candidates=1)
    assert e.value.field == "prior" and "linked prior is empty" in e.value.message


def test_inpaint_with_an_empty_mask_warns_and_returns_the_image_without_sampling(caplog,
                                                                                 monkeypatch):
    import logging

    from unclip_nodes.nodes.inpaint import inpaint_node
    from unclip_nodes.nodes.loaders import load_decoder
    from unclip_nodes.nodes.types import ImageEmbeds
    dec = load_decoder("pocket", "cpu", "fp32", False)
    sampled = []
    monkeypatch.setattr(type(dec), "inpaint", lambda *a, **k: sampled.append(1))
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING):
        out = inpaint_node(dec, image, torch.zeros(1, 16, 16),
                           ImageEmbeds(torch.zeros(1, dec.clip_dim)), steps=2)
    assert torch.equal(out, image) and sampled == []
    assert any("mask is empty" in r.getMessage() for r in caplog.records)
