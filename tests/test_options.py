"""Every emo-run option checked before any work (finite, in range, consistent; exit 2), the backend and device
choice, and images that used to pass as something else: decompression bombs, 16-bit greyscale, Haar's phantoms."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from emo.preprocess.face import HaarFaceDetector
from emo.preprocess.image import load_image
from emo.preprocess.portrait import prepare_portrait

from .cli_helpers import FAST, assert_refused, run_cli
from .media_factory import portrait


@pytest.fixture
def media(tmp_path, speech_media):
    return speech_media(0.3, into=tmp_path)  # the tests add files to it


def _args(tmp_path, media, *extra: str, image: str = "face.png") -> list[str]:
    return ["--demo", str(media / image), str(media / "voice.wav"), "-o", str(tmp_path / "out" / "o.mp4"), *FAST,
            *extra]


BAD = {
    "guidance nan": (["--guidance-scale", "nan"], "guidance scale must be a finite number"),
    "guidance inf": (["--guidance-scale", "inf"], "guidance scale must be a finite number"),
    "face expand negative": (["--face-expand-ratio", "-5"], "face expand ratio must be in"),
    "face expand nan": (["--face-expand-ratio", "nan"], "face expand ratio must be a finite number"),
    "motion frames > frames": (["--motion-frames", "8", "--frames-per-clip", "2"],
                               "motion frames must be <= frames per clip"),
    "steps 1001": (["--steps", "1001"], "steps must be in [1, 1000]"),
    "seed 2**64": (["--seed", str(2**64)], "seed must be in"),
    "seed negative": (["--seed", "-1"], "seed must be in"),
    "fps 1000": (["--fps", "1000"], "fps must be in [1, 120]"),
    "unknown device": (["--device", "tpu"], "unknown device"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_option_is_an_input_error(tmp_path, media, case):
    extra, match = BAD[case]
    assert_refused(tmp_path, _args(tmp_path, media, *extra), match, code=2)


def _png_claiming(path, width: int, height: int):
    """A valid 1x1 PNG whose header claims width x height: Pillow reads only the header before refusing it."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_an_input_error(tmp_path, media):
    _png_claiming(media / "bomb.png", 40000, 40000)  # 1.6 G pixels declared in a ~70-byte file
    assert_refused(tmp_path, _args(tmp_path, media, image="bomb.png"), "too large to decode safely", code=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer without a GPU")
@pytest.mark.parametrize("extra", [["--device", "cuda"], ["--device", "cuda:1"],
                                   ["--device", "cuda", "--dtype", "fp32"], ["--device", "cuda", "--backend", "torch"]],
                         ids=["cuda", "cuda1", "fp32", "torch"])
def test_cuda_without_a_gpu_says_so(tmp_path, media, extra):
    line = assert_refused(tmp_path, _args(tmp_path, media, *extra), "no CUDA GPU is available", code=2)
    assert "torch-fast" not in line


@pytest.mark.parametrize("argv,backend", [
    (["--device", "cuda", "--dtype", "fp32"], "torch"),
    (["--device", "cuda"], "torch-fast"),
    (["--device", "cuda:1", "--dtype", "bf16"], "torch-fast"),
    (["--device", "cpu"], "torch"),
    (["--engine-dir", "e"], "onnxruntime"),
])
def test_auto_backend_picks_torch_fast_only_for_half_precision_on_cuda(argv, backend):
    from emo.cli.run import _parser, renderer_spec

    assert renderer_spec(_parser().parse_args(["--demo", "-o", "o.mp4", *argv])).resolved_backend() == backend


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp32_on_cuda_renders_with_eager_torch(tmp_path, media):
    rc, err, left = run_cli(tmp_path, *_args(tmp_path, media, "--device", "cuda", "--dtype", "fp32"))
    assert rc == 0, err
    assert left == ["o.mp4"]


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    grey = np.asarray(portrait().convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # full 16-bit range
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = load_image(tmp_path / "g16.png")
    assert rgb.shape == (*grey.shape, 3)
    assert np.abs(rgb[..., 0].astype(int) - grey).max() <= 1
    face = prepare_portrait(rgb, size=64, latent=8)  # a face is found in it (all white: "no face found")
    assert face.faces_found == 1


def _one_face_on_texture() -> np.ndarray:
    """A portrait on a seeded texture in which OpenCV's frontal-face cascade also fires on a patch a third of the
    face's size (a "second face" that is not one)."""
    rng = np.random.default_rng(8)
    canvas = cv2.resize(rng.integers(0, 256, (100, 125, 3)).astype(np.uint8), (1000, 800),
                        interpolation=cv2.INTER_CUBIC)
    canvas[100:700, 0:600] = np.asarray(portrait().crop((96, 0, 352, 256)).resize((600, 600)))
    return canvas


def test_haar_drops_detections_much_smaller_than_the_face():
    image = _one_face_on_texture()
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    raw = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(66, 66))
    assert len(raw) == 2  # the cascade itself sees two
    faces = HaarFaceDetector().detect(image)
    assert len(faces) == 1 and faces[0].box[0] < 600  # the portrait, not the texture
    assert prepare_portrait(image, size=64, latent=8).faces_found == 1
