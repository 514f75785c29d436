#!/usr/bin/env bash
# Everything the fast path needs a GPU to show, in one command: the kernel and torch-fast tests on CUDA, then
# emo-bench at real size (hallo-sd15, random weights, 512², 16 frames, 2 motion frames, 40 steps, CFG 3.5, fp16)
# with a torch.profiler table. Results land in bench/results/ (and in $OUT when set).
# Needs: torch with CUDA, triton, PyAV (pip wheels in .wheels/ are installed first when present).
set -uo pipefail
cd "$(dirname "$0")/.."
results=${OUT:-bench/results}
mkdir -p "$results"
if compgen -G ".wheels/*.whl" > /dev/null; then pip install -q --no-deps .wheels/*.whl; fi
pip install -q --no-deps -e . || exit 1
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
stamp=$(date +%Y-%m-%d)
nvidia-smi > "$results/$stamp-$name-nvidia-smi.txt" 2>&1
python -m pytest tests/test_kernels.py tests/test_torch_fast.py -q -rs 2>&1 | tail -30 \
    | tee "$results/$stamp-$name-pytest-cuda.txt"
emo-bench --profile 3 --out "$results/$stamp-$name-bench.json" "$@" 2>&1 | tail -20
