"""The sampler seam: a fresh sampler state per clip, DDIM's step rule from the step index, and DPM-Solver++(2M)
against the exact probability-flow ODE of Gaussian data."""
from __future__ import annotations

import torch

from emo.config import SchedulerConfig
from emo.sampling.ddim import DDIM
from emo.sampling.dpm_solver import DPMSolverPP
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


def _gaussian_ode_error(sampler, stop: int = 499) -> float:
    """Sample data N(mu, s²) (per element) with its exact denoiser, from SNR 0, and return the largest error at
    timestep `stop` against the probability-flow ODE's exact solution x_t = α_t mu + sqrt(α_t² s² + σ_t²) z (the
    flow of a Gaussian keeps each sample's quantile z)."""
    mu, s = 0.3, 0.5
    z = torch.randn(1, 4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ab = sampler.alphas_cumprod.double()

    def exact(t: int) -> torch.Tensor:
        return ab[t].sqrt() * mu + (ab[t] * s ** 2 + 1 - ab[t]).sqrt() * z

    x, state = exact(int(sampler.timesteps[0])), sampler.start()
    for i in range(len(sampler.timesteps) - 1):
        t = int(sampler.timesteps[i])
        a, sigma = ab[t].sqrt(), (1 - ab[t]).sqrt()
        denoised = mu + a * s ** 2 / (a ** 2 * s ** 2 + sigma ** 2) * (x - a * mu)
        x = sampler.step(state, i, (a * x - denoised) / sigma, x)  # the v-prediction of that denoiser
        if int(sampler.timesteps[i + 1]) == stop:
            return float((x - exact(stop)).abs().max())
    raise AssertionError(f"timestep {stop} is not on the grid")


def test_dpm_solver_converges_at_second_order_where_ddim_is_first_order():
    """Hallo's schedule (zero terminal SNR, trailing spacing, v-prediction), from SNR 0: halving the step
    quarters DPM-Solver++(2M)'s error and halves DDIM's. (Compared at t = 499: from there on uniform-t steps
    are not small in log-SNR, so the error at t = 0 is dominated by the last steps of either sampler.)"""
    cfg = SchedulerConfig()
    dpm = [_gaussian_ode_error(DPMSolverPP(cfg, n)) for n in (10, 20, 40)]
    ddim = [_gaussian_ode_error(DDIM(cfg, n)) for n in (10, 20, 40)]
    for coarse, fine in zip(dpm, dpm[1:], strict=False):
        assert 3.4 < coarse / fine < 4.6, dpm
    for coarse, fine in zip(ddim, ddim[1:], strict=False):
        assert 1.7 < coarse / fine < 2.3, ddim
    assert dpm[0] < ddim[0] / 2 and dpm[2] < ddim[2] / 5


def test_dpm_solver_state_is_per_clip_and_ends_at_the_data():
    """Two clips of one video through the same sampler give the same latents (no history leaks from the first
    clip); the last step lands on ᾱ = 1 (returns the data estimate), and the first step from SNR 0 is finite."""
    sampler = DPMSolverPP(SchedulerConfig(), 6)
    noise = torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))

    def predict(x: torch.Tensor, i: int, plan: StepPlan) -> torch.Tensor:
        return 0.3 * x + 0.1 * i

    first, second = sample(predict, sampler, noise), sample(predict, sampler, noise)
    assert torch.isfinite(first).all() and torch.equal(first, second)
    assert int(sampler.timesteps[0]) == 999 and float(sampler.alphas_cumprod[999]) == 0.0
