"""emo-calibrate on the tiny model: INT8 and FP8 Q/DQ exports calibrated on recorded renders, run by ONNX Runtime
on the CPU, the accuracy gate on held-out inputs, and the Q/DQ arithmetic against an independent simulation. Both
formats start from the session's fp32 export (`tiny_export`) and one set of generated inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emo.calibration.build import (
    CALIBRATION_FILE,
    CalibrationSettings,
    GateFailed,
    Recordings,
    quantize_export,
    record,
)
from emo.calibration.media_set import (
    CALIBRATION_VARIATIONS,
    HELD_OUT_VARIATIONS,
    MediaPair,
    check_disjoint,
    folder_pairs,
    generated_pairs,
)
from emo.calibration.policy import POLICIES, scope_name
from emo.calibration.qdq import quant_targets, quantize_weight
from emo.cli.calibrate import main as calibrate_main
from emo.cli.run import main as run_main
from emo.config import RunConfig
from emo.errors import InputError
from emo.export.checks import TRT10_OPS, check_graph
from emo.manifest import read_manifest

from .cli_helpers import quiet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RUN = RunConfig(frames=8, motion_frames=2, steps=4, size=128)  # two chained clips of 8 frames per input
SECONDS = 0.6
QDQ_OPS = TRT10_OPS | {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("calibration")


@pytest.fixture(scope="module")
def fp32_dir(tiny_export) -> Path:
    return tiny_export


@pytest.fixture(scope="module")
def pairs(work) -> tuple[list[MediaPair], list[MediaPair]]:
    return (generated_pairs(CALIBRATION_VARIATIONS[:3], work / "calibration", SECONDS),
            generated_pairs(HELD_OUT_VARIATIONS, work / "held_out", SECONDS))


SETTINGS = CalibrationSettings(RUN, accept_accuracy_loss=True)


@pytest.fixture(scope="module")
def recordings(fp32_dir, pairs) -> Recordings:
    """The fp32 export's feeds and held-out renders, recorded once for both formats."""
    return record(fp32_dir, POLICIES["default"].components, *pairs, SETTINGS)


def _build(fp32_dir, out, fmt, pairs, recordings):
    """The default policy with the 30 dB gate; kept below it too (the tiny random model amplifies any rounding),
    so that the tests can read what the gate measured."""
    return quantize_export(fp32_dir, out, fmt, POLICIES["default"], *pairs, SETTINGS, recordings=recordings)


@pytest.fixture(scope="module")
def int8_dir(work, fp32_dir, pairs, recordings) -> Path:
    _build(fp32_dir, work / "int8", "int8", pairs, recordings)
    return work / "int8"


@pytest.fixture(scope="module")
def fp8_dir(work, fp32_dir, pairs, recordings) -> Path:
    _build(fp32_dir, work / "fp8", "fp8", pairs, recordings)
    return work / "fp8"


def _graph(d: Path, name: str = "denoiser"):
    return onnx.load(str(d / f"{name}.onnx"))


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_gate_measures_the_quantized_export(request, fmt):
    d = request.getfixturevalue(f"{fmt}_dir")
    m = read_manifest(d, "onnx")
    q = m.quantization
    assert m.precision == fmt and q["format"] == fmt
    assert {n: e.precision for n, e in m.components.items() if e.precision != "fp32"} == \
        {n: fmt for n in ("denoiser", "reference", "motion")}
    gate = q["gate"]
    psnr = gate["frames"]["psnr_db"]
    print(f"{fmt}: held-out frames {psnr:.2f} dB PSNR vs fp32; components {gate['components']}")
    assert gate["min_psnr_db"] == 30.0 and gate["passed"] == (psnr >= 30.0) and gate["accepted_loss"] != gate["passed"]
    assert 12 < psnr < 60, gate["frames"]  # related to the fp32 frames, and really quantized (fp16 reaches 51)
    assert gate["frames"]["frames"] == 2 * 15
    for name in ("denoiser", "reference", "motion"):
        e = gate["components"][name]
        assert 0 < e["mean_abs"] < e["max_abs"] < e["max_ref"] and e["cosine"] > 0.9, (name, e)
        assert e["feeds"] > 0
    assert set(q["held_out_pairs"]) & set(q["calibration_pairs"]) == set()


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_calibration_record_is_saved_with_hashes(request, fp32_dir, fmt):
    d = request.getfixturevalue(f"{fmt}_dir")
    cal = json.loads((d / CALIBRATION_FILE).read_text())
    fp32 = read_manifest(fp32_dir, "onnx")
    assert cal["model"] == f"{fp32.config_hash}:{fp32.weights_hash}" == read_manifest(d, "onnx").quantization["model"]
    assert len(cal["calibration_set"]) == 16 and cal["format"] == fmt and cal["method"] == "max"
    for name in ("denoiser", "reference", "motion"):
        c = cal["components"][name]
        assert c["layers"] > 0 and c["feeds"] > 0
        assert all(v > 0 for v in c["amax"].values())
    # the denoiser saw every step of both clips of every calibration input
    assert cal["components"]["denoiser"]["feeds"] == 3 * 2 * RUN.steps


def test_qdq_placement_follows_the_policy(int8_dir, fp32_dir):
    q = _graph(int8_dir)
    dq_inputs = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    quantized, kept = [], []
    for n in q.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            (quantized if n.input[0] in dq_inputs else kept).append(scope_name(n.name))
    assert len(quantized) == len(quant_targets(_graph(fp32_dir), POLICIES["default"])) > 100
    for pattern in ("/conv_in/", "/conv_out/", "/time_emb_proj/", "/time_embedding/", "/audio_modules."):
        assert not any(pattern in n for n in quantized), pattern
        assert any(pattern in n for n in kept), pattern
    # attention's Q·Kᵀ and P·V stay in float; GroupNorm / LayerNorm / Softmax see no Q/DQ
    assert any(n.endswith("/MatMul") and "attn1" in n for n in kept)
    producers = {o: n.op_type for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.op_type in ("InstanceNormalization", "LayerNormalization", "Softmax"):
            assert producers.get(n.input[0]) != "DequantizeLinear"
    assert q.graph.input == _graph(fp32_dir).graph.input and q.graph.output == _graph(fp32_dir).graph.output


@pytest.mark.parametrize("fmt,qtype,opset", [("int8", "INT8", 17), ("fp8", "FLOAT8E4M3FN", 19)])
def test_graphs_are_8_bit_and_clean(request, fp32_dir, fmt, qtype, opset):
    d = request.getfixturevalue(f"{fmt}_dir")
    for name in ("denoiser", "reference", "motion"):
        g = _graph(d, name)
        types = {onnx.TensorProto.DataType.Name(t.data_type) for t in g.graph.initializer
                 if t.name.endswith("_quantized")}
        assert types == {qtype}
        report = check_graph(d / f"{name}.onnx", allowed=QDQ_OPS)
        assert report.ok and report.opset == opset, report.problems
    fp32 = fp32_dir / "denoiser.onnx"
    inits = {t.name: t for t in onnx.load(str(fp32)).graph.initializer}
    weights = sum(int(np.prod(inits[w].dims)) for w in {t.weight for t in quant_targets(onnx.load(str(fp32)),
                                                                                           POLICIES["default"])})
    # 1 byte a weight instead of 4, less the scales and the Q/DQ nodes (a tenth at this tiny size)
    assert fp32.stat().st_size - (d / "denoiser.onnx").stat().st_size > 2.5 * weights


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_ort_qdq_matches_an_independent_simulation(tmp_path, fmt):
    """ORT's Q→DQ and our stored weights against torch's own rounding: int8 round-half-even, FP8 E4M3 saturating."""
    from onnx import TensorProto, helper, numpy_helper

    from emo.calibration.qdq import QMAX

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 48)) * np.exp(rng.uniform(-4, 2, (64, 48)))).astype(np.float32)
    w = (rng.standard_normal((48, 16)) * np.exp(rng.uniform(-3, 1, (1, 16)))).astype(np.float32)
    amax, qmax = 3.0, QMAX[fmt]
    qt = TensorProto.INT8 if fmt == "int8" else TensorProto.FLOAT8E4M3FN
    dtype, raw, w_scale = quantize_weight(w, 1, fmt)
    zero = lambda n, k: helper.make_tensor(n, qt, [k] if k else [], b"\0" * max(k, 1), raw=True)  # noqa: E731
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    inits = [numpy_helper.from_array(np.array(amax / qmax, np.float32), "s"), zero("z", 0),
             helper.make_tensor("wq", dtype, [48, 16], raw, raw=True), numpy_helper.from_array(w_scale, "ws"),
             zero("wz", 16)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 48])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    def fake_quant(v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        v = (v / scale).clamp(-qmax - 1 if fmt == "int8" else -qmax, qmax)
        return (torch.round(v) if fmt == "int8" else v.to(torch.float8_e4m3fn).float()) * scale

    ws = torch.from_numpy(w_scale)
    w_sim = fake_quant(torch.from_numpy(w).clamp(-qmax * ws, qmax * ws), ws)
    want = fake_quant(torch.from_numpy(x), torch.tensor(amax / qmax)) @ w_sim
    assert np.allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)
    exact = torch.from_numpy(x) @ torch.from_numpy(w)
    assert np.abs(got - exact.numpy()).max() > 1e-3  # the simulation is not the float product


def test_onnxruntime_renders_the_int8_export(tmp_path, int8_dir, pairs):
    pair = pairs[1][0]
    rc, err = quiet(run_main, str(pair.image), str(pair.audio), "--engine-dir", str(int8_dir), "--size", "128",
                     "--steps", "2", "--frames-per-clip", "8", "--quiet", "-o", str(tmp_path / "q.mp4"),
                     "--frames-out", str(tmp_path / "q.npy"))
    assert rc == 0, err
    frames = np.load(tmp_path / "q.npy")
    assert frames.shape == (15, 128, 128, 3) and frames.std() > 0.01 and (tmp_path / "q.mp4").stat().st_size > 0


def test_gate_stops_the_build_and_writes_nothing(work, fp32_dir, pairs):
    out = work / "strict"
    with pytest.raises(GateFailed, match="below the 99 dB gate"):
        quantize_export(fp32_dir, out, "int8", POLICIES["default"].with_components(("motion",)),
                        pairs[0][:1], pairs[1][:1], CalibrationSettings(RUN, min_psnr_db=99.0))
    assert not out.exists() and not [p for p in work.iterdir() if p.name.startswith(".strict")]


def test_cli_writes_below_the_gate_only_when_accepted(tmp_path):
    out = tmp_path / "int8"
    args = ["--random", "tiny", "--precision", "int8", "--out", str(out), "--seconds", "0.3", "--steps", "1",
            "--frames-per-clip", "8", "--components", "motion", "--min-psnr", "99"]
    rc, err = quiet(calibrate_main, *args, "--accept-accuracy-loss")
    assert rc == 0, err
    gate = read_manifest(out, "onnx").quantization["gate"]
    assert not gate["passed"] and gate["accepted_loss"] and gate["frames"]["psnr_db"] < 99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]  # no work or staging dirs left


def test_cli_input_errors_are_one_line(tmp_path):
    out = tmp_path / "o"
    for args, match in ((["--calibration", str(tmp_path / "none")], "calibration folder not found"),
                        (["--calibration", str(tmp_path)], "no image + audio pair"),
                        (["--seconds", "0"], "--seconds must be > 0")):
        rc, err = quiet(calibrate_main, "--demo", "--precision", "fp8", "--out", str(out), *args)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and match in err, err
        assert not out.exists()
    (tmp_path / "file").write_text("x")
    rc, err = quiet(calibrate_main, "--demo", "--precision", "int8", "--out", str(tmp_path / "file"))
    assert rc == 2 and "is not an export directory" in err


def test_held_out_inputs_must_differ_from_calibration(pairs, tmp_path):
    with pytest.raises(InputError, match="equal calibration inputs"):
        check_disjoint(pairs[0], [pairs[0][1]])
    (tmp_path / "a.png").write_bytes(pairs[0][0].image.read_bytes())
    (tmp_path / "a.wav").write_bytes(pairs[0][0].audio.read_bytes())
    (tmp_path / "b.png").write_bytes(pairs[0][0].image.read_bytes())  # no audio: not a pair
    found = folder_pairs(tmp_path, tmp_path / "cut", 0.2)
    assert [p.name for p in found] == ["a"] and found[0].audio.stat().st_size < 0.2 * 16000 * 2 + 100


def test_recordings_are_refused_for_other_inputs(work, fp32_dir, pairs, recordings):
    with pytest.raises(InputError, match="recordings were made for another"):
        quantize_export(fp32_dir, work / "other", "int8", POLICIES["default"], pairs[0], pairs[1][:1], SETTINGS,
                        recordings=recordings)
    assert not (work / "other").exists()
