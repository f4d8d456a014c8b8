"""Stable unCLIP parts that do not depend on the family seam: the real checkpoints' configs (built
on the meta device and sized against published figures), the tiny checkpoint builder, and the
facts about diffusers' two Stable unCLIP pipelines a re-implementation must reproduce (embedding
noising, the order of random draws, the guidance batch layout, prompt encoding). Where each fact
comes from is in ``docs/stable_unclip_notes.md``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unclip_nodes.nodes import tiny_stable_unclip as tiny

CONFIGS = Path(__file__).resolve().parent.parent / "bench" / "configs" / "stable_unclip"
FOLDERS = {"h": CONFIGS / "h", "l-img2img": CONFIGS / "l" / "img2img",
           "l-txt2img": CONFIGS / "l" / "txt2img"}
WIDTH = {"h": 1024, "l-img2img": 768, "l-txt2img": 768}
SIZE = 32  # px; the tiny VAE does not downsample, so the UNet sees 32 x 32 latents
PROMPTS = ["a red cat", "a small green star"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the real configs, on the meta device ---------------------------------------------------------

def build_on_meta(folder: Path, part: str, **overrides):
    """``part`` of a diffusers folder built from its config alone, without weights."""
    import diffusers
    import transformers
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer)

    library, name = json.loads((folder / "model_index.json").read_text())[part]
    with torch.device("meta"):
        if library == "transformers":
            cls = getattr(transformers, name)
            config = cls.config_class.from_pretrained(str(folder / part), **overrides)
            return cls(config)
        cls = (StableUnCLIPImageNormalizer if name == "StableUnCLIPImageNormalizer"
               else getattr(diffusers, name))
        return cls.from_config({**cls.load_config(str(folder / part)), **overrides})


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# Published sizes (M parameters) and the relative tolerance each is held to. The CLIP towers are
# open_clip's docs/model_profile.csv (ViT-H-14: image 632.08, text 354.03; ViT-L-14: image 303.97,
# text 123.65), the UNet is "an 865M UNet" (Stability-AI/stablediffusion README), the prior is
# Karlo's "prior_1B_vit_l" and the VAE is SD's 83.7 M autoencoder.
PUBLISHED = {
    ("h", "image_encoder"): (632.08e6, 0.001),
    ("l-img2img", "image_encoder"): (303.97e6, 0.001),
    ("l-txt2img", "prior_text_encoder"): (123.65e6, 0.001),
    ("l-txt2img", "prior"): (1.0e9, 0.05),
}
UNET = (865e6, 0.005)          # SD 2.1 UNet without the image-embedding projection
VAE = (83.7e6, 0.005)
OPENCLIP_H_TEXT = (354.03e6, 0.001)  # the whole tower: 24 blocks and the text projection


def assert_near(value: int, published: tuple[float, float], what: str) -> None:
    target, tol = published
    assert abs(value - target) <= tol * target, \
        f"{what}: {value:,} parameters, published {target:,.0f} (tolerance {tol:.1%})"


@pytest.mark.parametrize("folder, part", sorted(PUBLISHED))
def test_real_clip_towers_and_prior_have_their_published_sizes(folder, part):
    assert_near(n_params(build_on_meta(FOLDERS[folder], part)), PUBLISHED[folder, part],
                f"{folder}/{part}")


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_real_unet_is_sd21_plus_an_image_embedding_projection(folder):
    unet = build_on_meta(FOLDERS[folder], "unet")
    d, t = WIDTH[folder], unet.config.block_out_channels[0] * 4  # time embedding width 1280
    projection = n_params(unet.class_embedding)
    assert projection == (2 * d * t + t) + (t * t + t)  # linear(2D, 1280), SiLU, linear(1280,1280)
    assert_near(n_params(unet) - projection, UNET, f"{folder}/unet without class embedding")


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_real_unet_class_input_is_twice_the_image_embedding(folder):
    """class_labels = [noised embedding (D), level embedding (D)]: the UNet must take 2 D."""
    path = FOLDERS[folder]
    unet = build_on_meta(path, "unet")
    normalizer = build_on_meta(path, "image_normalizer")
    d = normalizer.config.embedding_dim
    assert d == WIDTH[folder]
    assert unet.config.projection_class_embeddings_input_dim == 2 * d
    assert unet.class_embedding.linear_1.in_features == 2 * d
    # the embedding comes from the image encoder (img2img) or the prior (txt2img): same width
    source = (build_on_meta(path, "image_encoder").config.projection_dim
              if folder != "l-txt2img" else build_on_meta(path, "prior").config.embedding_dim)
    assert source == d


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_real_vae_and_text_encoder_are_sd21s(folder):
    path = FOLDERS[folder]
    vae = build_on_meta(path, "vae")
    assert_near(n_params(vae), VAE, f"{folder}/vae")
    assert vae.config.scaling_factor == 0.18215
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    text = build_on_meta(path, "text_encoder")
    # SD 2.x's "penultimate" layer: the 24-block OpenCLIP-H text tower with its last block dropped,
    # so the last hidden state (after the final layer norm) is the penultimate block's output.
    assert text.config.num_hidden_layers == 23
    full = build_on_meta(path, "text_encoder", num_hidden_layers=24)
    block = n_params(full) - n_params(text)
    projection = text.config.hidden_size ** 2  # OpenCLIP's text_projection, 1024 x 1024, no bias
    assert_near(n_params(full) + projection, OPENCLIP_H_TEXT, f"{folder}/text_encoder, 24 blocks")
    assert block == 12 * 1024 ** 2 + 13 * 1024  # one pre-LN transformer block, width 1024


def test_dropping_the_last_block_makes_the_last_hidden_state_the_penultimate_layer():
    """Why the SD 2.x text encoder has 23 of OpenCLIP-H's 24 blocks: its last_hidden_state (after
    the final layer norm) is then ldm's layer "penultimate" of the full tower."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, vocab_size=1000,
                  hidden_act="gelu")
    torch.manual_seed(0)
    full = CLIPTextModel(CLIPTextConfig(num_hidden_layers=5, **config)).eval()
    short = CLIPTextModel(CLIPTextConfig(num_hidden_layers=4, **config)).eval()
    missing, unexpected = short.load_state_dict(full.state_dict(), strict=False)
    assert not missing and unexpected and all(".layers.4." in k for k in unexpected)
    ids = torch.randint(3, 1000, (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = full(ids, output_hidden_states=True)
        # transformers 5 flattened CLIPTextModel (no .text_model); 4.x had it
        penultimate = getattr(full, "text_model", full).final_layer_norm(out.hidden_states[-2])
        assert torch.allclose(short(ids).last_hidden_state, penultimate, atol=1e-6)
        assert not torch.allclose(out.last_hidden_state, penultimate, atol=1e-3)


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_real_model_index_names_each_folders_own_class(folder):
    path = FOLDERS[folder]
    index = json.loads((path / "model_index.json").read_text())
    parts = {k: v for k, v in index.items() if not k.startswith("_")}
    assert {p.name for p in path.iterdir() if p.is_dir()} == set(parts)
    for part, (library, name) in parts.items():
        files = {f.name: json.loads(f.read_text()) for f in (path / part).glob("*.json")}
        if name == "CLIPTokenizer":
            assert files["tokenizer_config.json"]["model_max_length"] == 77
        elif name == "CLIPImageProcessor":
            assert files["preprocessor_config.json"]["crop_size"] == {"height": 224, "width": 224}
        elif library == "transformers":
            assert files["config.json"]["architectures"] == [name]
        else:
            (config,) = files.values()
            assert config["_class_name"] == name, f"{folder}/{part}"


def test_real_schedulers_pndm_v_prediction_and_cosine_noising():
    from diffusers import DDPMScheduler, PNDMScheduler

    for path in FOLDERS.values():
        pndm = PNDMScheduler.from_pretrained(str(path), subfolder="scheduler")
        assert pndm.config.prediction_type == "v_prediction"
        pndm.set_timesteps(20)
        # PLMS warm-up: 20 steps are 21 UNet calls, the second timestep twice
        assert pndm.timesteps.tolist()[:4] == [951, 901, 901, 851] and len(pndm.timesteps) == 21
        noising = DDPMScheduler.from_pretrained(str(path), subfolder="image_noising_scheduler")
        assert noising.config.beta_schedule == "squaredcos_cap_v2"
        assert noising.config.num_train_timesteps == 1000
    prior = DDPMScheduler.from_pretrained(str(FOLDERS["l-txt2img"]), subfolder="prior_scheduler")
    assert prior.config.beta_schedule == "squaredcos_cap_v2"
    assert prior.config.prediction_type == "sample"


def test_diffusers_recipe_for_karlos_prior_scheduler_gives_linear_betas():
    """diffusers' documented StableUnCLIPPipeline recipe turns Karlo's UnCLIPScheduler config into
    a DDPMScheduler; Karlo's file does not name beta_schedule, so the DDPM gets linear betas, not
    the cosine schedule Karlo was trained with. If this fails, diffusers changed: update the
    notes (trap 1)."""
    from diffusers import DDPMScheduler, UnCLIPScheduler

    karlo = {"_class_name": "UnCLIPScheduler", "clip_sample": True, "clip_sample_range": 5.0,
             "num_train_timesteps": 1000, "prediction_type": "sample",
             "variance_type": "fixed_small_log"}  # kakaobrain/karlo-v1-alpha prior_scheduler
    unclip = UnCLIPScheduler.from_config(karlo)
    assert unclip.config.beta_schedule == "squaredcos_cap_v2"
    assert DDPMScheduler.from_config(unclip.config).config.beta_schedule == "linear"


# --- the tiny checkpoint --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_stable_unclip")
    for layout in tiny.LAYOUTS:
        assert tiny.main([str(root / layout), "--layout", layout]) == 0
    return root


@pytest.fixture(scope="module")
def pipes(tiny_folders):
    from diffusers import StableUnCLIPImg2ImgPipeline, StableUnCLIPPipeline

    return {
        "txt2img": StableUnCLIPPipeline.from_pretrained(str(tiny_folders / "txt2img"),
                                                        local_files_only=True),
        "img2img": StableUnCLIPImg2ImgPipeline.from_pretrained(str(tiny_folders / "img2img"),
                                                               local_files_only=True),
    }


def a_picture(seed: int = 0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(SIZE, SIZE, 3) * 255).astype("uint8"))


def call(pipe, seed: int, **kw):
    """A 2-step call at SIZE px, seeded, as numpy images."""
    kw.setdefault("num_inference_steps", 2)
    if "prior" in pipe.components:
        kw.setdefault("prior_num_inference_steps", 2)
    elif "image_embeds" not in kw:
        kw.setdefault("image", a_picture())
    return pipe(height=SIZE, width=SIZE, generator=torch.Generator().manual_seed(seed),
                output_type="np", **kw).images


@pytest.mark.parametrize("layout", tiny.LAYOUTS)
def test_tiny_layout_loads_offline_and_samples_a_finite_seeded_image(pipes, layout):
    pipe = pipes[layout]
    image = call(pipe, seed=3, prompt=PROMPTS[0], noise_level=100)
    assert image.shape == (1, SIZE, SIZE, 3)
    assert np.isfinite(image).all() and float(image.std()) > 0.01
    again = call(pipe, seed=3, prompt=PROMPTS[0], noise_level=100)
    assert np.array_equal(image, again)
    other = call(pipe, seed=4, prompt=PROMPTS[0], noise_level=100)
    assert float(np.abs(other - image).max()) > 1e-3


def test_tiny_statistics_survive_saving_and_are_not_the_defaults(pipes, tiny_folders):
    built = tiny.build_tiny_stable_unclip_components("txt2img")
    for layout in tiny.LAYOUTS:
        norm = pipes[layout].image_normalizer
        assert torch.equal(norm.mean, built["image_normalizer"].mean)
        assert torch.equal(norm.std, built["image_normalizer"].std)
        assert float(norm.mean.detach().abs().min()) > 0
        assert float((norm.std.detach() - 1).abs().min()) > 0
    prior = pipes["txt2img"].prior
    assert torch.equal(prior.clip_std, built["prior"].clip_std)
    assert float((prior.clip_std.detach() - 1).abs().min()) > 0
    assert float(prior.clip_mean.detach().abs().min()) > 0
    # different statistics, so a pipeline that mixes them up gives another image
    assert not torch.allclose(prior.clip_std.flatten(), norm.std.flatten())
    index = json.loads((tiny_folders / "txt2img" / "model_index.json").read_text())
    assert index["image_normalizer"] == ["stable_diffusion", "StableUnCLIPImageNormalizer"]
    assert list((tiny_folders / "txt2img" / "unet").glob("*.safetensors"))


def test_tiny_tokenizers_pad_as_the_real_ones(pipes):
    """SD 2.x pads with "!", OpenAI CLIP (Karlo's prior) with "<|endoftext|>"."""
    pipe = pipes["txt2img"]
    assert pipe.tokenizer.pad_token == "!" and pipe.prior_tokenizer.pad_token == "<|endoftext|>"
    ids = pipe.tokenizer(PROMPTS[0], padding="max_length", max_length=77).input_ids
    assert ids[-1] == pipe.tokenizer.pad_token_id != pipe.tokenizer.eos_token_id
    assert len(pipe.tokenizer(PROMPTS[0]).input_ids) == 5  # BOS, three words, EOS


# --- noising the image embedding from first principles --------------------------------------------

def cosine_alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    """DDPM's squaredcos_cap_v2 schedule (betas capped at 0.999), cumulated in float32."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999)
             for i in range(steps)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float32), dim=0)


def level_embedding(level: int, dim: int, batch: int) -> torch.Tensor:
    """Sinusoidal embedding of the noise level: [cos, sin], frequencies 10000^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = float(level) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)]).expand(batch, dim)


def noised_class_labels(embeds, level, noise, mean, std):
    """What the UNet gets as class_labels: scale -> q_sample at level -> unscale, then the level's
    embedding appended."""
    a = cosine_alphas_cumprod()[level]
    x = (embeds - mean) / std
    x = a.sqrt() * x + (1 - a).sqrt() * noise
    x = x * std + mean
    return torch.cat([x, level_embedding(level, embeds.shape[-1], embeds.shape[0])], dim=1)


@pytest.mark.parametrize("layout", tiny.LAYOUTS)
@pytest.mark.parametrize("level", [0, 250, 999])
def test_noise_image_embeddings_from_first_principles(pipes, layout, level):
    pipe = pipes[layout]
    g = torch.Generator().manual_seed(5)
    embeds = torch.randn(2, tiny.DIM, generator=g)
    noise = torch.randn(2, tiny.DIM, generator=g)
    norm = pipe.image_normalizer
    with torch.no_grad():
        ref = pipe.noise_image_embeddings(embeds, noise_level=level, noise=noise)
        ours = noised_class_labels(embeds, level, noise, norm.mean, norm.std)
        # without an explicit noise, the pipeline draws it from the generator, in embeds' shape
        drawn = pipe.noise_image_embeddings(embeds, noise_level=level,
                                            generator=torch.Generator().manual_seed(9))
        redrawn = torch.randn(2, tiny.DIM, generator=torch.Generator().manual_seed(9))
        own = noised_class_labels(embeds, level, redrawn, norm.mean, norm.std)
    assert ref.shape == (2, 2 * tiny.DIM)
    assert float((ref - ours).abs().max()) <= 1e-6
    assert float((drawn - own).abs().max()) <= 1e-6
    # level 0 still adds a little noise: alpha_bar(0) < 1 under the cosine schedule
    if level == 0:
        assert 0 < float((ref[:, :tiny.DIM] - embeds).abs().max()) < 0.05


# --- the order of random draws --------------------------------------------------------------------

@pytest.fixture
def draws(monkeypatch):
    """Every ``randn_tensor`` the pipelines and their schedulers make: (caller, shape)."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_unclip as t2i
    import diffusers.pipelines.stable_diffusion.pipeline_stable_unclip_img2img as i2i
    import diffusers.schedulers.scheduling_ddim as ddim
    import diffusers.schedulers.scheduling_ddpm as ddpm

    log: list[tuple[str, tuple]] = []
    for module, name in ((t2i, "pipeline"), (i2i, "pipeline"), (ddpm, "ddpm"), (ddim, "ddim")):
        original = module.randn_tensor

        def recording(shape, *a, _name=name, _original=original, **kw):
            log.append((_name, tuple(shape)))
            return _original(shape, *a, **kw)
        monkeypatch.setattr(module, "randn_tensor", recording)
    return log


@pytest.mark.parametrize("prior_steps", [2, 3])
def test_txt2img_draws_prior_latents_prior_noise_embedding_noise_then_latents(pipes, draws,
                                                                              prior_steps):
    call(pipes["txt2img"], seed=1, prompt=PROMPTS, num_images_per_prompt=2, noise_level=10,
         prior_num_inference_steps=prior_steps)
    n, d = 4, tiny.DIM  # 2 prompts x 2 images, each with its own prior sample and noise
    assert draws == ([("pipeline", (n, d))]                   # prior latents
                     + [("ddpm", (n, d))] * (prior_steps - 1)  # prior steps, none at t = 0
                     + [("pipeline", (n, d)),                  # embedding noise
                        ("pipeline", (n, 4, SIZE, SIZE))])     # UNet latents; DDIM eta 0: none


@pytest.mark.parametrize("prompts, per", [(PROMPTS[0], 3), (PROMPTS, 2)])
def test_img2img_draws_one_embedding_noise_per_input_then_latents(pipes, draws, unet_inputs,
                                                                  prompts, per):
    """One PIL image: one noised embedding, repeated for every prompt and image."""
    call(pipes["img2img"], seed=1, prompt=prompts, num_images_per_prompt=per, noise_level=10,
         guidance_scale=1.0)
    n = per * (len(prompts) if isinstance(prompts, list) else 1)
    assert draws == [("pipeline", (1, tiny.DIM)), ("pipeline", (n, 4, SIZE, SIZE))]
    labels = unet_inputs["img2img"][0][1]
    assert labels.shape[0] == n and torch.equal(labels, labels[:1].expand_as(labels))


def test_img2img_from_embeds_equals_drawing_noise_then_latents_by_hand(pipes):
    """Reproduces the call's randomness with one generator: embedding noise, then latents."""
    pipe = pipes["img2img"]
    embeds = torch.randn(1, tiny.DIM, generator=torch.Generator().manual_seed(2))
    ref = call(pipe, seed=7, prompt=PROMPTS[0], image_embeds=embeds, noise_level=300)
    g = torch.Generator().manual_seed(7)
    torch.randn(1, tiny.DIM, generator=g)  # the embedding noise
    latents = torch.randn(1, 4, SIZE, SIZE, generator=g)
    other = torch.Generator().manual_seed(7)
    ours = pipe(prompt=PROMPTS[0], image_embeds=embeds, noise_level=300, latents=latents,
                height=SIZE, width=SIZE, num_inference_steps=2, generator=other,
                output_type="np").images
    assert np.array_equal(ref, ours)


# --- what the UNet sees ---------------------------------------------------------------------------

@pytest.fixture
def unet_inputs(pipes):
    """The (sample, class_labels, encoder_hidden_states) of each UNet call, per layout."""
    seen: dict[str, list] = {k: [] for k in pipes}
    handles = []
    for layout, pipe in pipes.items():
        def hook(module, args, kwargs, _seen=seen[layout]):
            _seen.append((args[0].clone(), kwargs["class_labels"].clone(),
                          kwargs["encoder_hidden_states"].clone()))
        handles.append(pipe.unet.register_forward_pre_hook(hook, with_kwargs=True))
    yield seen
    for h in handles:
        h.remove()


def encode(pipe, prompts: list[str]) -> torch.Tensor:
    """The prompt's cross-attention context: last hidden state (after the final layer norm) of
    the text encoder on ids padded to 77 with the tokenizer's pad token, no attention mask."""
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=77, truncation=True,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids).last_hidden_state


@pytest.mark.parametrize("layout", tiny.LAYOUTS)
def test_guidance_batch_is_negative_prompt_and_zero_class_labels_first(pipes, unet_inputs,
                                                                       layout):
    pipe = pipes[layout]
    kw = {} if layout == "txt2img" else {"image_embeds": torch.randn(
        1, tiny.DIM, generator=torch.Generator().manual_seed(4))}
    call(pipe, seed=2, prompt=PROMPTS[0], negative_prompt="black and white", noise_level=200,
         guidance_scale=5.0, **kw)
    (sample, labels, context), _ = unet_inputs[layout]  # two steps
    assert sample.shape[0] == labels.shape[0] == context.shape[0] == 2
    assert torch.equal(sample[0], sample[1])
    assert torch.count_nonzero(labels[0]) == 0 and torch.count_nonzero(labels[1]) > 0
    assert labels.shape[1] == 2 * tiny.DIM
    assert torch.allclose(labels[1, tiny.DIM:], level_embedding(200, tiny.DIM, 1)[0], atol=1e-6)
    assert torch.allclose(context[0], encode(pipe, ["black and white"])[0], atol=1e-6)
    assert torch.allclose(context[1], encode(pipe, [PROMPTS[0]])[0], atol=1e-6)


@pytest.mark.parametrize("layout", tiny.LAYOUTS)
def test_guidance_scale_one_runs_a_single_conditional_batch(pipes, unet_inputs, layout):
    pipe = pipes[layout]
    call(pipe, seed=2, prompt=PROMPTS[0], guidance_scale=1.0)
    sample, labels, context = unet_inputs[layout][0]
    assert sample.shape[0] == labels.shape[0] == context.shape[0] == 1
    assert torch.count_nonzero(labels) > 0


def test_txt2img_class_labels_are_the_noised_post_processed_prior_sample(pipes, unet_inputs,
                                                                         monkeypatch):
    """The prior's output is un-normalised with its clip_mean/clip_std, then noised with the
    normaliser's statistics and the generator's next draw."""
    pipe = pipes["txt2img"]
    captured = {}
    original = pipe.noise_image_embeddings

    def spy(image_embeds, noise_level, noise=None, generator=None):
        captured["embeds"] = image_embeds.clone()
        captured["state"] = generator.get_state()
        return original(image_embeds, noise_level=noise_level, noise=noise, generator=generator)
    monkeypatch.setattr(pipe, "noise_image_embeddings", spy)
    post = []
    monkeypatch.setattr(pipe.prior, "post_process_latents",
                        lambda x, _f=pipe.prior.post_process_latents: post.append(x) or _f(x))
    call(pipe, seed=6, prompt=PROMPTS[0], noise_level=400, guidance_scale=1.0)
    (raw,) = post
    assert torch.allclose(captured["embeds"], raw * pipe.prior.clip_std + pipe.prior.clip_mean)
    g = torch.Generator()
    g.set_state(captured["state"])
    noise = torch.randn(1, tiny.DIM, generator=g)
    norm = pipe.image_normalizer
    with torch.no_grad():
        ours = noised_class_labels(captured["embeds"], 400, noise, norm.mean, norm.std)
    assert float((unet_inputs["txt2img"][0][1] - ours).abs().max()) <= 1e-6


def test_img2img_embeds_the_picture_by_feature_extractor_then_projected_embedding(pipes):
    pipe = pipes["img2img"]
    picture = a_picture(1)
    pixels = pipe.feature_extractor(images=picture, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    with torch.no_grad():
        embeds = pipe.image_encoder(pixels).image_embeds
    from_image = call(pipe, seed=8, image=picture, prompt=PROMPTS[1], noise_level=50)
    from_embeds = call(pipe, seed=8, image_embeds=embeds, prompt=PROMPTS[1], noise_level=50)
    assert float(np.abs(from_image - from_embeds).max()) <= 1e-6


def test_txt2img_prior_guides_against_empty_text_not_the_negative_prompt(pipes):
    pipe = pipes["txt2img"]
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["proj_embedding"].clone())
    handle = pipe.prior.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        call(pipe, seed=2, prompt=PROMPTS[0], negative_prompt="black and white",
             prior_guidance_scale=4.0)
    finally:
        handle.remove()
    ids = pipe.prior_tokenizer(["", PROMPTS[0]], padding="max_length", max_length=77,
                               return_tensors="pt").input_ids
    with torch.no_grad():
        expected = pipe.prior_text_encoder(ids).text_embeds
    assert len(seen) == 2 and seen[0].shape == (2, tiny.DIM)  # [uncond, cond] per prior step
    assert torch.allclose(seen[0], expected, atol=1e-6)
