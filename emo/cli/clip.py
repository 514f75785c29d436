"""emo-clip: render one clip with the eager reference pipeline.

`--demo` uses the seeded `tiny` preset with random weights and synthetic conditioning, so the model path can be
run anywhere without weights. The frames are saved as a float32 (frames, H, W, 3) array in [0, 1].
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.model_dir import random_models
from ..config import PRESETS, TINY, RunConfig
from ..geometry import Geometry
from ..sampling.eager_clip import run_clip


def demo_inputs(size: int, frames: int, motion_frames: int, cfg, seed: int) -> dict[str, torch.Tensor]:
    """Synthetic conditioning: a smooth reference image, an oval face region and matching masks."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ref = torch.stack([xx, yy, 0.5 * torch.sin(3 * xx * yy)])  # (3, H, W) in [-1, 1]
    face = ((xx / 0.6) ** 2 + (yy / 0.75) ** 2 <= 1).float()
    lip = ((xx / 0.25) ** 2 + ((yy - 0.45) / 0.1) ** 2 <= 1).float()

    def pool(m: torch.Tensor, side: int) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(m[None, None], side).flatten()

    masks = []
    geo = Geometry.of(cfg, size)
    for level in range(geo.levels):
        r = geo.side(level)
        masks.append(torch.stack([1 - pool(face, r), pool(face, r) - pool(lip, r), pool(lip, r)]))
    feats = torch.randn(frames, cfg.audioproj.seq_len, cfg.audioproj.blocks, cfg.audioproj.channels, generator=g)
    return dict(ref_image=ref, motion_pixels=ref.expand(motion_frames, -1, -1, -1),
                face_emb=torch.randn(512, generator=g), face_region=face.expand(3, -1, -1), masks=masks,
                audio_feats=feats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emo-clip", description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="store_true", help="tiny random model and synthetic inputs")
    p.add_argument("-o", "--output", required=True, help="output .npy file of frames (f, H, W, 3)")
    p.add_argument("--seed", type=int, default=0)
    demo = PRESETS["tiny"].run
    p.add_argument("--steps", type=int, default=demo.steps)
    p.add_argument("--size", type=int, default=demo.size)
    p.add_argument("--frames-per-clip", type=int, default=demo.frames)
    p.add_argument("--motion-frames", type=int, default=demo.motion_frames)
    args = p.parse_args(argv)
    if not args.demo:
        p.error("only --demo is available in emo-clip; use emo-run for real models")
    run = RunConfig(frames=args.frames_per_clip, motion_frames=args.motion_frames, steps=args.steps, size=args.size)
    try:
        run.validate(TINY)
    except ValueError as e:
        print(f"emo-clip: error: {e}", file=sys.stderr)
        return 2
    models = random_models(args.seed)
    net, vae = models.net, models.vae
    x = demo_inputs(run.size, run.frames, run.motion_frames, TINY, args.seed)
    start = time.perf_counter()
    with torch.no_grad():
        tokens = net.audioproj(x.pop("audio_feats")[None])[0]
        _, frames = run_clip(net, vae, TINY, run, audio_tokens=tokens,
                             generator=torch.Generator().manual_seed(args.seed), **x)
    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npy")
    np.save(tmp, frames.permute(0, 2, 3, 1).numpy().astype(np.float32))  # f c h w -> f h w c
    os.replace(tmp, out)
    print(f"emo-clip: {run.frames} frames {run.size}x{run.size}, {run.steps} steps in "
          f"{time.perf_counter() - start:.1f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
