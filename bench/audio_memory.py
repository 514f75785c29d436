"""Peak memory of the audio features at real size: wav2vec2-base (12 layers x 768, 94M parameters, seeded random
weights) on synthetic speech-like audio of several lengths, through the renderer's own feature path.

    python bench/audio_memory.py                      # 60 s, 300 s, 600 s; exact features
    python bench/audio_memory.py --seconds 60 --json out.json
    python bench/audio_memory.py --seconds 60 --compare-whole   # also: max |lean - whole-sequence| features

Each length runs in a fresh process. The figure is the growth of the peak resident set while the features (and
their per-frame windows) are computed, over the process after the model is built: the peak is reset just before
(Linux /proc/self/clear_refs) and read from VmHWM afterwards.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

FPS, CLIP, RATE = 25, 16, 16000


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set


def speech_like(seconds: float, seed: int = 0):
    """A voiced signal (five harmonics, wandering pitch, syllable-rate envelope) plus a little noise: float32."""
    import numpy as np

    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * 0.2
    x += 0.01 * np.random.default_rng(seed).standard_normal(t.shape)
    return x.astype(np.float32)


def _encoder():
    """wav2vec2-base shaped, built on the meta device and materialised with seeded random weights."""
    import torch

    from emo.config import Wav2VecConfig
    from emo.models.init import randomize_
    from emo.preprocess.audio_features import AudioEncoder

    with torch.device("meta"):
        enc = AudioEncoder(Wav2VecConfig())
    enc.to_empty(device="cpu")
    randomize_(enc.model, 2)
    return enc.eval()


def child(seconds: float, compare_whole: bool) -> dict:
    import torch

    from emo.preprocess.audio_features import FrameWindows, compute_audio_features

    torch.set_num_threads(max(1, torch.get_num_threads()))
    enc = _encoder()
    wav = speech_like(seconds)
    base = _status("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    feats, frames = compute_audio_features(enc, wav, FPS, CLIP, RATE)
    FrameWindows(feats)[:CLIP]  # the first clip's windows, as the renderer reads them
    elapsed = time.perf_counter() - start
    peak = _status("VmHWM")
    row = {"seconds": seconds, "frames": frames, "peak_growth_mib": (peak - base) / 2**20,
           "features_mib": feats.numel() * feats.element_size() / 2**20, "wall_s": elapsed,
           "threads": torch.get_num_threads()}
    if compare_whole:  # after the measurement: the whole-sequence pass is the memory-hungry one
        whole, _ = compute_audio_features(lambda w, n: enc.features(w, n, lean=False), wav, FPS, CLIP, RATE)
        row["max_abs_diff_vs_whole"] = (feats - whole).abs().max().item()
        row["max_abs_feature"] = whole.abs().max().item()
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[60, 300, 600])
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--compare-whole", action="store_true",
                   help="also run each stage on the whole sequence at once and report the largest difference")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child, args.compare_whole)))
        return 0
    rows = []
    print(f"{'audio s':>8} {'frames':>7} {'peak growth MiB':>16} {'features MiB':>13} {'wall s':>7}")
    for s in args.seconds:
        out = subprocess.run([sys.executable, __file__, "--child", str(s)] + ["--compare-whole"] * args.compare_whole,
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['seconds']:8.0f} {row['frames']:7d} {row['peak_growth_mib']:16.0f} {row['features_mib']:13.0f} "
              f"{row['wall_s']:7.1f}" + (f"  max |lean - whole| {row['max_abs_diff_vs_whole']:.2e} (features up to "
                                         f"{row['max_abs_feature']:.1f})" if args.compare_whole else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
