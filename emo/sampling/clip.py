"""One clip of the eager (reference) pipeline: conditioning -> CFG denoising loop -> decoded frames.

This is the semantic reference for every backend: the same inputs and initial noise give Hallo's outputs.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import ModelConfig, RunConfig
from ..geometry import Geometry
from ..models.denoising_unet import DenoisingUNet
from ..models.hallo import HalloNet
from ..models.vae import VAE
from .conditioning import ClipConditioning, StepInputs, StepSchedule, VideoConditioning
from .ddim import DDIM
from .reference import motion_context, motion_features, reference_context, reference_index, reference_kv


def encode_latents(vae: VAE, pixels: torch.Tensor, scaling: float) -> torch.Tensor:
    """pixels (N, 3, H, W) in [-1, 1] -> scaled latent means (N, 4, H/8, W/8)."""
    return vae.encode_mean(pixels) * scaling


def decode_images(vae: VAE, latents: torch.Tensor, scaling: float) -> torch.Tensor:
    """Scaled latents (N, 4, h, w) -> images (N, 3, H, W) in [0, 1]."""
    return (vae.decode(latents / scaling) / 2 + 0.5).clamp(0, 1)


def decode_frames(vae: VAE, latents: torch.Tensor, scaling: float, chunk: int = 4) -> torch.Tensor:
    """latents (1, 4, f, h, w) -> frames (f, 3, H, W) in [0, 1], decoded `chunk` frames at a time."""
    z = latents[0].transpose(0, 1)  # c f h w -> f c h w
    return torch.cat([decode_images(vae, z[i:i + chunk], scaling) for i in range(0, z.shape[0], chunk)])


def prepare_video(net: HalloNet, vae: VAE, cfg: ModelConfig, ref_image: torch.Tensor, face_emb: torch.Tensor,
                  face_region: torch.Tensor, masks: list[torch.Tensor], motion_frames: int) -> VideoConditioning:
    """ref_image (3, H, W) in [-1, 1]; face_emb (512,); face_region (3, H, W); masks per level (3, r*r)."""
    emb = face_emb.reshape(1, -1)
    tokens = net.imageproj(torch.cat([torch.zeros_like(emb), emb]))
    feat = net.face_locator(face_region[None])
    ref_latent = encode_latents(vae, ref_image[None], cfg.vae.scaling_factor)
    kv = reference_kv(net.reference_unet, net.denoising_unet, ref_latent,
                      reference_context(tokens, motion_frames))
    return VideoConditioning(tokens, torch.cat([torch.zeros_like(feat), feat]), masks, kv)


def prepare_clip(net: HalloNet, vae: VAE, cfg: ModelConfig, video: VideoConditioning, motion_pixels: torch.Tensor,
                 audio_tokens: torch.Tensor) -> ClipConditioning:
    """motion_pixels (n, 3, H, W) in [-1, 1]; audio_tokens (f, t, c) -> the clip's conditioning."""
    f, n = audio_tokens.shape[0], motion_pixels.shape[0]
    if n:
        motion_latents = encode_latents(vae, motion_pixels, cfg.vae.scaling_factor)
    else:
        latent = Geometry.of(cfg, motion_pixels.shape[-1]).latent
        motion_latents = motion_pixels.new_zeros(0, cfg.vae.latent_channels, latent, latent)
    motion = motion_features(net.reference_unet, motion_latents, motion_context(video.image_tokens, n))
    audio = torch.stack([torch.zeros_like(audio_tokens), audio_tokens])
    return ClipConditioning(video, audio, motion, reference_index(f, audio_tokens.device))


def both_halves(denoiser: DenoisingUNet, clip: ClipConditioning, sample: torch.Tensor, t: torch.Tensor,
                motion_scale: torch.Tensor) -> torch.Tensor:
    """The denoiser's prediction for both CFG halves of sample (2, 4, f, h, w) -> (2, 4, f, h, w)."""
    v = clip.video
    return denoiser(sample, t, v.image_tokens, clip.audio_tokens, v.face_feature, v.masks, v.ref_kv, clip.ref_index,
                    clip.motion_features, motion_scale)


def denoiser_output(net: HalloNet, clip: ClipConditioning, model_input: torch.Tensor, t: torch.Tensor,
                    motion_scale: torch.Tensor) -> torch.Tensor:
    """Both CFG halves of the denoiser's prediction for model_input (2, 4, f, h, w)."""
    return both_halves(net.denoising_unet, clip, model_input, t, motion_scale)


def guided_step(denoiser: DenoisingUNet, clip: ClipConditioning, step: StepInputs) -> torch.Tensor:
    """One guided denoising step from the denoiser IO spec's inputs -> noise_pred (1, 4, f, h, w):
    uncond + s · (cond − uncond), both halves in one batch. Every tensor may be a static buffer that a CUDA graph
    replays with new values."""
    uncond, cond = both_halves(denoiser, clip, step.sample, step.timestep, step.motion_scale).chunk(2)
    return uncond + step.guidance_scale * (cond - uncond)


Predict = Callable[[torch.Tensor, int], torch.Tensor]  # (latents (1, 4, f, h, w), step index) -> guided prediction


def sample(predict: Predict, scheduler: DDIM, init_noise: torch.Tensor,
           on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """The DDIM loop every backend shares: init_noise (1, 4, f, h, w) -> final latents; on_step(i) after step i."""
    latents = init_noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps.tolist()):
        latents = scheduler.step(predict(latents, i), t, latents)
        if on_step is not None:
            on_step(i)
    return latents


def denoise(net: HalloNet, cfg: ModelConfig, run: RunConfig, clip: ClipConditioning, init_noise: torch.Tensor,
            on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """CFG + DDIM loop of the torch model from init_noise (1, 4, f, h, w) -> final latents (1, 4, f, h, w)."""
    scheduler = DDIM(cfg.scheduler, run.steps)
    steps = StepSchedule(scheduler.timesteps, run, init_noise.device, init_noise.dtype)
    return sample(lambda x, i: guided_step(net.denoising_unet, clip, steps.inputs(x, i)), scheduler, init_noise,
                  on_step)


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
