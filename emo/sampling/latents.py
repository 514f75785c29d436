"""Pixels <-> scaled VAE latents, and a clip's latents decoded a few frames at a time (bounded memory)."""
from __future__ import annotations

from typing import Callable

import torch

from ..models.vae import VAE


def encode_latents(vae: VAE, pixels: torch.Tensor, scaling: float) -> torch.Tensor:
    """pixels (N, 3, H, W) in [-1, 1] -> scaled latent means (N, 4, H/8, W/8)."""
    return vae.encode_mean(pixels) * scaling


def decode_images(vae: VAE, latents: torch.Tensor, scaling: float) -> torch.Tensor:
    """Scaled latents (N, 4, h, w) -> images (N, 3, H, W) in [0, 1]."""
    return (vae.decode(latents / scaling) / 2 + 0.5).clamp(0, 1)


def decode_in_chunks(decode: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor, chunk: int
                     ) -> torch.Tensor:
    """latents (1, 4, f, h, w) -> frames (f, 3, H, W), `decode` taking (N <= chunk, 4, h, w) latents per call."""
    z = latents[0].transpose(0, 1)  # c f h w -> f c h w
    return torch.cat([decode(z[i:i + chunk]) for i in range(0, z.shape[0], chunk)])


def decode_frames(vae: VAE, latents: torch.Tensor, scaling: float, chunk: int = 4) -> torch.Tensor:
    """latents (1, 4, f, h, w) -> frames (f, 3, H, W) in [0, 1], decoded `chunk` frames at a time."""
    return decode_in_chunks(lambda z: decode_images(vae, z, scaling), latents, chunk)
