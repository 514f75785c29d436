"""The sampling loop, written once: every backend's denoising runs through `sample`, and emo-bench times it."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .sampler import Sampler
from .step_plan import GUIDED, StepPlan

Predict = Callable[[torch.Tensor, int, StepPlan], torch.Tensor]
"""(latents (1, 4, f, h, w), step index, the step's plan) -> the step's prediction (1, 4, f, h, w)."""


def sample(predict: Predict, sampler: Sampler, init_noise: torch.Tensor,
           on_step: Callable[[int], None] | None = None, plans: Sequence[StepPlan] | None = None) -> torch.Tensor:
    """One clip: init_noise (1, 4, f, h, w) -> final latents, with a fresh sampler state; on_step(i) after step i.
    plans: each step's plan (`step_plan.plans`); every step guided when None."""
    steps = sampler.timesteps.shape[0]
    if plans is not None and len(plans) != steps:
        raise ValueError(f"{len(plans)} step plans for {steps} steps")
    state = sampler.start()
    latents = init_noise * sampler.init_noise_sigma
    for i in range(steps):
        latents = sampler.step(state, i, predict(latents, i, GUIDED if plans is None else plans[i]), latents)
        if on_step is not None:
            on_step(i)
    return latents
