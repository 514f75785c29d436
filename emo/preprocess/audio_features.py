"""wav2vec2 audio features with Hallo's semantics.

Hallo normalises the 16 kHz waveform, pads it to a whole number of clips, resamples the CNN features to exactly
one vector per video frame (linear, align_corners) *before* the transformer encoder, and keeps the outputs of all
encoder layers. Each frame then sees a ±2-frame window of those features.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints.state_dict import CheckpointError, match_state_dict, read_weights
from ..config import Wav2VecConfig

# Older checkpoints (wav2vec2-base-960h among them) store the positional conv's weight norm as weight_g/weight_v.
LEGACY_WAV2VEC_NAMES = {
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}


def normalize_waveform(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance (Wav2Vec2FeatureExtractor's do_normalize), computed in float64 like numpy does."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    x64 = x.double()
    return ((x64 - x64.mean()) / torch.sqrt(x64.var(unbiased=False) + 1e-7)).float()


def frame_count(num_samples: int, sample_rate: int, fps: int) -> int:
    """Video frames covering the audio: ceil(seconds · fps)."""
    return math.ceil(num_samples / sample_rate * fps)


def window_features(emb: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(T, ...) -> (T, 2r+1, ...): frame i stacks frames i-r..i+r, clamped at the ends."""
    t = emb.shape[0]
    idx = (torch.arange(t, device=emb.device)[:, None] + torch.arange(-radius, radius + 1, device=emb.device)).clamp(0, t - 1)
    return emb[idx]


def resample_frames(feats: torch.Tensor, num_frames: int | torch.Tensor) -> torch.Tensor:
    """Linear resampling along time with align_corners=True (F.interpolate's formula): (1, C, T) -> (1, C, frames).

    Written with gathers so that `num_frames` may be a tensor: the exported audio encoder takes it as an input.
    """
    t_in = feats.shape[-1]
    n = torch.as_tensor(num_frames, device=feats.device).reshape(())
    scale = (t_in - 1) / (n - 1).clamp(min=1).to(torch.float32)
    src = torch.arange(n, device=feats.device).to(torch.float32) * scale  # (frames,) source positions
    lo = src.floor().clamp(max=t_in - 1)
    w = (src - lo).to(feats.dtype)
    lo = lo.long()
    hi = (lo + 1).clamp(max=t_in - 1)
    return feats.index_select(-1, lo) * (1 - w) + feats.index_select(-1, hi) * w


def _map_wav2vec_name(name: str) -> str:
    name = name.removeprefix("wav2vec2.")
    return LEGACY_WAV2VEC_NAMES.get(name, name)


class AudioEncoder(nn.Module):
    """A transformers Wav2Vec2Model run stage by stage: CNN -> resample to frames -> projection -> encoder layers."""

    def __init__(self, cfg: Wav2VecConfig):
        super().__init__()
        if cfg.do_stable_layer_norm:
            raise ValueError("wav2vec2 models with stable layer norm are not supported (Hallo uses wav2vec2-base)")
        from transformers import Wav2Vec2Model

        tcfg = cfg.to_transformers()
        tcfg._attn_implementation = "sdpa"  # no (T, T) attention matrix: long audio stays cheap
        self.cfg = cfg
        self.model = Wav2Vec2Model(tcfg).eval()

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, num_frames: int | torch.Tensor) -> torch.Tensor:
        """Normalised waveform (S,) or (1, S) -> per-frame features of every encoder layer (num_frames, layers, hidden)."""
        m = self.model
        param = m.feature_projection.projection.weight
        feats = m.feature_extractor(waveform.reshape(1, -1).to(param.device, param.dtype))  # (1, C, T_cnn)
        feats = resample_frames(feats, num_frames).transpose(1, 2)  # 1 c f -> 1 f c
        h, _ = m.feature_projection(feats)
        enc = m.encoder
        h = enc.layer_norm(h + enc.pos_conv_embed(h))
        outputs = []
        for layer in enc.layers:
            out = layer(h)
            h = out[0] if isinstance(out, tuple) else out
            outputs.append(h)
        return torch.stack(outputs, dim=2)[0]  # 1 f layers c -> f layers c

    @classmethod
    def from_state_dict(cls, cfg: Wav2VecConfig, sd: dict[str, torch.Tensor], what: str = "wav2vec2 weights"
                        ) -> "AudioEncoder":
        """Transformers Wav2Vec2Model (or Wav2Vec2ForCTC) weights; legacy weight-norm names accepted."""
        enc = cls(cfg)
        sd = {k: v for k, v in sd.items() if not k.startswith(("lm_head.", "quantizer.", "project_"))}
        sd = match_state_dict(enc.model, sd, _map_wav2vec_name, what)
        enc.model.load_state_dict(sd, strict=True)
        return enc

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> "AudioEncoder":
        """A local Hugging Face model dir (config.json + model.safetensors or pytorch_model.bin); never downloads."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"wav2vec2 model dir {path} has no config.json")
        weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"wav2vec2 model dir {path} has neither model.safetensors nor pytorch_model.bin")
        cfg = Wav2VecConfig.from_transformers(json.loads(cfg_file.read_text()))
        return cls.from_state_dict(cfg, read_weights(weights), f"wav2vec2 weights {weights}")


def compute_audio_features(encoder: Callable[[torch.Tensor, int], torch.Tensor], waveform_16k: np.ndarray | torch.Tensor, fps: int,
                           clip_length: int, sample_rate: int = 16000) -> tuple[torch.Tensor, int]:
    """Mono waveform -> (features (padded_frames, layers, hidden), frames covering the audio).

    padded_frames rounds the frame count up to a multiple of clip_length (when > 0); the waveform is padded with
    zeros after normalisation by the matching number of samples, as the reference does.
    """
    x = normalize_waveform(waveform_16k)
    frames = frame_count(x.shape[0], sample_rate, fps)
    padded = frames
    if clip_length > 0 and frames % clip_length:
        extra = clip_length - frames % clip_length
        x = F.pad(x, (0, extra * (sample_rate // fps)))
        padded += extra
    return encoder(x, padded), frames
