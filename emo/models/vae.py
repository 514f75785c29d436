"""AutoencoderKL-compatible VAE (Stable Diffusion's image <-> latent codec) in plain PyTorch.

Parameter names and shapes follow diffusers' AutoencoderKL (DownEncoderBlock2D / UpDecoderBlock2D, current attention
names) so published VAE weights load unchanged; the modules are our own so that export and the fast runtime see
simple, hook-free code whose entry points take and return plain tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VAEConfig
from .attention import attention

# diffusers builds every VAE normalisation with this eps; the UNet's 1e-5 would shift decoded pixels.
EPS = 1e-6


class ResnetBlock(nn.Module):
    """Pre-activation residual block without a time embedding (the VAE is not conditioned on the timestep)."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=EPS)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=EPS)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        # Only blocks that change width carry a shortcut projection, so the state dict has it only there.
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SelfAttention(nn.Module):
    """Single-head attention across all pixels: the only global mixing in the VAE, hence one head of full width."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])  # a list only to reproduce the `to_out.0` name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # b c h w -> b (h w) c
        q, k, v = (proj(tokens).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # -> b 1 (h w) c
        out = self.to_out[0](attention(q, k, v).squeeze(1))  # b 1 (h w) c -> b (h w) c
        return x + out.transpose(1, 2).reshape(b, c, h, w)  # b (h w) c -> b c h w


class MidBlock(nn.Module):
    """resnet -> attention -> resnet at the lowest resolution, where attention over all pixels is affordable."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([SelfAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Downsample(nn.Module):
    """Halve the resolution with the asymmetric zero padding the pretrained weights were trained with."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution by nearest-neighbour copying, then let a conv smooth the blocky result."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """Resnets then an optional downsampler; the last encoder block keeps its resolution."""

    def __init__(self, c_in: int, c_out: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(layers)])
        # An empty list adds no state-dict keys, matching checkpoints whose last block has no downsampler.
        self.downsamplers = nn.ModuleList([Downsample(c_out)] if downsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (*self.resnets, *self.downsamplers):
            x = layer(x)
        return x


class UpBlock(nn.Module):
    """Resnets then an optional upsampler; the last decoder block keeps its resolution."""

    def __init__(self, c_in: int, c_out: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(c_in if i == 0 else c_out, c_out, groups) for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample(c_out)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (*self.resnets, *self.upsamplers):
            x = layer(x)
        return x


class Encoder(nn.Module):
    """Image -> latent moments (mean and log-variance stacked on channels, as the checkpoint's conv_out produces)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, last = cfg.block_out_channels, cfg.norm_num_groups, len(cfg.block_out_channels) - 1
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownBlock(ch[max(i - 1, 0)], c, cfg.layers_per_block, groups, downsample=i < last)
            for i, c in enumerate(ch)])
        self.mid_block = MidBlock(ch[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    """Latent -> image, mirroring the encoder's widths with one extra resnet per block (as the checkpoints have)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, groups, last = tuple(reversed(cfg.block_out_channels)), cfg.norm_num_groups, len(cfg.block_out_channels) - 1
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.mid_block = MidBlock(ch[0], groups)
        self.up_blocks = nn.ModuleList([
            UpBlock(ch[max(i - 1, 0)], c, cfg.layers_per_block + 1, groups, upsample=i < last)
            for i, c in enumerate(ch)])
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VAE(nn.Module):
    """diffusers AutoencoderKL's inference path: deterministic (mean) encoding and decoding, nothing sampled.

    The scaling factor stays outside both methods so callers choose where latents are scaled, as diffusers does.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Images (b, 3, H, W) in [-1, 1] -> latent means (b, latent, H/d, W/d), d = cfg.downscale (8 for SD); unscaled.

        The mean rather than a sample keeps reference-image latents deterministic, as Hallo's inference does.
        """
        return self.quant_conv(self.encoder(x))[:, : self.cfg.latent_channels]  # mean half of (mean, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents already divided by the scale (b, latent, h, w) -> images (b, 3, d*h, d*w) in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))
