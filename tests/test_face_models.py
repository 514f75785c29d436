"""InsightFace-format ONNX face models (SCRFD detector, ArcFace embedding) on ONNX Runtime, with small models made
here whose answers are known: planted detections, a fixed projection for the embedding."""
from __future__ import annotations

import io
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from emo.cli.run import main  # noqa: E402
from emo.config import RunConfig  # noqa: E402
from emo.errors import InputError  # noqa: E402
from emo.preprocess.arcface import TEMPLATE_112, aligned_face, similarity_transform  # noqa: E402
from emo.preprocess.face_models import load_face_models  # noqa: E402
from emo.runtime.renderer import Renderer  # noqa: E402

from .media_factory import PORTRAIT, probe, voice, write_wav  # noqa: E402
from .onnx_models import Planted, arcface_model, arcface_projection, attribute_model, scrfd_model  # noqa: E402

FACE = Planted(16, (20, 15), 0, 0.9, (5, 6, 5, 7))
OVERLAPPING = Planted(16, (21, 15), 1, 0.8, (5, 6, 5, 7))  # suppressed by NMS
SMALL = Planted(32, (3, 3), 0, 0.7, (1, 1, 1, 1))
WEAK = Planted(8, (10, 10), 1, 0.3, (20, 20, 20, 20))  # under the 0.5 threshold


def face_dir(root: Path, planted=(FACE, OVERLAPPING, SMALL, WEAK), batched=False, recognition=True) -> Path:
    models = root / "face_analysis" / "models"
    models.mkdir(parents=True)
    scrfd_model(models / "scrfd_10g_bnkps.onnx", list(planted), batched=batched)
    attribute_model(models / "genderage.onnx")
    if recognition:
        arcface_model(models / "glintr100.onnx")
    return root


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("height, width", [(360, 480), (480, 360)])
def test_scrfd_decodes_planted_faces(tmp_path, batched, height, width):
    detector = load_face_models(face_dir(tmp_path, batched=batched)).detector
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    faces = detector.detect(rgb)
    scale = int(640 * min(height, width) / max(height, width)) / min(height, width) if height < width else \
        640 / height
    assert len(faces) == 2  # the overlapping and the weak detections are gone
    for face, planted in zip(faces, (FACE, SMALL), strict=True):  # largest first
        np.testing.assert_allclose(face.box, planted.box() / scale, rtol=1e-5)
        np.testing.assert_allclose(np.array(face.kps), planted.points() / scale, rtol=1e-5)
        assert face.score == pytest.approx(planted.score)
        assert face.landmarks == "scrfd"
        np.testing.assert_allclose(face.left_eye, planted.points()[0] / scale, rtol=1e-5)
        mouth = (planted.points()[3] + planted.points()[4]) / 2 / scale
        np.testing.assert_allclose(face.mouth, mouth, rtol=1e-5)
        x0, y0, x1, y1 = face.lip_box
        assert (x0, x1) == pytest.approx(tuple(planted.points()[[3, 4], 0] / scale))
        assert y0 < mouth[1] < y1


def test_similarity_transform_recovers_a_known_one():
    angle, scale, shift = math.radians(23), 1.7, np.array([12.0, -5.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = np.random.default_rng(1).uniform(0, 100, (5, 2))
    dst = src @ (scale * rot).T + shift
    np.testing.assert_allclose(similarity_transform(src, dst), np.c_[scale * rot, shift], atol=1e-9)


def _expected_embedding(face112: np.ndarray) -> np.ndarray:
    x = (face112.astype(np.float32) - 127.5) / 127.5
    pooled = x.reshape(14, 8, 14, 8, 3).mean(axis=(1, 3)).transpose(2, 0, 1)  # (h 8) (w 8) c -> c h w
    return pooled.reshape(-1) @ arcface_projection()


@pytest.mark.parametrize("inside", [False, True])
def test_arcface_on_an_aligned_face(tmp_path, inside):
    """A 112x112 image whose landmarks sit on the template is its own aligned face: the embedding is known."""
    models = face_dir(tmp_path, recognition=False) / "face_analysis" / "models"
    arcface_model(models / "w600k_r50.onnx", normalise_inside=inside)
    embedder = load_face_models(tmp_path).embedder
    assert (embedder.mean, embedder.std) == ((0.0, 1.0) if inside else (127.5, 127.5))
    rgb = np.random.default_rng(2).integers(0, 255, (112, 112, 3), dtype=np.uint8)
    face = load_face_models(tmp_path).detector._face(np.array([0, 0, 112, 112.0]), 0.9, TEMPLATE_112)
    np.testing.assert_allclose(embedder(rgb, face), _expected_embedding(rgb), rtol=1e-4, atol=1e-4)


def test_arcface_alignment_undoes_rotation_and_scale(tmp_path):
    import cv2

    embedder = load_face_models(face_dir(tmp_path)).embedder
    detector = load_face_models(tmp_path).detector
    y, x = np.mgrid[:112, :112]
    face112 = np.stack([x * 2, y * 2, (x + y)], -1).clip(0, 255).astype(np.uint8)  # smooth, so resampling is mild
    matrix = cv2.getRotationMatrix2D((56, 56), 25, 2.5)
    matrix[:, 2] += (220, 200)  # the rotated, scaled face lies wholly inside
    big = cv2.warpAffine(face112, matrix, (560, 520))
    kps = np.c_[TEMPLATE_112, np.ones(5)] @ matrix.T
    got = embedder(big, detector._face(np.array([0, 0, 400, 400.0]), 0.9, kps))
    want = _expected_embedding(face112)
    assert np.corrcoef(got, want)[0, 1] > 0.999
    np.testing.assert_allclose(aligned_face(big, kps)[8:-8, 8:-8], face112[8:-8, 8:-8], atol=6)


def test_face_dir_forms_and_roles(tmp_path):
    root = face_dir(tmp_path)
    for path in (root, root / "face_analysis", root / "face_analysis" / "models"):
        fm = load_face_models(path)
        assert {k: v.name for k, v in fm.files.items()} == {"detection": "scrfd_10g_bnkps.onnx",
                                                            "recognition": "glintr100.onnx"}


def test_face_dir_errors(tmp_path):
    with pytest.raises(InputError, match="no face-analysis ONNX models"):
        load_face_models(tmp_path)
    models = tmp_path / "a" / "models"
    models.mkdir(parents=True)
    arcface_model(models / "glintr100.onnx")
    with pytest.raises(InputError, match="no SCRFD face detector"):
        load_face_models(tmp_path / "a")
    (models / "scrfd_10g_bnkps.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(InputError, match="scrfd_10g_bnkps.onnx"):
        load_face_models(tmp_path / "a")


def test_renderer_uses_detector_and_embedding(tmp_path):
    root = face_dir(tmp_path)
    renderer = Renderer.random(face_models=root / "face_analysis")
    write_wav(tmp_path / "v.wav", voice(0.3))
    run = RunConfig(frames=4, motion_frames=2, steps=1, size=64)
    prepared = renderer.prepare(PORTRAIT, tmp_path / "v.wav", run)
    p = prepared.portrait
    assert p.faces_found == 2 and p.face.landmarks == "scrfd"
    from emo.preprocess.image import load_image

    rgb = load_image(PORTRAIT)
    face = renderer.detector.detect(rgb)[0]
    np.testing.assert_allclose(p.face_emb.numpy(), renderer.embedder(rgb, face), rtol=1e-6)
    x0, y0, x1, y1 = (round(v) for v in p.face.box)  # in crop pixels: inside the face region
    cx, cy = min(max((x0 + x1) // 2, 0), 63), min(max((y0 + y1) // 2, 0), 63)
    assert p.face_region[0, cy, cx] == 1


def _cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = main(list(args))
    return rc, err.getvalue()


FAST = ["--size", "64", "--steps", "1", "--frames-per-clip", "4", "--motion-frames", "2", "--quiet"]


def test_cli_face_models_render_and_no_face(tmp_path):
    write_wav(tmp_path / "v.wav", voice(0.3))
    out = tmp_path / "out"
    out.mkdir()
    good = face_dir(tmp_path / "good")
    rc, err = _cli("--demo", str(PORTRAIT), str(tmp_path / "v.wav"), "-o", str(out / "a.mp4"),
                   "--face-models", str(good), *FAST)
    assert rc == 0, err
    assert probe(out / "a.mp4")["frames"] == math.ceil(0.3 * 25)
    empty = face_dir(tmp_path / "empty", planted=[WEAK])
    rc, err = _cli("--demo", str(PORTRAIT), str(tmp_path / "v.wav"), "-o", str(out / "b.mp4"),
                   "--face-models", str(empty), *FAST)
    assert rc == 2 and err.startswith("emo-run: error: no face found"), err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]


def test_model_dir_brings_its_face_and_vocal_models(tmp_path):
    """--models DIR uses DIR/face_analysis on its own, and --separate-vocals without a value takes
    DIR/audio_separator/Kim_Vocal_2.onnx."""
    from emo.checkpoints.model_dir import random_models, save_model_dir

    from .test_vocals import separator_dir, tone

    root = save_model_dir(random_models(seed=5), tmp_path / "pretrained_models")
    face_dir(root)
    separator_dir(root / "audio_separator", 160)
    assert (root / "audio_separator" / "Kim_Vocal_2.onnx").is_file()
    write_wav(tmp_path / "song.wav", (tone(300, 0.4) + tone(9000, 0.4))[None], 44100)
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _cli(str(PORTRAIT), str(tmp_path / "song.wav"), "-o", str(out / "a.mp4"), "--models", str(root),
                   "--separate-vocals", *FAST[:-1])
    assert rc == 0, err
    assert "2 faces found, used the largest" in err  # the planted detector's two faces: its models were used
    assert probe(out / "a.mp4")["frames"] == math.ceil(0.4 * 25)
