"""What a step costs, in UNet frame-evaluations: one frame through one CFG half of the full UNet counts 1.

A guided step of f frames costs 2 f, a conditional-only one f; a step reusing deep features (DeepCache) counts
the fraction of the full UNet's floating-point operations it runs, counted once per shape by torch's FLOP
counter on the meta device (no memory, no compute: exact on any machine, at any size).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..config import ModelConfig, RunConfig
from ..geometry import Geometry
from ..io_spec import component_specs, default_ranges, dim_values
from .step_plan import StepPlan


@lru_cache(maxsize=64)
def reuse_fraction(cfg: ModelConfig, latent: int, frames: int, motion_frames: int, levels: int) -> float:
    """FLOPs of a "reuse" step over those of the full UNet, for one clip shape."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.denoising_unet import DenoisingUNet
    from .conditioning import ClipConditioning
    from .torch_model import denoise_halves

    ranges = default_ranges(cfg)
    spec = component_specs(cfg, ranges)["denoiser"]
    size = latent * cfg.vae.downscale
    values = dim_values(cfg, ranges, frames, motion_frames, size, 1.0, 1, batch=1)
    dtypes = {"int64": torch.int64}
    feed = {t.name: (torch.zeros(t.resolve(values), dtype=torch.int64, device="meta") if t.dtype == "int64"
                     else torch.empty(t.resolve(values), dtype=dtypes.get(t.dtype, torch.float32), device="meta"))
            for t in spec.inputs}
    with torch.device("meta"):
        denoiser = DenoisingUNet(cfg)
    clip = ClipConditioning.from_feed(feed, Geometry.of(cfg, size).levels, len(denoiser.spatial_transformers()))

    def flops(deep: torch.Tensor | None) -> tuple[int, torch.Tensor | None]:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            _, kept = denoise_halves(denoiser, clip, feed["sample"], feed["timestep"], feed["motion_scale"], levels,
                                     deep)
        return counter.get_total_flops(), kept

    full, kept = flops(None)
    return flops(kept)[0] / full


def step_evaluations(plan: StepPlan, cfg: ModelConfig, run: RunConfig, frames: int) -> float:
    """UNet frame-evaluations of one step of a clip of `frames` frames."""
    per_half = float(frames)
    if plan.cache == "reuse":
        latent = Geometry.of(cfg, run.size).latent
        per_half *= reuse_fraction(cfg, latent, frames, run.motion_frames, plan.levels)
    return plan.halves * per_half


def run_evaluations(cfg: ModelConfig, run: RunConfig, clip_frames: list[int]) -> float:
    """UNet frame-evaluations of a render whose clips have these frame counts (the step plans of `run`)."""
    from .step_plan import plans

    step_plans = plans(run)
    return sum(step_evaluations(p, cfg, run, f) for f in clip_frames for p in step_plans)
