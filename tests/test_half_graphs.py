"""Half-precision graphs converted from the fp32 export (`emo.export.half`, `emo-export --from-export`): every
graph against torch through ONNX Runtime within fp16 error, the types at the boundary and inside (float32 islands
around norms and softmax), external weights streamed, bf16 rounding, and the refusals."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from emo.checkpoints.model_dir import random_models
from emo.cli.export import main as export_main
from emo.export.half import KEEP_FP32, convert_graph, to_bf16_bits
from emo.export.verify import verify_export
from emo.io_spec import component_specs
from emo.manifest import file_sha256, read_manifest

from .cli_helpers import one_error_line, quiet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("polygraphy")

F32, F16, BF16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16


@pytest.fixture(scope="module")
def fp16_dir(tiny_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "fp16"
    rc, err = quiet(export_main, "--from-export", str(tiny_export), "--precision", "fp16", "--out", str(out))
    assert rc == 0, err
    return out


def test_converted_graphs_match_torch_within_fp16_error(fp16_dir, tiny_export):
    m = read_manifest(fp16_dir, "onnx")
    src = read_manifest(tiny_export, "onnx")
    assert m.precision == "fp16" and set(m.components) == set(src.components)
    assert (m.config_hash, m.weights_hash, m.ranges) == (src.config_hash, src.weights_hash, src.ranges)
    for name, entry in src.components.items():
        files = [tiny_export / f for f in (entry.file, entry.data_file) if f]
        assert m.conversion["source_sha256"][name] == file_sha256(*files)
    for c in verify_export(fp16_dir, random_models()):
        if c.component == "audio_encoder":  # float32-only: copied as it is
            assert c.precision == "fp32" and c.max_abs < 1e-4, c
            continue
        assert c.precision == "fp16", c
        assert 1e-6 < c.max_abs <= 0.03 * max(c.max_ref, 1.0), c  # really half precision, and close


def _specs(directory):
    m = read_manifest(directory, "onnx")
    return component_specs(m.model(), m.shape_ranges())


def _graph(path):
    return onnx.load(str(path), load_external_data=False).graph


def test_types_at_the_boundary_and_float32_islands(fp16_dir, tiny_export):
    specs = _specs(fp16_dir)
    g = _graph(fp16_dir / "denoiser.onnx")
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output)}
    for t in (*specs["denoiser"].inputs, *specs["denoiser"].outputs):
        want = {"float": F16, "float32": F32, "int64": onnx.TensorProto.INT64}[t.dtype]
        assert types[t.name] == want, t
    producers = {o: n for n in g.node for o in n.output}
    consumers = Counter(i for n in g.node for i in n.input)
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    inits = {t.name: t for t in g.initializer}
    kept = Counter()
    for n in g.node:
        if n.op_type not in KEEP_FP32:
            continue
        kept[n.op_type] += 1
        for name in n.input:  # every float input is a Cast to float32 or a float32 constant of its own
            p = producers.get(name)
            if name in inits:
                assert inits[name].data_type == F32 and consumers[name] == 1
            elif p.op_type == "Constant":
                assert p.attribute[0].t.data_type == F32 and consumers[name] == 1
            else:
                assert p.op_type == "Cast" and p.attribute[0].i == F32, (n.name, name)
        for name in n.output:  # and every output goes back to half precision
            after = readers[name]
            assert [c.op_type for c in after] == ["Cast"] and after[0].attribute[0].i == F16
    assert kept["Softmax"] and kept["LayerNormalization"] and kept["InstanceNormalization"]
    # nothing else stays float32: every other weight is half, every Cast-to-float is a kept op's island
    kept_inputs = {i for n in g.node if n.op_type in KEEP_FP32 for i in n.input}
    assert all(t.data_type != F32 for name, t in inits.items() if consumers[name] != 1 or name not in kept_inputs)
    src = _graph(tiny_export / "denoiser.onnx")
    src_bytes = sum(t.ByteSize() for t in src.initializer)
    assert sum(t.ByteSize() for t in g.initializer) < 0.6 * src_bytes


@pytest.mark.parametrize("component, feed", [("vae_decoder", {"latents": (2, 4, 16, 16)}),
                                             ("imageproj", {"face_embedding": (2, 512)})])
def test_external_weights_are_streamed(tiny_export, tmp_path, component, feed):
    """A graph whose weights are in a side file (as every real-size denoiser's) converts to a graph whose side file
    holds every weight, half-precision ones and those kept in float32 (imageproj's LayerNorm), and computes the
    same as the in-file conversion."""
    spec = _specs(tiny_export)[component]
    model = onnx.load(str(tiny_export / f"{component}.onnx"))
    src = tmp_path / "src"
    src.mkdir()
    data_name = f"{component}.onnx.data"
    onnx.save_model(model, str(src / f"{component}.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    external = convert_graph(src / f"{component}.onnx", tmp_path / "a", spec)
    inline = convert_graph(tiny_export / f"{component}.onnx", tmp_path / "b", spec)
    assert external.data_file == data_name and inline.data_file is None
    data = (tmp_path / "a" / data_name).stat().st_size
    assert 0.45 < data / (src / data_name).stat().st_size < 0.6
    assert not [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no staged files left
    g = _graph(tmp_path / "a" / f"{component}.onnx")
    for t in g.initializer:  # every weight in the new side file, inside it
        info = {e.key: e.value for e in t.external_data}
        assert info["location"] == data_name and int(info["offset"]) + int(info["length"]) <= data, t.name
    kept = [t for t in g.initializer if t.data_type == F32]
    assert bool(kept) == (component == "imageproj")
    x = {name: np.random.default_rng(0).standard_normal(shape).astype(np.float16) for name, shape in feed.items()}
    # the fp32 source moved away: the converted graph must not read it
    (src / data_name).rename(tmp_path / "moved")
    outs = [ort.InferenceSession(str(d / f"{component}.onnx")).run(None, x)[0] for d in
            (tmp_path / "a", tmp_path / "b")]
    assert outs[0].dtype == np.float16 and np.array_equal(outs[0], outs[1])


def test_bf16_bits_round_to_nearest_even():
    torch = pytest.importorskip("torch")
    a = np.concatenate([np.random.default_rng(1).standard_normal(10000).astype(np.float32) * 100,
                        np.array([0.0, -0.0, 1.0, 65504.0, 3.0e38, np.inf, -np.inf], np.float32)])
    want = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bf16_bits(a), want)
    assert to_bf16_bits(np.array([np.nan], np.float32))[0] & 0x7FC0 == 0x7FC0


def test_bf16_conversion_types(tiny_export, tmp_path):
    specs = _specs(tiny_export)
    g = convert_graph(tiny_export / "reference.onnx", tmp_path, specs["reference"], "bf16")
    graph = _graph(tmp_path / g.file)
    assert {v.type.tensor_type.elem_type for v in graph.input} == {BF16}
    assert {t.data_type for t in graph.initializer} <= {BF16, F32, onnx.TensorProto.INT64}
    onnx.checker.check_model(str(tmp_path / g.file))


@pytest.mark.parametrize("extra, match", [
    (["--precision", "fp32"], "converts to --precision fp16"),
    (["--random", "tiny"], "--random does not apply"),
])
def test_conversion_refusals(tiny_export, tmp_path, extra, match):
    rc, err = quiet(export_main, "--from-export", str(tiny_export), "--out", str(tmp_path / "x"), *extra)
    assert rc == 2 and match in one_error_line(err, "emo-export")


def test_conversion_starts_from_fp32(fp16_dir, tmp_path):
    rc, err = quiet(export_main, "--from-export", str(fp16_dir), "--precision", "fp16", "--out", str(tmp_path / "x"))
    assert rc == 2 and "holds fp16 graphs" in one_error_line(err, "emo-export")
    raw = json.loads((fp16_dir / "manifest.json").read_text())
    assert raw["conversion"]["from"] == "fp32"


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_qdq_graphs_convert_with_their_8bit_weights(tiny_export, tmp_path, fmt):
    """emo-calibrate's Q/DQ graphs (over float32) convert like any other: 8-bit weights untouched, scales and the
    compute around them in half precision, opset 19 (QuantizeLinear of float16); ONNX Runtime runs it close to
    the float32 Q/DQ graph."""
    pytest.importorskip("ml_dtypes")
    from emo.calibration.policy import POLICIES
    from emo.calibration.qdq import quant_targets, quantize_graph
    from emo.engine.precision import quantized_types
    from emo.export.inputs import example_inputs
    from emo.io_spec import trace_values

    m = read_manifest(tiny_export, "onnx")
    spec = _specs(tiny_export)["motion"]  # the UNet's layers, in a graph a tenth of the denoiser's
    src = tiny_export / "motion.onnx"
    policy = POLICIES["default"].with_components(("motion",))
    targets = quant_targets(onnx.load(str(src)), policy)
    qdq = tmp_path / f"motion-{fmt}.onnx"
    quantize_graph(src, qdq, {t.activation: 4.0 for t in targets}, policy, fmt)
    (tmp_path / "half").mkdir()
    g = convert_graph(qdq, tmp_path / "half", spec)
    converted = onnx.load(str(tmp_path / "half" / g.file))
    assert max(o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")) == 19
    assert quantized_types(tmp_path / "half" / g.file) == quantized_types(qdq) and quantized_types(qdq)[fmt] > 0
    inits = {t.name: t for t in converted.graph.initializer}
    for n in converted.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits:
            assert inits[n.input[1]].data_type == F16, n.name  # scales in half precision
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.FLOAT8E4M3FN}
    assert sum(t.data_type in eight_bit for t in inits.values()) >= len({t.weight for t in targets})
    feed = {k: v.numpy() for k, v in example_inputs(spec, trace_values(m.model(), m.shape_ranges()), "fp32",
                                                     seed=1).items()}
    want = ort.InferenceSession(str(qdq)).run(None, feed)[0].ravel()
    half = {t.name: feed[t.name].astype(t.numpy_dtype("fp16")) for t in spec.inputs}
    got = ort.InferenceSession(str(tmp_path / "half" / g.file)).run(None, half)[0].astype(np.float32).ravel()
    exact = ort.InferenceSession(str(src)).run(None, feed)[0].ravel()

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    # half precision moves the (random, tiny) network's output less than quantizing it did, and is not the float32
    # Q/DQ graph run again
    assert cosine(exact, want) < cosine(want, got) < 1 - 1e-7, (cosine(exact, want), cosine(want, got))
    assert cosine(want, got) > 0.9


def test_a_quantized_export_converts_through_the_command(tiny_export, tmp_path):
    """An INT8 export directory (Q/DQ denoiser + manifest, as emo-calibrate writes one) converts with its quantization
    record kept; the converted Q/DQ graph passes the export checks."""
    pytest.importorskip("ml_dtypes")
    from emo.calibration.policy import POLICIES
    from emo.calibration.qdq import quant_targets, quantize_graph
    from emo.manifest import GraphEntry

    src = read_manifest(tiny_export, "onnx", ("denoiser",))
    policy = POLICIES["default"].with_components(("denoiser",))
    targets = quant_targets(onnx.load(str(tiny_export / "denoiser.onnx")), policy)
    q = tmp_path / "int8"
    q.mkdir()
    quantize_graph(tiny_export / "denoiser.onnx", q / "denoiser.onnx", {t.activation: 4.0 for t in targets}, policy,
                   "int8")
    e = src.components["denoiser"]
    src.components = {"denoiser": GraphEntry("denoiser.onnx", None, (q / "denoiser.onnx").stat().st_size, "int8",
                                             e.spec)}
    src.precision, src.quantization = "int8", {"format": "int8", "policy": policy.to_dict()}
    src.write(q)
    rc, err = quiet(export_main, "--from-export", str(q), "--precision", "fp16", "--out", str(tmp_path / "half"))
    assert rc == 0, err
    m = read_manifest(tmp_path / "half", "onnx")
    assert (m.precision, m.quantization["format"], m.conversion["from"]) == ("fp16", "int8", "int8")
    assert m.components["denoiser"].precision == "fp16"


def test_bf16_export_is_for_tensorrt(tiny_export, tmp_path):
    """emo-export --precision bf16 (by conversion) writes a bf16 export; ONNX Runtime and emo-verify refuse it in
    one line (no bf16 kernels on the CPU), and where TensorRT for RTX is installed its plans bind bf16 tensors."""
    from emo.cli.run import main as run_main
    from emo.cli.verify import main as verify_main

    out = tmp_path / "bf16"
    rc, err = quiet(export_main, "--from-export", str(tiny_export), "--precision", "bf16", "--out", str(out))
    assert rc == 0, err
    m = read_manifest(out, "onnx")
    assert m.precision == "bf16" and {e.precision for e in m.components.values()} == {"bf16", "fp32"}
    for name in ("imageproj", "face_locator"):
        g = _graph(out / f"{name}.onnx")
        assert {v.type.tensor_type.elem_type for v in (*g.input, *g.output)} == {BF16}
    types = {v.name: v.type.tensor_type.elem_type for v in _graph(out / "denoiser.onnx").input}
    assert (types["sample"], types["timestep"]) == (BF16, F32)
    rc, err = quiet(run_main, "x.png", "y.wav", "--engine-dir", str(out), "--backend", "onnxruntime",
                    "-o", str(tmp_path / "x.mp4"))
    assert rc == 2 and "holds bf16 graphs, which are for TensorRT" in one_error_line(err, "emo-run")
    rc, err = quiet(verify_main, str(out), "--random", "tiny")
    assert rc == 2 and "holds bf16 graphs" in one_error_line(err, "emo-verify")
    pytest.importorskip("tensorrt_rtx_bindings")
    from emo.cli.build_engine import main as build_main
    from emo.tensorrt.plan_dir import open_plan_dir

    rc, err = quiet(build_main, str(out), "--out", str(tmp_path / "plans"), "--components", "imageproj,face_locator",
                    "--opt-level", "0", "--target", "sm_89", "--quiet")
    assert rc == 0, err
    plans, _ = open_plan_dir(tmp_path / "plans", components=("imageproj", "face_locator"))
    (profile,) = plans.plans["face_locator"]
    assert {b.dtype for b in profile.bindings} == {"bfloat16"}
