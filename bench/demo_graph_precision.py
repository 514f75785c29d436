"""fp16 ONNX graphs converted from the fp32 export (emo-export --from-export) against the fp32 graphs, on the trained
demo model through the onnxruntime backend: PSNR of the fp16 frames against the fp32 render and the lip-sync score
of each, on held-out clips (identities and voices the training never saw), from the same noise.

The conversion keeps the norm statistics and softmax in float32; the number of such nodes and the graph sizes are
recorded per graph.

    python bench/demo_graph_precision.py [--device cpu] [--clips 2] [--seconds 3] [--steps N] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from emo.config import RunOptions
from emo.demo_model.clips import HELD_OUT_IDENTITIES, HELD_OUT_VOICES, identities, write_inputs
from emo.demo_model.voices import synth_voice
from emo.quality.render import psnr, render_and_measure
from emo.runtime.factory import RendererSpec, build_renderer

PRECISIONS = ("fp32", "fp16")
CPU_NOTE = ("onnxruntime's CPU provider has no float16 kernel for many ops and runs them in float32 between Casts it "
            "inserts: on the CPU this measures the fp16 weights and the rounding between ops, not float16 arithmetic "
            "throughout as on a GPU")


def export_both(root: Path) -> tuple[dict[str, Path], dict]:
    """The demo model exported in fp32, then converted to fp16 -> (directories, per-graph sizes and kept-float32
    nodes, with the seconds each step took)."""
    from emo.demo_model.weights import demo_models
    from emo.export.convert import convert_export
    from emo.export.exporter import export_models

    dirs = {p: root / p for p in PRECISIONS}
    start = time.perf_counter()
    fp32 = export_models(demo_models(), dirs["fp32"], "fp32")
    export_seconds = time.perf_counter() - start
    converted = {}
    start = time.perf_counter()
    fp16 = convert_export(dirs["fp32"], dirs["fp16"], "fp16", on_done=lambda g: converted.setdefault(g.name, g))
    convert_seconds = time.perf_counter() - start
    graphs = {name: {"converted_to": fp16.components[name].precision,  # fp32: float32-only, copied as it is
                     "fp32_bytes": entry.bytes, "fp16_bytes": fp16.components[name].bytes,
                     "kept_fp32_nodes": sum(converted[name].kept_fp32.values()),
                     "kept_fp32": dict(sorted(converted[name].kept_fp32.items()))}
              for name, entry in fp32.components.items()}
    return dirs, {"export_fp32_seconds": round(export_seconds, 2), "convert_fp16_seconds": round(convert_seconds, 2),
                  "graphs": graphs}


def held_out_inputs(root: Path, clips: int, seconds: float) -> list[tuple[Path, Path]]:
    """(image, audio) of `clips` held-out identities, each with a held-out voice."""
    return [write_inputs(root, ident, synth_voice(HELD_OUT_VOICES.start + 200 + k, seconds, lead_in=0.4),
                         name=f"c{k}")
            for k, ident in enumerate(identities(HELD_OUT_IDENTITIES, clips))]


def render_all(spec: RendererSpec, steps: int | None, inputs, reference=None) -> tuple[list[dict], list, dict]:
    """Render every clip with seed = its index -> (rows, frames, run settings). With `reference` (the fp32 frames),
    each row has the PSNR against it."""
    renderer = build_renderer(spec)
    run = RunOptions(steps=steps).apply(spec.preset_run(), renderer.cfg)
    rows, frames = [], []
    for k, (image, audio) in enumerate(inputs):
        start = time.perf_counter()
        report, out = render_and_measure(renderer, run, image, audio, seed=k)
        seconds = round(time.perf_counter() - start, 2)
        row = {"clip": k} if reference is None else {"clip": k, "psnr_db": psnr(out, reference[k])}
        rows.append({**row, "lip_sync_r": report.lip_sync_r, "seconds": seconds})
        frames.append(out)
    settings = {"steps": run.steps, "guidance_scale": run.guidance_scale, "size": run.size}
    return rows, frames, settings


def mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def summary(variants: dict) -> dict:
    ok = {p: rows for p, rows in variants.items() if isinstance(rows, list)}
    return {"mean_psnr_db": mean(r["psnr_db"] for r in ok.get("fp16", [])),
            "lip_sync_r": {p: mean(r["lip_sync_r"] for r in rows) for p, rows in ok.items()},
            "render_seconds": {p: round(sum(r["seconds"] for r in rows), 2) for p, rows in ok.items()}}


def versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, or cuda with onnxruntime-gpu")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--steps", type=int)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    start = time.perf_counter()
    variants: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs, export = export_both(Path(tmp))
        inputs = held_out_inputs(Path(tmp), args.clips, args.seconds)
        reference, run = None, None
        for precision in PRECISIONS:
            spec = RendererSpec(engine_dir=str(dirs[precision]), demo=True, backend="onnxruntime",
                                device=args.device, dtype=precision)
            try:
                rows, frames, run_settings = render_all(spec, args.steps, inputs, reference)
            except Exception as e:  # a graph onnxruntime cannot run is the result, not a crash
                variants[precision] = {"error": f"{type(e).__name__}: {e}"}
                print(f"onnxruntime {precision}: {variants[precision]['error']}", flush=True)
                if reference is None:
                    break
                continue
            variants[precision] = rows
            reference, run = reference or frames, run or run_settings
            print(f"onnxruntime {precision}: " + ", ".join(
                (f"{r['psnr_db']:.1f} dB " if "psnr_db" in r else "") + f"r {r['lip_sync_r']:.3f}" for r in rows),
                flush=True)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "device": f"CPU, {os.cpu_count()} cores" if args.device == "cpu" else args.device, **versions(),
           "run": {**(run or {}), "seconds": args.seconds},
           "command": "python bench/demo_graph_precision.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
           "reference": "onnxruntime, fp32 export", "compared": "onnxruntime, fp16 graphs converted from it",
           **({"note": CPU_NOTE} if args.device == "cpu" else {}),
           **export, "variants": variants, "summary": summary(variants),
           "wall_seconds": round(time.perf_counter() - start, 1)}
    name = f"{datetime.now():%Y-%m-%d}-{args.device.split(':')[0]}-demo-fp16-graphs.json"
    path = args.out or Path("bench/results") / name
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
