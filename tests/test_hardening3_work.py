"""Work that would run for hours on this kind of machine is refused before it starts, with the
limit's variable: a decoder sampling a 4096 px image, or inpainting a huge image at its own
size (a sampling step cannot be stopped half-way, so Ctrl-C alone would not help)."""
from __future__ import annotations

import time

import pytest
import torch

from kandinsky_util import k22_handles, tiny_kandinsky  # noqa: F401
from unclip_nodes.nodes.decoder import decoder_node
from unclip_nodes.nodes.errors import UserError
from unclip_nodes.nodes.inpaint import inpaint_node
from unclip_nodes.nodes.types import ImageEmbeds


def embeds(dim: int) -> ImageEmbeds:
    return ImageEmbeds(torch.zeros(1, dim), torch.zeros(1, dim))


def test_a_4096_px_latent_decode_is_refused_before_it_samples(k22_handles):
    dec = k22_handles["decoder"]
    t = time.perf_counter()
    with pytest.raises(UserError) as e:
        decoder_node(dec, embeds(dec.clip_dim), None, steps=2, guidance_scale=4.0, seed=0,
                     images_per_embedding=1, width=4096, height=4096)
    assert time.perf_counter() - t < 5
    assert "UNCLIP_MAX_SAMPLE_PIXELS" in e.value.message and e.value.field == "width"
    assert "4096 x 4096" in e.value.message


def test_the_limit_can_be_raised_and_lowered(k22_handles, monkeypatch):
    dec = k22_handles["decoder"]
    monkeypatch.setenv("UNCLIP_MAX_SAMPLE_PIXELS", str(64 * 64 - 1))
    with pytest.raises(UserError, match="UNCLIP_MAX_SAMPLE_PIXELS"):
        decoder_node(dec, embeds(dec.clip_dim), None, steps=2, guidance_scale=4.0, seed=0,
                     images_per_embedding=1, width=64, height=64)
    monkeypatch.setenv("UNCLIP_MAX_SAMPLE_PIXELS", str(64 * 64))
    image = decoder_node(dec, embeds(dec.clip_dim), None, steps=2, guidance_scale=4.0, seed=0,
                         images_per_embedding=1, width=64, height=64)
    assert image.shape[1:3] == (64, 64)


def test_inpainting_a_huge_image_at_its_own_size_is_refused_first(k22_handles, monkeypatch):
    dec = k22_handles["inpaint"]
    monkeypatch.setenv("UNCLIP_MAX_SAMPLE_PIXELS", str(32 * 32))
    image, mask = torch.zeros(1, 64, 64, 3), torch.ones(1, 64, 64)
    with pytest.raises(UserError) as e:
        inpaint_node(dec, image, mask, embeds(dec.clip_dim), steps=2, guidance_scale=4.0)
    assert "UNCLIP_MAX_SAMPLE_PIXELS" in e.value.message and e.value.field == "image"
