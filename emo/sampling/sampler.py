"""The sampler seam: what the sampling loop needs from a diffusion sampler (DDIM by default, `emo.sampling.ddim`).

A sampler is built once per video (its timesteps depend on the step count only); what changes while a clip is
denoised lives in a state made by `start()` for each clip, so that a multistep solver's history of predictions
never leaks from one clip into the next.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from ..config import SchedulerConfig


class Sampler(Protocol):
    timesteps: torch.Tensor  # (steps,) int64: the model timestep of each step, in the order they run
    init_noise_sigma: float  # the scale of the initial noise

    def start(self) -> Any:
        """A fresh per-clip state (None for a sampler that keeps none)."""

    def step(self, state: Any, i: int, prediction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Step i: the model's guided prediction for latents x at timesteps[i] -> the latents of step i + 1."""


def make_sampler(cfg: SchedulerConfig, name: str, steps: int) -> Sampler:
    """The sampler a run names (RunConfig.sampler): "ddim" (Hallo's, golden-exact) or "dpm++" (DPM-Solver++ 2M)."""
    from .ddim import DDIM
    from .dpm_solver import DPMSolverPP

    samplers = {"ddim": DDIM, "dpm++": DPMSolverPP}
    if name not in samplers:
        raise ValueError(f"unknown sampler {name!r} (choose {', '.join(samplers)})")
    return samplers[name](cfg, steps)
