"""Inputs: audio in any container / rate / channel count, images in common formats, with clear refusals."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emo.errors import InputError
from emo.media.audio import load_audio
from emo.media.mp4 import Mp4Writer
from emo.preprocess.face import HaarFaceDetector
from emo.preprocess.image import load_image
from emo.preprocess.portrait import prepare_portrait

from .media_factory import no_face, portrait, probe, two_faces, voice, write_audio, write_video_with_audio, write_wav


@pytest.mark.parametrize("name,codec,fmt,rate,channels", [
    ("v.wav", "pcm_s16le", "wav", 44100, 2), ("v.wav", "pcm_f32le", "wav", 8000, 1),
    ("v.mp3", "libmp3lame", None, 22050, 2), ("v.m4a", "aac", "mp4", 48000, 2), ("v.flac", "flac", None, 32000, 1),
    ("v.ogg", "libopus", "ogg", 48000, 2)])
def test_any_container_rate_and_channels_become_mono_16k(tmp_path, name, codec, fmt, rate, channels):
    path = write_audio(tmp_path / name, voice(1.0, rate, channels), rate, codec, fmt)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.shape[0] / 16000 - 1.0) < 0.03
    assert 0.05 < np.abs(x).max() < 1.0


def test_audio_track_of_a_video(tmp_path):
    x = load_audio(write_video_with_audio(tmp_path / "clip.mp4", 1.2))
    assert abs(x.shape[0] / 16000 - 1.2) < 0.03


@pytest.mark.parametrize("make,match", [
    (lambda p: p, "not found"),
    (lambda p: (p.write_bytes(np.random.default_rng(0).bytes(5000)), p)[1], "not a media file|no audio|corrupt"),
    (lambda p: (p.write_text("hello, I am text"), p)[1], "not a media file|no audio|corrupt"),
    (lambda p: empty_wav(p), "no samples"),
    (lambda p: write_wav(p, np.zeros((1, 16000), np.float32)), "silent"),
    (lambda p: write_wav(p, np.full((1, 16000), np.nan, np.float32), codec="pcm_f32le"), "NaN"),
])
def test_unusable_audio_is_refused(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        load_audio(make(tmp_path / "a.wav"))


def empty_wav(path):
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return path


def test_image_without_audio_track_is_refused(tmp_path):
    portrait().save(tmp_path / "p.png")
    with pytest.raises(InputError, match="not a media file|no audio track"):
        load_audio(tmp_path / "p.png")


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGBA"), ("JPEG", "L"), ("WEBP", "RGB"), ("PNG", "P")])
def test_image_formats_and_modes(tmp_path, fmt, mode):
    path = tmp_path / f"p.{fmt.lower()}"
    portrait().convert(mode).save(path, fmt)
    rgb = load_image(path)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8


def test_exif_rotation_is_applied(tmp_path):
    im = portrait().resize((400, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (400, 300, 3)


@pytest.mark.parametrize("make,match", [
    (lambda p: p, "not found"),
    (lambda p: (p.write_text("not an image"), p)[1], "not an image"),
    (lambda p: (p.write_bytes(np.random.default_rng(1).bytes(3000)), p)[1], "not an image"),
])
def test_bad_images_are_refused(tmp_path, make, match):
    with pytest.raises(InputError, match=match):
        load_image(make(tmp_path / "x.jpg"))


def test_truncated_image_is_refused(tmp_path):
    portrait().save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")


def test_portrait_crop_and_masks():
    p = prepare_portrait(np.asarray(portrait()), size=128, latent=16)
    assert p.pixels.shape == (3, 128, 128) and -1 <= p.pixels.min() and p.pixels.max() <= 1
    assert [m.shape for m in p.masks] == [(3, 256), (3, 64), (3, 16), (3, 4)]
    full, face, lip = p.masks[0].view(3, 16, 16)
    assert full[0, 0] > 0.9 and full[8, 8] < 0.1  # background high at the corner, low on the face
    assert lip[12, 8] > face[12, 8]  # lips below the face centre
    x0, y0, x1, y1 = p.face.box
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
    assert p.face_region.sum() > 0 and p.face_emb.shape == (512,)


def test_several_faces_largest_first():
    faces = HaarFaceDetector().detect(np.asarray(two_faces()))
    assert len(faces) >= 2
    assert faces[0].box[2] <= 512  # the big copy (left) comes first


def test_no_face_is_refused():
    with pytest.raises(InputError, match="no face"):
        prepare_portrait(np.asarray(no_face()), size=64, latent=8)


def test_mp4_writer_is_atomic(tmp_path):
    audio = write_wav(tmp_path / "a.wav", voice(0.4))
    out = tmp_path / "o.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, 25, 64, audio) as w:
            w.write(np.zeros((5, 64, 64, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [tmp_path / "a.wav"]
    with Mp4Writer(out, 25, 64, audio) as w:
        w.write(np.zeros((10, 64, 64, 3), np.uint8))
    info = probe(out)
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"], info["frames"]) == ("h264", "yuv420p", "aac", 10)


def test_opencv_without_haar_cascades_is_named_with_the_fix(monkeypatch):
    """OpenCV 5 ships no CascadeClassifier: the fallback detector says so and how to go on, instead of an
    AttributeError from deep inside."""
    import cv2

    from emo.preprocess.face import HaarFaceDetector

    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(RuntimeError, match=r"has no Haar cascades: install opencv-python-headless < 5, or give "
                                           r"InsightFace models with --face-models DIR"):
        HaarFaceDetector().detect(np.zeros((64, 64, 3), np.uint8))


def test_load_audio_stops_at_max_seconds(tmp_path):
    from emo.media.audio import AudioTooLong

    write_wav(tmp_path / "v.wav", voice(2.0))
    assert load_audio(tmp_path / "v.wav", max_seconds=2.5).shape == (32000,)
    with pytest.raises(AudioTooLong, match=r"longer than 1\.5 s"):
        load_audio(tmp_path / "v.wav", max_seconds=1.5)


@pytest.mark.parametrize("rate,aac", [(12_345, 16_000), (4_000, 7_350), (192_000, 96_000), (44_100, 44_100)])
def test_every_mp4_writes_the_voice_at_a_rate_aac_has(tmp_path, rate, aac):
    from emo.media.aac import aac_track

    write_wav(tmp_path / "v.wav", voice(0.5, rate), rate)
    assert aac_track(tmp_path / "v.wav").rate == aac
    with Mp4Writer(tmp_path / "o.mp4", 25, 64, tmp_path / "v.wav") as w:
        w.write(np.zeros((13, 64, 64, 3), np.uint8))
    assert probe(tmp_path / "o.mp4")["audio_codec"] == "aac"
