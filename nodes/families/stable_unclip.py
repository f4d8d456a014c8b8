"""The Stable unCLIP family (stabilityai/stable-diffusion-2-1-unclip and -unclip-small), as
diffusers lays it out: one folder, one ``model_index.json``.

* ``StableUnCLIPPipeline`` (text to image, the -small "-l" layout): Karlo's prior with its own
  CLIP text tower (prior_tokenizer, prior_text_encoder, prior, prior_scheduler: a DDPM that
  predicts the sample), then the decoder parts below.
* ``StableUnCLIPImg2ImgPipeline`` (image variations, "-h" and "-l"): feature_extractor +
  image_encoder instead of the prior's parts.
* The decoder in both: an SD 2.1 UNet in VAE latents, conditioned on the SD prompt through
  cross-attention (text_encoder + tokenizer, no projection) and on the image embedding through
  ``class_labels``: the embedding noised to ``noise_level`` (image_normalizer around
  image_noising_scheduler's ``add_noise``) followed by a sinusoidal embedding of the level.

Logical names: the prior's CLIP takes the shared ``text_encoder``/``tokenizer`` names, so the
shared CLIP text handle and the Prior serve it; SD's prompt encoder is ``prompt_encoder`` /
``prompt_tokenizer``; the UNet is ``decoder`` and its scheduler ``decoder_scheduler``.

Where we differ from diffusers (on purpose): ``per_image_noise`` draws the embedding noise per
image rather than once per embedding; VAE encoding (image-to-image, inpainting, inversion) takes
the latent distribution's mode, so it draws nothing.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.backends import Conditioning
from ..core.checkpoint import (OWN_CLASSES, Checkpoint, err, load_part, mismatch_collector,
                               pipeline_class, text_config, vision_config)
from ..core.facts import Facts
from ..core.family import Family, Part, Stage
from ..core.handles import KNOWN_CLIPS, ClipTextModel, ClipVisionModel, ModelHandle, PriorModel
from ..core.pixels import check_sample_pixels, pixels_at, resize, to_image
from ..core.sampling import (DDIMSampler, Generators, SchedulerSampler, make_generator, noise,
                             plain, repaint_callback, sample, step_tensor)
from ..errors import UserError

TXT2IMG, IMG2IMG = "StableUnCLIPPipeline", "StableUnCLIPImg2ImgPipeline"
LABEL = "Stable unCLIP"


def _normalizer_class():
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer)
    return StableUnCLIPImageNormalizer


OWN_CLASSES["StableUnCLIPImageNormalizer"] = _normalizer_class  # not exported by diffusers


PARTS: dict[str, Part] = {
    # the prior's CLIP under the shared names (txt2img layout)
    "text_encoder": Part("prior_text_encoder", "config.json",
                         ("transformers", "CLIPTextModelWithProjection")),
    "tokenizer": Part("prior_tokenizer", "tokenizer_config.json",
                      ("transformers", "CLIPTokenizer"), weighted=False),
    "prior": Part("prior", "config.json", ("diffusers", "PriorTransformer"), stepped=True),
    "prior_scheduler": Part("prior_scheduler", "scheduler_config.json",
                            ("diffusers", "DDPMScheduler"), weighted=False),
    # the image tower (img2img layout)
    "image_encoder": Part("image_encoder", "config.json",
                          ("transformers", "CLIPVisionModelWithProjection")),
    "feature_extractor": Part("feature_extractor", "preprocessor_config.json",
                              ("transformers", "CLIPImageProcessor"), weighted=False),
    # the decoder (both layouts)
    "prompt_encoder": Part("text_encoder", "config.json", ("transformers", "CLIPTextModel")),
    "prompt_tokenizer": Part("tokenizer", "tokenizer_config.json",
                             ("transformers", "CLIPTokenizer"), weighted=False),
    "decoder": Part("unet", "config.json", ("diffusers", "UNet2DConditionModel"), stepped=True),
    "decoder_scheduler": Part("scheduler", "scheduler_config.json",
                              ("diffusers", "PNDMScheduler"), weighted=False),
    "vae": Part("vae", "config.json", ("diffusers", "AutoencoderKL")),
    "image_normalizer": Part("image_normalizer", "config.json",
                             ("unclip", "StableUnCLIPImageNormalizer")),
    "image_noising_scheduler": Part("image_noising_scheduler", "scheduler_config.json",
                                    ("diffusers", "DDPMScheduler"), weighted=False),
}
PRIOR_PARTS = ("text_encoder", "tokenizer", "prior", "prior_scheduler")
VISION_PARTS = ("image_encoder", "feature_extractor")
DECODER_PARTS = ("prompt_encoder", "prompt_tokenizer", "decoder", "decoder_scheduler", "vae",
                 "image_normalizer", "image_noising_scheduler")

NO_UPSAMPLER = ("Stable unCLIP has no upsampler: its decoder draws at full resolution (768 px; "
                "set the Decoder's width and height)")
NO_TEXT_TOWER = ("the Stable unCLIP image-variation layout ({}) has no prior and no CLIP text "
                 "tower in its image space (its SD text encoder only conditions the UNet and has "
                 "no projection); use the -small text-to-image folder, or a prior of the same "
                 "CLIP (Karlo's, OpenAI ViT-L/14, feeds the -small decoder)")
NO_IMAGE_TOWER = ("the Stable unCLIP text-to-image folder ({}) has no image encoder; encode "
                  "images with the image-variation folder of the same CLIP")
MAX_LEVEL = 999


# --- samplers ----------------------------------------------------------------------------------

class VDDIMSampler(DDIMSampler):
    """DDIM over the folder's training schedule, also for v-prediction (both published
    checkpoints predict v).  Built from any of the folder's scheduler configs."""

    def __init__(self, config: dict, eta: float = 0.0):
        from diffusers import DDIMScheduler
        sched = DDIMScheduler.from_config({k: v for k, v in config.items()
                                           if not k.startswith("_")})
        self.alphas_cumprod = sched.alphas_cumprod.clone()
        self.num_train_timesteps = int(sched.config.num_train_timesteps)
        self.prediction_type = sched.config.prediction_type
        self.clip_range = None
        self.init_noise_sigma = 1.0
        self.eta = float(eta)

    def predict(self, model_output, t, x):
        if self.prediction_type != "v_prediction":
            return super().predict(model_output, t, x)
        a = float(self.alphas_cumprod[int(t)]) if t is not None and t >= 0 else 1.0
        sa, sb = a ** 0.5, (1 - a) ** 0.5
        v = model_output[:, :x.shape[1]]
        return sa * x - sb * v, sa * v + sb * x


# --- the decoder -----------------------------------------------------------------------------------

def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def level_embedding(levels: torch.Tensor, dim: int) -> torch.Tensor:
    """The sinusoidal embedding of the noise levels, cos half first (diffusers'
    ``get_timestep_embedding`` with flip_sin_to_cos, no frequency shift)."""
    from diffusers.models.embeddings import get_timestep_embedding
    return get_timestep_embedding(levels, embedding_dim=dim, flip_sin_to_cos=True,
                                  downscale_freq_shift=0)


class Decoder(ModelHandle):
    """SD 2.1 UNet + VAE, conditioned on the noise-augmented image embedding (class_labels) and
    the SD prompt (cross-attention): this family's DecoderBackend."""

    variant = "text2img"
    takes_text = True  # captions: their prompts are the SD prompt when none is typed
    cannot_inpaint = None  # RePaint in latents works with any of its decoders
    settings = ("noise_level", "prompt", "negative_prompt", "per_image_noise")

    @property
    def unet(self):
        return self.part("decoder")

    @property
    def vae(self):
        """Float32 always: the VAE decodes badly in half precision and is small (84 M)."""
        return load_part(self.checkpoint, "vae", self.device, torch.float32, self.allow_pickle)

    @property
    def normalizer(self):
        return load_part(self.checkpoint, "image_normalizer", torch.device("cpu"),
                         torch.float32, self.allow_pickle)

    @property
    def prompt_encoder(self):
        return self.part("prompt_encoder")

    @property
    def prompt_tokenizer(self):
        return self.part("prompt_tokenizer")

    @property
    def scheduler_config(self) -> dict:
        return self.config("decoder_scheduler")

    @property
    def clip_dim(self) -> int:
        width = self.config("decoder").get("projection_class_embeddings_input_dim")
        if width:
            return int(width) // 2
        return int(self.config("image_normalizer").get("embedding_dim", 768))

    @property
    def space(self) -> str | None:
        """The CLIP the decoder was trained on: its embedding width says which for the two
        published ones (1024: OpenCLIP ViT-H/14, 768: OpenAI ViT-L/14)."""
        by_width = {1024: KNOWN_CLIPS[(1024, 1024, 24)], 768: KNOWN_CLIPS[(768, 768, 12)]}
        return by_width.get(self.clip_dim) or super().space

    @property
    def scale(self) -> int:
        return 2 ** (len(self.config("vae").get("block_out_channels", [0] * 4)) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.config("vae").get("latent_channels", 4))

    @property
    def native_size(self) -> int:
        return int(self.config("decoder").get("sample_size", 96)) * self.scale

    # --- conditioning ---

    def conditioning(self, image_embeds, text, images_per_embedding: int, *, noise_level: int = 0,
                     prompt: str = "", negative_prompt: str = "", per_image_noise: bool = False,
                     **options):
        for name in options:
            raise UserError(f"the {LABEL} decoder takes no {name}; leave it at its default",
                            field=name)
        if not 0 <= int(noise_level) <= MAX_LEVEL:
            raise UserError(f"noise_level must be between 0 and {MAX_LEVEL}, got {noise_level}",
                            field="noise_level")
        z = image_embeds.image_embeds
        if z.ndim != 2 or z.shape[1] != self.clip_dim:
            raise UserError(f"image embeddings have shape {tuple(z.shape)} but this {LABEL} "
                            f"decoder takes [B, {self.clip_dim}] (another CLIP?)",
                            field="image_embeds")
        prompts = _lines(prompt) or (list(text.prompts) if text is not None else [""])
        field = "prompt" if _lines(prompt) else "text"
        negatives = _lines(negative_prompt) or [""]
        if len(negatives) not in (1, len(prompts)):
            raise UserError(f"{len(negatives)} negative prompts for {len(prompts)} prompts; give "
                            f"one, or one per prompt", field="negative_prompt")
        negatives = negatives * (len(prompts) // len(negatives))
        e, t = z.shape[0], len(prompts)
        if e % t == 0:
            which, group = torch.arange(t).repeat_interleave(e // t), torch.arange(e)
        elif t % e == 0:
            which = torch.arange(t)
            group = torch.arange(e).repeat_interleave(t // e)
            z = z.repeat_interleave(t // e, dim=0)
        else:
            raise UserError(f"{e} image embeddings and {t} prompts cannot be paired (one must be "
                            f"a multiple of the other)", field=field)
        context, uncond = self.encode_prompts(prompts), self.encode_prompts(negatives)
        n = images_per_embedding
        z, which, group = (v.repeat_interleave(n, dim=0) for v in (z, which, group))
        if per_image_noise:
            group = torch.arange(z.shape[0])
        rows = z.shape[0]
        extra = {"context": context[which], "uncond_context": uncond[which], "group": group,
                 "level": torch.full((rows,), int(noise_level), dtype=torch.int64)}
        return Conditioning(image_embeds=z.float(), extra=extra)

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """SD's prompt context: all 77 positions of the last hidden state, no attention mask (as
        diffusers), one forward for the list."""
        tok = self.prompt_tokenizer
        ids = tok(list(prompts), padding="max_length", max_length=int(tok.model_max_length),
                  truncation=True, return_tensors="pt").input_ids
        with torch.inference_mode():
            hidden = self.prompt_encoder(ids.to(self.device)).last_hidden_state
        return plain(hidden)

    def draw(self, cond: Conditioning, generator) -> Conditioning:
        """The embedding noise, first of the decode's draws (diffusers' order): one row per
        embedding (per image with per_image_noise), then the noise augmentation -> the UNet's
        class_labels [N, 2D]."""
        extra = dict(cond.extra)
        group, z = extra["group"], cond.image_embeds
        dim = z.shape[1]
        if isinstance(generator, Generators):
            parts, start = [], 0
            for g, r in generator.groups:
                ids = group[start:start + r]
                ids = ids - ids.min()
                parts.append(noise((int(ids.max()) + 1, dim), g, "cpu")[ids])
                start += r
            eps = torch.cat(parts)
        else:
            eps = noise((int(group.max()) + 1, dim), generator, "cpu")[group]
        extra["class_labels"] = self.augment(z, eps, extra["level"])
        return Conditioning(image_embeds=cond.image_embeds, negative=cond.negative,
                            text=cond.text, uncond=cond.uncond, extra=extra)

    def augment(self, z: torch.Tensor, eps: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Noise augmentation: normalise, noise to ``levels`` on the cosine schedule, undo the
        normalisation, then append the levels' sinusoidal embedding."""
        from diffusers import DDPMScheduler
        sched = DDPMScheduler.from_config(self.config("image_noising_scheduler"))
        norm = self.normalizer
        with torch.inference_mode():
            x = norm.unscale(sched.add_noise(norm.scale(z.float()), eps, levels))
            return plain(torch.cat([x, level_embedding(levels, z.shape[1]).to(x.dtype)], 1))

    def check_guidance(self, cond, guidance_scale: float) -> None:
        """Guidance always has its other branch: the negative prompt and zero class_labels."""

    # --- sizes ---

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        for name, v in (("width", width), ("height", height)):
            if v % 8:
                raise UserError(f"{name} must be a multiple of 8 for {LABEL}, got {v}",
                                field=name)
        return height or self.native_size, width or self.native_size

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return self.latent_channels, height // self.scale, width // self.scale

    def size_of(self, latent) -> tuple[int, int]:
        return latent.shape[-2] * self.scale, latent.shape[-1] * self.scale

    def fit_image(self, image: torch.Tensor) -> torch.Tensor:
        """An IMAGE at its own size rounded up to multiples of 8 -> pixels in [-1, 1]."""
        h, w = image.shape[1:3]
        return pixels_at(image, (math.ceil(h / 8) * 8, math.ceil(w / 8) * 8))

    # --- the model ---

    def model(self, cond, guidance_scale: float, hint=None):
        """The UNet as ``(x, t) -> v`` (or eps), guided as diffusers: the negative prompt with
        all-zero class_labels first, the prompt with the augmented embedding second."""
        if "class_labels" not in cond.extra:
            raise ValueError("draw the conditioning's noise (draw) before building the model")
        unet = self.unet
        device, dtype = unet.device, unet.dtype
        guided = guidance_scale != 1.0
        labels, context = cond.extra["class_labels"], cond.extra["context"]
        if guided:
            labels = torch.cat([torch.zeros_like(labels), labels])
            context = torch.cat([cond.extra["uncond_context"], context])
        labels, context = labels.to(device, dtype), context.to(device, dtype)

        def model(x: torch.Tensor, t: int) -> torch.Tensor:
            x_in = torch.cat([x, x]) if guided else x
            out = unet(x_in.to(dtype), step_tensor(t), encoder_hidden_states=context,
                       class_labels=labels).sample.float()
            if guided:
                u, c = out.chunk(2)
                out = u + guidance_scale * (c - u)
            return out
        return model

    def sampler(self, name: str, eta: float):
        if name == "ddim":
            return VDDIMSampler(self.scheduler_config, eta=eta)
        if eta != 0:
            raise UserError("eta is DDIM's noise level; set sampler: ddim to use it (or eta 0)",
                            field="eta")
        return SchedulerSampler(self.scheduler_config)  # PNDM, DDIM or DDPM: the folder's

    def decode(self, x):
        vae = self.vae
        factor = float(vae.config.scaling_factor)
        return vae.decode((x / factor).to(vae.device, vae.dtype)).sample.float()

    def encode(self, pixels):
        """Pixels -> scaled latents (the distribution's mode: nothing is drawn)."""
        vae = self.vae
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode()
        return latents.float() * float(vae.config.scaling_factor)

    def inpaint(self, image, mask, cond, upsampler, *, guidance_scale: float, steps: int,
                upsample_steps: int, seed: int, resample: int) -> torch.Tensor:
        """RePaint in VAE latents: after every step the latents to keep are reset to the
        image's, noised to the next level.  At the image's size rounded up to multiples of 8;
        the result is resized back (the Inpaint node pastes the kept pixels back)."""
        if upsampler is not None:
            raise UserError(f"{LABEL} draws at full resolution; unlink the upsampler",
                            field="upsampler")
        h, w = image.shape[1:3]
        check_sample_pixels(h, w, field="image")
        pixels = self.fit_image(image.float()).to(self.device)
        generator = make_generator(seed)
        cond = self.draw(cond, generator)
        sampler = self.sampler("unclip", 0.0)
        with torch.inference_mode():
            known = self.encode(pixels)
            change = F.adaptive_max_pool2d(mask[:, None].float(), tuple(known.shape[-2:]))
            keep = (1 - change).to(known.device)
            x = noise(known.shape, generator, self.device) * sampler.init_noise_sigma
            x = sample(self.model(cond, guidance_scale), sampler, sampler.timesteps(steps), x,
                       generator, callback=repaint_callback(sampler, known, keep, generator),
                       resample=resample, desc="inpaint")
            generated = to_image(self.decode(x).float().cpu())
        if tuple(generated.shape[1:3]) != (h, w):
            generated = resize(generated, w, h, "bicubic", "none")
        return generated


# --- the other handles -----------------------------------------------------------------------------

class Prior(PriorModel):
    """Karlo's prior transformer with the folder's DDPM (it predicts the sample)."""

    def sampler(self):
        return SchedulerSampler(self.scheduler_config)


# --- the family ------------------------------------------------------------------------------------

def _fit(cfg: dict[str, dict]) -> list[UserError]:
    """Components that would fail (or silently misbehave) together, from their configs alone."""
    out, mismatch = mismatch_collector()
    unet, norm, vae = cfg.get("decoder"), cfg.get("image_normalizer"), cfg.get("vae")
    pe, pr = cfg.get("prompt_encoder"), cfg.get("prior")
    te = text_config(cfg["text_encoder"]) if cfg.get("text_encoder") else None
    ie = vision_config(cfg["image_encoder"]) if cfg.get("image_encoder") else None
    dim = int((norm or {}).get("embedding_dim", 768))
    if unet:
        if unet.get("class_embed_type") != "projection":
            out.append(err(f"unet/config.json is not a Stable unCLIP UNet (class_embed_type "
                           f"{unet.get('class_embed_type')!r}; it takes the image embedding as "
                           f"'projection' class labels)"))
        if norm:
            mismatch("unet projection_class_embeddings_input_dim",
                     unet.get("projection_class_embeddings_input_dim"),
                     "2 x image_normalizer embedding_dim", 2 * dim,
                     "the class labels are the embedding and its level embedding")
        if pe:
            mismatch("unet cross_attention_dim", unet.get("cross_attention_dim"),
                     "text_encoder hidden_size", text_config(pe).get("hidden_size"))
        if vae:
            mismatch("unet in_channels", unet.get("in_channels", 4), "vae latent_channels",
                     vae.get("latent_channels", 4))
    if norm and ie:
        mismatch("image_encoder projection_dim", ie.get("projection_dim"),
                 "image_normalizer embedding_dim", dim)
    if pr:
        if norm:
            mismatch("prior embedding_dim", pr.get("clip_embed_dim") or pr.get("embedding_dim"),
                     "image_normalizer embedding_dim", dim)
        if te:
            mismatch("prior embedding_proj_dim", pr.get("embedding_proj_dim") or
                     pr.get("embedding_dim", 768), "prior_text_encoder projection_dim",
                     te.get("projection_dim", 512))
            mismatch("prior embedding_dim", pr.get("embedding_dim", 768),
                     "prior_text_encoder hidden_size", te.get("hidden_size", 512),
                     "the prior reads the text hidden states")
    return out


class StableUnCLIP(Family):
    name = "stable_unclip"
    label = LABEL
    pipelines = (TXT2IMG, IMG2IMG)
    parts = PARTS
    stages = {
        "clip_text": Stage(ClipTextModel, ("text_encoder", "tokenizer")),
        "clip_vision": Stage(ClipVisionModel, VISION_PARTS),
        "prior": Stage(Prior, ("prior", "prior_scheduler")),
        "decoder": Stage(Decoder, DECODER_PARTS),
    }
    absent = {"upsampler": NO_UPSAMPLER}

    def open(self, root: Path, stages, *, layout: bool, allow_pickle: bool = False,
             prior_path: str = "", config_only: bool = False) -> Checkpoint:
        if prior_path and prior_path.strip():
            raise err("prior_path is for families whose prior ships in a folder of its own; a "
                      "Stable unCLIP folder holds its prior (text to image) or has none (image "
                      "variations): leave prior_path empty", "prior_path")
        kind = pipeline_class(root)
        txt2img = kind == TXT2IMG
        if "upsampler" in stages and not layout:
            raise err(NO_UPSAMPLER)
        if layout:
            need = list(DECODER_PARTS) + list(PRIOR_PARTS if txt2img else VISION_PARTS)
        else:
            need = []
            for stage in stages:
                if stage in ("clip_text", "prior") and not txt2img:
                    raise err(f"{root}: " + NO_TEXT_TOWER.format(kind))
                if stage == "clip_vision" and txt2img:
                    raise err(f"{root}: " + NO_IMAGE_TOWER.format(kind))
                need += [p for p in self.stages[stage].needs if p not in need]
        present = {p for p, spec in self.parts.items() if spec.present(root / spec.folder)}
        missing = [p for p in need if p not in present]
        if missing:
            what = ", ".join(self.parts[p].what for p in missing)
            raise err(f"{root} is a {kind} folder but lacks {what}")
        wanted = set(need)
        for stage in stages:
            if stage in self.stages:
                wanted.update(p for p in self.stages[stage].uses if p in present)
        if layout:
            wanted |= present
        return self.read(root, {p: root / self.parts[p].folder for p in wanted}, wanted,
                         allow_pickle=allow_pickle, config_only=config_only,
                         index={"model_index.json": root / "model_index.json"})

    def fit_problems(self, cfg: dict[str, dict]) -> list[UserError]:
        return _fit(cfg)

    def facts(self, ck: Checkpoint, stages) -> dict[str, Facts | None]:
        """As the tables say, and for the image-variation layout's missing text tower and
        prior, why (TextDiff and the Prior cannot use it)."""
        out = super().facts(ck, stages)
        for s in ("clip_text", "prior"):
            if s in out and out[s] is None and not ck.has("prior"):
                out[s] = Facts(self.name, self.label, absent=NO_TEXT_TOWER.format(IMG2IMG))
        return out


FAMILY = StableUnCLIP()
