"""A tiny random Stable unCLIP checkpoint, text-to-image or image-variation layout, offline.

For tests and parity checks against diffusers' ``StableUnCLIPPipeline`` and
``StableUnCLIPImg2ImgPipeline`` without a download. Sizes are those of diffusers' own Stable unCLIP
fast tests (embedding width 32, SD-style UNet with blocks (32, 64), a one-block ``AutoencoderKL()``
whose latents are the image size: ``vae_scale_factor`` 1, read it from the VAE, never assume 8),
except where the defaults would hide mistakes:

- the tokenizers come from a word list (``tokenizer.py``); the UNet's ``tokenizer`` pads with "!" as
  SD 2.x's does, the prior's with "<|endoftext|>" as OpenAI CLIP's does, so a re-implementation that
  pads with the wrong token gets other hidden states;
- the normaliser's ``mean``/``std`` and the prior's ``clip_mean``/``clip_std`` are random and
  different from each other (defaults 0/1 and zeros make scale, unscale and post-processing no-ops,
  and equal statistics would let one stand in for the other);
- schedulers are the fast tests' (prior DDPM cosine, ``prediction_type`` "sample", clip 5; noising
  DDPM cosine; denoiser DDIM v-prediction, ``set_alpha_to_one`` false, ``steps_offset`` 1).

    python -m unclip_nodes.nodes.tiny_stable_unclip OUT [--layout txt2img|img2img] [--seed N]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

WORDS = ("a an the of on in with and photo picture painting drawing red green blue yellow white "
         "black orange purple pink brown circle square triangle star cat dog horse bird fish "
         "house tree flower car sky sea background small large big cute").split()
MAX_LENGTH = 77  # both tokenizers; the prior's num_embeddings (its default) must equal it
DIM = 32         # image embedding width; the UNet's class input is 2 * DIM
LAYOUTS = ("txt2img", "img2img")
PIPELINES = {"txt2img": "StableUnCLIPPipeline", "img2img": "StableUnCLIPImg2ImgPipeline"}
# Seed offsets, one per component, so each is reproducible on its own.
_OFFSET = {"prior_text_encoder": 0, "prior": 1, "text_encoder": 2, "unet": 3, "vae": 4,
           "image_encoder": 5, "image_normalizer": 6}


def _seeded(seed: int, name: str, make):
    """Build ``make()`` from its own seed without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + _OFFSET[name])
        module = make()
    return module.eval().requires_grad_(False)


def _tokenizer(pad: str):
    """A word-list CLIP tokenizer padding with ``pad`` ("!" for SD 2.x, EOS for OpenAI CLIP)."""
    from transformers import CLIPTokenizer

    from .tokenizer import BOS, EOS, clip_tokenizer_vocab

    vocab, merges = clip_tokenizer_vocab(WORDS)
    assert pad in vocab
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH,
                         bos_token=BOS, eos_token=EOS, pad_token=pad, unk_token=EOS)


def _text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=DIM, projection_dim=DIM,
        intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=max(1000, len(tokenizer)))


def _spread(mean: torch.Tensor, std: torch.Tensor, scale: float) -> None:
    """Fill mean/std in place with non-trivial statistics (std in [0.5, 0.5 + scale))."""
    with torch.no_grad():
        mean.copy_(0.3 * torch.randn_like(mean))
        std.copy_(0.5 + scale * torch.rand_like(std))


def _unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64),
        attention_head_dim=(2, 4), class_embed_type="projection",
        projection_class_embeddings_input_dim=2 * DIM, cross_attention_dim=DIM,
        layers_per_block=1, upcast_attention=True, use_linear_projection=True)


def build_tiny_stable_unclip_components(layout: str = "txt2img", seed: int = 0) -> dict:
    """The pipeline's components as objects, keyed by diffusers component name."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, PriorTransformer
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer)
    from transformers import (CLIPImageProcessor, CLIPTextModel, CLIPTextModelWithProjection,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")

    def make_normalizer():
        norm = StableUnCLIPImageNormalizer(embedding_dim=DIM)
        _spread(norm.mean, norm.std, 1.0)
        return norm

    tokenizer = _tokenizer("!")
    parts = {
        "tokenizer": tokenizer,
        "text_encoder": _seeded(seed, "text_encoder",
                                lambda: CLIPTextModel(_text_config(tokenizer))),
        "unet": _seeded(seed, "unet", _unet),
        "vae": _seeded(seed, "vae", AutoencoderKL),
        "scheduler": DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                   beta_end=0.012, prediction_type="v_prediction",
                                   set_alpha_to_one=False, steps_offset=1),
        "image_normalizer": _seeded(seed, "image_normalizer", make_normalizer),
        "image_noising_scheduler": DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
    }
    if layout == "txt2img":
        prior_tokenizer = _tokenizer("<|endoftext|>")

        def make_prior():
            prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12,
                                     embedding_dim=DIM, num_layers=1)
            _spread(prior.clip_mean, prior.clip_std, 0.5)
            return prior

        parts.update(
            prior_tokenizer=prior_tokenizer,
            prior_text_encoder=_seeded(seed, "prior_text_encoder",
                                       lambda: CLIPTextModelWithProjection(
                                           _text_config(prior_tokenizer))),
            prior=_seeded(seed, "prior", make_prior),
            prior_scheduler=DDPMScheduler(variance_type="fixed_small_log",
                                          prediction_type="sample", num_train_timesteps=1000,
                                          clip_sample=True, clip_sample_range=5.0,
                                          beta_schedule="squaredcos_cap_v2"))
    else:
        vision = CLIPVisionConfig(hidden_size=DIM, projection_dim=DIM, num_hidden_layers=5,
                                  num_attention_heads=4, image_size=32, intermediate_size=37,
                                  patch_size=1)
        parts.update(
            feature_extractor=CLIPImageProcessor(crop_size=32, size=32),
            image_encoder=_seeded(seed, "image_encoder",
                                  lambda: CLIPVisionModelWithProjection(vision)))
    return parts


def tiny_stable_unclip_pipeline(layout: str = "txt2img", seed: int = 0):
    """The diffusers pipeline built from ``build_tiny_stable_unclip_components``."""
    import diffusers

    cls = getattr(diffusers, PIPELINES[layout])
    return cls(**build_tiny_stable_unclip_components(layout, seed))


def save_tiny_stable_unclip(path: str | Path, layout: str = "txt2img", seed: int = 0) -> Path:
    """Write a diffusers folder (model_index.json + one folder per component, safetensors)."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tiny_stable_unclip_pipeline(layout, seed).save_pretrained(str(root), safe_serialization=True)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m unclip_nodes.nodes.tiny_stable_unclip",
        description="Write a tiny random Stable unCLIP checkpoint (diffusers layout).")
    ap.add_argument("directory")
    ap.add_argument("--layout", choices=LAYOUTS, default="txt2img",
                    help="txt2img: StableUnCLIPPipeline (with a prior); img2img: "
                         "StableUnCLIPImg2ImgPipeline (with an image encoder)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = save_tiny_stable_unclip(args.directory, layout=args.layout, seed=args.seed)
    cls = PIPELINES[args.layout]
    print(f"wrote a tiny Stable unCLIP checkpoint ({cls}) to {root}; load it with\n"
          f"  {cls}.from_pretrained('{root}', local_files_only=True)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
