"""emo-export on the tiny model: every graph vs torch through ONNX Runtime, graph hygiene, the manifest, and a
full render through the onnxruntime backend against the torch backend. The fp32 export is the session's
(`tiny_export`: the tiny preset's seeded random weights)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from emo.checkpoints.model_dir import random_models
from emo.cli.export import main as export_main
from emo.cli.run import main as run_main
from emo.config import PRESETS, RunOptions
from emo.export.checks import TRT10_OPS, check_graph
from emo.export.verify import FP16_ROUNDED, verify_export
from emo.io_spec import COMPONENTS
from emo.manifest import EngineDirError, read_manifest
from emo.runtime.renderer import Renderer
from emo.validation import DEFAULT_SEED

from .cli_helpers import quiet
from .media_factory import voice, write_wav

pytest.importorskip("onnxruntime")
pytest.importorskip("polygraphy")


@pytest.fixture(scope="module")
def fp32_dir(tiny_export):
    return tiny_export


@pytest.fixture(scope="module")
def fp32_comparisons(fp32_dir):
    return {(c.component, c.point): c for c in verify_export(fp32_dir, random_models())}


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_graph_matches_torch_fp32(fp32_comparisons, component):
    """Two operating points: the one the graph was traced at and one with other frames, motion frames and size.
    Within 1e-4, except outputs made from the float16-rounded ReferenceNet records: one float16 ulp at their scale."""
    for point in ("trace", "other"):
        c = fp32_comparisons[(component, point)]
        assert c.max_ref > 1e-3  # the outputs are not trivially zero
        limit = max(1e-4, c.max_ref * 2.0 ** -10) if component in FP16_ROUNDED else 1e-4
        assert c.max_abs <= limit, c


@pytest.mark.parametrize("component", COMPONENTS)
def test_graph_hygiene(fp32_dir, component):
    report = check_graph(fp32_dir / f"{component}.onnx")
    assert report.opset >= 17
    assert set(report.ops) <= TRT10_OPS, sorted(set(report.ops) - TRT10_OPS)
    assert report.ok, report.problems


def test_attention_exports_as_matmul_softmax_matmul(fp32_dir):
    """The pattern TensorRT fuses into its MHA kernels; no opaque or decomposed-loop attention."""
    ops = check_graph(fp32_dir / "denoiser.onnx").ops
    assert ops["Softmax"] > 0 and ops["MatMul"] >= 2 * ops["Softmax"]
    assert not {"Loop", "If", "Scan", "ATen"} & set(ops)


def test_check_graph_flags_ops_outside_the_allow_list(fp32_dir):
    report = check_graph(fp32_dir / "vae_decoder.onnx", allowed=TRT10_OPS - {"Conv"})
    assert not report.ok and "Conv" in report.problems[0]


def test_manifest_describes_the_export(fp32_dir):
    m = read_manifest(fp32_dir, "onnx", COMPONENTS)
    raw = json.loads((fp32_dir / "manifest.json").read_text())
    assert (m.format, m.precision, m.opset, m.format_version) == ("onnx", "fp32", 17, 1)
    assert m.model() == random_models().cfg and m.config_hash == m.model().config_hash()
    assert len(m.weights_hash) == 16 and {"torch", "onnx", "python"} <= set(m.tools)
    assert set(raw["components"]) == set(COMPONENTS)
    assert all((fp32_dir / e.file).stat().st_size == e.bytes for e in m.components.values())
    assert sorted(p.name for p in fp32_dir.iterdir()) == sorted([f"{c}.onnx" for c in COMPONENTS] + ["manifest.json"])


def test_runtime_does_not_import_the_exporter():
    code = ("import sys, emo.runtime.renderer, emo.runtime.onnxruntime_backend, emo.cli.run; "
            "print([m for m in sys.modules if m.startswith('emo.export')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def media(speech_media):
    return speech_media(0.7)  # 18 frames: 3 clips of 8, chained, the last trimmed


RENDER = ["--size", "128", "--steps", "3", "--frames-per-clip", "8", "--motion-frames", "2", "--quiet"]
RENDER_RUN = RunOptions(steps=3, size=128, frames=8, motion_frames=2).apply(PRESETS["demo"].run)  # --demo + RENDER


def _render(tmp_path, media, name, *backend):
    out = tmp_path / f"{name}.npy"
    rc, err = quiet(run_main, str(media / "face.png"), str(media / "voice.wav"), "--demo", *RENDER, *backend,
                     "-o", str(tmp_path / f"{name}.mp4"), "--frames-out", str(out))
    assert rc == 0, err
    return np.load(out)


def test_onnxruntime_render_matches_torch(tmp_path, media, fp32_dir):
    """emo-run on the export against the torch renderer on the weights it was exported from, same settings and seed."""
    ort = _render(tmp_path, media, "ort", "--backend", "onnxruntime", "--engine-dir", str(fp32_dir))
    Renderer.random(device="cpu").render(media / "face.png", media / "voice.wav", tmp_path / "torch.mp4", RENDER_RUN,
                                         seed=DEFAULT_SEED, frames_out=tmp_path / "torch.npy")
    ref = np.load(tmp_path / "torch.npy")
    assert ref.shape == ort.shape == (18, 128, 128, 3)
    assert ref.std() > 0.01
    assert np.abs(ref - ort).max() <= 1e-3


def test_fp16_graphs_within_fp16_tolerance(tmp_path):
    d = tmp_path / "fp16"
    rc, err = quiet(export_main, "--random", "tiny", "--out", str(d), "--precision", "fp16",
                     "--components", "imageproj,vae_decoder,denoiser")
    assert rc == 0, err
    m = read_manifest(d, "onnx")
    assert m.precision == "fp16" and set(m.components) == {"imageproj", "vae_decoder", "denoiser"}
    for c in verify_export(d, random_models()):
        assert c.precision == "fp16"
        assert 1e-5 < c.max_abs <= 5e-2, c  # really fp16 (not fp32 in disguise), and close


def _refused(tmp_path, *args, match):
    rc, err = quiet(run_main, *args, "-o", str(tmp_path / "x.mp4"))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and match in lines[0], err
    assert not (tmp_path / "x.mp4").exists()


def test_engine_dir_mismatches_are_refused(tmp_path, media, fp32_dir):
    run = [str(media / "face.png"), str(media / "voice.wav"), "--demo", *RENDER]
    broken = tmp_path / "broken"
    shutil.copytree(fp32_dir, broken)
    raw = json.loads((broken / "manifest.json").read_text())
    raw["model_config"]["unet"]["heads"] = 2
    (broken / "manifest.json").write_text(json.dumps(raw))
    _refused(tmp_path, *run, "--engine-dir", str(broken), match="does not match its hash")
    raw["format_version"] = 7
    (broken / "manifest.json").write_text(json.dumps(raw))
    _refused(tmp_path, *run, "--engine-dir", str(broken), match="format version 7")
    _refused(tmp_path, *run, "--engine-dir", str(tmp_path / "none"), match="engine directory not found")
    _refused(tmp_path, *run, "--backend", "onnxruntime", match="needs --engine-dir")
    _refused(tmp_path, *run, "--engine-dir", str(fp32_dir), "--dtype", "fp16", match="holds fp32 graphs")
    # settings outside the export's shape ranges, before any work
    _refused(tmp_path, *run, "--engine-dir", str(fp32_dir), "--size", "320",
             match="its graphs take frames of 64 to 256 px, not 320 px; use settings inside that range")
    _refused(tmp_path, *run, "--engine-dir", str(fp32_dir), "--frames-per-clip", "20", "--motion-frames", "0",
             match="its graphs take clips of 1 to 16 frames, not 20 frames")
    partial = tmp_path / "partial"
    shutil.copytree(fp32_dir, partial)
    (partial / "denoiser.onnx").unlink()
    _refused(tmp_path, *run, "--engine-dir", str(partial), match="denoiser.onnx is missing")
    (partial / "denoiser.onnx").write_bytes(b"not a graph")
    _refused(tmp_path, *run, "--engine-dir", str(partial), match="cannot load")


def test_export_refuses_unknown_components(tmp_path):
    rc, err = quiet(export_main, "--demo", "--out", str(tmp_path / "e"), "--components", "unet")
    assert rc == 2 and "unknown component(s) unet" in err


@pytest.mark.parametrize("escape", ["../outside/denoiser.onnx", "absolute", "symlink"])
def test_manifest_paths_outside_the_engine_dir_are_refused(tmp_path, media, fp32_dir, escape):
    """A manifest naming a graph outside its directory (absolute, ../ or a symlink out) is refused, not loaded."""
    engine = tmp_path / "engine"
    shutil.copytree(fp32_dir, engine)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(engine / "denoiser.onnx", outside / "denoiser.onnx")
    raw = json.loads((engine / "manifest.json").read_text())
    if escape == "symlink":
        (engine / "denoiser.onnx").unlink()
        (engine / "denoiser.onnx").symlink_to(outside / "denoiser.onnx")
        name = "denoiser.onnx"
    else:
        name = str(outside / "denoiser.onnx") if escape == "absolute" else escape
        raw["components"]["denoiser"]["file"] = name
        (engine / "manifest.json").write_text(json.dumps(raw))
    run = [str(media / "face.png"), str(media / "voice.wav"), "--demo", *RENDER]
    _refused(tmp_path, *run, "--engine-dir", str(engine), match=f"{name} is outside the engine directory")


def test_onnxruntime_keeps_the_cuda_device_index_or_refuses(tmp_path, media, fp32_dir):
    import onnxruntime as ort

    from emo.runtime.ort_providers import provider_list, require_providers

    assert provider_list("cuda:3") == [("CUDAExecutionProvider", {"device_id": 3}), "CPUExecutionProvider"]
    assert provider_list("cuda") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert provider_list("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: the refusals below need one without it")
    run = [str(media / "face.png"), str(media / "voice.wav"), "--demo", *RENDER, "--engine-dir", str(fp32_dir)]
    _refused(tmp_path, *run, "--device", "cuda:1", match="no CUDA GPU is available to onnxruntime")
    # A session that onnxruntime started on the CPU although CUDA was asked for is refused, never used.
    providers = provider_list("cuda:1")
    session = ort.InferenceSession(str(fp32_dir / "imageproj.onnx"), providers=providers)
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(EngineDirError, match="could not start on cuda:1"):
        require_providers(session, providers, "imageproj.onnx")


def test_audio_longer_than_the_exported_range_is_refused_with_the_fix(tmp_path, media, fp32_dir):
    write_wav(tmp_path / "long.wav", voice(61.0))  # the tiny ranges end at 60 s
    run = [str(media / "face.png"), str(tmp_path / "long.wav"), "--demo", *RENDER, "--engine-dir", str(fp32_dir)]
    _refused(tmp_path, *run, match="--max-audio-seconds 62")
    d = tmp_path / "long"
    rc, err = quiet(export_main, "--demo", "--out", str(d), "--components", "audio_encoder",
                     "--max-audio-seconds", "90", "--skip-checks")
    assert rc == 0, err
    m = read_manifest(d, "onnx")
    assert m.shape_ranges().audio_seconds[2] == 90
    assert m.components["audio_encoder"].spec["dims"]["samples"]["max"] >= 90 * 16000


def test_exports_one_component_at_a_time_add_to_the_directory(tmp_path):
    """The same model exported one component per call into one directory: the manifest lists every graph exported
    so far (ranges read back from the manifest equal fresh ones); other ranges start a new manifest."""
    out = tmp_path / "e"
    for part in ("imageproj", "face_locator"):
        rc, err = quiet(export_main, "--demo", "--out", str(out), "--components", part, "--skip-checks")
        assert rc == 0, err
    m = read_manifest(out, "onnx", ("imageproj", "face_locator"))
    assert set(m.components) == {"imageproj", "face_locator"}
    rc, err = quiet(export_main, "--demo", "--out", str(out), "--components", "audioproj", "--skip-checks",
                     "--max-audio-seconds", "5")
    assert rc == 0, err
    assert set(read_manifest(out, "onnx").components) == {"audioproj"}


def test_the_preset_of_an_engine_dir_sets_the_default_run(fp32_dir, tmp_path):
    """emo-run and emo-bench render an export (or a plan dir) at its model preset's settings unless told otherwise."""
    from emo.runtime.factory import exported_preset

    assert exported_preset(str(fp32_dir)) == "tiny"
    assert exported_preset(str(tmp_path)) is None and exported_preset(None) is None
