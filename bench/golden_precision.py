"""The real-size golden case at reduced precision on a GPU: how far fp16 / bf16 (and the fused kernels) move our
outputs from the public Hallo code's float32 outputs.

The golden tests check float32 on the CPU against fixed tolerances; this measures what a GPU render in half
precision costs, with no pass/fail: max and mean absolute error of each compared output (audio tokens, step 0's
prediction, final latents, decoded video) per variant, and whether any value is not finite. Weights are rebuilt
from the case's recipe once (float32, CPU) and copied to the device for each variant.

    python3 bench/golden_precision.py [--device cuda] [--kind real_size|model] [--variants fp16,...] [--out F.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from emo.config import ModelConfig, RunConfig, preset
from emo.golden.cases import REAL_SIZE_TOLERANCES, cases, load_case
from emo.golden.run import golden_net, golden_vae, run_case
from emo.kernels import registry

# (name, dtype, TF32 on, kernels on)
VARIANTS = (("fp32", torch.float32, False, False), ("fp32-tf32", torch.float32, True, False),
            ("fp16", torch.float16, False, False), ("bf16", torch.bfloat16, False, False),
            ("fp16-kernels", torch.float16, False, True))


def _errors(got: torch.Tensor, want: torch.Tensor) -> dict:
    diff = (got.detach().double().cpu() - want.double()).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(), "finite": bool(torch.isfinite(got).all())}


def measure(device: str, variants=VARIANTS, kind: str = "real_size") -> dict:
    case = cases(kind)[0]
    meta, t = load_case(case)
    cfg = preset("hallo-sd15").model if kind == "real_size" else ModelConfig.from_hallo(meta)
    run = RunConfig.from_hallo(meta)
    start = time.perf_counter()
    net, vae = golden_net(meta, t, cfg), golden_vae(meta, t, cfg.vae)
    rows, build = {}, time.perf_counter() - start
    for name, dtype, tf32, kernels in variants:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        on = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in t.items()}
        dnet, dvae = copy.deepcopy(net).to(device, dtype), copy.deepcopy(vae).to(device, dtype)  # masters stay fp32
        start = time.perf_counter()
        with registry.using(registry.KERNELS if kernels else ()):
            out = run_case(dnet, dvae, cfg, run, on)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows[name] = {"dtype": str(dtype), "tf32": tf32, "kernels": kernels, "seconds": time.perf_counter() - start,
                      "errors": {k: _errors(out[k], t[f"out.{k}"]) for k in REAL_SIZE_TOLERANCES},
                      "kernel_failures": dict(registry.failures())}
        del dnet, dvae, on
        print(name, json.dumps(rows[name]["errors"]), flush=True)
    return {"case": case.id, "run": {"steps": run.steps, "frames": run.frames, "size": run.size,
                                     "motion_frames": run.motion_frames, "guidance_scale": run.guidance_scale},
            "tolerances_fp32_cpu": REAL_SIZE_TOLERANCES, "weights_build_seconds": build, "variants": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--kind", default="real_size", choices=["real_size", "model"],
                   help="real_size: the SD1.5-sized case; model: a tiny case (a quick check of this script)")
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS), help="comma-separated names")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    names = args.variants.split(",")
    report = measure(args.device, [v for v in VARIANTS if v[0] in names], args.kind)
    report.update(command="python3 bench/golden_precision.py " + " ".join(sys.argv[1:]),
                  device=torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                  torch=torch.__version__)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
