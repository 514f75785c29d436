"""The sampler seam: a fresh sampler state per clip, and DDIM's step rule from the step index."""
from __future__ import annotations

import torch

from emo.config import SchedulerConfig
from emo.sampling.ddim import DDIM
from emo.sampling.loop import sample
from emo.sampling.step_plan import GUIDED, StepPlan


class CountingSampler:
    """A multistep-like sampler whose state records the steps it saw."""

    timesteps = torch.tensor([999, 499], dtype=torch.int64)
    init_noise_sigma = 1.0

    def __init__(self):
        self.states: list[list[int]] = []

    def start(self) -> list[int]:
        self.states.append([])
        return self.states[-1]

    def step(self, state: list[int], i: int, prediction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        state.append(i)
        return x - prediction


def test_each_clip_starts_a_fresh_state_and_every_step_is_guided():
    sampler, plans = CountingSampler(), []

    def predict(x: torch.Tensor, i: int, plan: StepPlan) -> torch.Tensor:
        plans.append(plan)
        return torch.zeros_like(x)

    for _ in range(2):  # two clips of one video: one sampler, two states
        sample(predict, sampler, torch.ones(1, 4, 2, 8, 8))
    assert sampler.states == [[0, 1], [0, 1]] and plans == [GUIDED] * 4


def test_ddim_steps_from_the_index_with_the_diffusers_rule():
    """7 steps of 1000: the trailing timesteps are not evenly spaced, and step i goes to t - 1000 // 7, not to
    timesteps[i + 1] (856 -> 714, not 713)."""
    assert DDIM(SchedulerConfig(), 7).timesteps[1:3].tolist() == [856, 713]
    ddim = DDIM(SchedulerConfig(), 7)
    x, eps = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(1, 4, 1, 2, 2)
    t = int(ddim.timesteps[1])
    a_t, a_prev = ddim.alphas_cumprod[t], ddim.alphas_cumprod[t - 1000 // 7]
    want = a_prev ** 0.5 * (a_t ** 0.5 * x) + (1 - a_prev) ** 0.5 * ((1 - a_t) ** 0.5 * x)  # v-prediction, v = 0
    assert ddim.start() is None
    torch.testing.assert_close(ddim.step(ddim.start(), 1, eps, x), want)
