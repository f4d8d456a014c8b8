"""The Kandinsky 2.2 family (kandinsky-community/kandinsky-2-2-*), as diffusers lays it out.

It ships in folders of its own, each with a ``model_index.json``:

* the prior folder (``KandinskyV22PriorPipeline``): prior, text_encoder, tokenizer,
  image_encoder, image_processor, scheduler (an UnCLIPScheduler) -- CLIP ViT-bigG, 1280-d;
* decoder folders (``KandinskyV22Pipeline``, ``...InpaintPipeline``, ``...ControlnetPipeline``):
  unet, movq, scheduler (a DDPMScheduler).  The UNet samples MoVQ latents conditioned on the image
  embedding alone (no text); the inpainting UNet also reads the masked image's latents and the
  mask (9 input channels); the ControlNet one a hint image (depth).
* or one combined folder (``KandinskyV22CombinedPipeline``) with the prior's parts as
  ``prior_<name>``.

Components get the same logical names as Karlo's where they do the same job (``prior``,
``prior_scheduler``, ``text_encoder``, ``feature_extractor`` for the image processor,
``decoder`` for the UNet, ``decoder_scheduler``), plus ``movq``.  So the generic prior and CLIP
handles serve both families; the decoder handle here is this family's ``DecoderBackend``.

Guidance in the decoder compares against a *negative image embedding*: what the Prior samples
for a linked negative prompt, otherwise the image encoder's embedding of an all-zero (mean
colour) image, as diffusers computes it.  The Prior and CLIPImageEncode attach it to the
embeddings they output.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core.backends import Conditioning
from ..core.checkpoint import (Checkpoint, err, existing_dir, mismatch_collector,
                               pipeline_class, text_config, vision_config)
from ..core.constants import constant, files_of
from ..core.family import Family, Part, Stage
from ..core.handles import KNOWN_CLIPS, ClipTextModel, ClipVisionModel, ModelHandle, PriorModel
from ..core.pixels import check_sample_pixels, pixels_at, resize, to_image
from ..core.sampling import (SchedulerSampler, choose_sampler, make_generator, noise, plain,
                             sample, step_tensor)
from ..errors import UserError
from ..types import IMAGE_EMBEDS, ImageEmbeds

PRIOR_PIPELINES = ("KandinskyV22PriorPipeline", "KandinskyV22PriorEmb2EmbPipeline")
DECODER_PIPELINES = ("KandinskyV22Pipeline", "KandinskyV22Img2ImgPipeline",
                     "KandinskyV22InpaintPipeline", "KandinskyV22ControlnetPipeline",
                     "KandinskyV22ControlnetImg2ImgPipeline")
COMBINED_PIPELINES = ("KandinskyV22CombinedPipeline", "KandinskyV22Img2ImgCombinedPipeline",
                      "KandinskyV22InpaintCombinedPipeline")
PIPELINES = PRIOR_PIPELINES + DECODER_PIPELINES + COMBINED_PIPELINES

# logical component -> where it lies in its folder (Karlo's names where they do the same job)
PRIOR_PARTS: dict[str, Part] = {
    "text_encoder": Part("text_encoder", "config.json",
                         ("transformers", "CLIPTextModelWithProjection")),
    "tokenizer": Part("tokenizer", "tokenizer_config.json", ("transformers", "CLIPTokenizer"),
                      weighted=False),
    "image_encoder": Part("image_encoder", "config.json",
                          ("transformers", "CLIPVisionModelWithProjection")),
    "feature_extractor": Part("image_processor", "preprocessor_config.json",
                              ("transformers", "CLIPImageProcessor"), weighted=False),
    "prior": Part("prior", "config.json", ("diffusers", "PriorTransformer"), stepped=True),
    "prior_scheduler": Part("scheduler", "scheduler_config.json",
                            ("diffusers", "UnCLIPScheduler"), weighted=False),
}
DECODER_PARTS: dict[str, Part] = {
    "decoder": Part("unet", "config.json", ("diffusers", "UNet2DConditionModel"), stepped=True),
    "movq": Part("movq", "config.json", ("diffusers", "VQModel")),
    "decoder_scheduler": Part("scheduler", "scheduler_config.json",
                              ("diffusers", "DDPMScheduler"), weighted=False),
}
NO_UPSAMPLER = ("Kandinsky 2.2 has no upsampler: its decoder draws at full resolution (set the "
                "Decoder's width and height)")
_PRIOR_HINT = "the prior folder (kandinsky-2-2-prior)"
_DECODER_HINT = ("a decoder folder (kandinsky-2-2-decoder, -decoder-inpaint or "
                 "-controlnet-depth)")


# --- the checkpoint on disk ---------------------------------------------------------------------

def _role(name: str | None) -> str | None:
    if name in PRIOR_PIPELINES:
        return "prior"
    if name in DECODER_PIPELINES:
        return "decoder"
    if name in COMBINED_PIPELINES:
        return "combined"
    return None


def _locate(root: Path, prior_root: Path | None) -> dict[str, Path]:
    """logical component -> its folder, for every component present."""
    roles = {"path": _role(pipeline_class(root))}
    if prior_root is not None:
        roles["prior_path"] = _role(pipeline_class(prior_root, "prior_path"))
    found: dict[str, Path] = {}
    for folder, role, prefix in _folders(root, prior_root, roles):
        table = PRIOR_PARTS if role == "prior" else DECODER_PARTS
        for part, spec in table.items():
            if spec.present(folder / (prefix + spec.folder)):
                found.setdefault(part, folder / (prefix + spec.folder))
    return found


def _folders(root: Path, prior_root: Path | None, roles: dict):
    """(folder, role, subfolder prefix) for each place components are looked for."""
    out = []
    if roles["path"] == "combined":
        out += [(root, "decoder", ""), (root, "prior", "prior_")]
    else:
        out.append((root, roles["path"], ""))
    if prior_root is not None:
        role = roles["prior_path"]
        if role == "combined":
            out += [(prior_root, "prior", "prior_")]
        else:
            out.append((prior_root, role, ""))
    return out


def _what(part: str) -> str:
    spec = PRIOR_PARTS.get(part) or DECODER_PARTS[part]
    return f"{spec.folder}/ ({spec.cls[1]})"


def _open(family: "Kandinsky22", root: Path, stages: tuple[str, ...], *, layout: bool,
          allow_pickle: bool = False, prior_path: str = "", config_only: bool = False
          ) -> Checkpoint:
    """Check Kandinsky 2.2 folders for ``stages`` and read their configs, reading no weights.

    ``root`` is a decoder, prior or combined folder; ``prior_path`` optionally a second one.
    ``layout`` (LoadUnCLIP): a decoder and a prior are both required."""
    prior_root = existing_dir(prior_path, "prior_path") if prior_path and prior_path.strip() \
        else None
    role = _role(pipeline_class(root))
    if prior_root is not None:
        other = pipeline_class(prior_root, "prior_path")
        if _role(other) is None:
            said = (f"its model_index.json names {other}" if other else
                    "it has no model_index.json, which says what a folder holds")
            raise err(f"{prior_root} is not a Kandinsky 2.2 prior folder ({said}); give "
                      f"{_PRIOR_HINT}", "prior_path")
        if _role(other) == role and role != "combined":
            raise err(f"path and prior_path are both Kandinsky 2.2 {role} folders; give "
                      f"{_DECODER_HINT} as path and {_PRIOR_HINT} as prior_path", "prior_path")
        if role == "prior":  # given the other way round: fine, the roles say which is which
            root, prior_root = prior_root, root
            role = _role(other)
    found = _locate(root, prior_root)
    kind = {"prior": "Kandinsky 2.2's prior folder", "decoder": "a Kandinsky 2.2 decoder folder",
            "combined": "a combined Kandinsky 2.2 folder"}[role]

    if "upsampler" in stages and not layout:
        raise err(NO_UPSAMPLER)
    need: list[str] = []
    if layout:
        need = ["decoder", "movq", "decoder_scheduler", "prior", "prior_scheduler",
                "text_encoder", "tokenizer"]
    else:
        for stage in stages:
            need += [p for p in family.stages[stage].needs if p not in need]
    missing = [p for p in need if p not in found]
    if missing:
        prior_missing = [p for p in missing if p in PRIOR_PARTS]
        dec_missing = [p for p in missing if p in DECODER_PARTS]
        if layout and prior_missing and prior_root is None and role == "decoder":
            raise err(f"{root} is {kind}; LoadUnCLIP also needs the prior: set prior_path to "
                      f"{_PRIOR_HINT}", "prior_path")
        if layout and dec_missing and role == "prior" and prior_root is None:
            raise err(f"{root} is {kind}, which holds no decoder; give {_DECODER_HINT} as path "
                      f"and this folder as prior_path (or load the prior's stages with "
                      f"LoadUnCLIPPrior / LoadUnCLIPClipText)")
        prior_at = prior_root or (root if role in ("prior", "combined") else None)
        dec_at = root if role in ("decoder", "combined") else None
        said = []
        for group, at, hint in ((dec_missing, dec_at, _DECODER_HINT),
                                (prior_missing, prior_at, _PRIOR_HINT)):
            if group:
                what = ", ".join(_what(p) for p in group)
                said.append(f"{at} lacks {what}" if at else f"{what} live in {hint}")
        raise err(f"{root} is {kind}; " + "; ".join(said))

    wanted = set(need)
    for stage in stages:
        if stage in family.stages:
            wanted.update(p for p in family.stages[stage].uses if p in found)
    if layout:
        wanted |= set(found)
    index = {key: folder / "model_index.json"
             for folder, key in ((root, "model_index.json"),
                                 (prior_root, "prior_path:model_index.json"))
             if folder is not None and (folder / "model_index.json").is_file()}
    roots = {"prior_path": str(prior_root)} if prior_root is not None else {}
    return family.read(root, found, wanted, allow_pickle=allow_pickle, config_only=config_only,
                       index=index, roots=roots)


def variant(unet_cfg: dict, latent_channels: int = 4) -> str:
    """text2img, inpaint or controlnet, from the UNet's config."""
    if unet_cfg.get("addition_embed_type") == "image_hint":
        return "controlnet"
    if unet_cfg.get("in_channels", 4) == 2 * latent_channels + 1:
        return "inpaint"
    return "text2img"


def prior_dim(cfg: dict) -> int:
    return int(cfg.get("clip_embed_dim") or cfg.get("embedding_dim", 768))


def _fit(cfg: dict[str, dict]) -> list[UserError]:
    """Components that would fail (or silently misbehave) together, from their configs alone."""
    out, mismatch = mismatch_collector()

    te = text_config(cfg["text_encoder"]) if cfg.get("text_encoder") else None
    ie = vision_config(cfg["image_encoder"]) if cfg.get("image_encoder") else None
    pr, tok, fe = cfg.get("prior"), cfg.get("tokenizer"), cfg.get("feature_extractor")
    unet, movq = cfg.get("decoder"), cfg.get("movq")
    if pr:
        if te:
            mismatch("prior embedding_proj_dim", pr.get("embedding_proj_dim") or
                     pr.get("embedding_dim", 768), "text_encoder projection_dim",
                     te.get("projection_dim", 512))
            mismatch("prior embedding_dim", pr.get("embedding_dim", 768),
                     "text_encoder hidden_size", te.get("hidden_size", 512),
                     "the prior reads the text hidden states")
        if ie:
            mismatch("prior clip_embed_dim", prior_dim(pr), "image_encoder projection_dim",
                     ie.get("projection_dim", 512))
        if tok:
            mismatch("tokenizer model_max_length", tok.get("model_max_length"),
                     "prior num_embeddings", pr.get("num_embeddings", 77))
        if unet:
            mismatch("prior clip_embed_dim", prior_dim(pr), "decoder (unet) encoder_hid_dim",
                     unet.get("encoder_hid_dim"), "the decoder takes the prior's embeddings")
    if ie and fe and fe.get("do_center_crop", True):
        crop = fe.get("crop_size")
        crop = crop.get("height") if isinstance(crop, dict) else crop
        mismatch("image_processor crop_size", crop, "image_encoder image_size",
                 ie.get("image_size", 224))
    if unet:
        kind = unet.get("addition_embed_type")
        if kind not in ("image", "image_hint") or unet.get("encoder_hid_dim_type") != "image_proj":
            out.append(err(f"unet/config.json is not a Kandinsky 2.2 decoder UNet "
                           f"(addition_embed_type {kind!r}, encoder_hid_dim_type "
                           f"{unet.get('encoder_hid_dim_type')!r}; 2.2 uses 'image' or "
                           f"'image_hint' with 'image_proj')"))
        c = int((movq or {}).get("latent_channels", 4))
        cin, cout = unet.get("in_channels", 4), unet.get("out_channels", 4)
        if kind == "image_hint" and cin != 2 * c:
            out.append(err(f"components do not fit together: a ControlNet unet "
                           f"(addition_embed_type image_hint) takes {2 * c} input channels with "
                           f"movq latent_channels {c} (latents + hint features), not {cin}"))
        elif kind == "image" and cin not in (c, 2 * c + 1):
            out.append(err(f"components do not fit together: unet in_channels {cin} does not "
                           f"fit movq latent_channels {c} (text-to-image {c}, inpaint "
                           f"{2 * c + 1})"))
        if cout not in (c, 2 * c):
            out.append(err(f"unet out_channels {cout} is neither movq latent_channels {c} nor "
                           f"twice it"))
    return out


# --- handles ------------------------------------------------------------------------------------

def zero_image_embeds(handle: ModelHandle) -> torch.Tensor | None:
    """The image encoder's embedding of an all-zero input (in normalised pixels: a mean-colour
    image), [1, D] float32 on the CPU, as diffusers' ``get_zero_embed``; None without an image
    encoder.  A constant of the checkpoint: computed once, then found without loading the
    1.8 B-parameter encoder again."""
    ck = handle.checkpoint
    if not ck.has("image_encoder"):
        return None

    def compute() -> ImageEmbeds:
        enc = handle.part("image_encoder")
        size = int(vision_config(ck.config("image_encoder")).get("image_size", 224))
        with torch.no_grad():  # not inference_mode: the result is a cached value
            x = torch.zeros(1, 3, size, size, device=handle.device, dtype=enc.dtype)
            return ImageEmbeds(plain(enc(x).image_embeds))
    identity = {**files_of(ck, ("image_encoder",)), "device": handle.device.type,
                "dtype": str(handle.dtype)}
    return constant("zero_image_embeds", identity, IMAGE_EMBEDS, compute).image_embeds


class VisionModel(ClipVisionModel):
    def negative_embeds(self):
        return zero_image_embeds(self)


class Prior(PriorModel):
    samples_negative = True

    def negative_embeds(self):
        return zero_image_embeds(self)


def unet_model(unet, cond: Conditioning, guidance_scale: float, *, latent_channels: int,
               hint: torch.Tensor | None = None, extra: torch.Tensor | None = None):
    """The Kandinsky 2.2 UNet as ``(x, t) -> model output`` (guided noise, then the conditional
    half's variance channels).  The image embedding conditions it twice, as an added time
    embedding and as 32 cross-attention tokens; guidance runs the negative embedding in the same
    batch, first.  ``extra`` (inpainting: masked-image latents and mask) is stacked onto the
    input channels, ``hint`` (ControlNet) goes in as added conditioning."""
    device, dtype = unet.device, unet.dtype
    guided = guidance_scale != 1.0
    embeds = torch.cat([cond.negative, cond.image_embeds]) if guided else cond.image_embeds
    added = {"image_embeds": embeds.to(device, dtype)}
    if hint is not None:
        added["hint"] = (torch.cat([hint, hint]) if guided else hint).to(device, dtype)
    if extra is not None:
        extra = (torch.cat([extra, extra]) if guided else extra).to(device)
    c = latent_channels

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        x_in = torch.cat([x, x]) if guided else x
        if extra is not None:
            x_in = torch.cat([x_in, extra], dim=1)
        out = unet(sample=x_in.to(dtype), timestep=step_tensor(t), encoder_hidden_states=None,
                   added_cond_kwargs=added).sample.float()
        if guided:
            eps_u, eps_c = out[:, :c].chunk(2)
            out = torch.cat([eps_u + guidance_scale * (eps_c - eps_u),
                             out[:, c:].chunk(2)[1]], dim=1)
        return out
    return model


class Decoder(ModelHandle):
    """Kandinsky 2.2's latent decoder: UNet + MoVQ + DDPM scheduler, this family's
    DecoderBackend (see decoder.py)."""

    @property
    def unet(self):
        return self.part("decoder")

    @property
    def movq(self):
        """Always float32: decoding latents in half precision loses colour (as with VAEs), and
        the MoVQ is small (68 M parameters)."""
        return self.part("movq", dtype=torch.float32)

    @property
    def scheduler_config(self) -> dict:
        return self.config("decoder_scheduler")

    @property
    def clip_dim(self) -> int:
        return int(self.config("decoder").get("encoder_hid_dim") or 1280)

    @property
    def latent_channels(self) -> int:
        return int(self.config("movq").get("latent_channels", 4))

    @property
    def scale(self) -> int:
        """Pixels per latent cell: MoVQ halves the size at each block but the last."""
        return 2 ** (len(self.config("movq").get("block_out_channels", [0] * 4)) - 1)

    @property
    def variant(self) -> str:
        return variant(self.config("decoder"), self.latent_channels)

    @property
    def native_size(self) -> int:
        sample = self.config("decoder").get("sample_size")
        return int(sample) * self.scale if isinstance(sample, int) else 512

    def round_size(self, pixels: int) -> int:
        """diffusers' rounding: up to a whole number of UNet cells (scale^2 pixels)."""
        unit = self.scale ** 2
        return math.ceil(pixels / unit) * unit

    # --- DecoderBackend ---

    takes_text = False
    settings = ()  # it reads none of the family-specific Decoder settings

    @property
    def cannot_inpaint(self) -> str | None:
        if self.variant == "inpaint":
            return None
        return (f"Inpaint needs an inpainting decoder for Kandinsky 2.2: load its "
                f"decoder-inpaint folder (this one is {self.variant})")

    @property
    def space(self) -> str | None:
        """Kandinsky 2.2's decoders are trained on OpenCLIP ViT-bigG/14 image embeddings."""
        return super().space or (KNOWN_CLIPS[(1280, 1280, 32)] if self.clip_dim == 1280
                                 else None)

    def conditioning(self, image_embeds, text, images_per_embedding: int, **options):
        for name in options:
            raise UserError(f"the Kandinsky 2.2 decoder takes no {name}; leave it at its "
                            f"default", field=name)
        if text is not None:
            raise UserError("Kandinsky 2.2's decoder is conditioned on the image embedding "
                            "alone and reads no text; unlink text (prompts go to the Prior)",
                            field="text")
        z = image_embeds.image_embeds
        if z.ndim != 2 or z.shape[1] != self.clip_dim:
            raise UserError(f"image embeddings have shape {tuple(z.shape)} but this Kandinsky "
                            f"2.2 decoder takes [B, {self.clip_dim}] (another CLIP?)",
                            field="image_embeds")
        neg = image_embeds.negative_image_embeds
        if neg is not None:
            if neg.shape[0] not in (1, z.shape[0]) or neg.shape[-1] != z.shape[-1]:
                raise UserError(f"the negative image embeddings have shape {tuple(neg.shape)} "
                                f"for {tuple(z.shape)} embeddings", field="image_embeds")
            neg = neg.expand(z.shape[0], -1)
        if images_per_embedding > 1:
            z = z.repeat_interleave(images_per_embedding, dim=0)
            neg = neg.repeat_interleave(images_per_embedding, dim=0) if neg is not None else None
        return Conditioning(image_embeds=z, negative=neg)

    def check_guidance(self, cond, guidance_scale: float) -> None:
        if guidance_scale != 1.0 and cond.negative is None:
            raise UserError("guidance needs a negative image embedding and these embeddings "
                            "carry none; they come with the Prior's and CLIPImageEncode's "
                            "output of a Kandinsky 2.2 prior folder (with its image_encoder); "
                            "for ComfyUI's CLIPVisionEncode output, link the decoder's "
                            "clip_vision (or a negative) to ClipVisionToImageEmbeds; or set "
                            "guidance_scale 1", field="image_embeds")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        h = self.round_size(height) if height else self.native_size
        w = self.round_size(width) if width else self.native_size
        return h, w

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return self.latent_channels, height // self.scale, width // self.scale

    def size_of(self, latent) -> tuple[int, int]:
        return latent.shape[-2] * self.scale, latent.shape[-1] * self.scale

    def model(self, cond, guidance_scale: float, hint=None, extra=None):
        return unet_model(self.unet, cond, guidance_scale, latent_channels=self.latent_channels,
                          hint=hint, extra=extra)

    def sampler(self, name: str, eta: float):
        return choose_sampler(SchedulerSampler, self.scheduler_config, name, eta)

    def decode(self, x):
        movq = self.movq
        return movq.decode(x.to(movq.dtype), force_not_quantize=True).sample.float()

    def encode(self, pixels):
        movq = self.movq
        return movq.encode(pixels.to(movq.device, movq.dtype)).latents.float()

    def fit_image(self, image: torch.Tensor) -> torch.Tensor:
        """An IMAGE at its own size rounded up to whole UNet cells -> pixels in [-1, 1]."""
        h, w = image.shape[1:3]
        return pixels_at(image, (self.round_size(h), self.round_size(w)))

    def inpaint(self, image, mask, cond, upsampler, *, guidance_scale: float, steps: int,
                upsample_steps: int, seed: int, resample: int) -> torch.Tensor:
        """With the inpainting UNet (decoder-inpaint), at the image's own size rounded up to
        whole UNet cells; the result is resized back to the image's size."""
        if self.cannot_inpaint:
            raise UserError(self.cannot_inpaint, field="decoder")
        if upsampler is not None:
            raise UserError("an inpainting decoder draws at full resolution; unlink the "
                            "upsampler", field="upsampler")
        h, w = image.shape[1:3]
        check_sample_pixels(h, w, field="image")
        pixels = self.fit_image(image.float())
        size = tuple(pixels.shape[-2:])
        change = mask[:, None].float()
        if tuple(change.shape[-2:]) != size:
            change = F.interpolate(change, size=size, mode="nearest-exact")
        with torch.inference_mode():
            x = inpaint_latents(self, cond, pixels, change, guidance_scale=guidance_scale,
                                steps=steps, seed=seed, sampler=self.sampler("unclip", 0.0),
                                resample=resample)
        generated = to_image(x.float().cpu())
        if tuple(generated.shape[1:3]) != (h, w):
            generated = resize(generated, w, h, "bicubic", "none")
        return generated


# --- inpainting with the inpainting UNet ----------------------------------------------------------

def grow_repaint(keep: torch.Tensor) -> torch.Tensor:
    """diffusers' ``prepare_mask``: every latent cell to repaint (keep != 1) also marks six of
    its neighbours for repainting, (i-1, j), (i, j-1), (i-1, j-1), (i+1, j), (i, j+1) and
    (i+1, j+1), vectorised.  keep: [B, 1, h, w], 1 = keep."""
    repaint = keep != 1
    grown = repaint.clone()
    padded = F.pad(repaint, (1, 1, 1, 1))
    h, w = keep.shape[-2:]
    for di, dj in ((1, 0), (0, 1), (1, 1), (-1, 0), (0, -1), (-1, -1)):
        # a cell is repainted when its neighbour at (i + di, j + dj) is
        grown |= padded[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w]
    return torch.where(grown, torch.zeros_like(keep), keep)


def inpaint_latents(decoder: Decoder, cond: Conditioning, pixels: torch.Tensor,
                    change: torch.Tensor, *, guidance_scale: float, steps: int, seed: int,
                    sampler, resample: int = 1) -> torch.Tensor:
    """Repaint where ``change`` [N, 1, H, W] is 1 in ``pixels`` [N, 3, H, W] (in [-1, 1]) with
    the inpainting UNet -> pixels [N, 3, H, W] in [-1, 1], as diffusers'
    ``KandinskyV22InpaintPipeline`` does, except that each row uses its own image and mask
    (diffusers uses the first row's for the whole batch).

    The UNet sees the noisy latents, the masked image's latents and the mask; after every step
    the kept cells are reset to the image's latents noised to the next level, with the initial
    noise."""
    device = decoder.device
    generator = make_generator(seed)
    keep = 1 - (change >= 0.5).float()
    image = decoder.encode(pixels.to(device))
    keep = grow_repaint(F.interpolate(keep.to(device), size=image.shape[-2:], mode="nearest"))
    model = decoder.model(cond, guidance_scale, extra=torch.cat([image * keep, keep], dim=1))
    timesteps = sampler.timesteps(steps)
    x = noise((cond.rows, *image.shape[1:]), generator, device) * sampler.init_noise_sigma
    x_T = x.clone()

    def callback(i, t, prev_t, x):
        known = image if prev_t is None else sampler.add_noise(image, x_T, prev_t)
        return keep * known + (1 - keep) * x

    x = sample(model, sampler, timesteps, x, generator, callback=callback, resample=resample,
                   desc="inpaint")
    return decoder.decode(keep * image + (1 - keep) * x)


# --- the family ------------------------------------------------------------------------------------

class Kandinsky22(Family):
    name = "kandinsky22"
    label = "Kandinsky 2.2"
    pipelines = PRIOR_PIPELINES + DECODER_PIPELINES + COMBINED_PIPELINES
    parts = {**PRIOR_PARTS, **DECODER_PARTS}
    stages = {
        "clip_text": Stage(ClipTextModel, ("text_encoder", "tokenizer")),
        "clip_vision": Stage(VisionModel, ("image_encoder", "feature_extractor")),
        # the prior's negative image embedding (no negative prompt) comes from the image encoder
        "prior": Stage(Prior, ("prior", "prior_scheduler"), ("image_encoder", "feature_extractor")),
        "decoder": Stage(Decoder, ("decoder", "movq", "decoder_scheduler")),
    }
    absent = {"upsampler": NO_UPSAMPLER}
    layouts = {**{p: ("clip_text", "clip_vision", "prior") for p in PRIOR_PIPELINES},
               **{p: ("decoder",) for p in DECODER_PIPELINES}}

    def open(self, root: Path, stages, *, layout: bool, allow_pickle: bool = False,
             prior_path: str = "", config_only: bool = False) -> Checkpoint:
        return _open(self, root, tuple(stages), layout=layout, allow_pickle=allow_pickle,
                     prior_path=prior_path, config_only=config_only)

    def fit_problems(self, cfg: dict[str, dict]) -> list[UserError]:
        return _fit(cfg)


FAMILY = Kandinsky22()
NAME, LABEL = FAMILY.name, FAMILY.label
