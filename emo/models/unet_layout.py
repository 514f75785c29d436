"""Channel bookkeeping of the SD1.5 UNet, shared by the 2D ReferenceNet and the 3D denoiser.

Both UNets have the same blocks in the same order, so the k-th spatial transformer of one matches the k-th of the
other; that structural pairing is how reference features reach the denoiser.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import UNetConfig


@dataclass(frozen=True)
class LayerSpec:
    resnet_in: int  # input channels of the layer's resnet (skip channels included in up blocks)
    audio_in: int  # Hallo sizes the audio module's inner width from the block's input width


@dataclass(frozen=True)
class BlockSpec:
    kind: str  # "down" | "mid" | "up"
    index: int
    depth: int  # resolution level: 0 = full latent size; selects the region masks
    channels: int  # output channels
    attention: bool
    layers: tuple[LayerSpec, ...]
    resample: bool  # downsample after (down) / upsample after (up)


def down_blocks(cfg: UNetConfig) -> list[BlockSpec]:
    ch = cfg.block_out_channels
    out, specs = ch[0], []
    for i, attn in enumerate(cfg.down_attention):
        block_in, out = out, ch[i]
        layers = tuple(LayerSpec(block_in if j == 0 else out, block_in if j == 0 else out)
                       for j in range(cfg.layers_per_block))
        specs.append(BlockSpec("down", i, i, out, attn, layers, i < len(ch) - 1))
    return specs


def mid_block(cfg: UNetConfig) -> BlockSpec:
    c = cfg.block_out_channels[-1]
    return BlockSpec("mid", 0, len(cfg.block_out_channels) - 1, c, True, (LayerSpec(c, c),), False)


def up_blocks(cfg: UNetConfig) -> list[BlockSpec]:
    rev = list(reversed(cfg.block_out_channels))
    out, specs = rev[0], []
    for i, attn in enumerate(cfg.up_attention):
        prev, out = out, rev[i]
        block_in = rev[min(i + 1, len(rev) - 1)]
        n = cfg.layers_per_block + 1
        layers = tuple(LayerSpec((prev if j == 0 else out) + (block_in if j == n - 1 else out), block_in)
                       for j in range(n))
        specs.append(BlockSpec("up", i, len(rev) - 1 - i, out, attn, layers, i < len(rev) - 1))
    return specs


def transformer_specs(cfg: UNetConfig) -> list[BlockSpec]:
    """The block of each spatial transformer, in execution order (one entry per reference record / K/V pair)."""
    blocks = down_blocks(cfg) + [mid_block(cfg)] + up_blocks(cfg)
    return [b for b in blocks if b.attention for _ in b.layers]


def transformer_count(cfg: UNetConfig) -> int:
    """Number of spatial transformers (= reference records / reference K/V entries)."""
    return len(transformer_specs(cfg))


def mid_record_index(cfg: UNetConfig) -> int:
    """Position of the mid block's transformer in execution order (its record carries the motion frames)."""
    return sum(len(b.layers) for b in down_blocks(cfg) if b.attention)
