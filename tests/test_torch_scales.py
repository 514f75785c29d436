"""torch-fast's FP8 scales from the ranges emo-calibrate records on the exported graph: every quantized graph layer
finds its module by its weight, and the module gets that layer's recorded input range."""
from __future__ import annotations

import json
import os

import pytest

from emo.calibration.policy import POLICIES
from emo.checkpoints.model_dir import random_models
from emo.cli.calibrate import main as calibrate_main

from .cli_helpers import one_error_line, quiet

onnx = pytest.importorskip("onnx")


def test_graph_layers_find_their_modules_by_weight(tiny_export):
    from emo.calibration.qdq import quant_targets
    from emo.calibration.torch_scales import module_keys, scales_from_graph
    from emo.runtime.fp8_linear import quantizable

    policy = POLICIES["default"].with_components(("denoiser",))
    graph = tiny_export / "denoiser.onnx"
    targets = quant_targets(onnx.load(str(graph)), policy)
    recorded = {a: 1.0 + i for i, a in enumerate(sorted({t.activation for t in targets}))}
    unet = random_models().net.denoising_unet  # the weights tiny_export was made from (seed 0)
    matched = scales_from_graph(graph, recorded, module_keys(unet), policy)
    inits = {t.name: t for t in onnx.load(str(graph), load_external_data=False).graph.initializer}
    pointwise = {t.weight for t in targets if tuple(inits[t.weight].dims[2:]) in ((), (1, 1))}
    assert not matched.unmatched and matched.matched == len(pointwise) > 100
    layers = dict(quantizable(unet))
    assert set(matched.scales.amax) <= set(layers)
    # where the exporter kept a parameter's name, the weight match names the same module, with that layer's range
    named = {t.weight for t in targets if t.weight.startswith("denoiser.") and t.weight in pointwise}
    assert len(named) > 20
    for weight in named:  # a layer the graph calls more than once gets the largest of its inputs' ranges
        module = weight.removeprefix("denoiser.").removesuffix(".weight")
        assert matched.scales.amax[module] == max(recorded[t.activation] for t in targets if t.weight == weight)
    # another model's weights match nothing
    other = random_models(seed=1).net.denoising_unet
    assert scales_from_graph(graph, recorded, module_keys(other), policy).matched == 0


@pytest.mark.parametrize("args, match", [
    (["--precision", "int8", "--torch-scales", "s.json"], "--torch-scales is for --precision fp8"),
    (["--precision", "fp8", "--torch-scales", "no/such/dir/s.json"], "its directory does not exist"),
    (["--precision", "fp8", "--torch-scales", "."], "is a directory; give a file name"),
])
def test_torch_scales_option_refusals(tmp_path, args, match):
    rc, err = quiet(calibrate_main, "--random", "tiny", "--out", str(tmp_path / "q"), *args)
    assert rc == 2 and match in one_error_line(err, "emo-calibrate")


@pytest.mark.skipif(not os.environ.get("EMO_TEST_SLOW"), reason="about a minute; EMO_TEST_SLOW=1 runs it")
def test_emo_calibrate_writes_torch_scales(tmp_path, monkeypatch):
    """The whole command on the tiny model: the scales file loads as torch-fast reads it."""
    from emo.runtime.fp8_convert import Fp8Scales

    monkeypatch.chdir(tmp_path)
    rc, err = quiet(calibrate_main, "--random", "tiny", "--precision", "fp8", "--out", "q", "--torch-scales",
                    "scales.json", "--accept-accuracy-loss", "--seconds", "0.5", "--steps", "1")
    assert rc == 0, err
    scales = Fp8Scales.load(tmp_path / "scales.json")
    assert len(scales.amax) > 100 and all(v > 0 for v in scales.amax.values())
    assert json.loads((tmp_path / "scales.json").read_text())["keep"] == list(POLICIES["default"].keep)
    assert not list(tmp_path.glob(".*"))


def test_emo_bench_takes_fp8_scales_only_where_fp8_runs(tmp_path):
    from emo.cli.bench import main as bench_main

    rc, err = quiet(bench_main, "--backends", "torch-fast", "--device", "cpu", "--fp8-scales", str(tmp_path / "s.json"),
                    "--out", str(tmp_path / "b.json"))
    assert rc == 2 and "FP8 matmuls need a CUDA GPU with compute capability >= 8.9" in one_error_line(err, "emo-bench")
    rc, err = quiet(bench_main, "--backends", "torch", "--device", "cpu", "--fp8-scales", str(tmp_path / "s.json"),
                    "--out", str(tmp_path / "b.json"))
    assert rc == 2 and "--fp8-scales is one of the torch-fast options" in one_error_line(err, "emo-bench")
    assert not (tmp_path / "b.json").exists()
