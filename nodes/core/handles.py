"""The handles that are the same in every family: a stage of a checkpoint on a device, whose
components load on first use through the model cache; CLIP text and image towers and the
diffusion prior (every family so far uses diffusers' PriorTransformer).  A family subclasses
them where it differs (its own negative embedding, its own scheduler)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .checkpoint import Checkpoint, load_part, part_key, text_config, vision_config

KNOWN_CLIPS = {
    # (projection_dim, hidden_size, num_hidden_layers) of a text or vision tower -> its CLIP
    (768, 768, 12): "OpenAI CLIP ViT-L/14", (768, 1024, 24): "OpenAI CLIP ViT-L/14",
    (1024, 1024, 24): "OpenCLIP ViT-H/14", (1024, 1280, 32): "OpenCLIP ViT-H/14",
    (1280, 1280, 32): "OpenCLIP ViT-bigG/14", (1280, 1664, 48): "OpenCLIP ViT-bigG/14",
}
"""The CLIP models real checkpoints use, by the shape of their towers: embeddings of one of
them mean nothing to a model trained on another, even at the same width."""


COMFY_CLIP_VISION = {
    "OpenAI CLIP ViT-L/14": "clip_vision_l.safetensors",
    "OpenCLIP ViT-H/14": "clip_vision_h.safetensors",
    "OpenCLIP ViT-bigG/14": "clip_vision_g.safetensors",
}
"""The file ComfyUI's CLIPVisionLoader loads for each known CLIP's image tower (the names its
examples and model lists use)."""


def clip_of_width(dim: int) -> str | None:
    """The known CLIP whose embeddings have ``dim`` dimensions (their widths all differ), or
    None.  A guess from the width alone: what an embedding of unknown origin looks like."""
    return {proj: name for (proj, _, _), name in KNOWN_CLIPS.items()}.get(int(dim))


def width_mismatch(got: int, want: int, want_space: str | None, who: str) -> str:
    """Why ``got``-d image embeddings cannot go to ``who`` (a model that takes ``want``-d
    ones in ``want_space``): which CLIP they look like, which it takes, what to encode with."""
    looks = clip_of_width(got)
    takes = want_space or clip_of_width(want)
    seen = f", the width of {looks} (ComfyUI's {COMFY_CLIP_VISION[looks]})" if looks else ""
    wanted = (f" ({want_space})" if want_space else
              f" (the width of {takes})" if takes else "")
    if takes in COMFY_CLIP_VISION:
        fix = (f"encode the image with {takes} instead: in ComfyUI, CLIPVisionLoader with "
               f"{COMFY_CLIP_VISION[takes]} into CLIPVisionEncode; or CLIPImageEncode with the "
               f"checkpoint's own image encoder")
    else:
        fix = ("encode the image with the checkpoint's own image encoder (CLIPImageEncode), or "
               f"with a CLIP vision model whose embeddings have {want} dimensions")
    return (f"{got}-d CLIP image embeddings{seen}, but {who} takes {want}-d ones{wanted}; {fix}")


def clip_space(cfg: dict | None) -> str | None:
    """The CLIP a tower's config describes, when it is a known one."""
    if not cfg:
        return None
    for c in (text_config(cfg), vision_config(cfg)):
        key = (c.get("projection_dim"), c.get("hidden_size"), c.get("num_hidden_layers"))
        if key in KNOWN_CLIPS:
            return KNOWN_CLIPS[key]
    return None


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A stage of a checkpoint on a device: components load on first use, through the cache."""

    checkpoint: Checkpoint
    device: torch.device
    dtype: torch.dtype
    allow_pickle: bool = False
    parts: frozenset = frozenset()
    """the components this handle's stage may use (its family's stage table)"""
    loaded: set = field(default_factory=set, repr=False, compare=False)
    """the model manager's keys of the components it has read"""

    def part(self, name: str, dtype: torch.dtype | None = None):
        """One component, loaded on first use (in ``dtype`` when it differs from the
        handle's: a decoder whose VAE stays in float32)."""
        dtype = dtype or self.dtype
        obj = load_part(self.checkpoint, name, self.device, dtype, self.allow_pickle)
        self.loaded.add(part_key(self.checkpoint, name, self.device, dtype))
        return obj

    def release_weights(self, live) -> None:
        """This handle's last user in the run has finished: let go of the weights it read,
        except those a handle in ``live`` (values the run still holds) may use."""
        from .manager import MANAGER
        heirs = {str(h.checkpoint.dir(p)): h for h in live
                 if isinstance(h, ModelHandle) and h is not self
                 for p in h.parts if h.checkpoint.has(p)}
        for key in sorted(self.loaded, key=str):
            if key[0] in heirs:  # still wanted: the live handle lets go of it when it goes
                heirs[key[0]].loaded.add(key)
            else:
                MANAGER.release(key)
        self.loaded.clear()

    def config(self, name: str) -> dict:
        return self.checkpoint.config(name)

    @property
    def source(self) -> str:
        return str(self.checkpoint.root)

    @property
    def family(self) -> str:
        return self.checkpoint.family

    @property
    def label(self) -> str:
        return self.checkpoint.label or self.checkpoint.family

    TOWERS = ("text_encoder", "image_encoder")

    @property
    def space(self) -> str | None:
        """The CLIP space of the checkpoint's embeddings, from its towers' configs when they
        are a known CLIP (None: unknown, only widths are checked)."""
        ck = self.checkpoint
        for part in self.TOWERS:
            if ck.has(part):
                found = clip_space(ck.config(part))
                if found:
                    return found
        return None


class ClipTextModel(ModelHandle):
    """CLIP text encoder + tokenizer; the same in every family."""

    @property
    def text_encoder(self):
        return self.part("text_encoder")

    @property
    def tokenizer(self):
        return self.part("tokenizer")

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    @property
    def clip_dim(self) -> int:
        return int(text_config(self.config("text_encoder")).get("projection_dim", 512))

    def encode(self, prompts: list[str]):
        """TextEmbeds of ``prompts`` with their unconditional (empty prompt) branch."""
        from .text import encode_prompts
        return encode_prompts(self, prompts)


class ClipVisionModel(ModelHandle):
    """CLIP image encoder + its preprocessing config; the same in every family."""

    @property
    def image_encoder(self):
        return self.part("image_encoder")

    @property
    def preprocess(self) -> dict:
        """The feature_extractor's preprocessor_config.json (applied in torch by CLIPImageEncode)."""
        return self.config("feature_extractor")

    @property
    def image_size(self) -> int:
        return int(vision_config(self.config("image_encoder")).get("image_size", 224))

    @property
    def clip_dim(self) -> int:
        return int(vision_config(self.config("image_encoder")).get("projection_dim", 512))

    def negative_embeds(self):
        """The negative image embedding this family's decoder guides against, or None when its
        decoder has its own (Karlo's learned null embedding)."""
        return None


class PriorModel(ModelHandle):
    """The diffusion prior + its scheduler config; the same transformer in every family."""

    @property
    def prior(self):
        return self.part("prior")

    @property
    def scheduler_config(self) -> dict:
        return self.config("prior_scheduler")

    @property
    def num_embeddings(self) -> int:
        return int(self.config("prior").get("num_embeddings", 77))

    @property
    def clip_dim(self) -> int:
        cfg = self.config("prior")
        return int(cfg.get("clip_embed_dim") or cfg.get("embedding_dim", 768))

    def sampler(self):
        """The prior's update rule, from its scheduler config (Karlo's UnCLIPScheduler by
        default; a family whose prior uses another scheduler overrides this)."""
        from .sampling import UnCLIPSampler
        return UnCLIPSampler(self.scheduler_config)

    samples_negative = False
    """Whether a linked negative prompt is sampled into a negative image embedding alongside the
    prompts (Kandinsky 2.2) rather than only steering the prior's guidance (Karlo)."""

    def negative_embeds(self):
        """The negative image embedding to hand on when no negative prompt is linked (None:
        the family's decoder needs none)."""
        return None
