"""The demo model's pictures for the docs: a strip of rendered frames (silent vs speaking) and a plot of the
mouth's openness against the voice's loudness over time, from one `emo-run --demo`-equivalent render.

    python bench/demo_figures.py [--steps N] [--out docs/images]
"""
from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from emo.config import RunOptions
from emo.media.audio import load_audio
from emo.quality.loudness import loudness_envelope, silent_frames, speaking_frames
from emo.quality.mouth import mouth_openness, skin_luma
from emo.quality.render import reference_pixels
from emo.runtime.factory import RendererSpec, build_renderer


def strip(frames: np.ndarray, silent: np.ndarray, speaking: np.ndarray, count: int = 4) -> Image.Image:
    """Top row: `count` silent frames; bottom row: the `count` loudest speaking frames, evenly spread."""
    def pick(mask: np.ndarray) -> list[int]:
        idx = np.flatnonzero(mask)
        return [int(idx[i]) for i in np.linspace(0, len(idx) - 1, count).round().astype(int)] if len(idx) else []

    rows = [np.concatenate([frames[i] for i in pick(m)], axis=1) for m in (silent, speaking)]
    return Image.fromarray((np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)).resize(
        (rows[0].shape[1] * 2, rows[0].shape[0] * 4), Image.NEAREST)


def curves(series: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int]]], title: str, ticks: list[float],
           tick_label, width: int = 900, height: int = 260) -> Image.Image:
    """Line plots of (x, y, colour) series, each y scaled to its own maximum, sharing the x axis."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    margin = 36
    x_max = max(float(x.max()) for x, _, _ in series) or 1.0

    def px(x: float) -> float:
        return margin + x / x_max * (width - 2 * margin)

    d.line([(margin, height - margin), (width - margin, height - margin)], fill="black")
    for t in ticks:
        d.line([(px(t), height - margin), (px(t), height - margin + 5)], fill="black")
        d.text((px(t) - 6, height - margin + 8), tick_label(t), fill="black")
    for x, y, colour in series:
        y = y / (y.max() or 1)
        d.line([(px(a), height - margin - b * (height - 2 * margin)) for a, b in zip(x, y, strict=True)],
               fill=colour, width=2)
    d.text((margin, 8), title, fill="black")
    return img


def plot(openness: np.ndarray, envelope: np.ndarray, fps: float) -> Image.Image:
    """Both curves scaled to [0, 1] against time: loudness in grey, mouth openness in red."""
    t = np.arange(len(openness)) / fps
    return curves([(t, envelope, (150, 150, 150)), (t, openness, (200, 30, 30))],
                  "loudness (grey) and mouth openness (red), each scaled to its maximum",
                  list(range(int(t[-1]) + 1)), lambda s: f"{s:g}s")


def training_plot(log: Path) -> Image.Image:
    """The denoiser's training loss (mean per 100 steps, grey) and its validation loss (red) against time."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "validation" in r]
    hours = np.array([r["seconds"] for r in train]) / 3600
    loss = np.array([r["loss"] for r in train])
    k = 10  # rows per 100 steps
    smooth_h = hours[: len(hours) // k * k].reshape(-1, k).mean(1)
    smooth = loss[: len(loss) // k * k].reshape(-1, k).mean(1)
    return curves([(smooth_h, smooth, (150, 150, 150)),
                   (np.array([r["seconds"] for r in val]) / 3600, np.array([r["validation"] for r in val]),
                    (200, 30, 30))],
                  "denoiser training loss (grey, per 100 steps) and validation loss (red), each scaled to its maximum",
                  [0.5 * i for i in range(int(hours[-1] * 2) + 1)], lambda h: f"{h:g}h")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int)
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    p.add_argument("--training-log", type=Path, help="a denoiser.loss.jsonl to plot as well")
    args = p.parse_args()
    spec = RendererSpec(demo=True, backend="torch", device="cpu", dtype="fp32")
    renderer = build_renderer(spec)
    run = RunOptions(steps=args.steps).apply(spec.preset_run(), renderer.cfg)
    assets = resources.files("emo") / "assets"
    image, audio = Path(str(assets / "portrait.jpg")), Path(str(assets / "speech.wav"))
    prepared = renderer.prepare(image, audio, run)
    frames = np.concatenate(list(renderer.stream(prepared, run, seed=42)))
    envelope = loudness_envelope(load_audio(audio, run.sample_rate), run.sample_rate, run.fps, len(frames))
    face = prepared.portrait.face
    openness = mouth_openness(frames, face, skin_luma(reference_pixels(prepared), face))
    args.out.mkdir(parents=True, exist_ok=True)
    strip(frames, silent_frames(envelope), speaking_frames(envelope, threshold=0.6)).save(args.out / "demo_strip.png")
    plot(openness, envelope, run.fps).save(args.out / "demo_lipsync.png")
    if args.training_log:
        training_plot(args.training_log).save(args.out / "demo_training.png")
    print(f"wrote the figures into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
