"""The noise schedule every sampler (and the training objective) shares: zero-terminal-SNR betas and the
timestep spacing of Hallo's scheduler config."""
from __future__ import annotations

import numpy as np
import torch

from ..config import SchedulerConfig


def betas(cfg: SchedulerConfig) -> torch.Tensor:
    if cfg.beta_schedule == "linear":
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=torch.float32)
    elif cfg.beta_schedule == "scaled_linear":
        betas = torch.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, cfg.num_train_timesteps,
                               dtype=torch.float32) ** 2
    else:
        raise ValueError(f"unsupported beta schedule {cfg.beta_schedule!r}")
    if cfg.rescale_betas_zero_snr:
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so that the last timestep has exactly zero SNR (Lin et al. 2023)."""
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    ab = sqrt_ab ** 2
    alphas = torch.cat([ab[0:1], ab[1:] / ab[:-1]])
    return 1.0 - alphas



def alphas_cumprod(cfg: SchedulerConfig) -> torch.Tensor:
    """ᾱ_t for t = 0 .. num_train_timesteps - 1 (float32, as diffusers keeps it)."""
    return torch.cumprod(1.0 - betas(cfg), dim=0)


def spacing(cfg: SchedulerConfig, steps: int) -> np.ndarray:
    """The model timesteps of `steps` sampling steps, in the order they run (int64)."""
    n = cfg.num_train_timesteps
    if cfg.timestep_spacing == "trailing":
        t = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    elif cfg.timestep_spacing == "leading":
        t = (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64) + cfg.steps_offset
    elif cfg.timestep_spacing == "linspace":
        t = np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"unsupported timestep spacing {cfg.timestep_spacing!r}")
    return t.copy()
