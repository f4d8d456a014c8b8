"""A tiny random unCLIP checkpoint in the Karlo layout, built offline in a second or two.

For tests, benchmarks and a quick try of the workflows without any download: the component sizes
are those of diffusers' own unCLIP tests, the tokenizer is built from a word list, and the prior's
``clip_std``/``clip_mean`` and the learned guidance embedding are random rather than zero (with
zeros every image embedding would be the same constant and the prior would not matter).

    python -m unclip_nodes.nodes.tiny DIR      # then: path: DIR in a workflow
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

WORDS = ("a an the of on in with and red green blue yellow white black orange purple circle square "
         "triangle star background photo picture small large big").split()
MAX_LENGTH = 16  # tokenizer model_max_length == prior num_embeddings
DIM = 32         # CLIP width: text hidden size == projection == prior embedding


def build_tiny_components(image_variation: bool = True, seed: int = 0, width: int = DIM) -> dict:
    """The components as objects (the tests build diffusers' reference pipelines from them).

    ``width``: the CLIP embedding width (text hidden size, projections, prior); 768 makes a
    stand-in whose embeddings fit models built for Karlo's real CLIP ViT-L/14 (ComfyUI's SD 2.1
    unCLIP small, clip_vision_l), as the real-ComfyUI check needs."""
    from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel, UnCLIPScheduler
    from transformers import (CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    from .textproj import UnCLIPTextProjModel
    from .tokenizer import make_clip_tokenizer

    tokenizer = make_clip_tokenizer(WORDS, model_max_length=MAX_LENGTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, hidden_size=width, projection_dim=width,
            intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=5,
            vocab_size=max(1000, len(tokenizer)), max_position_embeddings=MAX_LENGTH))
        prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=width,
                                 num_layers=1, num_embeddings=MAX_LENGTH)
        text_proj = UnCLIPTextProjModel(clip_embeddings_dim=width, time_embed_dim=128,
                                        cross_attention_dim=100)
        decoder = UNet2DConditionModel(
            sample_size=32, in_channels=3, out_channels=6,
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64),
            layers_per_block=1, cross_attention_dim=100, attention_head_dim=4,
            resnet_time_scale_shift="scale_shift", class_embed_type="identity")
        super_res = dict(sample_size=64, layers_per_block=1,
                         down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D"),
                         up_block_types=("ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
                         block_out_channels=(32, 64), in_channels=6, out_channels=3)
        super_res_first = UNet2DModel(**super_res)
        super_res_last = UNet2DModel(**super_res)
        with torch.no_grad():
            prior.clip_std.copy_(0.5 + torch.rand_like(prior.clip_std))
            prior.clip_mean.copy_(0.1 * torch.randn_like(prior.clip_mean))
            text_proj.learned_classifier_free_guidance_embeddings.copy_(
                torch.randn_like(text_proj.learned_classifier_free_guidance_embeddings))
        parts = dict(
            text_encoder=text_encoder, tokenizer=tokenizer, prior=prior, text_proj=text_proj,
            decoder=decoder, super_res_first=super_res_first, super_res_last=super_res_last,
            prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                            num_train_timesteps=1000, clip_sample_range=5.0),
            decoder_scheduler=UnCLIPScheduler(variance_type="learned_range",
                                              prediction_type="epsilon", num_train_timesteps=1000),
            # x0-prediction here, not Karlo's epsilon: an untrained epsilon model's first step
            # (t = 999) divides by sqrt(alpha_bar) ~ 5e-5, so the last-bit rounding of the IMAGE
            # hand-off between Decoder and Upsample would show up as 1e-3 differences.
            super_res_scheduler=UnCLIPScheduler(variance_type="fixed_small_log",
                                                prediction_type="sample", num_train_timesteps=1000),
        )
        if image_variation:
            parts["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=DIM, projection_dim=width, num_hidden_layers=5, num_attention_heads=4,
                image_size=32, intermediate_size=37, patch_size=1))
            parts["feature_extractor"] = {
                "crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
                "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_processor_type": "CLIPImageProcessor",
                "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
                "rescale_factor": 1 / 255, "size": {"shortest_edge": 32}}
    for p in parts.values():
        if isinstance(p, torch.nn.Module):
            p.eval().requires_grad_(False)
    return parts


_INDEX = {
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "prior": ["diffusers", "PriorTransformer"],
    "text_proj": ["unclip", "UnCLIPTextProjModel"],
    "decoder": ["diffusers", "UNet2DConditionModel"],
    "super_res_first": ["diffusers", "UNet2DModel"],
    "super_res_last": ["diffusers", "UNet2DModel"],
    "prior_scheduler": ["diffusers", "UnCLIPScheduler"],
    "decoder_scheduler": ["diffusers", "UnCLIPScheduler"],
    "super_res_scheduler": ["diffusers", "UnCLIPScheduler"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
}


def save_components(parts: dict, path: str | Path) -> Path:
    """Write components in the Karlo layout (model_index.json + one folder each, safetensors)."""
    import diffusers

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "UnCLIPPipeline", "_diffusers_version": diffusers.__version__}
    for name, obj in parts.items():
        d = root / name
        if name == "feature_extractor":
            d.mkdir(exist_ok=True)
            (d / "preprocessor_config.json").write_text(json.dumps(obj, indent=2) + "\n")
        elif name == "tokenizer":
            obj.save_pretrained(str(d))
        elif name.endswith("_scheduler"):
            obj.save_config(str(d))
        else:
            obj.save_pretrained(str(d), safe_serialization=True)
        index[name] = _INDEX[name]
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return root


def save_tiny_checkpoint(path: str | Path, image_variation: bool = True, seed: int = 0,
                         width: int = DIM) -> Path:
    """Build the tiny components and save them to ``path`` in the Karlo layout."""
    return save_components(build_tiny_components(image_variation, seed, width), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unclip_nodes.nodes.tiny",
                                 description="Write a tiny random unCLIP checkpoint (Karlo layout).")
    ap.add_argument("directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-image-encoder", action="store_true",
                    help="leave out image_encoder/ and feature_extractor/")
    ap.add_argument("--clip-width", type=int, default=DIM,
                    help=f"CLIP embedding width (default {DIM}; 768 = Karlo's real ViT-L/14)")
    args = ap.parse_args(argv)
    if not 8 <= args.clip_width <= 4096 or args.clip_width % 4:
        ap.error("--clip-width must be a multiple of 4 between 8 and 4096")
    root = save_tiny_checkpoint(args.directory, image_variation=not args.no_image_encoder,
                                seed=args.seed, width=args.clip_width)
    print(f"wrote a tiny unCLIP checkpoint to {root}; use it with path: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
