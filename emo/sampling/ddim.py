"""DDIM sampler with zero-terminal-SNR betas, v-prediction and trailing timestep spacing (a `Sampler`).

Our own implementation of diffusers' DDIMScheduler semantics for the settings Hallo uses (eta = 0), including its
step rule prev_t = t - num_train_timesteps // steps (which differs from the trailing spacing when 1000 % steps != 0).
"""
from __future__ import annotations

import torch

from ..config import SchedulerConfig
from .schedule import alphas_cumprod, spacing


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
        self.alphas_cumprod = alphas_cumprod(cfg)
        self.final_alpha_cumprod = torch.tensor(1.0) if cfg.set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = torch.from_numpy(spacing(cfg, steps))
        self.init_noise_sigma = 1.0

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
