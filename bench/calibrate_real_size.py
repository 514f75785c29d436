"""INT8 and FP8 on the real-size denoiser (random hallo-sd15 weights) on the CPU: one guided step's error vs fp32
through ONNX Runtime, and the graph sizes.

Starts from an fp32 export of every component (`emo-export --random hallo-sd15 --out FP32_DIR`). The denoiser
feeds are recorded while that export renders one calibration input and one held-out input (the same recorder
emo-calibrate uses); activation ranges come from the calibration feeds only, once, and serve both formats;
errors are measured on the held-out feeds. Heavy (about 15 GB of memory).

Besides the graphs, OUT_DIR gets one export directory per format (`export-int8`, `export-fp8`: the Q/DQ denoiser
and its manifest, as emo-calibrate writes them), which `emo-export --from-export` converts to fp16 and
`emo-build-engine --precision int8|fp8` builds (bench/real_size_engines.py).

    python bench/calibrate_real_size.py FP32_DIR OUT_DIR [--size 256 --frames 4 --steps 2] [--json RESULT]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from emo.calibration.amax import activation_amax
from emo.calibration.gate import component_error
from emo.calibration.media_set import CALIBRATION_VARIATIONS, HELD_OUT_VARIATIONS, generated_pairs
from emo.calibration.policy import POLICIES
from emo.calibration.qdq import onnx_module, quant_targets, quantize_graph
from emo.calibration.record import RecordingBackend, render_pairs
from emo.config import RunConfig
from emo.manifest import GraphEntry, Manifest, read_manifest, tool_versions

POLICY = POLICIES["default"].with_components(("denoiser",))


def _mib(*paths: Path) -> float:
    return round(sum(p.stat().st_size for p in paths if p.is_file()) / 2**20, 1)


def _export_dir(fp32_dir: Path, graph: Path, out: Path, fmt: str, error: dict, layers: int, args) -> None:
    """An export directory holding the Q/DQ denoiser `graph` (moved there, its side file keeping the name the
    graph refers to) and its manifest."""
    fp32 = read_manifest(fp32_dir, "onnx", ("denoiser",))
    out.mkdir(exist_ok=True)
    data = graph.with_name(graph.name + ".data")
    graph.replace(out / graph.name)
    if data.is_file():
        data.replace(out / data.name)
    has_data = (out / data.name).is_file()
    size = sum(f.stat().st_size for f in (out / graph.name, out / data.name) if f.is_file())
    Manifest(format="onnx", precision=fmt, opset=fp32.opset, model_config=fp32.model_config,
             config_hash=fp32.config_hash, weights_hash=fp32.weights_hash, ranges=fp32.ranges,
             components={"denoiser": GraphEntry(graph.name, data.name if has_data else None, size, fmt,
                                                fp32.components["denoiser"].spec, 0.0)},
             tools=fp32.tools | tool_versions("onnx", "onnxruntime"), family=fp32.family,
             quantization={"format": fmt, "policy": POLICY.to_dict(), "layers": layers,
                           "calibration": f"bench/calibrate_real_size.py --size {args.size} --frames {args.frames} "
                                          f"--steps {args.steps}", "held_out_error": error}).write(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    run = RunConfig(frames=args.frames, motion_frames=2, steps=args.steps, size=args.size)
    seconds = args.frames / run.fps
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    result = {"run": asdict(run), "timings_s": {}}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        result["timings_s"][name] = round(time.perf_counter() - clock, 1)
        print(f"{name}: {result['timings_s'][name]} s", flush=True)
        clock = time.perf_counter()

    feeds = {}
    for name, variations in (("calibration", CALIBRATION_VARIATIONS[:1]), ("held_out", HELD_OUT_VARIATIONS[:1])):
        rec = RecordingBackend(args.fp32_dir, ["denoiser"])
        render_pairs(rec, generated_pairs(variations, out / "media" / name, seconds), run, seed=0)
        feeds[name] = rec.feeds["denoiser"]
        del rec
        lap(f"record {name}")
    src = args.fp32_dir / "denoiser.onnx"
    targets = quant_targets(onnx_module().load(str(src), load_external_data=False), POLICY)
    amax = activation_amax(src, sorted({t.activation for t in targets}), feeds["calibration"])
    lap("amax")
    result["layers_quantized"] = len(targets)
    result["sizes_mib"] = {"fp32": _mib(src, src.with_name(src.name + ".data"))}
    for fmt in ("int8", "fp8"):
        dst = out / f"denoiser-{fmt}.onnx"
        quantize_graph(src, dst, amax, POLICY, fmt)
        result["sizes_mib"][fmt] = _mib(dst, dst.with_name(dst.name + ".data"))
        lap(f"quantize {fmt}")
        result[fmt] = asdict(component_error(src, dst, feeds["held_out"]))
        lap(f"error {fmt}")
        _export_dir(args.fp32_dir, dst, out / f"export-{fmt}", fmt, result[fmt], len(targets), args)
        print(fmt, json.dumps(result[fmt]), flush=True)
    shutil.rmtree(out / "media", ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
