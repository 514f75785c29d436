"""One clip of the eager (reference) pipeline: conditioning -> CFG denoising loop -> decoded frames.

This is the semantic reference for every backend: the same inputs and initial noise give Hallo's outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import ModelConfig, RunConfig
from ..models.hallo import HalloNet
from ..models.transformer import RefKV
from ..models.vae import VAE
from .ddim import DDIM
from .reference import frame_reference_kv, motion_context, motion_features, reference_context, reference_kv


@dataclass
class VideoConditioning:
    """Everything constant across the clips of one video."""

    image_tokens: torch.Tensor  # (2, t, c) [uncond = imageproj(0), cond = imageproj(face embedding)]
    face_feature: torch.Tensor  # (2, c0, h, w) [zeros, face_locator(face region)]
    masks: list[torch.Tensor]  # per level (3, r*r): full, face, lip
    ref_kv: list[RefKV]  # per spatial transformer: (2, heads, l, d) reference entries (see reference.py)


@dataclass
class ClipConditioning:
    video: VideoConditioning
    ref_kv: list[RefKV]  # arranged per cond frame: (f, heads, l, d)
    motion_feats: torch.Tensor  # (2, n, c, h_mid, w_mid)
    audio_tokens: torch.Tensor  # (2, f, t, c) [zeros, audioproj(window)]


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
    f = audio_tokens.shape[0]
    motion_latents = encode_latents(vae, motion_pixels, cfg.vae.scaling_factor) if motion_pixels.shape[0] else \
        motion_pixels.new_zeros(0, cfg.vae.latent_channels, *(s // cfg.vae.downscale for s in motion_pixels.shape[-2:]))
    n = motion_pixels.shape[0]
    motion = motion_features(net.reference_unet, motion_latents, motion_context(video.image_tokens, n))
    audio = torch.stack([torch.zeros_like(audio_tokens), audio_tokens])
    return ClipConditioning(video, frame_reference_kv(video.ref_kv, f), motion, audio)


def denoiser_output(net: HalloNet, clip: ClipConditioning, model_input: torch.Tensor, t: torch.Tensor,
                    motion_scale: torch.Tensor) -> torch.Tensor:
    """Both CFG halves of the denoiser's prediction for model_input (2, 4, f, h, w)."""
    v = clip.video
    return net.denoising_unet(model_input, t, v.image_tokens, clip.audio_tokens, v.face_feature, v.masks,
                              clip.ref_kv, clip.motion_feats, motion_scale)


Predict = Callable[[torch.Tensor, int], torch.Tensor]  # (latents (1, 4, f, h, w), t) -> guided prediction


def sample(predict: Predict, scheduler: DDIM, init_noise: torch.Tensor,
           on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """The DDIM loop every backend shares: init_noise (1, 4, f, h, w) -> final latents; on_step(i) after step i."""
    latents = init_noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps.tolist()):
        latents = scheduler.step(predict(latents, t), t, latents)
        if on_step is not None:
            on_step(i)
    return latents


def guided_prediction(net: HalloNet, clip: ClipConditioning, latents: torch.Tensor, t: int | torch.Tensor,
                      guidance_scale: float, motion_scale: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: both halves in one batch, uncond + s · (cond − uncond). `t` may be a device
    tensor (a CUDA graph replays with new values written into it)."""
    t_in = t if isinstance(t, torch.Tensor) else torch.tensor(t, device=latents.device)
    uncond, cond = denoiser_output(net, clip, torch.cat([latents, latents]), t_in, motion_scale).chunk(2)
    return uncond + guidance_scale * (cond - uncond)


def denoise(net: HalloNet, cfg: ModelConfig, run: RunConfig, clip: ClipConditioning, init_noise: torch.Tensor,
            on_step: Callable[[int], None] | None = None) -> torch.Tensor:
    """CFG + DDIM loop of the torch model from init_noise (1, 4, f, h, w) -> final latents (1, 4, f, h, w)."""
    scale = torch.tensor(run.motion_scale, dtype=init_noise.dtype, device=init_noise.device)
    return sample(lambda x, t: guided_prediction(net, clip, x, t, run.guidance_scale, scale),
                  DDIM(cfg.scheduler, run.steps), init_noise, on_step)


@torch.no_grad()
def run_clip(net: HalloNet, vae: VAE, cfg: ModelConfig, run: RunConfig, ref_image: torch.Tensor,
             motion_pixels: torch.Tensor, face_emb: torch.Tensor, face_region: torch.Tensor,
             masks: list[torch.Tensor], audio_tokens: torch.Tensor, init_noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip exactly as the reference pipeline runs it -> (final latents (1,4,f,h,w), frames (f,3,H,W) in [0,1])."""
    video = prepare_video(net, vae, cfg, ref_image, face_emb, face_region, masks, motion_pixels.shape[0])
    clip = prepare_clip(net, vae, cfg, video, motion_pixels, audio_tokens)
    if init_noise is None:
        h = ref_image.shape[-1] // cfg.vae.downscale
        init_noise = torch.randn((1, cfg.vae.latent_channels, audio_tokens.shape[0], h, h), generator=generator,
                                 dtype=ref_image.dtype).to(ref_image.device)
    latents = denoise(net, cfg, run, clip, init_noise)
    return latents, decode_frames(vae, latents, cfg.vae.scaling_factor)
