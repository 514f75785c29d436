"""Audio features stay memory-lean over long audio and equal the whole-sequence computation.

The real-size measurement (wav2vec2-base at 60 / 300 / 600 s) is bench/audio_memory.py; here a model with
wav2vec2-base's CNN (512 channels, where the memory went) and a tiny transformer keeps the test quick.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from emo.config import TINY, Wav2VecConfig
from emo.models.init import randomize_
from emo.preprocess.audio_features import AudioEncoder, normalize_waveform, window_features

SMALL_TRANSFORMER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_chunked_features_equal_the_whole_sequence(norm):
    """Chunk sizes that split the CNN and the feed-forward blocks at odd places, against one whole-sequence pass."""
    enc = AudioEncoder(replace(TINY.wav2vec, feat_extract_norm=norm))
    randomize_(enc.model, 4)
    wav = normalize_waveform(torch.randn(16000 * 3 + 517))
    whole = enc.features(wav, 76, lean=False)
    enc.cnn_chunk, enc.ffn_chunk = 7, 10
    chunked = enc(wav, 76)
    assert chunked.shape == whole.shape == (76, 3, 32)
    assert (chunked - whole).abs().max().item() <= 1e-5 * whole.abs().max().item()


def test_frame_windows_equal_window_features():
    from emo.preprocess.audio_features import FrameWindows

    feats = torch.randn(11, 3, 4)
    windows = FrameWindows(feats)
    full = window_features(feats)
    assert windows.shape == full.shape and len(windows) == 11
    for a, b in ((0, 4), (4, 8), (8, 12), (3, 3), (0, 11)):
        assert torch.equal(windows[a:b], full[a:b])
    assert torch.equal(windows[8:][:2], full[8:10])


PEAK = """
import json, sys, torch
from emo.config import Wav2VecConfig
from emo.models.init import randomize_
from emo.preprocess.audio_features import AudioEncoder, compute_audio_features

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

enc = AudioEncoder(Wav2VecConfig(**json.loads(sys.argv[1])))
randomize_(enc.model, 0)
wav = torch.randn(int(float(sys.argv[2]) * 16000)).numpy() * 0.1
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # peak := current
feats, frames = compute_audio_features(enc, wav, 25, 16)
print(json.dumps({"growth_mib": (status("VmHWM") - base) / 2**20, "frames": frames}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_feature_memory_does_not_grow_with_the_waveform():
    """30 s through wav2vec2-base's CNN: the whole-signal first layer alone held 3 x 196 MiB; chunked, the peak
    grows by well under 100 MiB."""
    out = subprocess.run([sys.executable, "-c", PEAK, json.dumps(SMALL_TRANSFORMER), "30"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["frames"] == 750
    assert result["growth_mib"] < 100, result
    assert Wav2VecConfig().conv_dim[0] == 512  # the CNN measured is wav2vec2-base's
