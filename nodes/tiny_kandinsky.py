"""A tiny random Kandinsky 2.2 checkpoint (prior + three decoders), built offline in seconds.

For tests, parity checks against diffusers' Kandinsky 2.2 pipelines and a quick try of the
workflows without a download. Sizes are those of diffusers' own Kandinsky 2.2 test dummies, except:
the tokenizer comes from a word list (77 tokens long, the prior's ``num_embeddings``); the MoVQ
downsamples by 8 as the real one does (the controlnet's hint block needs /8, and image sides round
to multiples of 64 as with the real model), the same in every decoder folder; the prior's
``clip_std``/``clip_mean`` are random (zeros would map every sample to one image embedding); and
the controlnet's hint convs are re-initialised so that the hint visibly changes its output.
Scheduler, image-processor and model-index settings are copies of the real checkpoints' files.

    python -m unclip_nodes.nodes.tiny_kandinsky DIR   # DIR/prior, DIR/decoder, ...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

WORDS = ("a an the of on in with and photo picture painting drawing red green blue yellow white "
         "black orange purple pink brown circle square triangle star cat dog horse bird fish "
         "house tree flower car sky sea background small large big cute").split()
MAX_LENGTH = 77  # tokenizer model_max_length == prior num_embeddings (its default)
DIM = 32         # CLIP width: text/vision projection == prior embedding == unet image-embed input

# Copies of the real kandinsky-community configs (see the module docstring).
PRIOR_SCHEDULER = {
    "_class_name": "UnCLIPScheduler", "clip_sample": True, "clip_sample_range": 10.0,
    "num_train_timesteps": 1000, "prediction_type": "sample", "variance_type": "fixed_small_log",
}
_DDPM = {
    "_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
    "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False, "set_alpha_to_one": False,
    "steps_offset": 1, "prediction_type": "epsilon", "thresholding": False,
}
# The decoder's current file clamps x0 and names two defaults; the other two keep the first one.
DECODER_SCHEDULERS = {
    "decoder": {**_DDPM, "clip_sample": True, "timestep_spacing": "leading",
                "variance_type": "fixed_small"},
    "decoder-inpaint": dict(_DDPM),
    "controlnet-depth": dict(_DDPM),
}
PREPROCESSOR = {
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224,
}
PIPELINES = {
    "prior": "KandinskyV22PriorPipeline",
    "decoder": "KandinskyV22Pipeline",
    "decoder-inpaint": "KandinskyV22InpaintPipeline",
    "controlnet-depth": "KandinskyV22ControlnetPipeline",
}
_LIBRARY_CLASS = {  # model_index.json entries; the scheduler's is its own class name
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
    "prior": ["diffusers", "PriorTransformer"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "movq": ["diffusers", "VQModel"],
    "unet": ["diffusers", "UNet2DConditionModel"],
}
# Decoder UNet per folder: (in_channels, addition_embed_type), as in the real checkpoints.
_UNETS = {"decoder": (4, "image"), "decoder-inpaint": (9, "image"),
          "controlnet-depth": (8, "image_hint")}
# Seed offsets, one per component, so each is reproducible on its own. One movq offset for all
# three decoders: the real checkpoints ship the same MoVQ in each folder.
_OFFSET = {"text_encoder": 0, "prior": 1, "image_encoder": 2, "movq": 3, "decoder": 4,
           "decoder-inpaint": 5, "controlnet-depth": 6}


def _seeded(seed: int, name: str, make):
    """Build ``make()`` from its own seed without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + _OFFSET[name])
        module = make()
    return module.eval().requires_grad_(False)


def _prior_parts(seed: int) -> dict:
    from diffusers import PriorTransformer, UnCLIPScheduler
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    from .tokenizer import make_clip_tokenizer

    tokenizer = make_clip_tokenizer(WORDS, model_max_length=MAX_LENGTH)
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=DIM, projection_dim=DIM,
        intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=max(1000, len(tokenizer)))
    vision_config = CLIPVisionConfig(
        hidden_size=DIM, image_size=224, projection_dim=DIM, intermediate_size=37,
        num_attention_heads=4, num_channels=3, num_hidden_layers=5, patch_size=14)

    def make_prior():
        prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=DIM,
                                 num_layers=1)
        with torch.no_grad():
            prior.clip_std.copy_(0.5 + torch.rand_like(prior.clip_std))
            prior.clip_mean.copy_(0.1 * torch.randn_like(prior.clip_mean))
        return prior

    return {
        "prior": _seeded(seed, "prior", make_prior),
        "text_encoder": _seeded(seed, "text_encoder",
                                lambda: CLIPTextModelWithProjection(text_config)),
        "tokenizer": tokenizer,
        "image_encoder": _seeded(seed, "image_encoder",
                                 lambda: CLIPVisionModelWithProjection(vision_config)),
        "image_processor": CLIPImageProcessor.from_dict(dict(PREPROCESSOR)),
        "scheduler": UnCLIPScheduler.from_config(dict(PRIOR_SCHEDULER)),
    }


def _movq():
    from diffusers import VQModel

    return VQModel(
        block_out_channels=[32, 32, 64, 64],
        down_block_types=["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * 3,
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        norm_type="spatial", num_vq_embeddings=12, vq_embed_dim=4)


def _unet(in_channels: int, addition_embed_type: str):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=8,
        addition_embed_type=addition_embed_type,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64),
        layers_per_block=1, encoder_hid_dim=DIM, encoder_hid_dim_type="image_proj",
        cross_attention_dim=32, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
        class_embed_type=None)


def _strengthen_hint(unet) -> None:
    """Make the controlnet's hint matter: re-initialise its hint convs, unit-std features.

    With PyTorch's default init the eight-conv hint stack shrinks its input some 50 times and its
    output is mostly the biases, so an untrained UNet's output moved by 1e-4 between hints.
    """
    block = unet.add_embedding.input_hint_block
    convs = [m for m in block if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.zeros_(conv.bias)
        # No biases left, so the output scales with the last weight: a random hint gives std 1.
        convs[-1].weight.div_(block(torch.rand(1, 3, 64, 64)).std())


def _decoder_unet(folder: str):
    in_channels, embed_type = _UNETS[folder]
    unet = _unet(in_channels, embed_type)
    if embed_type == "image_hint":
        _strengthen_hint(unet)
    return unet


def build_tiny_kandinsky_components(seed: int = 0) -> dict[str, dict]:
    """The four checkpoints as objects, keyed by folder then by diffusers component name.

    Tests hand these straight to diffusers' pipelines; ``save_tiny_kandinsky`` writes them out.
    """
    from diffusers import DDPMScheduler

    parts: dict[str, dict] = {"prior": _prior_parts(seed)}
    for folder in _UNETS:
        parts[folder] = {
            "unet": _seeded(seed, folder, lambda: _decoder_unet(folder)),
            "movq": _seeded(seed, "movq", _movq),
            "scheduler": DDPMScheduler.from_config(dict(DECODER_SCHEDULERS[folder])),
        }
    return parts


def _save_folder(folder: str, parts: dict, root: Path) -> None:
    import diffusers

    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": PIPELINES[folder], "_diffusers_version": diffusers.__version__}
    for name in sorted(parts):
        obj, out = parts[name], str(root / name)
        if name == "scheduler":
            obj.save_config(out)
            index[name] = ["diffusers", type(obj).__name__]
            continue
        if isinstance(obj, torch.nn.Module):
            obj.save_pretrained(out, safe_serialization=True)
        else:  # tokenizer, image processor
            obj.save_pretrained(out)
        index[name] = list(_LIBRARY_CLASS[name])
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_tiny_kandinsky(path: str | Path, seed: int = 0) -> Path:
    """Write ``path``/prior, /decoder, /decoder-inpaint, /controlnet-depth (diffusers layout)."""
    root = Path(path)
    for folder, parts in build_tiny_kandinsky_components(seed).items():
        _save_folder(folder, parts, root / folder)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m unclip_nodes.nodes.tiny_kandinsky",
        description="Write a tiny random Kandinsky 2.2 checkpoint (prior and three decoders).")
    ap.add_argument("directory")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = save_tiny_kandinsky(args.directory, seed=args.seed)
    print(f"wrote a tiny Kandinsky 2.2 checkpoint to {root}:")
    for folder, cls in PIPELINES.items():
        print(f"  {root / folder}  ({cls})")
    print("each folder loads with its diffusers pipeline, e.g.\n"
          f"  KandinskyV22PriorPipeline.from_pretrained('{root / 'prior'}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
