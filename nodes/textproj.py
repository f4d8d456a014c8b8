"""Our copy of Karlo's ``text_proj`` module: (z_i, text) -> the decoder's conditioning.

diffusers' class of the same name lives among the deprecated unCLIP pipelines and may disappear;
this one has the same parameter names and config, so it loads Karlo's weights, and the parity
tests check that both compute the same thing.  Kept in its own module because importing diffusers
is slow: only loading a checkpoint needs it.
"""
from __future__ import annotations

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn


class UnCLIPTextProjModel(ModelMixin, ConfigMixin):
    """GLIDE-style conditioning: z_i (+ the pooled text embedding) projected into an additive
    time embedding, and z_i projected into ``clip_extra_context_tokens`` tokens put in front of
    the (projected, normalised) text hidden states."""

    @register_to_config
    def __init__(self, *, clip_extra_context_tokens: int = 4, clip_embeddings_dim: int = 768,
                 time_embed_dim: int, cross_attention_dim: int):
        super().__init__()
        self.clip_extra_context_tokens = clip_extra_context_tokens
        # z_i for the unconditional branch of classifier-free guidance
        self.learned_classifier_free_guidance_embeddings = nn.Parameter(torch.zeros(clip_embeddings_dim))
        # additive time embedding: projections of the text embedding and of z_i
        self.embedding_proj = nn.Linear(clip_embeddings_dim, time_embed_dim)
        self.clip_image_embeddings_project_to_time_embeddings = nn.Linear(clip_embeddings_dim, time_embed_dim)
        # context tokens: z_i -> k tokens, text hidden states -> the cross-attention width
        self.clip_extra_context_tokens_proj = nn.Linear(
            clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        self.encoder_hidden_states_proj = nn.Linear(clip_embeddings_dim, cross_attention_dim)
        self.text_encoder_hidden_states_norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, *, image_embeddings, prompt_embeds, text_encoder_hidden_states,
                do_classifier_free_guidance):
        """Returns (context tokens [B, k + L, cross], additive time embedding [B, time]).

        With guidance, ``prompt_embeds``/``text_encoder_hidden_states`` hold the unconditional
        rows first and ``image_embeddings`` only the conditional ones; the learned null z_i is
        put in front of them here.
        """
        if do_classifier_free_guidance:
            null = self.learned_classifier_free_guidance_embeddings
            null = null.unsqueeze(0).expand(image_embeddings.shape[0], -1)
            image_embeddings = torch.cat([null, image_embeddings], dim=0)
        if image_embeddings.shape[0] != prompt_embeds.shape[0]:
            raise ValueError("image and text embeddings must have the same batch size")
        time_embeds = (self.clip_image_embeddings_project_to_time_embeddings(image_embeddings)
                       + self.embedding_proj(prompt_embeds))
        b, k = prompt_embeds.shape[0], self.clip_extra_context_tokens
        # Karlo's layout: the projection is [cross, k] per sample, read token-major
        extra = self.clip_extra_context_tokens_proj(image_embeddings).reshape(b, -1, k).permute(0, 2, 1)
        text = self.text_encoder_hidden_states_norm(
            self.encoder_hidden_states_proj(text_encoder_hidden_states))
        return torch.cat([extra, text], dim=1), time_embeds
