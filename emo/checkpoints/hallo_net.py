"""Hallo `net.pth` (or the same tensors as safetensors) -> HalloNet."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..models.hallo import HalloNet
from .names import hallo_to_emo
from .state_dict import load_into, read_weights


def load_hallo_net(source: str | Path | dict[str, torch.Tensor], cfg: ModelConfig,
                   dtype: torch.dtype | None = None) -> HalloNet:
    """Build the model on the meta device and assign the checkpoint's tensors (names mapped by the one table)."""
    sd = read_weights(source) if not isinstance(source, dict) else source
    with torch.device("meta"):
        net = HalloNet(cfg)
    what = f"Hallo checkpoint {source}" if not isinstance(source, dict) else "Hallo state dict"
    return load_into(net, sd, hallo_to_emo, what, dtype).eval()
