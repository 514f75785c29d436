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


def walk_unet(unet: nn.Module, x: torch.Tensor, temb: torch.Tensor, layer: Layer, up_to_mid: bool = False,
              levels: int = 0, deep: torch.Tensor | None = None):
    """x: conv_in output (N, c0, h, w) -> the last up block's output (or the mid block's, before its second
    resnet, with `up_to_mid`).

    levels > 0 (DeepCache): returns (output, kept). Without `deep` the whole walk runs and `kept` is the input of
    the last `levels` up blocks; with `deep` only the outer levels run (the first `levels` down blocks, without
    the innermost one's downsampler, and the last `levels` up blocks, which start from `deep`) and kept is None.
    """
    downs, ups = down_blocks(unet.cfg), up_blocks(unet.cfg)
    if not 0 <= levels < len(ups):
        raise ValueError(f"cached levels must be in 0..{len(ups) - 1} (got {levels})")
    shallow = deep is not None
    if shallow and not levels:
        raise ValueError("deep features need levels > 0")
    skips = [x]
    for d, (spec, block) in enumerate(zip(downs, unet.down_blocks, strict=True)):
        if shallow and d == levels:
            break
        for j, (_, resnet) in enumerate(zip(spec.layers, block.resnets, strict=True)):
            x = layer(block, j, resnet(x, temb))
            skips.append(x)
        if spec.resample and not (shallow and d == levels - 1):
            x = block.downsamplers[0](x)
            skips.append(x)
    if not shallow:
        mid = unet.mid_block
        x = layer(mid, 0, mid.resnets[0](x, temb))
        if up_to_mid:
            return x
        x = mid.resnets[1](x, temb)
    kept, first = None, len(ups) - levels
    for u, (spec, block) in enumerate(zip(ups, unet.up_blocks, strict=True)):
        if levels and u == first:
            kept, x = (None, deep) if shallow else (x, x)
        elif shallow and u < first:
            continue
        for j, (_, resnet) in enumerate(zip(spec.layers, block.resnets, strict=True)):
            x = layer(block, j, resnet(torch.cat([x, skips.pop()], dim=1), temb))
        if spec.resample:
            x = block.upsamplers[0](x, skips[-1].shape[-2:])
    return (x, kept) if levels else x
