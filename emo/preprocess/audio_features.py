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


def _window_index(start: int, stop: int, total: int, radius: int, device: torch.device) -> torch.Tensor:
    """(stop - start, 2r+1) frame indices: row i holds frames start+i-r .. start+i+r, clamped to [0, total)."""
    return (torch.arange(start, stop, device=device)[:, None]
            + torch.arange(-radius, radius + 1, device=device)).clamp(0, total - 1)


def window_features(emb: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(T, ...) -> (T, 2r+1, ...): frame i stacks frames i-r..i+r, clamped at the ends."""
    return emb[_window_index(0, emb.shape[0], emb.shape[0], radius, emb.device)]


class FrameWindows:
    """window_features made on demand: `windows[a:b]` is `window_features(feats)[a:b]`, computed for those frames
    only, so a long video's windows (2r+1 times its features) are never in memory at once."""

    def __init__(self, feats: torch.Tensor, radius: int = 2):
        self.feats, self.radius = feats, radius

    @property
    def shape(self) -> torch.Size:
        t, *rest = self.feats.shape
        return torch.Size((t, 2 * self.radius + 1, *rest))

    def __len__(self) -> int:
        return self.feats.shape[0]

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice):
            raise TypeError("FrameWindows takes a slice of frames")
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("FrameWindows takes a contiguous slice of frames")
        return self.feats[_window_index(start, max(start, stop), len(self), self.radius, self.feats.device)]


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
    """A transformers Wav2Vec2Model run stage by stage: CNN -> resample to frames -> projection -> encoder layers.

    Hallo encodes the whole audio at once (every frame attends to every other), so exact features need the whole
    sequence; what grows with its length is kept lean instead. The CNN runs over chunks of the waveform (its first
    GroupNorm normalises each channel over the whole signal: those statistics are gathered in a first pass), the
    feed-forward blocks over chunks of frames, attention through SDPA (no (T, T) weights), and each layer's
    output goes straight into one preallocated (frames, layers, hidden) tensor. A traced forward (ONNX export)
    runs the same ops on the whole sequence, so that no chunk count is baked into the graph.
    """

    cnn_chunk = 128  # CNN output frames (20 ms each) per chunk: ~17 MiB of first-layer activations at 512 channels
    ffn_chunk = 1024  # frames per feed-forward chunk: a (1024, 3072) intermediate at wav2vec2-base size

    def __init__(self, cfg: Wav2VecConfig):
        super().__init__()
        if cfg.do_stable_layer_norm:
            raise ValueError("wav2vec2 models with stable layer norm are not supported (Hallo uses wav2vec2-base)")
        from transformers import Wav2Vec2Model

        tcfg = cfg.to_transformers()
        tcfg._attn_implementation = "sdpa"  # no (T, T) attention matrix: long audio stays cheap
        self.cfg = cfg
        self.model = Wav2Vec2Model(tcfg).eval()

    def forward(self, waveform: torch.Tensor, num_frames: int | torch.Tensor) -> torch.Tensor:
        """Normalised waveform (S,) or (1, S) -> per-frame features of every encoder layer
        (num_frames, layers, hidden)."""
        return self.features(waveform, num_frames, lean=not torch.jit.is_tracing())

    @torch.no_grad()
    def features(self, waveform: torch.Tensor, num_frames: int | torch.Tensor, lean: bool = True) -> torch.Tensor:
        """forward(); lean=False runs each stage on the whole sequence at once (what a traced graph holds)."""
        return self.features_with_grad(waveform, num_frames, lean)

    def features_with_grad(self, waveform: torch.Tensor, num_frames: int | torch.Tensor, lean: bool = False
                           ) -> torch.Tensor:
        """features() recording autograd (training the encoder)."""
        m = self.model
        param = m.feature_projection.projection.weight
        wav = waveform.reshape(1, -1).to(param.device, param.dtype)
        feats = self._cnn(wav) if lean else m.feature_extractor(wav)  # (1, C, T_cnn)
        feats = resample_frames(feats, num_frames).transpose(1, 2)  # 1 c f -> 1 f c
        h, _ = m.feature_projection(feats)
        enc = m.encoder
        h = enc.layer_norm(h + enc.pos_conv_embed(h))
        out = h.new_empty(h.shape[1], len(enc.layers), h.shape[2])  # f layers c
        for i, layer in enumerate(enc.layers):
            h = self._layer(layer, h) if lean else layer(h)
            h = h[0] if isinstance(h, tuple) else h
            out[:, i] = h[0]
        return out

    def _cnn(self, wav: torch.Tensor) -> torch.Tensor:
        """The feature extractor over chunks of the waveform (1, S) -> (1, C, T_cnn), equal to the whole-signal run.

        The convolutions have no padding, so output frames [a, b) read exactly samples [a·R, (b-1)·R + F) (R: the
        total stride, F: the receptive field), and every layer's frames line up with the whole run's. Only the
        first layer's GroupNorm (one group per channel, over all of time) needs global statistics."""
        layers = self.model.feature_extractor.conv_layers
        strides = [layer.conv.stride[0] for layer in layers]
        kernels = [layer.conv.kernel_size[0] for layer in layers]
        field = 1
        for k, s in zip(reversed(kernels), reversed(strides), strict=True):
            field = (field - 1) * s + k
        total_stride = math.prod(strides)
        frames = wav.shape[1]
        for k, s in zip(kernels, strides, strict=True):
            frames = (frames - k) // s + 1
        if frames <= 0:
            raise ValueError(f"audio of {wav.shape[1]} samples is shorter than wav2vec2's {field}-sample window")
        first = layers[0]
        norm = first.layer_norm if isinstance(getattr(first, "layer_norm", None), nn.GroupNorm) else None
        if norm is not None:
            mean, scale, shift = self._first_layer_norm(wav, first.conv, norm)
        out = wav.new_empty(1, layers[-1].conv.out_channels, frames)
        for a in range(0, frames, self.cnn_chunk):
            b = min(a + self.cnn_chunk, frames)
            x = wav[:, a * total_stride:(b - 1) * total_stride + field][:, None]  # 1 s -> 1 1 s
            if norm is None:
                x = first(x)
            else:  # GroupNorm with the whole signal's statistics, in place
                x = first.activation(first.conv(x).sub_(mean).mul_(scale).add_(shift))
            for layer in layers[1:]:
                x = layer(x)
            out[:, :, a:b] = x
        return out

    def _first_layer_norm(self, wav: torch.Tensor, conv: nn.Conv1d, norm: nn.GroupNorm
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first layer's GroupNorm as (x - mean) * scale + shift, (C, 1) each, with the mean and variance of
        the first convolution's output over the whole signal: each chunk's, combined in float64 (Chan et al.)."""
        if norm.num_groups != norm.num_channels:
            raise ValueError("the chunked wav2vec2 CNN expects one GroupNorm group per channel (wav2vec2-base)")
        k, s = conv.kernel_size[0], conv.stride[0]
        frames = (wav.shape[1] - k) // s + 1
        chunk = self.cnn_chunk * math.prod(layer.conv.stride[0] for layer in
                                           self.model.feature_extractor.conv_layers[1:])
        parts = []  # (frames, mean, variance) per chunk
        for a in range(0, frames, chunk):
            b = min(a + chunk, frames)
            var, mean = torch.var_mean(conv(wav[:, a * s:(b - 1) * s + k][:, None])[0], dim=1, correction=0)
            parts.append((b - a, mean.double(), var.double()))
        mean = sum(n * m for n, m, _ in parts) / frames
        var = sum(n * (v + (m - mean) ** 2) for n, m, v in parts) / frames
        scale = (var + norm.eps).rsqrt().to(wav.dtype) * norm.weight
        return mean.to(wav.dtype)[:, None], scale[:, None], norm.bias[:, None]

    def _layer(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """One post-norm encoder layer (wav2vec2-base): attention over the whole sequence, then the feed-forward
        block and final norm chunk by chunk (they act on each frame alone)."""
        attn, _ = layer.attention(h)
        h = layer.layer_norm(h + attn)
        out = torch.empty_like(h)
        for a in range(0, h.shape[1], self.ffn_chunk):
            x = h[:, a:a + self.ffn_chunk]
            out[:, a:a + self.ffn_chunk] = layer.final_layer_norm(x + layer.feed_forward(x))
        return out

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


def padded_frame_count(frames: int, clip_length: int, first_clip: int = 0) -> int:
    """Frames the audio features cover: `frames` rounded up to whole clips of clip_length (when > 0), after a
    first clip of `first_clip` frames when that is given (a shorter first clip)."""
    if clip_length <= 0:
        return frames
    if first_clip:
        return first_clip + -(-max(frames - first_clip, 0) // clip_length) * clip_length
    return -(-frames // clip_length) * clip_length


def compute_audio_features(encoder: Callable[[torch.Tensor, int], torch.Tensor],
                           waveform_16k: np.ndarray | torch.Tensor, fps: int, clip_length: int,
                           sample_rate: int = 16000, first_clip: int = 0) -> tuple[torch.Tensor, int]:
    """Mono waveform -> (features (padded_frames, layers, hidden), frames covering the audio).

    padded_frames rounds the frame count up to whole clips (`padded_frame_count`); the waveform is padded with
    zeros after normalisation by the matching number of samples, as the reference does.
    """
    x = normalize_waveform(waveform_16k)
    frames = frame_count(x.shape[0], sample_rate, fps)
    padded = padded_frame_count(frames, clip_length, first_clip)
    if padded > frames:
        x = F.pad(x, (0, (padded - frames) * (sample_rate // fps)))
    return encoder(x, padded), frames
