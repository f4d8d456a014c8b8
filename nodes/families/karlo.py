"""The Karlo family: diffusers' unCLIP layout (kakaobrain/karlo-v1-alpha, and the pocket model).

One directory holds ``model_index.json`` (``UnCLIPPipeline`` or ``UnCLIPImageVariationPipeline``)
and one subfolder per component: text_encoder, tokenizer, prior, text_proj, decoder,
super_res_first, super_res_last and their three schedulers; an image-variation checkpoint adds
image_encoder + feature_extractor (and may lack the prior).  The decoder is the paper's (§2.1):
a 64 px pixel-space UNet conditioned GLIDE-style -- z_i is projected and added to the timestep
embedding, and also projected into a few extra context tokens placed before the text encoder's
hidden states.  Classifier-free guidance compares against a learned "no image embedding" vector
and the empty prompt, both in one batched forward; it guides the predicted noise only, the
predicted variance comes from the conditional half.  The upsampler raises 64 px to 256 px.
Inpainting is RePaint on both (the decoder was never trained to inpaint).
"""
from __future__ import annotations

from pathlib import Path
import torch
import torch.nn.functional as F

from ..core.backends import Conditioning
from ..core.checkpoint import (OWN_CLASSES, Checkpoint, err, mismatch_collector, read_json,
                               text_config, vision_config)
from ..core.constants import constant, files_of
from ..core.family import Family, Part, Stage
from ..core.handles import ClipTextModel, ClipVisionModel, ModelHandle, PriorModel
from ..core.pixels import from_image, resize, to_image
from ..core.sampling import (Sampler, StepCallback, UnCLIPSampler, cfg_batch, choose_sampler,
                             make_generator, noise, repaint_callback, sample, step_tensor)
from ..core.text import text_rows, uncond_of
from ..errors import UserError
from ..types import TEXT_EMBEDS

# --- the decoder's loop ----------------------------------------------------------------------------


def decoder_model(decoder, text_proj, image_embeds: torch.Tensor,
                  text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *,
                  guidance_scale: float):
    """The decoder as a function ``(x, t) -> model output`` (guided noise prediction, then the
    predicted variance channels if any) with the conditioning prepared once; the sampling loop
    and DDIM inversion both call it."""
    device, dtype = decoder.device, decoder.dtype
    guided = guidance_scale != 1.0
    embeds, hidden, mask = cfg_batch(text, uncond, guided)
    context, time_embeds = text_proj(
        image_embeddings=image_embeds.to(device, dtype), prompt_embeds=embeds.to(device, dtype),
        text_encoder_hidden_states=hidden.to(device, dtype), do_classifier_free_guidance=guided)
    mask = F.pad(mask.to(device), (text_proj.clip_extra_context_tokens, 0), value=True)
    channels = decoder.config.in_channels

    def model(x: torch.Tensor, t: int) -> torch.Tensor:
        x_in = torch.cat([x, x]) if guided else x
        out = decoder(sample=x_in.to(dtype), timestep=step_tensor(t), encoder_hidden_states=context,
                      class_labels=time_embeds, attention_mask=mask).sample.float()
        if guided:
            out_u, out_c = out.chunk(2)
            eps = out_u[:, :channels] + guidance_scale * (out_c[:, :channels] - out_u[:, :channels])
            out = torch.cat([eps, out_c[:, channels:]], dim=1)
        return out
    return model


def sample_decoder(decoder, text_proj, image_embeds: torch.Tensor,
                   text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   uncond: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None, *,
                   guidance_scale: float, steps: int, generator: torch.Generator,
                   sampler: Sampler, x_T: torch.Tensor | None = None,
                   callback: StepCallback | None = None, resample: int = 1) -> torch.Tensor:
    """Sample x_0 ~ P(x | z_i, y): [B, C, S, S] float32 in [-1, 1].

    ``text`` = (pooled [B, D], hidden states [B, L, W], mask [B, L]) on any device, ``uncond`` the
    same for the unconditional branch (needed when ``guidance_scale`` != 1).  Random draws, all
    from ``generator``: x_T (unless given), then one per step but the last (in the sampler).
    """
    device = decoder.device
    model = decoder_model(decoder, text_proj, image_embeds, text, uncond,
                          guidance_scale=guidance_scale)
    channels, size = decoder.config.in_channels, decoder.config.sample_size or 64
    timesteps = sampler.timesteps(steps)
    if x_T is None:
        x = noise((image_embeds.shape[0], channels, size, size), generator, device)
    else:
        x = x_T.to(device=device, dtype=torch.float32)
    x = x * sampler.init_noise_sigma
    x = sample(model, sampler, timesteps, x, generator, callback=callback, resample=resample)
    return x.clamp(-1, 1)


def prepare_decoder_inputs(decoder, image_embeds, text, images_per_embedding: int):
    """Pair embeddings and prompts row by row; returns (z_i [N, D], text, uncond) for N
    images."""
    z = image_embeds.image_embeds
    dim = decoder.clip_dim
    if z.ndim != 2 or z.shape[1] != dim:
        raise UserError(f"image embeddings have shape {tuple(z.shape)} but this decoder takes "
                        f"[B, {dim}] (another CLIP?)", field="image_embeds")
    if text is not None and (text.text_embeds.shape[-1] != dim or text.hidden_states.shape[-1] != dim):
        raise UserError(f"text embeddings of width {text.hidden_states.shape[-1]} do not fit this "
                        f"decoder (it takes {dim}); encode with the decoder's own CLIP",
                        field="text")
    if text is None:
        text = decoder.empty_text(z.shape[0])
        if text is None:
            raise UserError("no text embeddings are linked and the decoder's checkpoint has no text "
                            "encoder to encode the empty prompt with; link a CLIPTextEncode",
                            field="text")
    e, t = z.shape[0], text.text_embeds.shape[0]
    if e % t == 0:
        text = text_rows(text, e)
    elif t % e == 0:
        z = z.repeat_interleave(t // e, dim=0)
    else:
        raise UserError(f"{e} image embeddings and {t} prompts cannot be paired (one must be a "
                        f"multiple of the other)", field="text")
    if images_per_embedding > 1:
        z = z.repeat_interleave(images_per_embedding, dim=0)
        text = text_rows(text, z.shape[0])
    rows = z.shape[0]
    return z, (text.text_embeds, text.hidden_states, text.attention_mask), uncond_of(text, rows)


# --- the upsampler's loop --------------------------------------------------------------------------

def sample_upsampler(first, last, low_res: torch.Tensor, *, steps: int,
                     generator: torch.Generator, sampler: Sampler,
                     x_T: torch.Tensor | None = None,
                     callback: StepCallback | None = None, resample: int = 1) -> torch.Tensor:
    """Sample a high-resolution image given ``low_res`` [B, C, h, w] in [-1, 1]; returns
    [B, C, S, S] float32 (not clamped).  An unconditional UNet denoises full-resolution noise
    stacked with the low-resolution image, upscaled bicubically (antialiased); no guidance.
    Every step uses ``first`` but the last, which uses ``last`` (Karlo trains one for it).
    Draws: x_T (unless given), then one per step but the last.  ``callback`` and ``resample``
    as in ``core.sampling.sample`` (RePaint)."""
    from .. import runtime
    device, dtype = first.device, first.dtype
    channels, size = first.config.in_channels // 2, first.config.sample_size or 256
    timesteps = sampler.timesteps(steps)
    if x_T is None:
        x = noise((low_res.shape[0], channels, size, size), generator, device)
    else:
        x = x_T.to(device=device, dtype=torch.float32)
    x = x * sampler.init_noise_sigma
    cond = F.interpolate(low_res.to(device, torch.float32), size=[size, size], mode="bicubic",
                         align_corners=False, antialias=True)
    for i in runtime.steps(len(timesteps), "upsampler"):
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        unet = last if prev_t is None else first
        for jump in range(resample if prev_t is not None else 1):
            if jump > 0:
                x = sampler.renoise(x, prev_t, t, noise(x.shape, generator, device))
            out = unet(sample=torch.cat([x, cond], dim=1).to(dtype),
                       timestep=step_tensor(t)).sample.float()
            x = sampler.step(out, t, prev_t, x, generator)
            if callback is not None:
                x = callback(i, t, prev_t, x)
    return x


# --- RePaint geometry --------------------------------------------------------------------------------

def square_canvas(image: torch.Tensor, mask: torch.Tensor):
    """The image centred on a square canvas (the models are square); the added margin is masked
    (1), so it is generated and then cropped away.  Returns (image, mask, box) with box = (top,
    left, height, width) of the original on the canvas."""
    b, h, w, c = image.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if side == h == w:
        return image, mask, (0, 0, h, w)
    canvas = torch.zeros(b, side, side, c, dtype=image.dtype)
    canvas[:, top:top + h, left:left + w] = image
    m = torch.ones(b, side, side, dtype=mask.dtype)
    m[:, top:top + h, left:left + w] = mask
    return canvas, m, (top, left, h, w)


def resize_x(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] to size x size (antialiased bicubic, clamped)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                         antialias=True).clamp(-1, 1)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, W] -> [B, 1, size, size].  Shrinking keeps a pixel's largest value (a low-res pixel
    is generated if any of the pixels it covers is to change); growing is nearest-neighbour."""
    m = mask[:, None].float()
    if m.shape[-1] == size and m.shape[-2] == size:
        return m
    if m.shape[-1] > size:
        return F.adaptive_max_pool2d(m, (size, size))
    return F.interpolate(m, size=(size, size), mode="nearest-exact")


# --- handles ---------------------------------------------------------------------------------------

class DecoderModel(ModelHandle):
    """Karlo's 64 px pixel-space decoder + text_proj: this family's DecoderBackend."""

    variant = "text2img"
    takes_text = True
    cannot_inpaint = None  # RePaint works with any of its decoders
    settings = ()  # it reads none of the family-specific Decoder settings

    @property
    def decoder(self):
        return self.part("decoder")

    @property
    def text_proj(self):
        return self.part("text_proj")

    @property
    def scheduler_config(self) -> dict:
        return self.config("decoder_scheduler")

    @property
    def sample_size(self) -> int:
        return int(self.config("decoder").get("sample_size") or 64)

    @property
    def clip_dim(self) -> int:
        return int(self.config("text_proj").get("clip_embeddings_dim", 768))

    def conditioning(self, image_embeds, text, images_per_embedding: int, **options):
        reject_options(self, options)
        z, cond, uncond = prepare_decoder_inputs(self, image_embeds, text, images_per_embedding)
        return Conditioning(image_embeds=z, text=cond, uncond=uncond)

    def check_guidance(self, cond, guidance_scale: float) -> None:
        if guidance_scale != 1.0 and cond.uncond is None:
            raise UserError("guidance needs the unconditional branch; these text embeddings have "
                            "none (use CLIPTextEncode) or set guidance_scale 1", field="text")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        s = self.sample_size
        for name, v in (("width", width), ("height", height)):
            if v not in (0, s):
                raise UserError(f"Karlo's decoder draws {s} x {s} px only; leave {name} 0 and "
                                f"raise the resolution with Upsample", field=name)
        return s, s

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return int(self.config("decoder").get("in_channels", 3)), height, width

    def size_of(self, latent) -> tuple[int, int]:
        return self.sample_size, self.sample_size

    def model(self, cond, guidance_scale: float, hint=None):
        return decoder_model(self.decoder, self.text_proj, cond.image_embeds, cond.text,
                             cond.uncond, guidance_scale=guidance_scale)

    def sampler(self, name: str, eta: float):
        return choose_sampler(UnCLIPSampler, self.scheduler_config, name, eta)

    def decode(self, x):
        return x.clamp(-1, 1)

    def encode(self, pixels):
        return pixels.float()

    def fit_image(self, image):
        """An IMAGE centre-cropped and resized to the decoder's square -> pixels in [-1, 1]."""
        size = self.sample_size
        return from_image(resize(image.float(), size, size, "bicubic", "center"))

    def empty_text(self, rows: int = 1):
        """The empty prompt encoded ``rows`` times by this checkpoint's text encoder (what image
        variations condition on), or None when the checkpoint has no text encoder.  A constant
        of the checkpoint: computed once, then found without loading the encoder."""
        ck = self.checkpoint
        if not (ck.has("text_encoder") and ck.has("tokenizer")):
            return None
        identity = {**files_of(ck, ("text_encoder", "tokenizer")), "device": self.device.type,
                    "dtype": str(self.dtype), "rows": rows}
        clip = ClipTextModel(ck, self.device, self.dtype, self.allow_pickle)
        return constant("empty_text", identity, TEXT_EMBEDS, lambda: clip.encode([""] * rows))

    def inpaint(self, image, mask, cond, upsampler, *, guidance_scale: float, steps: int,
                upsample_steps: int, seed: int, resample: int) -> torch.Tensor:
        """RePaint (Lugmayr et al. 2022): after every step the region to keep is overwritten
        with the original noised to the step's level, on a square canvas at 64 px and, with an
        upsampler, again at its size.  ``resample`` > 1 repeats each step after diffusing back
        up one (RePaint's jumps), which gives the fill more chances to agree with its
        surroundings."""
        canvas, cmask, (top, left, h, w) = square_canvas(image.float(), mask)
        device = self.device
        generator = make_generator(seed)
        x_full = from_image(canvas).to(device)
        size = self.sample_size
        known = resize_x(x_full, size)
        keep = 1 - resize_mask(cmask, size).to(device)
        sampler = UnCLIPSampler(self.scheduler_config)
        with torch.inference_mode():
            x = sample_decoder(self.decoder, self.text_proj, cond.image_embeds, cond.text,
                               cond.uncond, guidance_scale=guidance_scale, steps=steps,
                               generator=generator, sampler=sampler, resample=resample,
                               callback=repaint_callback(sampler, known, keep, generator))
            if upsampler is not None:
                up_size = upsampler.sample_size
                known_hi = resize_x(x_full, up_size).to(upsampler.device)
                keep_hi = 1 - resize_mask(cmask, up_size).to(upsampler.device)
                up_sampler = upsampler.sampler()
                x = upsampler.upsample(x, steps=upsample_steps, generator=generator,
                                       sampler=up_sampler, resample=resample,
                                       callback=repaint_callback(up_sampler, known_hi, keep_hi,
                                                                 generator)).clamp(-1, 1)
        side = canvas.shape[1]
        return to_image(resize_x(x.float().cpu(), side))[:, top:top + h, left:left + w]


def reject_options(handle, options: dict) -> None:
    """A Decoder setting this family's decoder has no use for is a user mistake."""
    for name in options:
        raise UserError(f"the {handle.label} decoder takes no {name}; leave it at its default",
                        field=name)


class UpsamplerModel(ModelHandle):
    """Karlo's two super-resolution UNets: this family's UpsamplerBackend."""

    @property
    def first(self):
        """The UNet for every step but the last."""
        return self.part("super_res_first")

    @property
    def last(self):
        """The UNet for the last step (Karlo trains a separate one for it)."""
        return self.part("super_res_last")

    @property
    def scheduler_config(self) -> dict:
        return self.config("super_res_scheduler")

    @property
    def sample_size(self) -> int:
        return int(self.config("super_res_first").get("sample_size") or 256)

    @property
    def channels(self) -> int:
        return int(self.config("super_res_first").get("in_channels", 6)) // 2

    def sampler(self):
        return UnCLIPSampler(self.scheduler_config)

    def upsample(self, low_res, *, steps: int, generator, sampler, callback=None, resample=1):
        return sample_upsampler(self.first, self.last, low_res, steps=steps, generator=generator,
                                sampler=sampler, callback=callback, resample=resample)


# --- the family ------------------------------------------------------------------------------------

def _text_proj_class():
    from ..textproj import UnCLIPTextProjModel
    return UnCLIPTextProjModel


OWN_CLASSES["UnCLIPTextProjModel"] = _text_proj_class


def _part(name: str, marker: str, library: str, cls: str, *, weighted: bool = True,
          stepped: bool = False) -> Part:
    return Part(name, marker, (library, cls), weighted=weighted, stepped=stepped,
                expect=weighted and library != "transformers")


class Karlo(Family):
    name = "karlo"
    label = "Karlo unCLIP"
    pipelines = ("UnCLIPPipeline", "UnCLIPImageVariationPipeline")
    reads_bare_folders = True  # the per-stage loaders always read bare component folders
    layouts = {"UnCLIPImageVariationPipeline": ("clip_text", "clip_vision", "decoder",
                                                "upsampler")}
    parts = {
        "text_encoder": _part("text_encoder", "config.json", "transformers",
                              "CLIPTextModelWithProjection"),
        "tokenizer": _part("tokenizer", "tokenizer_config.json", "transformers", "CLIPTokenizer",
                           weighted=False),
        "image_encoder": _part("image_encoder", "config.json", "transformers",
                               "CLIPVisionModelWithProjection"),
        "feature_extractor": _part("feature_extractor", "preprocessor_config.json",
                                   "transformers", "CLIPImageProcessor", weighted=False),
        "prior": _part("prior", "config.json", "diffusers", "PriorTransformer", stepped=True),
        "prior_scheduler": _part("prior_scheduler", "scheduler_config.json", "diffusers",
                                 "UnCLIPScheduler", weighted=False),
        "text_proj": _part("text_proj", "config.json", "unclip", "UnCLIPTextProjModel"),
        "decoder": _part("decoder", "config.json", "diffusers", "UNet2DConditionModel",
                         stepped=True),
        "decoder_scheduler": _part("decoder_scheduler", "scheduler_config.json", "diffusers",
                                   "UnCLIPScheduler", weighted=False),
        "super_res_first": _part("super_res_first", "config.json", "diffusers", "UNet2DModel",
                                 stepped=True),
        "super_res_last": _part("super_res_last", "config.json", "diffusers", "UNet2DModel",
                                stepped=True),
        "super_res_scheduler": _part("super_res_scheduler", "scheduler_config.json",
                                     "diffusers", "UnCLIPScheduler", weighted=False),
    }
    stages = {
        "clip_text": Stage(ClipTextModel, ("text_encoder", "tokenizer")),
        "clip_vision": Stage(ClipVisionModel, ("image_encoder", "feature_extractor")),
        "prior": Stage(PriorModel, ("prior", "prior_scheduler")),
        # the decoder encodes the empty prompt with the checkpoint's text encoder when no text
        # is given
        "decoder": Stage(DecoderModel, ("decoder", "text_proj", "decoder_scheduler"),
                         ("text_encoder", "tokenizer")),
        "upsampler": Stage(UpsamplerModel, ("super_res_first", "super_res_last",
                                            "super_res_scheduler")),
    }

    def open(self, root: Path, stages, *, layout: bool, allow_pickle: bool = False,
             prior_path: str = "", config_only: bool = False) -> Checkpoint:
        """``layout``: require the full Karlo layout (``model_index.json`` and everything a
        text-to-image or an image-variation checkpoint holds), as ``LoadUnCLIP`` does; the
        per-stage loaders only need their own components."""
        if prior_path and prior_path.strip():
            raise err("prior_path is for checkpoints whose prior ships in a folder of its own "
                      "(Kandinsky 2.2); a Karlo checkpoint holds its prior: leave prior_path "
                      "empty", "prior_path")
        present = {p for p, spec in self.parts.items() if spec.present(root / spec.folder)}
        missing: list[str] = []
        index = None
        if layout:
            if not (root / "model_index.json").is_file():
                found = ", ".join(sorted(present)) or "no component subfolders"
                raise err(f"{root} is not a Karlo-layout unCLIP checkpoint: model_index.json is "
                          f"missing (found {found}){_other_layout(root)}")
            index = read_json(root / "model_index.json")
            listed = {k for k, v in index.items() if not k.startswith("_")
                      and isinstance(v, list) and v and v[0] is not None}
            variation = "image_encoder" in present or "image_encoder" in listed
            need = ["text_encoder", "tokenizer", "text_proj", "decoder", "decoder_scheduler",
                    "super_res_first", "super_res_last", "super_res_scheduler"]
            if not variation or "prior" in present or "prior" in listed:
                need += ["prior", "prior_scheduler"]
            if variation:
                need += ["image_encoder", "feature_extractor"]
            need += [p for p in listed if p in self.parts and p not in need]
            missing = [p for p in need if p not in present]
        else:
            for stage in stages:
                missing += [p for p in self.stages[stage].needs
                            if p not in present and p not in missing]
        if missing:
            what = ", ".join(self.parts[p].what for p in missing)
            kind = ("a Karlo-layout unCLIP checkpoint" if layout
                    else "a usable checkpoint for this loader")
            hint = _other_layout(root)
            if any((root / f).is_file() for f in ("config.json", "scheduler_config.json")):
                hint = f"; {root.name}/ looks like one component folder, give its parent directory"
            raise err(f"{root} is not {kind}: missing {what}{hint}")

        if layout:
            wanted = set(present)  # the full loader checks every component it finds
        else:
            wanted = set()
            for stage in stages:
                wanted.update(self.stages[stage].needs)
                wanted.update(p for p in self.stages[stage].uses if p in present)
        index_files = {"model_index.json": root / "model_index.json"} if index is not None \
            else {}
        return self.read(root, {p: root / self.parts[p].folder for p in wanted}, wanted,
                         allow_pickle=allow_pickle, config_only=config_only, index=index_files)

    def fit_problems(self, cfg: dict[str, dict]) -> list[UserError]:
        """Components that would fail (or silently misbehave) together, from their configs alone."""
        out, mismatch = mismatch_collector()

        te, ie, tok = cfg.get("text_encoder"), cfg.get("image_encoder"), cfg.get("tokenizer")
        pr, tp, dec = cfg.get("prior"), cfg.get("text_proj"), cfg.get("decoder")
        fe = cfg.get("feature_extractor")
        te = text_config(te) if te else None
        ie = vision_config(ie) if ie else None
        if pr:
            p_dim = pr.get("embedding_dim", 768)
            p_proj = pr.get("embedding_proj_dim") or p_dim
            p_out = pr.get("clip_embed_dim") or p_dim
            if te:
                mismatch("prior embedding_proj_dim", p_proj, "text_encoder projection_dim",
                         te.get("projection_dim", 512))
                if pr.get("encoder_hid_proj_type", "linear") is not None:
                    mismatch("prior embedding_dim", p_dim, "text_encoder hidden_size",
                             te.get("hidden_size", 512), "the prior reads the text hidden states")
            if tok:
                mismatch("tokenizer model_max_length", tok.get("model_max_length"),
                         "prior num_embeddings", pr.get("num_embeddings", 77))
            if tp:
                mismatch("prior clip_embed_dim", p_out, "text_proj clip_embeddings_dim",
                         tp.get("clip_embeddings_dim", 768))
        if te and tok and tok.get("model_max_length") is not None:
            n = tok["model_max_length"]
            if isinstance(n, (int, float)) and n > te.get("max_position_embeddings", 77):
                out.append(err(f"components do not fit together: tokenizer model_max_length {n} > "
                                f"text_encoder max_position_embeddings "
                                f"{te.get('max_position_embeddings', 77)}"))
        if tp and te:
            mismatch("text_proj clip_embeddings_dim", tp.get("clip_embeddings_dim", 768),
                     "text_encoder projection_dim", te.get("projection_dim", 512))
            mismatch("text_proj clip_embeddings_dim", tp.get("clip_embeddings_dim", 768),
                     "text_encoder hidden_size", te.get("hidden_size", 512),
                     "text_proj projects the text hidden states")
        if tp and ie:
            mismatch("text_proj clip_embeddings_dim", tp.get("clip_embeddings_dim", 768),
                     "image_encoder projection_dim", ie.get("projection_dim", 512))
        if ie and fe:
            crop = fe.get("crop_size")
            crop = crop.get("height") if isinstance(crop, dict) else crop
            if fe.get("do_center_crop", True):
                mismatch("feature_extractor crop_size", crop, "image_encoder image_size",
                         ie.get("image_size", 224))
        if tp and dec:
            mismatch("text_proj cross_attention_dim", tp.get("cross_attention_dim"),
                     "decoder cross_attention_dim", dec.get("cross_attention_dim"))
            blocks = dec.get("block_out_channels") or [320]
            mismatch("text_proj time_embed_dim", tp.get("time_embed_dim"),
                     "decoder time embedding size", dec.get("time_embedding_dim") or blocks[0] * 4)
        if dec:
            if dec.get("class_embed_type") != "identity":
                out.append(err(f"decoder class_embed_type is {dec.get('class_embed_type')!r}; an unCLIP "
                                f"decoder takes the CLIP embedding as class_embed_type 'identity'"))
            cin, cout = dec.get("in_channels", 4), dec.get("out_channels", 4)
            if cout not in (cin, 2 * cin):
                out.append(err(f"decoder out_channels {cout} is neither in_channels {cin} nor twice it"))
            sched = cfg.get("decoder_scheduler")
            if sched and sched.get("variance_type") == "learned_range" and cout != 2 * cin:
                out.append(err("decoder_scheduler uses variance_type learned_range but the decoder "
                                f"predicts no variance (out_channels {cout})"))
        first, last = cfg.get("super_res_first"), cfg.get("super_res_last")
        if first and last:
            for k in ("in_channels", "out_channels", "sample_size"):
                mismatch(f"super_res_first {k}", first.get(k), f"super_res_last {k}", last.get(k))
        if first:
            cin, cout = first.get("in_channels", 3), first.get("out_channels", 3)
            if cin % 2:
                out.append(err(f"super_res_first in_channels {cin} is odd; an upsampler takes noise and "
                                f"the low-resolution image stacked (2 x image channels)"))
            if dec:
                mismatch("super_res_first in_channels", cin, "2 x decoder in_channels",
                         2 * dec.get("in_channels", 4))
        return out

def _other_layout(root: Path) -> str:
    """A hint for a folder of another family that lost its model_index.json."""
    if (root / "unet").is_dir() and (root / "movq").is_dir() or (root / "prior").is_dir() and \
            (root / "image_processor").is_dir():
        return ("; its unet/, movq/ or image_processor/ look like a Kandinsky 2.2 folder, which "
                "needs its model_index.json (it names the pipeline and so the family)")
    return ""


FAMILY = Karlo()
