"""Every real-size TensorRT-for-RTX plan built on this machine: the fp16 graphs converted from the fp32 export, all
nine components built in fp16, and the INT8 and FP8 denoiser plans from the Q/DQ exports; per plan its size, build
time and peak RSS, per step its wall time and peak RSS, into one JSON.

Inputs: an fp32 export of hallo-sd15 (`emo-export --random hallo-sd15 --precision fp32 --out FP32_DIR`, one
component per process keeps each under 14 GB) and, for the INT8/FP8 plans, the output directory of
bench/calibrate_real_size.py (its `export-int8` and `export-fp8`). No GPU and no torch needed; builds run one at
a time (each is one process: emo-build-engine builds every plan in a child of its own).

    python bench/real_size_engines.py FP32_DIR WORK_DIR [--qdq CALIBRATION_OUT] [--opt-level 3] [--target SM,...]
                                      [--full-range-check] [--json RESULT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

FP8_TARGETS = "sm_89,sm_120,sm_121"  # FP8 tensor cores: Ada and Blackwell among TensorRT for RTX's targets


def _timed(cmd: list[str], log: Path) -> dict:
    """Run cmd (output to log) -> wall seconds, peak RSS of the process (GiB), exit code, last output line."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in log.read_text().splitlines() if line.strip() and "IShuffleLayer" not in line]
    return {"command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
            "wall_s": round(time.perf_counter() - start, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "exit_code": proc.returncode, "last_line": lines[-1] if lines else ""}


def _plans(plan_dir: Path) -> dict:
    m = json.loads((plan_dir / "manifest.json").read_text())
    return {name: {"plan_mib": round(e["bytes"] / 2**20, 1), "build_s": e["build"]["seconds"],
                   "peak_rss_gib": round(e["build"]["peak_rss_mib"] / 1024, 2),
                   "estimated_gib": e["build"]["memory"]["need_gib"], "precision": e["precision"],
                   "profile_max": {k: v[2] for k, v in e["profiles"][0]["shapes"].items()
                                   if k in ("sample", "latents", "pixels", "ref_latent", "waveform")}}
            for name, e in m["components"].items()} | {"_engine": m["engine"], "_ranges": m["ranges"]}


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32_dir", type=Path)
    p.add_argument("work_dir", type=Path)
    p.add_argument("--qdq", type=Path, help="bench/calibrate_real_size.py's output directory")
    p.add_argument("--opt-level", default="3")
    p.add_argument("--target", help="default: emo-build-engine's (sm_80,sm_86,sm_89,sm_120,sm_121)")
    p.add_argument("--full-range-check", action="store_true",
                   help="also build the denoiser with profiles over the export's whole range, with TensorRT's default "
                        "workspace pool and with an 8 GiB one, and with the preset's shapes and an 8 GiB pool")
    p.add_argument("--json", type=Path)
    p.add_argument("--resume", action="store_true",
                   help="keep the steps of an existing --json that succeeded (their outputs still in WORK_DIR)")
    args = p.parse_args()
    done = json.loads(args.json.read_text())["steps"] if args.resume and args.json and args.json.is_file() else {}
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    build_opts = ["--opt-level", args.opt_level] + (["--target", args.target] if args.target else [])
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    result: dict = {"date": datetime.now(timezone.utc).date().isoformat(),
                    "device": f"CPU, {os.cpu_count()} cores, {memory:.0f} GiB of memory",
                    "python": platform.python_version(), "command": " ".join(sys.argv), "steps": {}, "plans": {}}
    steps, plans = result["steps"], result["plans"]

    def step(name: str, cmd: list[str]) -> dict:
        if done.get(name, {}).get("exit_code") == 0:
            steps[name] = done[name] | {"resumed": True}
            return steps[name]
        print(f"{name}: {' '.join(cmd)}", flush=True)
        steps[name] = _timed(cmd, work / f"{name}.log")
        print(f"  {steps[name]['wall_s']} s, peak {steps[name]['peak_rss_gib']} GiB: {steps[name]['last_line']}",
              flush=True)
        return steps[name]

    step("convert-fp16", [_tool("emo-export"), "--from-export", str(args.fp32_dir), "--precision", "fp16",
                          "--out", str(work / "fp16")])
    if step("build-fp16", [_tool("emo-build-engine"), str(work / "fp16"), "--out", str(work / "plans-fp16"),
                           *build_opts])["exit_code"] == 0:
        plans["fp16"] = _plans(work / "plans-fp16")
    for fmt in ("int8", "fp8"):
        src = args.qdq / f"export-{fmt}" if args.qdq else None
        if src is None or not src.is_dir():
            continue
        step(f"convert-{fmt}", [_tool("emo-export"), "--from-export", str(src), "--precision", "fp16",
                                "--out", str(work / f"{fmt}-fp16")])
        opts = build_opts if fmt == "int8" or args.target else ["--opt-level", args.opt_level, "--target", FP8_TARGETS]
        if step(f"build-{fmt}", [_tool("emo-build-engine"), str(work / f"{fmt}-fp16"), "--out",
                                 str(work / f"plans-{fmt}"), "--precision", fmt, "--components", "denoiser",
                                 *opts])["exit_code"] == 0:
            plans[fmt] = _plans(work / f"plans-{fmt}")
    if args.full_range_check:  # the denoiser's device-memory bound: preset shapes vs the export's whole range
        fast = ["--components", "denoiser", "--opt-level", "0", "--target", "sm_89"]
        for name, extra in (("denoiser-full-range", ["--full-range"]),
                            ("denoiser-full-range-workspace-8", ["--full-range", "--workspace", "8"]),
                            ("denoiser-workspace-8", ["--workspace", "8"])):
            step(f"build-fp16-{name}", [_tool("emo-build-engine"), str(work / "fp16"), "--out",
                                        str(work / f"plans-{name}"), *fast, *extra])
    versions = {}
    for name in ("emo-runtime", "tensorrt_rtx_cu13_bindings", "onnx", "numpy"):
        try:
            from importlib import metadata

            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001 - a missing package is recorded as missing
            versions[name] = None
    result["versions"] = versions | {"tensorrt-rtx (plans)": next(
        (kind["_engine"]["version"] for kind in plans.values()), None)}
    peaks = [v["peak_rss_gib"] for kind in plans.values() for k, v in kind.items() if not k.startswith("_")]
    result["largest_plan_peak_rss_gib"] = max(peaks, default=None)
    result["all_within_20_gib"] = bool(peaks) and max(peaks) <= 20.0
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
