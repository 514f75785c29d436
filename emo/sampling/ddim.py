"""DDIM sampler with zero-terminal-SNR betas, v-prediction and trailing timestep spacing (a `Sampler`).

Our own implementation of diffusers' DDIMScheduler semantics for the settings Hallo uses (eta = 0), including its
step rule prev_t = t - num_train_timesteps // steps (which differs from the trailing spacing when 1000 % steps != 0).
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import SchedulerConfig


def _betas(cfg: SchedulerConfig) -> torch.Tensor:
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


class DDIM:
    """Deterministic DDIM: each step depends on the current latents and prediction only, so its per-clip state is
    None."""

    def __init__(self, cfg: SchedulerConfig, steps: int):
        if cfg.prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"unsupported prediction type {cfg.prediction_type!r}")
        if cfg.eta != 0.0:
            raise ValueError("only deterministic DDIM (eta = 0) is supported")
        if steps <= 0 or steps > cfg.num_train_timesteps:
            raise ValueError(f"steps must be in 1..{cfg.num_train_timesteps} (got {steps})")
        self.cfg, self.steps = cfg, steps
        self.alphas_cumprod = torch.cumprod(1.0 - _betas(cfg), dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if cfg.set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = torch.from_numpy(self._spacing(cfg, steps))
        self.init_noise_sigma = 1.0

    @staticmethod
    def _spacing(cfg: SchedulerConfig, steps: int) -> np.ndarray:
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

    def start(self) -> None:
        return None

    def step(self, state: None, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """Step i: one deterministic DDIM update x_t -> x_prev_t, computed in the sample's dtype.

        t = timesteps[i]; prev_t follows diffusers' rule t - num_train_timesteps // steps, not timesteps[i + 1]:
        with trailing spacing the two differ when num_train_timesteps % steps != 0, and Hallo samples with the rule.
        """
        t = int(self.timesteps[i])
        prev_t = t - self.cfg.num_train_timesteps // self.steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        b_t = 1 - a_t
        if self.cfg.prediction_type == "v_prediction":
            x0 = a_t ** 0.5 * sample - b_t ** 0.5 * model_output
            eps = a_t ** 0.5 * model_output + b_t ** 0.5 * sample
        else:
            x0 = (sample - b_t ** 0.5 * model_output) / a_t ** 0.5
            eps = model_output
        return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
