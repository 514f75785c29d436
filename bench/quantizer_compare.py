"""Which quantizer: NVIDIA Model Optimizer (PyTorch, fake-quant modules) vs ONNX Runtime's static QDQ quantizer vs
emo-calibrate's graph-level max recipe, measured on the tiny denoiser's guided prediction for held-out feeds.

Every variant quantizes the same layers (emo.calibration.policy: default) from the same calibration feeds,
recorded while the fp32 export rendered the calibration inputs; errors are against fp32 on held-out feeds.
ONNX variants run through ONNX Runtime's CPU provider; ModelOpt variants run as torch fake quantization (its FP8
export uses TensorRT-only ops that ONNX Runtime cannot load). Needs `pip install nvidia-modelopt` for the ModelOpt
rows.

    python bench/quantizer_compare.py [--seconds 0.5] [--json bench/results/quantizer_compare.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emo.calibration.amax import activation_amax
from emo.calibration.media_set import CALIBRATION_VARIATIONS, HELD_OUT_VARIATIONS, generated_pairs
from emo.calibration.policy import POLICIES, WEIGHT_OPS
from emo.calibration.qdq import quant_targets, quantize_graph
from emo.calibration.record import RecordingBackend, render_pairs
from emo.checkpoints.model_dir import random_models
from emo.config import PRESETS
from emo.export.exporter import export_models
from emo.export.graphs import component_module
from emo.io_spec import component_specs

POLICY = POLICIES["default"]


def _errors(ref: list[np.ndarray], got: list[np.ndarray]) -> dict:
    r, g = np.concatenate([x.ravel() for x in ref]).astype(np.float64), \
        np.concatenate([x.ravel() for x in got]).astype(np.float64)
    return {"max_abs": float(np.abs(g - r).max()), "mean_abs": float(np.abs(g - r).mean()),
            "max_ref": float(np.abs(r).max()), "cosine": float(r @ g / (np.linalg.norm(r) * np.linalg.norm(g)))}


def _ort_outputs(path: Path, feeds) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0] for f in feeds]


def graph_max(src: Path, tmp: Path, calib, held, fmt: str) -> list[np.ndarray]:
    import onnx

    targets = quant_targets(onnx.load(str(src), load_external_data=False), POLICY)
    acts = sorted({t.activation for t in targets})
    dst = tmp / f"graph-max-{fmt}.onnx"
    quantize_graph(src, dst, activation_amax(src, acts, calib), POLICY, fmt)
    return _ort_outputs(dst, held)


def ort_static(src: Path, tmp: Path, calib, held, fmt: str) -> list[np.ndarray]:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    nodes = [t.node for t in quant_targets(onnx.load(str(src), load_external_data=False), POLICY)]
    qtype = QuantType.QInt8 if fmt == "int8" else QuantType.QFLOAT8E4M3FN
    dst = tmp / f"ort-static-{fmt}.onnx"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(WEIGHT_OPS),
                    nodes_to_quantize=nodes, per_channel=True, activation_type=qtype, weight_type=qtype,
                    calibrate_method=CalibrationMethod.MinMax if fmt == "int8" else CalibrationMethod.Distribution,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "OpTypesToExcludeOutputQuantization": list(WEIGHT_OPS), "MatMulConstBOnly": True})
    return _ort_outputs(dst, held)


def modelopt_torch(models, calib, held, config: str) -> list[np.ndarray]:
    import copy

    import modelopt.torch.quantization as mtq

    spec = component_specs(models.cfg, RUN_RANGES)["denoiser"]
    module = copy.deepcopy(component_module("denoiser", models.cfg, models.net, models.vae, models.audio_encoder))
    cfg = copy.deepcopy(getattr(mtq, config))
    cfg["quant_cfg"] += [{"quantizer_name": p.replace("/", "."), "enable": False} for p in POLICY.keep]

    def args(feed):
        return [torch.from_numpy(feed[t.name]) for t in spec.inputs]

    def loop(m):
        for feed in calib:
            m(*args(feed))

    with torch.no_grad():
        mtq.quantize(module, cfg, forward_loop=loop)
        return [module(*args(f)).numpy() for f in held]


RUN_RANGES = None


def main() -> int:
    global RUN_RANGES
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    models = random_models()
    run = PRESETS["tiny"].run
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = export_models(models, tmp / "fp32", "fp32")
        RUN_RANGES = manifest.shape_ranges()
        feeds = {}
        for name, variations in (("calib", CALIBRATION_VARIATIONS), ("held", HELD_OUT_VARIATIONS)):
            rec = RecordingBackend(tmp / "fp32", ["denoiser"])
            render_pairs(rec, generated_pairs(variations, tmp / name, args.seconds), run, seed=0)
            feeds[name] = rec.feeds["denoiser"]
        src = tmp / "fp32" / "denoiser.onnx"
        ref = _ort_outputs(src, feeds["held"])
        variants = {f"graph-max {f}": (lambda f=f: graph_max(src, tmp, feeds["calib"], feeds["held"], f))
                    for f in ("int8", "fp8")}
        variants |= {f"ort-static {f}": (lambda f=f: ort_static(src, tmp, feeds["calib"], feeds["held"], f))
                     for f in ("int8", "fp8")}
        variants |= {f"modelopt {c}": (lambda c=c: modelopt_torch(models, feeds["calib"], feeds["held"], c))
                     for c in ("INT8_DEFAULT_CFG", "INT8_SMOOTHQUANT_CFG", "FP8_DEFAULT_CFG")}
        for name, fn in variants.items():
            start = time.perf_counter()
            try:
                rows[name] = _errors(ref, fn()) | {"seconds": round(time.perf_counter() - start, 1)}
            except Exception as e:  # a variant that cannot run here is reported, not fatal
                rows[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            print(f"{name:32s} {json.dumps(rows[name])}", flush=True)
        rows["feeds"] = {"calibration": len(feeds["calib"]), "held_out": len(feeds["held"])}
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
