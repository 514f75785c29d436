"""The Whisper audio encoder as EchoMimic uses it: every hidden state, not the final normed output.

EchoMimic conditions on whisper-tiny: each 30-second log-mel segment goes through the encoder, and the feature of
one 20 ms step is the stack of the hidden state after the positional embedding and after each residual attention
block, taken before `ln_post`. Parameter names follow openai-whisper's `AudioEncoder`, so a `whisper_tiny.pt`
state dict loads by stripping its `encoder.` prefix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class WhisperConfig:
    """The encoder's shape (openai-whisper's `n_audio_*` dims). EchoMimic's 30-second segments need n_ctx 1500 and
    the 80-mel front end; other values build a module the feature extractor refuses."""

    n_mels: int = 80
    n_ctx: int = 1500  # encoder positions per segment: 3000 mel frames after conv2's stride 2
    n_state: int = 384
    n_head: int = 6
    n_layer: int = 4

    @property
    def hidden_states(self) -> int:
        """Hidden states stacked per feature step: after the positional embedding and after each block."""
        return self.n_layer + 1

    @classmethod
    def from_dims(cls, dims: dict[str, Any]) -> "WhisperConfig":
        """From an openai-whisper checkpoint's `dims` (the text-decoder fields are not needed)."""
        return cls(n_mels=int(dims["n_mels"]), n_ctx=int(dims["n_audio_ctx"]), n_state=int(dims["n_audio_state"]),
                   n_head=int(dims["n_audio_head"]), n_layer=int(dims["n_audio_layer"]))


WHISPER_PRESETS = {
    "whisper-tiny": WhisperConfig(),
    "whisper-test": WhisperConfig(n_state=8, n_head=2, n_layer=2),  # fast tests of the segment logic
}


def whisper_preset(name: str) -> WhisperConfig:
    if name not in WHISPER_PRESETS:
        raise KeyError(f"unknown whisper preset {name!r} (known: {', '.join(WHISPER_PRESETS)})")
    return WHISPER_PRESETS[name]


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """(length, channels) positional table: sines in the first half of the channels, cosines in the second, with
    timescales geometric from 1 to max_timescale (the table whisper checkpoints store)."""
    half = channels // 2
    inv_timescales = torch.exp(-math.log(max_timescale) / (half - 1) * torch.arange(half))
    angles = torch.arange(length)[:, None] * inv_timescales[None, :]  # (length, half)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm in at least float32 (whisper keeps its norms in float32 when the rest runs in float16)."""
    wide = torch.promote_types(x.dtype, torch.float32)
    return F.layer_norm(x.to(wide), norm.normalized_shape, norm.weight.to(wide), norm.bias.to(wide),
                        norm.eps).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # b t (h d) -> b h t d

        o = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(o.transpose(1, 2).reshape(b, t, c))  # b h t d -> b t (h d)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = SelfAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(_layer_norm(self.attn_ln, x))
        return x + self.mlp(_layer_norm(self.mlp_ln, x))


class WhisperEncoder(nn.Module):
    """Log-mel segments (b, n_mels, 2·n_ctx) -> hidden states (b, n_layer + 1, n_ctx, n_state)."""

    def __init__(self, cfg: WhisperConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        # Loaded from the checkpoint (whisper stores the table with its weights), not recomputed.
        self.register_buffer("positional_embedding", sinusoids(cfg.n_ctx, cfg.n_state))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(cfg.n_state, cfg.n_head) for _ in range(cfg.n_layer))
        # Part of every whisper checkpoint's encoder and loaded with it; EchoMimic's features are taken before it.
        self.ln_post = nn.LayerNorm(cfg.n_state)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # b c t -> b t c
        if x.shape[1:] != self.positional_embedding.shape:
            raise ValueError(f"whisper encoder takes {2 * self.cfg.n_ctx} mel frames, got {mel.shape[-1]}")
        x = (x + self.positional_embedding).to(x.dtype)  # added in float32 when x is float16, as whisper does
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=1)  # (n_layer + 1) × (b, t, c) -> b states t c
