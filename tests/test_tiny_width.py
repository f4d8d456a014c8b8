"""The tiny Karlo builder at another CLIP width: a stand-in whose embeddings fit models built
for a real CLIP (the real-ComfyUI check hands a 768-d one to ComfyUI's SD 2.1 unCLIP)."""
from __future__ import annotations

import torch

from unclip_nodes.nodes import REGISTRY
from unclip_nodes.nodes.tiny import main


def test_a_tiny_checkpoint_of_another_clip_width_gives_embeddings_of_that_width(tmp_path):
    assert main([str(tmp_path / "k"), "--clip-width", "48"]) == 0
    clip_text, clip_vision, prior, decoder, _ = REGISTRY["LoadUnCLIP"].fn(
        path=str(tmp_path / "k"), prior_path="", device="cpu", dtype="fp32", allow_pickle=False)
    text = REGISTRY["CLIPTextEncode"].fn(clip=clip_text, text="a red circle")
    (embeds,) = REGISTRY["Prior"].call(prior=prior, text=text, negative=None, steps=2,
                                       guidance_scale=2.0, seed=0, candidates=1)
    assert embeds.image_embeds.shape == (1, 48)
    (image,) = REGISTRY["Decoder"].call(decoder=decoder, image_embeds=embeds, text=text,
                                        noise=None, image=None, hint=None, steps=2, seed=0,
                                        guidance_scale=1.0, images_per_embedding=1)
    assert image.shape[-1] == 3 and torch.isfinite(image).all()
    (seen,) = REGISTRY["CLIPImageEncode"].call(clip_vision=clip_vision, image=image)
    assert seen.image_embeds.shape == (1, 48)


def test_a_clip_width_the_builder_cannot_make_is_a_usage_error(tmp_path, capsys):
    import pytest
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "k"), "--clip-width", "30"])
    assert e.value.code == 2 and "--clip-width must be a multiple of 4" in capsys.readouterr().err
