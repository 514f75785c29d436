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
            after = [c for c in g.node if name in c.input]
            assert [c.op_type for c in after] == ["Cast"] and after[0].attribute[0].i == F16
    assert kept["Softmax"] and kept["LayerNormalization"] and kept["InstanceNormalization"]
    # nothing else stays float32: every other weight is half, every Cast-to-float is a kept op's island
    assert all(t.data_type != F32 for name, t in inits.items() if consumers[name] != 1 or
               not any(name in n.input for n in g.node if n.op_type in KEEP_FP32))
    src = _graph(tiny_export / "denoiser.onnx")
    src_bytes = sum(t.ByteSize() for t in src.initializer)
    assert sum(t.ByteSize() for t in g.initializer) < 0.6 * src_bytes


def test_external_weights_are_streamed(tiny_export, tmp_path):
    """A graph whose weights are in a side file (as every real-size denoiser's) converts to a graph with a side
    file of half the size, computing the same as the in-file conversion."""
    specs = _specs(tiny_export)
    spec = specs["vae_decoder"]
    model = onnx.load(str(tiny_export / "vae_decoder.onnx"))
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(model, str(src / "vae_decoder.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="vae_decoder.onnx.data", size_threshold=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    external = convert_graph(src / "vae_decoder.onnx", tmp_path / "a", spec)
    inline = convert_graph(tiny_export / "vae_decoder.onnx", tmp_path / "b", spec)
    assert external.data_file == "vae_decoder.onnx.data" and inline.data_file is None
    data = (tmp_path / "a" / external.data_file).stat().st_size
    assert 0.45 < data / (src / "vae_decoder.onnx.data").stat().st_size < 0.55
    assert not [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no staged files left
    latents = np.random.default_rng(0).standard_normal((2, 4, 16, 16)).astype(np.float16)
    outs = [ort.InferenceSession(str(d / "vae_decoder.onnx")).run(None, {"latents": latents})[0] for d in
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
