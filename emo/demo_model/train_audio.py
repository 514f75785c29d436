"""Stage 2: the tiny wav2vec2 audio encoder, taught what the mouth follows.

Real Hallo uses wav2vec2-base, pretrained on speech; the demo's encoder has the same structure at tiny width and
learns here, from synthetic voices, to predict the generator's mouth openness (the loudness envelope) from its
per-frame hidden states through a temporary linear head, which is dropped afterwards. The features are computed
exactly as inference computes them (normalised waveform, CNN features resampled to frames, every layer kept).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import Wav2VecConfig
from ..preprocess.audio_features import AudioEncoder, frame_count, normalize_waveform
from ..quality.loudness import loudness_envelope
from .clips import TRAIN_VOICES, openness_from_loudness
from .state import LossLog, TrainState
from .voices import SAMPLE_RATE, synth_voice

FPS = 25


class OpennessHead(nn.Module):
    """Per-frame features of every layer (T, layers, hidden) -> openness (T,)."""

    def __init__(self, cfg: Wav2VecConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.num_hidden_layers * cfg.hidden_size, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.proj(feats.flatten(1)).squeeze(1)  # t l c -> t (l c) -> t


def voice_pool(count: int, seconds: float, first_seed: int = TRAIN_VOICES.start) -> list[np.ndarray]:
    return [synth_voice(first_seed + i, seconds) for i in range(count)]


def encoder_batch(pool: list[np.ndarray], rng: np.random.Generator, batch: int, seconds: float
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(waveform, openness per frame) pairs: random windows of pool voices at random gains."""
    n = int(seconds * SAMPLE_RATE)
    out = []
    for _ in range(batch):
        voice = pool[rng.integers(len(pool))]
        start = int(rng.integers(0, voice.size - n + 1))
        wav = voice[start:start + n] * rng.uniform(0.1, 1.0)
        frames = frame_count(wav.size, SAMPLE_RATE, FPS)
        out.append((wav, openness_from_loudness(loudness_envelope(wav, SAMPLE_RATE, FPS, frames))))
    return out


def audio_loss(encoder: AudioEncoder, head: OpennessHead, items: list[tuple[np.ndarray, np.ndarray]]
               ) -> torch.Tensor:
    losses = []
    for wav, target in items:
        feats = encoder.features_with_grad(normalize_waveform(wav), target.size)
        losses.append((head(feats) - torch.from_numpy(target).float()).square().mean())
    return torch.stack(losses).mean()


@torch.no_grad()
def openness_r(encoder: AudioEncoder, head: OpennessHead, items: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean Pearson r of predicted and true openness over held-out items."""
    from ..quality.metrics import pearson

    return float(np.mean([pearson(head(encoder.features(normalize_waveform(w), t.size, lean=False)).numpy(), t)
                          for w, t in items]))


def train_audio(cfg: Wav2VecConfig, work: Path, steps: int, batch: int = 8, seconds: float = 4.0, lr: float = 1e-3,
                seed: int = 2, pool_size: int = 240, progress=None) -> tuple[AudioEncoder, float]:
    """-> (trained encoder, held-out r of its openness prediction)."""
    torch.manual_seed(seed)
    encoder, head = AudioEncoder(cfg), OpennessHead(cfg)
    params = [*encoder.model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    state = TrainState(work / "audio.state.pt", {"encoder": encoder.model, "head": head}, {"opt": opt},
                       {"gen": gen})
    resumed = state.load()
    log = LossLog(work / "audio.loss.jsonl", offset=state.elapsed)
    if not resumed and log.path.exists():
        log.path.unlink()
    pool = voice_pool(pool_size, seconds * 1.5)
    encoder.train()
    while state.step < steps:
        step = state.step
        items = encoder_batch(pool, np.random.default_rng([seed, step]), batch, seconds)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        loss = audio_loss(encoder, head, items)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state.step += 1
        if state.step % 10 == 0:
            log.write(state.step, loss=loss.item())
        if progress is not None:
            progress(state.step, steps, loss.item())
        if state.step % 200 == 0 or state.step == steps:
            state.save(log.elapsed())
    encoder.eval()
    held_out = encoder_batch(voice_pool(16, seconds * 1.5, first_seed=900_000), np.random.default_rng(seed + 1),
                             16, seconds)
    return encoder, openness_r(encoder, head, held_out)
