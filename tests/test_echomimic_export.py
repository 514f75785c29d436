"""EchoMimic exports: IO specs, emo-export of the tiny random model, its render on ONNX Runtime against eager torch,
and the refusals of mismatched exports."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from emo.config import ECHOMIMIC_SD15, PRESETS
from emo.io_spec import ECHOMIMIC_COMPONENTS, component_specs, kv_names
from emo.models.unet_layout import transformer_specs

from .cli_helpers import one_error_line, quiet

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# Frames of the same seeded render, through the exported graphs on ONNX Runtime's CPU provider vs eager torch
# (fp32, 128 px, 2 guided steps, windows of 6 overlapping by 3): measured 1.5e-5 max abs.
FRAME_TOLERANCE = 1e-3
RENDER = ["--size", "128", "--steps", "2", "--frames-per-clip", "6", "--quiet", "--device", "cpu"]


_cli, _one_line = quiet, one_error_line


@pytest.fixture(scope="module")
def echo_export(tmp_path_factory) -> Path:
    """The tiny random EchoMimic model (guided family: both CFG halves) exported through the command line."""
    from emo.cli.export import main

    out = tmp_path_factory.mktemp("echo-export") / "fp32"
    rc, err = _cli(main, "--demo", "--family", "echomimic", "--out", str(out))
    assert rc == 0, err
    return out


def test_real_size_specs():
    cfg, ranges = ECHOMIMIC_SD15, PRESETS["echomimic-sd15"].ranges
    specs = component_specs(cfg, ranges)
    assert tuple(specs) == ECHOMIMIC_COMPONENTS
    den = specs["denoiser"]
    names = [t.name for t in den.inputs]
    layers = len(transformer_specs(cfg.unet))
    assert names[:5] == ["sample", "timestep", "guidance_scale", "audio_tokens", "face_feature"]
    assert names[5:] == [n for i in range(layers) for n in kv_names(i)] and layers == 16
    assert not any(n.startswith(("mask_", "motion", "image_tokens", "ref_index")) for n in names)
    opt = den.profile()
    assert opt["sample"][1] == (2, 4, 16, 64, 64) and opt["sample"][0] == (1, 4, 1, 32, 32)
    assert opt["audio_tokens"][2] == (2, 24, 50, 384)
    assert opt["face_feature"][1] == (2, 320, 64, 64)
    assert opt["ref_k_00"][1] == (1, 8, 4096, 40) and opt["ref_v_15"][1] == (1, 8, 4096, 40)
    assert {opt[n][1][3] for n in names[5:]} == {40, 80, 160}
    assert [t.shape for t in den.outputs] == [(1, 4, "frames", "lat_0", "lat_0")]
    ref = specs["reference"]
    assert [t.name for t in ref.inputs] == ["ref_latent"] and len(ref.outputs) == 2 * layers
    assert ref.outputs[0].shape[0] == 1  # one reference entry (E = 1)
    assert specs["face_locator"].profile()["face_mask"][1] == (1, 1, 512, 512)
    audio = specs["audio_encoder"]
    assert audio.fp32_only and audio.profile()["mel"] == ((1, 80, 3000),) * 3
    assert audio.outputs[0].shape == (5, 1500, 384)
    assert specs["vae_decoder"].profile()["latents"][2] == (24, 4, 96, 96)


def test_export_manifest(echo_export):
    from emo.manifest import read_manifest

    m = read_manifest(echo_export, "onnx", ECHOMIMIC_COMPONENTS)
    assert m.family == "echomimic" and m.model().name == "echomimic-tiny" and m.model().family == "echomimic"
    assert set(m.components) == set(ECHOMIMIC_COMPONENTS)
    assert m.components["audio_encoder"].precision == "fp32"


def test_onnxruntime_render_matches_torch(echo_export, speech_media, tmp_path):
    from emo.cli.run import main

    media = speech_media(0.5)
    files = [str(media / "face.png"), str(media / "voice.wav")]
    torch_rc, err = _cli(main, *files, *RENDER, "--demo", "--family", "echomimic", "-o", str(tmp_path / "t.mp4"),
                         "--frames-out", str(tmp_path / "t.npy"), "--backend", "torch")
    assert torch_rc == 0, err
    stats = tmp_path / "s.json"
    ort_rc, err = _cli(main, *files, *RENDER, "--engine-dir", str(echo_export), "-o", str(tmp_path / "o.mp4"),
                       "--frames-out", str(tmp_path / "o.npy"), "--stats", str(stats))
    assert ort_rc == 0, err
    want, got = np.load(tmp_path / "t.npy"), np.load(tmp_path / "o.npy")
    assert got.shape == want.shape and want.shape[0] == 12 and want.std() > 0.01
    assert np.abs(got - want).max() <= FRAME_TOLERANCE
    s = json.loads(stats.read_text())
    assert s["settings"]["guidance_scale"] == 2.5 and (tmp_path / "o.mp4").stat().st_size > 0


def test_hallo_models_are_not_exported_as_echomimic(tmp_path):
    from emo.cli.export import main

    (tmp_path / "hallo").mkdir()
    rc, err = _cli(main, "--models", str(tmp_path), "--family", "echomimic", "--out", str(tmp_path / "x"))
    assert rc == 2 and "not in EchoMimic's pretrained_weights layout" in _one_line(err, "emo-export")


@pytest.mark.parametrize("argv, edit, message", [
    (["--family", "echomimic-acc"], None, "holds an export for echomimic, not --family echomimic-acc"),
    (["--backend", "tensorrt"], None, "EchoMimic models run on the torch backend (not tensorrt)"),
    ([], lambda raw: raw["model_config"]["unet"].update(heads=4), "model config does not match its hash"),
    ([], lambda raw: raw.update(family="hallo"), "run family 'hallo' does not fit its model config"),
    (["--components", "audioproj"], None, None),
])
def test_refusals(echo_export, tmp_path, argv, edit, message):
    if argv[:1] == ["--components"]:  # a Hallo component asked of an EchoMimic model: refused before export
        from emo.cli.export import main

        rc, err = _cli(main, "--demo", "--family", "echomimic-acc", "--out", str(tmp_path / "x"), *argv)
        line = _one_line(err, "emo-export")
        assert rc == 2 and "unknown component(s) audioproj; choose from audio_encoder, face_locator" in line
        assert not (tmp_path / "x").exists()
        return
    from emo.cli.run import main

    d = echo_export
    if edit is not None:
        d = Path(shutil.copytree(echo_export, tmp_path / "edited"))
        raw = json.loads((d / "manifest.json").read_text())
        edit(raw)
        (d / "manifest.json").write_text(json.dumps(raw))
    rc, err = _cli(main, "--demo", "--engine-dir", str(d), "-o", str(tmp_path / "x.mp4"), *RENDER, *argv)
    assert rc == 2 and message in _one_line(err, "emo-run")
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.trt
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("EMO_TEST_SLOW"), reason="about 40 s on 2 cores (test_engine builds Hallo's "
                    "plans with the same builder): set EMO_TEST_SLOW=1")
def test_plans_build_from_the_export(echo_export, tmp_path):
    """emo-build-engine takes an EchoMimic export (TensorRT for RTX builds ahead of time, no GPU needed): every
    graph parses and builds; the tensorrt backend does not run EchoMimic plans yet and says so."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX is not installed")
    from emo.cli.build_engine import main as build_main
    from emo.cli.run import main as run_main
    from emo.manifest import read_manifest

    out = tmp_path / "plans"
    rc, err = _cli(build_main, str(echo_export), "--out", str(out), "--opt-level", "0", "--target", "sm_89", "--quiet")
    assert rc == 0, err
    m = read_manifest(out, "tensorrt", ECHOMIMIC_COMPONENTS)
    assert m.family == "echomimic" and all(e.build["seconds"] > 0 for e in m.components.values())
    rc, err = _cli(run_main, "--demo", "--engine-dir", str(out), "-o", str(tmp_path / "x.mp4"), *RENDER)
    assert rc == 2 and "EchoMimic models run on the torch backend (not tensorrt)" in _one_line(err, "emo-run")


def test_emo_verify_compares_every_graph_with_torch(echo_export, capsys):
    """emo-verify takes the export's family from its manifest: each EchoMimic graph against the torch module it came
    from, at two operating points."""
    from emo.cli.verify import main as verify_main

    assert verify_main([str(echo_export), "--demo", "--components", "denoiser,face_locator,vae_decoder"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert {(r[0], r[1]) for r in rows} == {(c, p) for c in ("denoiser", "face_locator", "vae_decoder")
                                           for p in ("trace", "other")}
    assert all(r[-1] == "ok" and float(r[3]) < 1e-4 for r in rows), rows
