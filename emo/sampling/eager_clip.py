"""One clip of the eager torch pipeline: conditioning -> sampling loop (guided DDIM by default) -> decoded frames.

This is the semantic reference for every backend: the same inputs and initial noise give Hallo's outputs (the
golden tests run it, and emo-clip).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import ModelConfig, RunConfig
from ..geometry import Geometry
from ..models.hallo import HalloNet
from ..models.vae import VAE
from .conditioning import ClipConditioning, StepSchedule
from .latents import decode_frames
from .loop import sample
from .sampler import make_sampler
from .step_plan import StepPlan, plans
from .torch_model import planned_step, prepare_clip, prepare_video


def denoise(net: HalloNet, cfg: ModelConfig, run: RunConfig, clip: ClipConditioning, init_noise: torch.Tensor,
            on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """The sampling loop of the torch model from init_noise (1, 4, f, h, w) -> final latents (1, 4, f, h, w):
    the run's sampler and step plans (Hallo's guided DDIM at its default settings)."""
    sampler = make_sampler(cfg.scheduler, run.sampler, run.steps)
    steps = StepSchedule(sampler.timesteps, run, init_noise.device, init_noise.dtype)
    deep: list[torch.Tensor | None] = [None]  # the deep features of the clip's last "store" step

    def predict(x: torch.Tensor, i: int, plan: StepPlan) -> torch.Tensor:
        out, deep[0] = planned_step(net.denoising_unet, clip, steps.inputs(x, i, plan.halves), plan, deep[0])
        return out

    return sample(predict, sampler, init_noise, on_step, plans(run))


@torch.no_grad()
def run_clip(net: HalloNet, vae: VAE, cfg: ModelConfig, run: RunConfig, ref_image: torch.Tensor,
             motion_pixels: torch.Tensor, face_emb: torch.Tensor, face_region: torch.Tensor,
             masks: list[torch.Tensor], audio_tokens: torch.Tensor, init_noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip exactly as the reference pipeline runs it -> (final latents (1,4,f,h,w), frames (f,3,H,W) in [0,1])."""
    video = prepare_video(net, vae, cfg, ref_image, face_emb, face_region, masks, motion_pixels.shape[0])
    clip = prepare_clip(net, vae, cfg, video, motion_pixels, audio_tokens)
    if init_noise is None:
        h = Geometry.of(cfg, ref_image.shape[-1]).latent
        init_noise = torch.randn((1, cfg.vae.latent_channels, audio_tokens.shape[0], h, h), generator=generator,
                                 dtype=ref_image.dtype).to(ref_image.device)
    latents = denoise(net, cfg, run, clip, init_noise)
    return latents, decode_frames(vae, latents, cfg.vae.scaling_factor)
