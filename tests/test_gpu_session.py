"""bench/gpu_session.sh, dry run on the CPU: the same stages as on a GPU (environment, CUDA tests, kernel tests,
emo-bench, golden errors and the demo model by precision, attention back ends, memory estimate), each under its
time limit, each leaving its log and JSON, and the wheels it is given unpacked and importable without pip or a
network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ["env", "bench", "fast-step", "golden", "demo", "fast-psnr", "fast-warmup", "tests-cuda",
          "tests-kernels", "attention", "memory"]
SKIPPED = ("fast-step", "fast-warmup")  # they trace the whole UNet (minutes here); test_fast_step covers the code


def test_gpu_session_dry_run(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "emo_wheel_probe-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("emo_wheel_probe/__init__.py", "__version__ = '1.0'\n")
    results = tmp_path / "results"
    env = os.environ | {"EMO_GPU_DRY_RUN": "1", "EMO_WHEELS": str(wheels), "EMO_GPU_SKIP": " ".join(SKIPPED),
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # python3: ours
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_session.sh"), str(results)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    stages = [line.split("\t") for line in (results / "stages.tsv").read_text().splitlines()[1:]]
    assert [s[0] for s in stages] == STAGES, out.stdout + out.stderr
    assert all(s[1] == ("skipped" if s[0] in SKIPPED else "ok") for s in stages), stages
    assert out.returncode == 0, out.stdout + out.stderr
    assert all((results / f"{s}.log").stat().st_size > 0 for s in STAGES)
    psnr = json.loads((results / "fast-psnr.json").read_text())["results"]
    assert "torch fp32" in psnr and all(v["psnr_db"] > 0 for k, v in psnr.items() if k != "torch fp32")
    env_log = (results / "env.log").read_text()
    assert '"emo_wheel_probe": "1.0"' in env_log and "MISSING" not in env_log
    bench = json.loads((results / "bench.json").read_text())
    assert bench["complete"] and set(bench["results"]) == {"torch", "torch-fast"}
    assert all(r["frames"] == 4 and r["fps"] > 0 for r in bench["results"].values())
    attention = json.loads((results / "attention.json").read_text())["results"]
    assert any("ms_p50" in r and r["max_abs_err"] < 1e-4 for r in attention)
    golden = json.loads((results / "golden.json").read_text())["variants"]
    assert golden["fp32"]["errors"]["video"]["max_abs"] < 2e-4  # the golden tests' own tolerance
    assert golden["bf16"]["errors"]["video"]["max_abs"] > golden["fp32"]["errors"]["video"]["max_abs"]
    memory = json.loads((results / "memory.json").read_text())
    assert memory["estimated_peak_torch_bytes"] > memory["weights_bytes"] > 0
