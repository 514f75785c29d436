"""emo-run through its real command line: the demo MP4, and every kind of bad input refused cleanly."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emo.checkpoints.model_dir import random_models, save_model_dir
from emo.media.audio import load_audio

from .cli_helpers import FAST, assert_refused, run_cli
from .media_factory import PORTRAIT, SPEECH, no_face, probe, two_faces, voice, write_wav


def test_demo_command_writes_h264_aac_mp4(tmp_path):
    """The README's first command, run as the installed console script."""
    out = tmp_path / "demo.mp4"
    r = subprocess.run(["emo-run", "--demo", "-o", str(out)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    info = probe(out)
    assert (info["video_codec"], info["pix_fmt"], info["audio_codec"]) == ("h264", "yuv420p", "aac")
    seconds = load_audio(SPEECH).shape[0] / 16000
    assert info["frames"] == math.ceil(seconds * 25)
    assert abs(info["frames"] / info["fps"] - seconds) <= 1 / 25
    assert [p.name for p in tmp_path.iterdir()] == ["demo.mp4"]


@pytest.fixture
def media(tmp_path, speech_media):
    return speech_media(0.5, into=tmp_path)  # the tests add files to it


def _run_args(tmp_path, image, audio, *extra):
    return ["--demo", str(image), str(audio), "-o", str(tmp_path / "out" / "o.mp4"), *FAST, *extra]


def test_good_inputs_render(tmp_path, media):
    rc, err, left = run_cli(tmp_path, *_run_args(tmp_path, media / "face.png", media / "voice.wav"))
    assert rc == 0, err
    assert left == ["o.mp4"]
    assert probe(tmp_path / "out" / "o.mp4")["frames"] == math.ceil(0.5 * 25)


BAD_IMAGES = {
    "missing": (lambda d: d / "nope.png", "not found"),
    "not an image": (lambda d: (d.joinpath("t.png").write_text("text"), d / "t.png")[1], "not an image"),
    "corrupt": (lambda d: (d.joinpath("c.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(500)), d / "c.png")[1],
                "image"),
    "truncated": (lambda d: (d.joinpath("t.jpg").write_bytes(PORTRAIT.read_bytes()[:20000]), d / "t.jpg")[1],
                  "truncated"),
    "no face": (lambda d: (no_face().save(d / "n.png"), d / "n.png")[1], "no face"),
}


@pytest.mark.parametrize("case", BAD_IMAGES, ids=list(BAD_IMAGES))
def test_bad_image(tmp_path, media, case):
    make, match = BAD_IMAGES[case]
    assert_refused(tmp_path, _run_args(tmp_path, make(media), media / "voice.wav"), match)


def _nan_wav(d):
    x = voice(0.5)
    x[0, 100:200] = np.nan
    return write_wav(d / "nan.wav", x, codec="pcm_f32le")


def _empty_wav(d):
    import wave

    with wave.open(str(d / "empty.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return d / "empty.wav"


BAD_AUDIO = {
    "missing": (lambda d: d / "nope.wav", "not found"),
    "corrupt": (lambda d: (d.joinpath("c.wav").write_bytes(b"RIFF" + os.urandom(800)), d / "c.wav")[1], "audio"),
    "not audio": (lambda d: d / "face.png", "audio"),
    "empty": (_empty_wav, "no samples"),
    "shorter than a frame": (lambda d: write_wav(d / "s.wav", voice(0.01)), "shorter than one video frame"),
    "silence": (lambda d: write_wav(d / "z.wav", np.zeros((1, 16000), np.float32)), "silent"),
    "nan": (_nan_wav, "NaN"),
    "inf": (lambda d: write_wav(d / "i.wav", np.full((1, 8000), np.inf, np.float32), codec="pcm_f32le"), "infinite"),
}


@pytest.mark.parametrize("case", BAD_AUDIO, ids=list(BAD_AUDIO))
def test_bad_audio(tmp_path, media, case):
    make, match = BAD_AUDIO[case]
    assert_refused(tmp_path, _run_args(tmp_path, media / "face.png", make(media)), match)


BAD_OPTIONS = {
    "steps": (["--steps", "0"], "steps must be in [1, 1000]"),
    "fps": (["--fps", "0"], "fps must be in [1, 120]"),
    "size": (["--size", "100"], "multiple of 64"),
    "guidance": (["--guidance-scale", "0.5"], "guidance scale must be in [1, 30.0]"),
    "frames": (["--frames-per-clip", "40"], "frames + motion frames"),
    "fp16 on cpu": (["--dtype", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_out_of_range_options(tmp_path, media, case):
    extra, match = BAD_OPTIONS[case]
    assert_refused(tmp_path, _run_args(tmp_path, media / "face.png", media / "voice.wav", *extra), match)


TOO_LARGE = {
    "steps": (["--steps", "1001"], "steps must be in [1, 1000]"),
    "guidance": (["--guidance-scale", "1e308"], "guidance scale must be in [1, 30.0]"),
    "fps": (["--fps", "121"], "fps must be in [1, 120]"),
    "size": (["--size", "8192"], "size must be in [64, 4096]"),
    "frames": (["--frames-per-clip", "257"], "frames per clip must be in [1, 256]"),
    "motion frames": (["--motion-frames", "1000"], "motion frames must be <= frames per clip"),
    "seed": (["--seed", str(2**64)], "seed must be in"),
    "cache interval": (["--cache-interval", "1000000"], "cache interval must be in"),
    "first clip frames": (["--first-clip-frames", "1000000"], "first clip frames must be in"),
    "face expand ratio": (["--face-expand-ratio", "1e308"], "face expand ratio must be in"),
}


@pytest.mark.parametrize("case", TOO_LARGE, ids=list(TOO_LARGE))
def test_absurdly_large_options_exit_2(tmp_path, media, case):
    extra, match = TOO_LARGE[case]
    assert_refused(tmp_path, _run_args(tmp_path, media / "face.png", media / "voice.wav", *extra), match, code=2)


def test_output_directory_missing(tmp_path, media):
    args = _run_args(tmp_path, media / "face.png", media / "voice.wav")
    args[args.index("-o") + 1] = str(tmp_path / "no" / "such" / "dir" / "o.mp4")
    assert_refused(tmp_path, args, "output directory does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_output_directory_not_writable(tmp_path, media):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    args = _run_args(tmp_path, media / "face.png", media / "voice.wav")
    args[args.index("-o") + 1] = str(ro / "o.mp4")
    assert_refused(tmp_path, args, "not writable")


def test_several_faces_takes_the_largest_and_says_so(tmp_path, media):
    two_faces().save(media / "two.png")
    args = _run_args(tmp_path, media / "two.png", media / "voice.wav")
    args.remove("--quiet")
    rc, err, left = run_cli(tmp_path, *args)
    assert rc == 0, err
    assert "faces found, used the largest" in err
    assert left == ["o.mp4"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_model_dir(random_models(seed=5), tmp_path_factory.mktemp("models"))


def _model_args(tmp_path, media, models):
    return [str(media / "face.png"), str(media / "voice.wav"), "-o", str(tmp_path / "out" / "o.mp4"),
            "--models", str(models), *FAST]


def test_model_dir_renders(tmp_path, media, tiny_model_dir):
    rc, err, left = run_cli(tmp_path, *_model_args(tmp_path, media, tiny_model_dir))
    assert rc == 0, err
    assert left == ["o.mp4"]


def _copy_dir(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage,match", [
    (lambda m: __import__("shutil").rmtree(m / "sd-vae-ft-mse"), "sd-vae-ft-mse"),
    (lambda m: (m / "hallo" / "net.pth").unlink(), "hallo/net.pth"),
    (lambda m: __import__("shutil").rmtree(m / "wav2vec"), "wav2vec"),
    (lambda m: torch.save({**torch.load(m / "hallo" / "net.pth"),
                           "denoising_unet.conv_in.weight": torch.zeros(3, 4, 3, 3)}, m / "hallo" / "net.pth"),
     "denoising_unet.conv_in.weight"),
    (lambda m: (m / "hallo" / "net.pth").write_bytes(b"garbage"), "cannot read checkpoint"),
])
def test_broken_model_dir_is_named(tmp_path, media, tiny_model_dir, damage, match):
    models = _copy_dir(tiny_model_dir, tmp_path / "models")
    damage(models)
    assert_refused(tmp_path, _model_args(tmp_path, media, models), match)


@pytest.mark.parametrize("sig,code,what", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "SIGTERM received"),
                                           (signal.SIGHUP, 129, "SIGHUP received")], ids=["INT", "TERM", "HUP"])
def test_signals_leave_no_partial_file(tmp_path, media, sig, code, what):
    """Ctrl-C, SIGTERM (timeout, docker stop) or SIGHUP while clips are being encoded: exit 128 + signal, one line,
    nothing left in the output directory (neither the video's nor the raw frames' temporary file)."""
    write_wav(media / "long.wav", voice(30.0))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "emo.cli.run", "--demo", str(media / "face.png"),
                             str(media / "long.wav"), "-o", str(out_dir / "o.mp4"), "--frames-out",
                             str(out_dir / "f.npy"), *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out_dir.iterdir())) < 2 and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and what in lines[0] and "no output written" in lines[0], err
    assert list(out_dir.iterdir()) == []
