"""How well the demo model talks: held-out portraits and voices rendered through the product (image file + audio
file -> Renderer -> frames), scored by emo.quality (lip-sync r, mouth at rest in silence, identity SSIM,
stability), beside the same numbers for the generator's own truth clips.

Cases: held-out identities (seeds the training never saw) speaking held-out synthetic voices; the built-in demo
portrait with its espeak-ng voice; where espeak-ng is installed, an espeak-ng sentence with pauses on the demo
portrait and on a held-out identity.

    python bench/demo_quality.py [--steps 40] [--guidance-scale 3.5] [--identities 4] [--seconds 6] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from emo.config import RunOptions
from emo.demo_model.clips import (
    HELD_OUT_IDENTITIES,
    HELD_OUT_VOICES,
    framed_face,
    identities,
    make_clip,
    reference_crop,
    write_inputs,
)
from emo.demo_model.voices import espeak_available, espeak_sentence, synth_voice
from emo.quality.metrics import measure
from emo.quality.render import render_and_measure
from emo.runtime.factory import RendererSpec, build_renderer

SENTENCE = ("Hello there, I am a portrait that talks.|Listen: the mouth opens with my voice,|and it rests when I am "
            "quiet.")
PAUSES = (0.8, 1.4)


def render_case(renderer, run, image: Path, audio: Path, seed: int) -> tuple[dict, np.ndarray]:
    start = time.perf_counter()
    report, frames = render_and_measure(renderer, run, image, audio, seed)
    return report.to_dict() | {"render_seconds": round(time.perf_counter() - start, 1)}, frames


def truth_report(identity: int, audio: np.ndarray, run) -> dict:
    clip = make_clip(identity, 0, len(audio) / 16000, run.size, run.fps, audio=audio)
    return measure(clip.frames, clip.audio, 16000, run.fps, reference_crop(clip), framed_face(clip)).to_dict()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="a model directory (default: the shipped demo model)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--guidance-scale", type=float, default=3.5)
    p.add_argument("--identities", type=int, default=4)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = RendererSpec(models=args.models, demo=args.models is None, backend="torch", device="cpu", dtype="fp32")
    renderer = build_renderer(spec)
    run = RunOptions(steps=args.steps, guidance_scale=args.guidance_scale).apply(spec.preset_run(), renderer.cfg)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = []
        for k, identity in enumerate(identities(HELD_OUT_IDENTITIES, args.identities)):
            voice = synth_voice(HELD_OUT_VOICES.start + k, args.seconds)
            inputs.append((f"held-out identity {identity}, voice {HELD_OUT_VOICES.start + k}", identity, voice))
        if espeak_available():
            sentence = espeak_sentence(SENTENCE, PAUSES)
            inputs.append(("demo portrait, espeak-ng sentence with pauses", 0, sentence))
            inputs.append((f"held-out identity {inputs[0][1]}, espeak-ng sentence with pauses", inputs[0][1],
                           sentence))
        for name, identity, voice in inputs:
            image, audio = write_inputs(tmp, identity, voice, name=f"case{len(cases)}")
            report, _ = render_case(renderer, run, image, audio, args.seed)
            cases.append({"case": name, "rendered": report, "truth": truth_report(identity, voice, run)})
            print(f"{name}: r {report['lip_sync_r']:.3f}  rest {report['rest_ratio']:.3f}  "
                  f"ssim {report['identity_ssim']:.3f}  ({report['render_seconds']} s)", flush=True)
        assets = resources.files("emo") / "assets"
        report, _ = render_case(renderer, run, Path(str(assets / "portrait.jpg")), Path(str(assets / "speech.wav")),
                                args.seed)
        cases.append({"case": "demo portrait (the photo itself), built-in espeak-ng voice", "rendered": report})
        print(f"built-in demo: r {report['lip_sync_r']:.3f}  rest {report['rest_ratio']:.3f}  "
              f"ssim {report['identity_ssim']:.3f}", flush=True)
    keys = ("lip_sync_r", "rest_ratio", "identity_ssim", "stability")
    summary = {k: float(np.nanmean([c["rendered"][k] for c in cases])) for k in keys}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/demo_quality.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in
                                                                   vars(args).items() if v is not None),
              "machine": {"processor": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__, "python": platform.python_version()},
              "run": {"steps": run.steps, "guidance_scale": run.guidance_scale, "size": run.size,
                      "frames": run.frames, "motion_frames": run.motion_frames, "fps": run.fps, "dtype": "fp32"},
              "model": renderer.cfg.name, "summary": summary, "cases": cases}
    out = args.out or Path("bench/results") / f"{datetime.now():%Y-%m-%d}-cpu-demo-quality.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"summary: {summary}\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
