"""The one walk through an SD1.5-style UNet: down blocks (keeping skips), the mid block, up blocks (taking them).

The 2D ReferenceNet and the 3D denoiser differ only in what follows each layer's resnet (records, reference K/V,
audio and motion modules); they pass that as `layer` and share the walk, which is driven by the block specs of
their config (`unet_layout`), so that a module list out of step with the config fails loudly.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .unet_layout import down_blocks, up_blocks

Layer = Callable[[nn.Module, int, torch.Tensor], torch.Tensor]  # (block, layer index, resnet output) -> output


def walk_unet(unet: nn.Module, x: torch.Tensor, temb: torch.Tensor, layer: Layer, up_to_mid: bool = False
              ) -> torch.Tensor:
    """x: conv_in output (N, c0, h, w) -> the last up block's output (or the mid block's, before its second
    resnet, with `up_to_mid`)."""
    skips = [x]
    for spec, block in zip(down_blocks(unet.cfg), unet.down_blocks, strict=True):
        for j, (_, resnet) in enumerate(zip(spec.layers, block.resnets, strict=True)):
            x = layer(block, j, resnet(x, temb))
            skips.append(x)
        if spec.resample:
            x = block.downsamplers[0](x)
            skips.append(x)
    mid = unet.mid_block
    x = layer(mid, 0, mid.resnets[0](x, temb))
    if up_to_mid:
        return x
    x = mid.resnets[1](x, temb)
    for spec, block in zip(up_blocks(unet.cfg), unet.up_blocks, strict=True):
        for j, (_, resnet) in enumerate(zip(spec.layers, block.resnets, strict=True)):
            x = layer(block, j, resnet(torch.cat([x, skips.pop()], dim=1), temb))
        if spec.resample:
            x = block.upsamplers[0](x, skips[-1].shape[-2:])
    return x
