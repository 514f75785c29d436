"""The sampling loop, written once: every backend's denoising runs through `sample`, and emo-bench times it."""
from __future__ import annotations

from typing import Callable

import torch

from .sampler import Sampler
from .step_plan import GUIDED, StepPlan

Predict = Callable[[torch.Tensor, int, StepPlan], torch.Tensor]
"""(latents (1, 4, f, h, w), step index, the step's plan) -> the guided prediction (1, 4, f, h, w)."""


def sample(predict: Predict, sampler: Sampler, init_noise: torch.Tensor,
           on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """One clip: init_noise (1, 4, f, h, w) -> final latents, with a fresh sampler state; on_step(i) after step i.
    Every step is planned as a guided step (`step_plan`)."""
    state = sampler.start()
    latents = init_noise * sampler.init_noise_sigma
    for i in range(sampler.timesteps.shape[0]):
        latents = sampler.step(state, i, predict(latents, i, GUIDED), latents)
        if on_step is not None:
            on_step(i)
    return latents
