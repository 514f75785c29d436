"""AutoencoderKL-compatible VAE (SD's sd-vae-ft-mse layout), in plain torch.

Parameter names match diffusers' AutoencoderKL state dicts so published VAE weights load as they are; the modules
are ours so that export and the fast runtime see simple, hook-free code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VAEConfig
from .attention import attention

EPS = 1e-6


class VAEResnet(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=EPS)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=EPS)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class VAEAttention(nn.Module):
    """Single-head self-attention over all pixels, with a residual (the VAE's mid-block attention)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).view(b, c, h * w).transpose(1, 2)[:, None]  # b c h w -> b 1 (h w) c
        o = attention(self.to_q(t), self.to_k(t), self.to_v(t))[:, 0]
        return self.to_out[0](o).transpose(1, 2).reshape(b, c, h, w) + x  # b (h w) c -> b c h w


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([VAEResnet(channels, channels, groups), VAEResnet(channels, channels, groups)])
        self.attentions = nn.ModuleList([VAEAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Resample(nn.Module):
    """Stride-2 conv with diffusers' asymmetric (0, 1, 0, 1) padding, or nearest x2 upsampling then a conv."""

    def __init__(self, channels: int, down: bool):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, layers: int, groups: int, resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([VAEResnet(c_in if i == 0 else c_out, c_out, groups) for i in range(layers)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Resample(c_out, down=True)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Resample(c_out, down=False)])
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        if self.resample == "down":
            x = self.downsamplers[0](x)
        elif self.resample == "up":
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            CoderBlock(ch[max(i - 1, 0)], c, cfg.layers_per_block, g, "down" if i < len(ch) - 1 else None)
            for i, c in enumerate(ch)])
        self.mid_block = MidBlock(ch[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=EPS)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        rev, g = list(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], g)
        self.up_blocks = nn.ModuleList([
            CoderBlock(rev[max(i - 1, 0)], c, cfg.layers_per_block + 1, g, "up" if i < len(rev) - 1 else None)
            for i, c in enumerate(rev)])
        self.conv_norm_out = nn.GroupNorm(g, rev[-1], eps=EPS)
        self.conv_out = nn.Conv2d(rev[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Images (b, 3, H, W) in [-1, 1] -> latent means (b, c, H/8, W/8), not yet multiplied by the scale."""
        return self.quant_conv(self.encoder(x))[:, : self.cfg.latent_channels]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents already divided by the scale (b, c, h, w) -> images (b, 3, 8h, 8w) in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))
