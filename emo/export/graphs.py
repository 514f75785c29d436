"""Export-ready wrappers: one nn.Module per component, whose forward takes and returns exactly the tensors of its
IO spec, in the spec's order. They add no computation of their own beyond what the eager pipeline does between
modules (scaling the latents, CFG guidance, arranging the reference K/V per frame)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..models.denoising_unet import DenoisingUNet
from ..models.hallo import HalloNet
from ..models.reference_unet import ReferenceUNet
from ..models.vae import VAE
from ..preprocess.audio_features import AudioEncoder
from ..sampling.clip import decode_images, encode_latents
from ..sampling.reference import frame_reference_kv, motion_features, reference_kv


class AudioEncoderGraph(nn.Module):
    def __init__(self, encoder: AudioEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, waveform: torch.Tensor, num_frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(waveform, num_frames)


class VaeEncoderGraph(nn.Module):
    def __init__(self, vae: VAE, scaling: float):
        super().__init__()
        self.vae, self.scaling = vae, scaling

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.vae, pixels, self.scaling)


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae: VAE, scaling: float):
        super().__init__()
        self.vae, self.scaling = vae, scaling

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_images(self.vae, latents, self.scaling)


class ReferenceGraph(nn.Module):
    """Reference image -> keys/values of every denoiser self-attention layer, flat: k_0, v_0, k_1, v_1, ..."""

    def __init__(self, refnet: ReferenceUNet, denoiser: DenoisingUNet):
        super().__init__()
        self.refnet, self.denoiser = refnet, denoiser

    def forward(self, ref_latent: torch.Tensor, ref_context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for kv in reference_kv(self.refnet, self.denoiser, ref_latent, ref_context) for t in kv)


class MotionGraph(nn.Module):
    def __init__(self, refnet: ReferenceUNet):
        super().__init__()
        self.refnet = refnet

    def forward(self, motion_latents: torch.Tensor, motion_context: torch.Tensor) -> torch.Tensor:
        return motion_features(self.refnet, motion_latents, motion_context)


class DenoiserGraph(nn.Module):
    """One guided denoising step: CFG-batched latents (2, 4, f, h, w) -> uncond + s · (cond − uncond).

    Returning the guided prediction (not both halves) halves the output traffic and keeps the whole step but the
    DDIM update inside the graph; the sampler is the same host code for every backend.
    """

    def __init__(self, denoiser: DenoisingUNet, levels: int):
        super().__init__()
        self.denoiser, self.levels = denoiser, levels

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, guidance_scale: torch.Tensor,
                motion_scale: torch.Tensor, image_tokens: torch.Tensor, audio_tokens: torch.Tensor,
                face_feature: torch.Tensor, motion_features: torch.Tensor, *masks_and_kv: torch.Tensor
                ) -> torch.Tensor:
        masks, kv = list(masks_and_kv[:self.levels]), masks_and_kv[self.levels:]
        pairs = frame_reference_kv(list(zip(kv[0::2], kv[1::2])), sample.shape[2])  # (2, ...) -> (f, ...) each
        out = self.denoiser(sample, timestep, image_tokens, audio_tokens, face_feature, masks, pairs,
                            motion_features, motion_scale)
        uncond, cond = out.chunk(2)
        return uncond + guidance_scale * (cond - uncond)


def component_module(name: str, cfg: ModelConfig, net: HalloNet, vae: VAE, encoder: AudioEncoder) -> nn.Module:
    """The export wrapper of one component (eval mode; the caller chooses device and dtype)."""
    scaling = cfg.vae.scaling_factor
    modules = {
        "audio_encoder": lambda: AudioEncoderGraph(encoder),
        "audioproj": lambda: net.audioproj,
        "imageproj": lambda: net.imageproj,
        "face_locator": lambda: net.face_locator,
        "vae_encoder": lambda: VaeEncoderGraph(vae, scaling),
        "vae_decoder": lambda: VaeDecoderGraph(vae, scaling),
        "reference": lambda: ReferenceGraph(net.reference_unet, net.denoising_unet),
        "motion": lambda: MotionGraph(net.reference_unet),
        "denoiser": lambda: DenoiserGraph(net.denoising_unet, len(cfg.unet.block_out_channels)),
    }
    if name not in modules:
        raise ValueError(f"unknown component {name!r} (choose from {', '.join(modules)})")
    return modules[name]().eval()
