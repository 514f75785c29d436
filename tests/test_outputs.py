"""Outputs never destroy anything: devices, FIFOs and sockets refused, symlinks kept, inputs never overwritten, a
full disk leaves nothing behind, the AAC track always encodable, emo-bench writes where it is run."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from emo.cli.bench import main as bench_main

from .cli_helpers import FAST, assert_refused, run_cli
from .media_factory import probe, voice, write_wav


@pytest.fixture
def media(tmp_path, speech_media):
    return speech_media(0.3, into=tmp_path)  # the tests add files and links to it


def _args(media: Path, output: Path, *extra: str, image: str = "face.png", audio: str = "voice.wav") -> list[str]:
    return ["--demo", str(media / image), str(media / audio), "-o", str(output), *FAST, *extra]


def _special(kind: str, path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()  # the socket file stays
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("option", ["-o", "--frames-out"])
@pytest.mark.parametrize("kind", ["fifo", "socket", "directory"])
def test_non_regular_output_is_refused_and_kept(tmp_path, media, kind, option):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    special = _special(kind, tmp_path / f"special.{'npy' if option == '--frames-out' else 'mp4'}")
    mode = os.stat(special).st_mode
    output = special if option == "-o" else out_dir / "o.mp4"
    extra = ["--frames-out", str(special)] if option == "--frames-out" else []
    line = assert_refused(tmp_path, _args(media, output, *extra), "regular file" if kind != "directory" else
                          "directory", code=2)
    assert option in line
    assert os.stat(special).st_mode == mode  # still the FIFO / socket / directory it was
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["media", "out", special.name])


def test_symlinked_outputs_write_their_targets_and_keep_the_links(tmp_path, media):
    real = tmp_path / "real"
    real.mkdir()
    (real / "video.mp4").write_bytes(b"old video")
    links = tmp_path / "out"
    links.mkdir()
    (links / "o.mp4").symlink_to(real / "video.mp4")
    (links / "f.npy").symlink_to(real / "frames.npy")  # dangling: the target is made
    rc, err, _ = run_cli(tmp_path, *_args(media, links / "o.mp4", "--frames-out", str(links / "f.npy")))
    assert rc == 0, err
    for link, target in (("o.mp4", "video.mp4"), ("f.npy", "frames.npy")):
        assert (links / link).is_symlink() and os.readlink(links / link) == str(real / target)
    assert probe(real / "video.mp4")["frames"] == 8
    assert np.load(real / "frames.npy").shape == (8, 64, 64, 3)
    assert sorted(p.name for p in real.iterdir()) == ["frames.npy", "video.mp4"]  # no temporary file left


def _overlap_cases(media: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    (media / "link.wav").symlink_to(media / "voice.wav")
    os.link(media / "face.png", media / "hard.png")
    dotted = media / "." / "voice.wav"
    return {
        "-o is the image": (_args(media, media / "face.png"), "the input image"),
        "-o is the audio through ./": (_args(media, dotted), "the input audio"),
        "-o is the audio through a symlink": (_args(media, media / "link.wav"), "the input audio"),
        "-o is a hard link of the image": (_args(media, media / "hard.png"), "the input image"),
        "--frames-out is the audio": (_args(media, out, "--frames-out", str(media / "voice.wav")), "the input audio"),
        "--frames-out is -o": (_args(media, out, "--frames-out", str(out.parent / "." / out.name)), "the output -o"),
    }


@pytest.mark.parametrize("case", ["-o is the image", "-o is the audio through ./", "-o is the audio through a symlink",
                                  "-o is a hard link of the image", "--frames-out is the audio", "--frames-out is -o"])
def test_outputs_that_are_inputs_are_refused(tmp_path, media, case):
    out = tmp_path / "out" / "o.mp4"
    args, match = _overlap_cases(media, out)[case]
    before = {p.name: p.read_bytes() for p in media.iterdir()}
    assert_refused(tmp_path, args, match, code=2)
    assert {p.name: p.read_bytes() for p in media.iterdir()} == before


@pytest.mark.parametrize("rate,written", [(192000, 96000), (12345, 16000), (44100, 44100)])
def test_any_sample_rate_gets_an_aac_track(tmp_path, media, rate, written):
    """AAC has no 192 kHz or 12,345 Hz: the track is resampled to the next rate it has; standard rates are kept."""
    write_wav(media / "odd.wav", voice(0.3, rate), rate)
    out = tmp_path / "out" / "o.mp4"
    rc, err, left = run_cli(tmp_path, *_args(media, out, audio="odd.wav"))
    assert rc == 0, err
    assert left == ["o.mp4"]
    with av.open(str(out)) as c:
        assert c.streams.audio[0].rate == written
    assert abs(probe(out)["audio_seconds"] - 0.3) < 0.05


FSIZE_RUN = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # writes past `limit` bytes fail with EFBIG
from emo.cli.run import main
sys.exit(main(sys.argv[2:]))
"""


def _run_with_file_limit(limit: int, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FSIZE_RUN, str(limit), *args], capture_output=True, text=True,
                          timeout=600)


def test_file_size_limit_while_finishing_the_video_leaves_nothing(tmp_path, media):
    """The video is cut short where its index (moov) would be written, as on a full disk: one line, exit 2, no
    corrupt out.mp4 (a file without an index) under the final name, no temporary file."""
    out = tmp_path / "out"
    rc, err, _ = run_cli(tmp_path, *_args(media, out / "full.mp4"))
    assert rc == 0, err
    size = (out / "full.mp4").stat().st_size
    (out / "full.mp4").unlink()
    r = _run_with_file_limit(size - 64, _args(media, out / "o.mp4"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "file too large" in lines[0], r.stderr
    assert list(out.iterdir()) == []


def test_frames_out_larger_than_the_disk_fails_before_rendering(tmp_path, media):
    """The raw frames (8 x 64 x 64 x 3 float32 = 393 kB) do not fit: refused up front, not SIGBUS mid-render."""
    out = tmp_path / "out"
    out.mkdir()
    r = _run_with_file_limit(200_000, _args(media, out / "o.mp4", "--frames-out", str(out / "f.npy")))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "f.npy" in lines[0] and "file too large" in lines[0], r.stderr
    assert list(out.iterdir()) == []


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_tmpfs_is_a_one_line_input_error(tmp_path, media):
    """A real ENOSPC: a 128 kB tmpfs holds the video but not the raw frames. In a child process: writing through a
    memory map there kills the process with SIGBUS."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "128k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = subprocess.run([sys.executable, "-m", "emo.cli.run",
                            *_args(media, disk / "o.mp4", "--frames-out", str(disk / "f.npy"))],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "no space left on the device" in lines[0], r.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_bench_writes_its_json_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = bench_main(["--backends", "torch", "--device", "cpu", "--clips", "1", "--warmup", "0", "--steps", "1",
                     "--size", "64", "--frames", "4"])
    assert rc == 0
    written = [p for p in tmp_path.iterdir()]
    assert len(written) == 1 and written[0].name.endswith("-bench.json")
    assert json.loads(written[0].read_text())["results"]["torch"]["frames"] == 4
