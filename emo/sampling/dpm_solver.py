"""DPM-Solver++(2M) (Lu et al. 2022), multistep, in data-prediction form, for the scheduler DDIM samples with
(zero-terminal-SNR betas, v-prediction, trailing spacing): a `Sampler`.

With α_t = sqrt(ᾱ_t), σ_t = sqrt(1 - ᾱ_t), λ_t = log(α_t / σ_t) and D the model's denoised estimate
(x0 = α_t x - σ_t v for v-prediction), a step from t to s with h = λ_s - λ_t is

    x_s = (σ_s / σ_t) x_t - α_s (e^{-h} - 1) D̂,   D̂ = D_t (first order)  or  (1 + 1/2r) D_t - (1/2r) D_prev,

r = h_prev / h (second order, with the previous step's estimate, kept in the per-clip state). The first step
starts at SNR 0 (α = 0, λ = -∞): its h is infinite, e^{-h} = 0 and the update is x_s = σ_s x_t + α_s D_t, the exact
first-order step; the step after it has r = ∞ and so is first order too. The last step (to t = -1, ᾱ = 1, σ = 0)
returns D̂: first order there as well when there are fewer than 15 steps (diffusers' `lower_order_final`).
Targets are the schedule's own next timesteps (not DDIM's t - 1000 // steps rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import SchedulerConfig
from .schedule import alphas_cumprod, spacing

LOWER_ORDER_FINAL_BELOW = 15


@dataclass
class _History:
    estimate: torch.Tensor | None = None  # the previous step's data estimate D
    h: float = math.inf  # the previous step's λ increment


class DPMSolverPP:
    """DPM-Solver++(2M). State per clip: the previous data estimate and step size."""

    def __init__(self, cfg: SchedulerConfig, steps: int):
        if cfg.prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"unsupported prediction type {cfg.prediction_type!r}")
        if steps <= 0 or steps > cfg.num_train_timesteps:
            raise ValueError(f"steps must be in 1..{cfg.num_train_timesteps} (got {steps})")
        self.cfg, self.steps = cfg, steps
        self.alphas_cumprod = alphas_cumprod(cfg).double()
        self.timesteps = torch.from_numpy(spacing(cfg, steps))
        self.init_noise_sigma = 1.0

    def start(self) -> _History:
        return _History()

    def _alpha_sigma(self, t: int) -> tuple[float, float]:
        """(α_t, σ_t); t < 0 is the end of sampling (ᾱ = 1)."""
        ab = 1.0 if t < 0 else float(self.alphas_cumprod[t])
        return math.sqrt(ab), math.sqrt(max(0.0, 1.0 - ab))

    def step(self, state: _History, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        t = int(self.timesteps[i])
        s = int(self.timesteps[i + 1]) if i + 1 < self.steps else -1
        a_t, sig_t = self._alpha_sigma(t)
        a_s, sig_s = self._alpha_sigma(s)
        x = sample.double()
        out = model_output.double()
        estimate = a_t * x - sig_t * out if self.cfg.prediction_type == "v_prediction" else (x - sig_t * out) / a_t
        lam_t = -math.inf if a_t == 0 else math.log(a_t / sig_t)
        lam_s = math.inf if sig_s == 0 else math.log(a_s / sig_s)
        h = lam_s - lam_t
        last = s < 0
        second = (state.estimate is not None and math.isfinite(state.h) and math.isfinite(h)
                  and not (last and self.steps < LOWER_ORDER_FINAL_BELOW))
        d = estimate
        if second:
            r = state.h / h
            d = (1 + 1 / (2 * r)) * estimate - (1 / (2 * r)) * state.estimate
        if last:
            prev = d
        else:
            decay = 0.0 if not math.isfinite(h) else math.exp(-h)  # e^{-h}; 0 from SNR 0
            prev = (sig_s / sig_t) * x - a_s * (decay - 1) * d
        state.estimate, state.h = estimate, h
        return prev.to(sample.dtype)
