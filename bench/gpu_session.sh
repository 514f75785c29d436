#!/usr/bin/env bash
# The GPU check in one command, installing nothing: it runs this tree through PYTHONPATH with the machine's
# python3 (and its torch, triton), unpacks the wheels found in .wheels/ (PyAV; see the README) into a temporary
# folder put on PYTHONPATH, and runs each stage under its own time limit, writing the stage's full log (and its
# JSON) into the results folder as the stage ends, so a stage cut short loses nothing that came before it.
#
#   env        nvidia-smi, python3 and package versions, which dependencies import
#   tests      every cuda-marked test (TF32 off), then the kernel tests on the GPU
#   bench      emo-bench at real size: hallo-sd15 random weights, 512², 16 frames, 2 motion frames, 10 steps
#              (per-step times scale to 40), CFG 3.5, fp16; torch vs torch-fast through the renderer's loop, with a
#              torch.profiler table
#   golden     the real-size golden case at fp32 / TF32 / fp16 / bf16 / fp16 with kernels: errors against Hallo
#   demo       the trained demo model at fp16 / bf16 (torch and torch-fast): PSNR vs fp32 and lip-sync r
#   attention  the two-source attention at real size under each SDPA back end and the Triton kernel
#   memory     the meta-device memory estimate of a render
#   fast-step  bench/fast_step.py: the real-size step eager / torch-fast / compiled / compiled + FP8, guided and
#              conditional-only (FP8 scales from one eager step)
#   fast-warmup  the first compiled step in a fresh process with a cold, then a warm inductor cache
#   fast-psnr  the trained demo model's frames in fp16 / bf16 / fp16 + FP8 against fp32 (PSNR, lip-sync r)
#
# Usage:  bench/gpu_session.sh [RESULTS_DIR]       (or EMO_RESULTS=DIR; default bench/results/<date>-gpu-session)
#         EMO_WHEELS=DIR: where the wheels are (default .wheels)
#         EMO_GPU_DRY_RUN=1 bench/gpu_session.sh DIR   the same stages on the CPU at the tiny preset, with
#         limits 4x as long (a shared CPU is slow); the tests run it so that this script cannot rot.
#         EMO_GPU_SKIP="fast-step fast-warmup": leave those stages out (the test suite does: they trace the whole
#         UNet, minutes on 2 cores; tests/test_fast_step.py checks the same code paths)
# The stage limits add up to 540 s (+5 s grace each): 9 minutes on one H100, whatever happens. The headline
# measurements come first, so a session cut short keeps them. In a dry run the fast-* stages trace the step
# without code generation (torch.compile's "eager" backend) and emulate FP8: they test the harness, not speed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
results=${1:-${EMO_RESULTS:-bench/results/$(date +%Y-%m-%d)-gpu-session}}
mkdir -p "$results"
results=$(cd "$results" && pwd)
dry=${EMO_GPU_DRY_RUN:-0}
scale=$([ "$dry" = 1 ] && echo 4 || echo 1)
wheels=${EMO_WHEELS:-.wheels}
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
summary="$results/stages.tsv"
printf 'stage\tstatus\tseconds\n' > "$summary"

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: run it, log everything to NAME.log, record how it ended
    local name=$1 limit=$(($2 * scale))
    shift 2
    local start=$SECONDS rc status
    if [[ " ${EMO_GPU_SKIP:-} " == *" $name "* ]]; then  # EMO_GPU_SKIP="a b": stages left out (tests' budget)
        printf '%s\t%s\t%s\n' "$name" skipped 0 >> "$summary"
        echo "== $name: skipped (EMO_GPU_SKIP)" | tee "$results/$name.log"
        return
    fi
    echo "== $name (limit ${limit}s): $*" | tee "$results/$name.log"
    timeout -k 5 "$limit" "$@" >> "$results/$name.log" 2>&1
    rc=$?
    case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status="failed($rc)" ;; esac
    printf '%s\t%s\t%s\n' "$name" "$status" $((SECONDS - start)) >> "$summary"
    echo "== $name: $status in $((SECONDS - start))s" | tee -a "$results/$name.log"
}

for wheel in "$wheels"/*.whl; do  # wheels are zip files: unpacked, they import like installed ones
    [ -e "$wheel" ] && python3 -m zipfile -e "$wheel" "$site"
done
export EMO_WHEEL_SITE=$site

env_check() {
    if [ "$dry" = 1 ]; then echo "dry run: no nvidia-smi"; else nvidia-smi; fi
    python3 - <<'EOF'
import importlib, json, os, platform, sys
from pathlib import Path
site = Path(os.environ["EMO_WHEEL_SITE"])  # what the wheels brought, by top-level module
brought = sorted({p.stem for p in site.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()})
mods = ["torch", "triton", "numpy", "av", "safetensors", "transformers", "PIL", "cv2", "onnxruntime", "emo"]
mods += [m for m in brought if m not in mods]
found = {}
for m in mods:
    try:
        found[m] = getattr(importlib.import_module(m), "__version__", "present")
    except Exception as e:  # report every missing dependency, not just the first
        found[m] = f"MISSING: {type(e).__name__}: {e}"
import torch
info = {"python": sys.version.split()[0], "platform": platform.platform(), "modules": found, "from_wheels": brought,
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
print(json.dumps(info, indent=2))
sys.exit(1 if any(str(v).startswith("MISSING") for v in found.values()) else 0)
EOF
}
export -f env_check
export dry

if [ "$dry" = 1 ]; then
    tests_cuda=(python3 -m pytest -q -rs -p no:cacheprovider -m cuda tests)
    tests_kernels=(python3 -m pytest -q -p no:cacheprovider --collect-only tests/test_kernels.py)
    bench=(python3 -m emo.cli.bench --device cpu --preset tiny --size 64 --frames 4 --steps 1 --clips 1
           --warmup 0 --out "$results/bench.json")
    attention=(python3 bench/attention_backends.py --device cpu --tiny --iters 1 --out "$results/attention.json")
    memory=(python3 bench/memory_estimate.py --preset tiny --dtype fp32 --out "$results/memory.json")
    golden=(python3 bench/golden_precision.py --device cpu --kind model --variants fp32,bf16
            --out "$results/golden.json")
    demo=(python3 bench/demo_precision.py --device cpu --dtypes fp32,bf16 --clips 1 --seconds 1 --steps 1
          --out "$results/demo.json")
    fast_step=(python3 bench/fast_step.py step --dry-run --steps 1 --out "$results/fast-step.json")
    fast_warmup=(python3 bench/fast_step.py warmup --dry-run --out "$results/fast-warmup.json")
    fast_psnr=(python3 bench/fast_step.py psnr --dry-run --seconds 1 --demo-steps 1 --out "$results/fast-psnr.json")
else
    tests_cuda=(python3 -m pytest -q -rs -p no:cacheprovider -m cuda tests)
    tests_kernels=(python3 -m pytest -q -rs -p no:cacheprovider tests/test_kernels.py)
    bench=(python3 -m emo.cli.bench --steps 10 --clips 1 --warmup 1 --profile 2 --out "$results/bench.json")
    attention=(python3 bench/attention_backends.py --out "$results/attention.json")
    memory=(python3 bench/memory_estimate.py --out "$results/memory.json")
    golden=(python3 bench/golden_precision.py --out "$results/golden.json")
    demo=(python3 bench/demo_precision.py --backends torch,torch-fast --out "$results/demo.json")
    fast_step=(python3 bench/fast_step.py step --steps 5 --out "$results/fast-step.json")
    fast_warmup=(python3 bench/fast_step.py warmup --out "$results/fast-warmup.json")
    fast_psnr=(python3 bench/fast_step.py psnr --out "$results/fast-psnr.json")
fi

stage env 20 bash -c env_check
stage bench 100 "${bench[@]}"
stage fast-step 110 "${fast_step[@]}"
stage golden 60 "${golden[@]}"
stage demo 25 "${demo[@]}"
stage fast-psnr 30 "${fast_psnr[@]}"
stage fast-warmup 60 "${fast_warmup[@]}"
stage tests-cuda 70 "${tests_cuda[@]}"
stage tests-kernels 40 "${tests_kernels[@]}"
stage attention 15 "${attention[@]}"
stage memory 10 "${memory[@]}"
cat "$summary"
! grep -qv -e '^stage' -e $'\tok\t' -e $'\tskipped\t' "$summary"
