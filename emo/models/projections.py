"""Small conditioning networks: audio tokens, image (face-embedding) tokens, face-region feature."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AudioProjConfig, FaceLocatorConfig, ImageProjConfig


class AudioProj(nn.Module):
    """Windowed wav2vec2 features of one frame (window, layers, hidden) -> context tokens (tokens, dim)."""

    def __init__(self, cfg: AudioProjConfig):
        super().__init__()
        self.cfg = cfg
        self.proj1 = nn.Linear(cfg.seq_len * cfg.blocks * cfg.channels, cfg.intermediate_dim)
        self.proj2 = nn.Linear(cfg.intermediate_dim, cfg.intermediate_dim)
        self.proj3 = nn.Linear(cfg.intermediate_dim, cfg.context_tokens * cfg.output_dim)
        self.norm = nn.LayerNorm(cfg.output_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats (b, f, window, layers, hidden) -> (b, f, tokens, dim)."""
        b, f = feats.shape[:2]
        x = feats.reshape(b * f, -1)  # b f w l c -> (b f) (w l c)
        x = self.proj3(F.relu(self.proj2(F.relu(self.proj1(x)))))
        x = self.norm(x.view(b * f, self.cfg.context_tokens, self.cfg.output_dim))  # (b f) (t c) -> (b f) t c
        return x.view(b, f, self.cfg.context_tokens, self.cfg.output_dim)


class ImageProj(nn.Module):
    """Face embedding (b, 512) -> (b, tokens, cross_attention_dim) cross-attention context."""

    def __init__(self, cfg: ImageProjConfig):
        super().__init__()
        self.cfg = cfg
        self.proj = nn.Linear(cfg.embedding_dim, cfg.tokens * cfg.cross_attention_dim)
        self.norm = nn.LayerNorm(cfg.cross_attention_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(emb).view(-1, self.cfg.tokens, self.cfg.cross_attention_dim))  # b (t c) -> b t c


class FaceLocator(nn.Module):
    """Face-region image (b, 3, H, W) -> feature (b, c0, H/8, W/8) added after the denoiser's first conv."""

    def __init__(self, cfg: FaceLocatorConfig):
        super().__init__()
        ch = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.conditioning_channels, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(ch[:-1], ch[1:], strict=True):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(ch[-1], cfg.embedding_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(x))
        for conv in self.blocks:
            x = F.silu(conv(x))
        return self.conv_out(x)
