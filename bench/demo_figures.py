"""The demo model's pictures for the docs: a strip of rendered frames (silent vs speaking) and a plot of the
mouth's openness against the voice's loudness over time, from one `emo-run --demo`-equivalent render.

    python bench/demo_figures.py [--steps N] [--out docs/images]
"""
from __future__ import annotations

import argparse
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


def plot(openness: np.ndarray, envelope: np.ndarray, fps: float, width: int = 900, height: int = 260) -> Image.Image:
    """Both curves scaled to [0, 1] against time: loudness in grey, mouth openness in red."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    margin = 30
    n = len(openness)

    def points(values: np.ndarray) -> list[tuple[float, float]]:
        v = values / (values.max() or 1)
        return [(margin + i * (width - 2 * margin) / max(n - 1, 1), height - margin - x * (height - 2 * margin))
                for i, x in enumerate(v)]

    d.line([(margin, height - margin), (width - margin, height - margin)], fill="black")
    for s in range(int(n / fps) + 1):
        x = margin + s * fps * (width - 2 * margin) / max(n - 1, 1)
        d.line([(x, height - margin), (x, height - margin + 5)], fill="black")
        d.text((x - 3, height - margin + 8), f"{s}s", fill="black")
    d.line(points(envelope), fill=(150, 150, 150), width=2)
    d.line(points(openness), fill=(200, 30, 30), width=2)
    d.text((margin, 8), "loudness (grey) and mouth openness (red), each scaled to its maximum", fill="black")
    return img


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int)
    p.add_argument("--out", type=Path, default=Path("docs/images"))
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
    print(f"wrote {args.out / 'demo_strip.png'} and {args.out / 'demo_lipsync.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
