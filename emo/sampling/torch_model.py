"""What the torch modules compute for the sampler: the conditioning (through `guidance`) and the guided step.

The eager reference, torch-fast and the export wrappers all run these functions, so a graph computes exactly what
the module it was exported from computes.
"""
from __future__ import annotations

import torch

from ..config import ModelConfig
from ..models.denoising_unet import DenoisingUNet
from ..models.hallo import HalloNet
from ..models.transformer import RefKV
from ..models.vae import VAE
from .conditioning import ClipConditioning, StepInputs, VideoConditioning
from .guidance import clip_conditioning, video_conditioning
from .latents import encode_latents
from .reference import motion_features, reference_kv
from .step_plan import StepPlan


class TorchComponents:
    """The conditioning components (`guidance.ConditioningComponents`) as the torch modules compute them."""

    def __init__(self, net: HalloNet, vae: VAE, scaling: float):
        self.net, self.vae, self.scaling = net, vae, scaling

    def imageproj(self, face_embedding: torch.Tensor) -> torch.Tensor:
        return self.net.imageproj(face_embedding)

    def face_locator(self, face_region: torch.Tensor) -> torch.Tensor:
        return self.net.face_locator(face_region)

    def vae_encoder(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.vae, pixels, self.scaling)

    def reference(self, ref_latent: torch.Tensor, ref_context: torch.Tensor) -> list[RefKV]:
        return reference_kv(self.net.reference_unet, self.net.denoising_unet, ref_latent, ref_context)

    def motion(self, motion_latents: torch.Tensor, motion_context: torch.Tensor) -> torch.Tensor:
        return motion_features(self.net.reference_unet, motion_latents, motion_context)


def prepare_video(net: HalloNet, vae: VAE, cfg: ModelConfig, ref_image: torch.Tensor, face_emb: torch.Tensor,
                  face_region: torch.Tensor, masks: list[torch.Tensor], motion_frames: int) -> VideoConditioning:
    """ref_image (3, H, W) in [-1, 1]; face_emb (512,); face_region (3, H, W); masks per level (3, r*r)."""
    return video_conditioning(TorchComponents(net, vae, cfg.vae.scaling_factor), ref_image, face_emb, face_region,
                              masks, motion_frames)


def prepare_clip(net: HalloNet, vae: VAE, cfg: ModelConfig, video: VideoConditioning, motion_pixels: torch.Tensor,
                 audio_tokens: torch.Tensor) -> ClipConditioning:
    """motion_pixels (n, 3, H, W) in [-1, 1]; audio_tokens (f, t, c) -> the clip's conditioning."""
    return clip_conditioning(TorchComponents(net, vae, cfg.vae.scaling_factor), cfg, video, motion_pixels,
                             audio_tokens)


def denoise_halves(denoiser: DenoisingUNet, clip: ClipConditioning, sample: torch.Tensor, t: torch.Tensor,
                   motion_scale: torch.Tensor, levels: int = 0, deep: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The denoiser's prediction for the CFG halves of sample (b, 4, f, h, w), b = 2 or 1 (the cond half; `clip`
    of the same halves) -> ((b, 4, f, h, w), deep features: see DenoisingUNet.forward_cached)."""
    v = clip.video
    return denoiser.forward_cached(sample, t, v.image_tokens, clip.audio_tokens, v.face_feature, v.masks, v.ref_kv,
                                   clip.ref_index, clip.motion_features, motion_scale, levels, deep)


def combine(out: torch.Tensor, guidance_scale: torch.Tensor) -> torch.Tensor:
    """Predictions of the halves (b, 4, f, h, w) -> uncond + s · (cond − uncond) (1, 4, f, h, w): Hallo's guidance
    for b = 2; for b = 1 (the cond half alone) uncond is cond and this is the cond prediction, exactly."""
    uncond, cond = out[:1], out[-1:]
    return uncond + guidance_scale * (cond - uncond)


def guided_step(denoiser: DenoisingUNet, clip: ClipConditioning, step: StepInputs) -> torch.Tensor:
    """One denoising step from the denoiser IO spec's inputs -> noise_pred (1, 4, f, h, w): both halves in one
    batch, guided (or, with a batch of 1 and the cond half's `clip`, the cond prediction). Every tensor may be a
    static buffer that a CUDA graph replays with new values."""
    out, _ = denoise_halves(denoiser, clip, step.sample, step.timestep, step.motion_scale)
    return combine(out, step.guidance_scale)


def cached_step(denoiser: DenoisingUNet, clip: ClipConditioning, step: StepInputs, levels: int,
                deep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """guided_step with DeepCache: without `deep` the full UNet, also returning its deep features (the input of
    its last `levels` up blocks); with `deep` only the outer levels run (returning None)."""
    out, kept = denoise_halves(denoiser, clip, step.sample, step.timestep, step.motion_scale, levels, deep)
    return combine(out, step.guidance_scale), kept


def planned_step(denoiser: DenoisingUNet, clip: ClipConditioning, step: StepInputs, plan: StepPlan,
                 deep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step as `plan` says, `clip` with both halves -> (noise_pred, the deep features to keep: the new ones
    after a "store" step, `deep` itself otherwise). "reuse" needs `deep` from a "store" step."""
    check_halves(step, plan)
    clip = clip.halves(plan.halves)
    if plan.cache == "off":
        return guided_step(denoiser, clip, step), deep
    if plan.cache == "store":
        return cached_step(denoiser, clip, step, plan.levels, None)
    if deep is None:
        raise ValueError("a step reusing deep features needs a storing step before it in the clip")
    return cached_step(denoiser, clip, step, plan.levels, deep)[0], deep


def check_halves(step: StepInputs, plan: StepPlan) -> None:
    if step.sample.shape[0] != plan.halves:
        raise ValueError(f"the step's sample has {step.sample.shape[0]} CFG halves, its plan {plan.halves}")
