"""Export-ready wrappers of EchoMimic's components, taking and returning the tensors of their IO specs in order.

They run the very functions the eager EchoMimic path runs (`emo.sampling.echo_video`): the denoiser graph is one
window's `echo_denoise` on its CFG halves, combined as Hallo's denoiser graph combines them (`combine`)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..io_spec import ComponentSpec
from ..models.echomimic import EchoMimicNet
from ..models.vae import VAE
from ..models.whisper_encoder import WhisperEncoder
from ..sampling.echo_video import echo_denoise, echo_reference_kv
from ..sampling.torch_model import combine


class WhisperGraph(nn.Module):
    """One 30-s log-mel segment (1, 80, 3000) -> its stacked hidden states (layers + 1, 1500, c)."""

    def __init__(self, encoder: WhisperEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel)[0]


class EchoReferenceGraph(nn.Module):
    """Reference latent -> the one reference entry of every denoiser self-attention layer, flat: k_0, v_0, ..."""

    def __init__(self, net: EchoMimicNet):
        super().__init__()
        self.net = net

    def forward(self, ref_latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for kv in echo_reference_kv(self.net, ref_latent) for t in kv)


class EchoDenoiserGraph(nn.Module):
    """One window: CFG-batched latents (halves, 4, f, h, w) -> uncond + s · (cond − uncond) (1, 4, f, h, w); with
    one half, the cond prediction."""

    def __init__(self, net: EchoMimicNet):
        super().__init__()
        self.denoiser = net.denoising_unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, guidance_scale: torch.Tensor,
                audio_tokens: torch.Tensor, face_feature: torch.Tensor, *kv: torch.Tensor) -> torch.Tensor:
        ref_kv = [(kv[i], kv[i + 1]) for i in range(0, len(kv), 2)]
        out = echo_denoise(self.denoiser, sample, timestep, audio_tokens, face_feature, ref_kv)
        return combine(out, guidance_scale)


def echo_component_module(name: str, cfg: ModelConfig, net: EchoMimicNet, vae: VAE, encoder: WhisperEncoder,
                          spec: ComponentSpec) -> nn.Module:
    """The export wrapper of one EchoMimic component (eval mode; the caller chooses device and dtype)."""
    from .graphs import VaeDecoderGraph, VaeEncoderGraph

    scaling = cfg.vae.scaling_factor
    modules = {
        "audio_encoder": lambda: WhisperGraph(encoder),
        "face_locator": lambda: net.face_locator,
        "vae_encoder": lambda: VaeEncoderGraph(vae, scaling),
        "vae_decoder": lambda: VaeDecoderGraph(vae, scaling),
        "reference": lambda: EchoReferenceGraph(net),
        "denoiser": lambda: EchoDenoiserGraph(net),
    }
    if name not in modules:
        raise ValueError(f"unknown EchoMimic component {name!r} (choose from {', '.join(modules)})")
    return modules[name]().eval()
