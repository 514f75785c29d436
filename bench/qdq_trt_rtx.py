"""Do TensorRT for RTX's ONNX parser and ahead-of-time builder accept emo-calibrate's Q/DQ graphs, and what do
they make of them? Builds each requested graph of an export for one compute capability (no GPU needed) and
counts, over the engine's convolution and GEMM layers, the data type of their activation input (Int8 / FP8 /
Float), read from the builder's detailed layer report.

    pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings
    python bench/qdq_trt_rtx.py ENGINE_DIR [--components motion,denoiser] [--sm SM89] [--json RESULT]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from emo.io_spec import component_specs
from emo.manifest import read_manifest

_LAYER = re.compile(r"LayerType: (correlation|gemm), Inputs: \[ \{ [^}]*Datatype: (\w+)")


def build(trt, path: Path, spec, sm: str) -> dict:
    messages: list[str] = []

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            messages.append(msg)

    logger = Logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        return {"parsed": False, "errors": [str(parser.get_error(i)) for i in range(parser.num_errors)][:5]}
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, sm), 0)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in spec.profile().items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    layers = Counter(f"{kind}:{dtype}" for m in messages for kind, dtype in _LAYER.findall(m))
    errors = [m for m in messages if "error" in m.lower()][:5]
    return {"parsed": True, "built": plan is not None, "seconds": round(time.perf_counter() - start, 1),
            "plan_bytes": plan.nbytes if plan is not None else None, "layer_inputs": dict(sorted(layers.items())),
            **({"errors": errors} if plan is None else {})}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("engine_dir", type=Path)
    p.add_argument("--components", default="motion")
    p.add_argument("--sm", default="SM89", help="ComputeCapability name: SM75, SM80, SM86, SM89, SM120")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import tensorrt_rtx_bindings as trt

    manifest = read_manifest(args.engine_dir, "onnx")
    specs = component_specs(manifest.model(), manifest.shape_ranges())
    result = {"tensorrt_rtx": trt.__version__, "precision": manifest.precision, "sm": args.sm, "graphs": {}}
    for name in args.components.split(","):
        result["graphs"][name] = build(trt, args.engine_dir / manifest.components[name].file, specs[name], args.sm)
        print(name, json.dumps(result["graphs"][name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
