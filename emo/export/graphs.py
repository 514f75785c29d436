"""Export-ready wrappers: one nn.Module per component, whose forward takes and returns exactly the tensors of its
IO spec, in the spec's order. They add no computation of their own beyond what the eager pipeline does between
modules (scaling the latents, CFG guidance): the denoiser's runs the very step function the torch backends run."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..io_spec import ComponentSpec
from ..models.denoising_unet import DenoisingUNet
from ..models.hallo import HalloNet
from ..models.reference_unet import ReferenceUNet
from ..models.unet_layout import transformer_count
from ..models.vae import VAE
from ..preprocess.audio_features import AudioEncoder
from ..sampling.conditioning import ClipConditioning, StepInputs
from ..sampling.latents import decode_images, encode_latents
from ..sampling.reference import motion_features, reference_kv
from ..sampling.torch_model import guided_step


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
    """One denoising step: CFG-batched latents (halves, 4, f, h, w) -> uncond + s · (cond − uncond); with one half
    (the cond half, for a conditional-only step) the same formula gives the cond prediction (`combine`).

    Returning the guided prediction (not both halves) halves the output traffic and keeps the whole step but the
    sampler's update inside the graph; the sampler is the same host code for every backend. The reference K/V come in
    as the two entries per layer plus the entry index of each frame, as the runtime keeps them.
    """

    def __init__(self, denoiser: DenoisingUNet, spec: ComponentSpec):
        super().__init__()
        self.denoiser, self.names = denoiser, [t.name for t in spec.inputs]
        self.levels = len(denoiser.cfg.block_out_channels)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = dict(zip(self.names, inputs, strict=True))
        clip = ClipConditioning.from_feed(feed, self.levels, transformer_count(self.denoiser.cfg))
        step = StepInputs(feed["sample"], feed["timestep"], feed["guidance_scale"], feed["motion_scale"])
        return guided_step(self.denoiser, clip, step)


def component_module(name: str, cfg: ModelConfig, net: HalloNet, vae: VAE, encoder: AudioEncoder,
                     spec: ComponentSpec) -> nn.Module:
    """The export wrapper of one component, taking the inputs of its IO spec `spec` (eval mode; the caller
    chooses device and dtype)."""
    if cfg.family == "echomimic":
        from .echo_graphs import echo_component_module

        return echo_component_module(name, cfg, net, vae, encoder, spec)
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
        "denoiser": lambda: DenoiserGraph(net.denoising_unet, spec),
    }
    if name not in modules:
        raise ValueError(f"unknown component {name!r} (choose from {', '.join(modules)})")
    return modules[name]().eval()
