"""The two halves of classifier-free guidance, assembled in one place for every backend.

The denoiser runs a batch of two, half 0 unconditional and half 1 conditional (explicit halves, never masks). The
unconditional half is what Hallo's pipeline feeds it: the image tokens of a zero face embedding, a zero face
feature, zero audio tokens; the reference image and the motion frames are paired with contexts as Hallo's
ReferenceNet batch pairs them (`emo.sampling.reference`). A backend supplies the components that compute the
pieces (torch modules or exported graphs, `ConditioningComponents`); which half gets what is decided here only.
"""
from __future__ import annotations

from typing import Protocol

import torch

from ..config import ModelConfig
from ..geometry import Geometry
from ..models.transformer import RefKV
from .conditioning import ClipConditioning, VideoConditioning
from .reference import motion_context, no_motion_features, reference_context, reference_index


class ConditioningComponents(Protocol):
    """The components that compute the conditioning, named as their IO specs name them, each taking and returning
    one batch as its IO spec does."""

    def imageproj(self, face_embedding: torch.Tensor) -> torch.Tensor:
        """Face embeddings (b, 512) -> image tokens (b, t, c)."""

    def face_locator(self, face_region: torch.Tensor) -> torch.Tensor:
        """Face region (1, 3, H, W) -> face feature (1, c0, h, w)."""

    def vae_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (N, 3, H, W) in [-1, 1] -> scaled latent means (N, 4, h, w)."""

    def reference(self, ref_latent: torch.Tensor, ref_context: torch.Tensor) -> list[RefKV]:
        """Reference latent (1, 4, h, w), contexts (2, t, c) -> the two reference entries of every denoiser
        self-attention layer, (2, heads, l, d) keys and values."""

    def motion(self, motion_latents: torch.Tensor, motion_context: torch.Tensor) -> torch.Tensor:
        """Motion latents (n, 4, h, w) with n >= 1, contexts (2n, t, c) -> features (2, n, c, h_mid, w_mid)."""


def with_uncond(cond: torch.Tensor) -> torch.Tensor:
    """A conditional batch of one (1, ...) -> both halves (2, ...): [zeros, cond]."""
    return torch.cat([torch.zeros_like(cond), cond])


def video_conditioning(components: ConditioningComponents, ref_image: torch.Tensor, face_emb: torch.Tensor,
                       face_region: torch.Tensor, masks: list[torch.Tensor], motion_frames: int
                       ) -> VideoConditioning:
    """ref_image (3, H, W) in [-1, 1]; face_emb (512,); face_region (3, H, W); masks per level (3, r*r)."""
    tokens = components.imageproj(with_uncond(face_emb.reshape(1, -1)))  # (2, t, c): zero embedding, the face's
    feature = components.face_locator(face_region[None])
    kv = components.reference(components.vae_encoder(ref_image[None]), reference_context(tokens, motion_frames))
    return VideoConditioning(tokens, with_uncond(feature), masks, kv)


def clip_conditioning(components: ConditioningComponents, cfg: ModelConfig, video: VideoConditioning,
                      motion_pixels: torch.Tensor, audio_tokens: torch.Tensor) -> ClipConditioning:
    """motion_pixels (n, 3, H, W) in [-1, 1]; audio_tokens (f, t, c) -> the clip's conditioning."""
    f, n = audio_tokens.shape[0], motion_pixels.shape[0]
    if n:
        motion = components.motion(components.vae_encoder(motion_pixels), motion_context(video.image_tokens, n))
    else:
        motion = no_motion_features(cfg.unet, Geometry.of(cfg, motion_pixels.shape[-1]).latent, motion_pixels)
    return ClipConditioning(video, with_uncond(audio_tokens[None]), motion, reference_index(f, audio_tokens.device))
