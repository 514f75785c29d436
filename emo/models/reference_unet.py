"""ReferenceNet: the 2D SD1.5 UNet run at t = 0 on reference / motion-frame latents.

Its only product is the `norm1` output of every spatial transformer (the "records"), which the denoiser turns
into reference keys/values and motion-frame features. Nothing after the last needed record is computed.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import UNetConfig
from .embeddings import TimestepEmbedding
from .resnet import Downsample, ResnetBlock, Upsample
from .transformer import SpatialTransformer
from .unet_layout import BlockSpec, down_blocks, mid_block, up_blocks
from .unet_walk import walk_unet


class Block2D(nn.Module):
    def __init__(self, spec: BlockSpec, cfg: UNetConfig, context_dim: int | None = None, context_scale: float = 1.0,
                 cross_attention: bool = True):
        """context_dim: the cross-attention's context width (default cfg.cross_attention_dim); cross_attention
        False: the transformers have none (EchoMimic's ReferenceNet)."""
        super().__init__()
        t, g, eps = cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps
        scale = cfg.mid_block_scale_factor if spec.kind == "mid" else 1.0
        c = spec.channels
        if spec.kind == "mid":
            self.resnets = nn.ModuleList([ResnetBlock(c, c, t, g, eps, scale), ResnetBlock(c, c, t, g, eps, scale)])
        else:
            self.resnets = nn.ModuleList([ResnetBlock(layer.resnet_in, c, t, g, eps, scale) for layer in spec.layers])
        if spec.attention:
            self.attentions = nn.ModuleList(
                [SpatialTransformer(c, cfg.heads, (context_dim or cfg.cross_attention_dim) if cross_attention else None,
                                    g, context_scale)
                 for _ in spec.layers])
        if spec.resample and spec.kind == "down":
            self.downsamplers = nn.ModuleList([Downsample(c, cfg.downsample_padding)])
        if spec.resample and spec.kind == "up":
            self.upsamplers = nn.ModuleList([Upsample(c)])
        self.spec = spec


class ReferenceUNet(nn.Module):
    def __init__(self, cfg: UNetConfig, cross_attention: bool = True):
        """cross_attention False: no cross-attention modules (EchoMimic's ReferenceNet, run without context)."""
        super().__init__()
        self.cfg = cfg
        c0 = cfg.block_out_channels[0]
        self.conv_in = nn.Conv2d(cfg.in_channels, c0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(c0, cfg.time_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
        self.down_blocks = nn.ModuleList([Block2D(s, cfg, cross_attention=cross_attention) for s in down_blocks(cfg)])
        self.up_blocks = nn.ModuleList([Block2D(s, cfg, cross_attention=cross_attention) for s in up_blocks(cfg)])
        self.mid_block = Block2D(mid_block(cfg), cfg, cross_attention=cross_attention)

    def forward(self, latents: torch.Tensor, context: torch.Tensor | None, up_to_mid: bool = False
                ) -> list[torch.Tensor]:
        """latents (N, 4, h, w), context (N, t, c_ctx) -> records [(N, h_k*w_k, c_k)] in execution order.
        context None: no cross-attention (EchoMimic writes its reference records without it).

        With `up_to_mid` only the down and mid blocks run (enough for motion-frame features).
        """
        temb = self.time_embedding(torch.zeros(latents.shape[0], device=latents.device), latents.dtype)
        records: list[torch.Tensor] = []

        def layer(block: Block2D, j: int, x: torch.Tensor) -> torch.Tensor:
            if block.spec.attention:
                x, rec = block.attentions[j](x, context)
                records.append(rec)
            return x

        walk_unet(self, self.conv_in(latents), temb, layer, up_to_mid)
        return records
