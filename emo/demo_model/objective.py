"""Hallo's training objective: v-prediction under the inference sampler's zero-terminal-SNR schedule, min-SNR
weighted (γ = 5), with a small noise offset."""
from __future__ import annotations

import torch

from ..config import SchedulerConfig
from ..sampling.schedule import alphas_cumprod

SNR_GAMMA = 5.0
NOISE_OFFSET = 0.05


class Objective:
    def __init__(self, cfg: SchedulerConfig):
        if cfg.prediction_type != "v_prediction":
            raise ValueError("the demo model is trained for v-prediction, as Hallo is")
        self.alphas_cumprod = alphas_cumprod(cfg).double()  # the samplers' own schedule
        self.steps = cfg.num_train_timesteps

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.steps, (n,), generator=generator)

    def noise_like(self, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """N(0, I) plus a per-channel offset, for latents (b, c, f, h, w)."""
        noise = torch.randn(latents.shape, generator=generator)
        offset = torch.randn((latents.shape[0], latents.shape[1], *[1] * (latents.dim() - 2)), generator=generator)
        return noise + NOISE_OFFSET * offset

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod[t].to(like.dtype).view(-1, *[1] * (like.dim() - 1))
        return ab.sqrt(), (1 - ab).sqrt()

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coefficients(t, latents)
        return a * latents + s * noise

    def velocity(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coefficients(t, latents)
        return a * noise - s * latents

    def weights(self, t: torch.Tensor) -> torch.Tensor:
        """min(SNR + 1, γ) / (SNR + 1) per sample (Hallo's weighting for v-prediction)."""
        ab = self.alphas_cumprod[t]
        snr = ab / (1 - ab).clamp(min=1e-12) + 1
        return (snr.clamp(max=SNR_GAMMA) / snr).float()
