"""One Renderer shared by threads: preprocessing and renders from 4 threads equal the serial ones bit for bit, and
the documented usage cannot deadlock (prepare() inside a stream() loop on the same thread)."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageOps

from emo.config import RunConfig
from emo.preprocess.face import HaarFaceDetector
from emo.runtime.renderer import Renderer

from .media_factory import portrait, two_faces, voice, write_wav

RUN = RunConfig(frames=4, motion_frames=2, steps=1, size=64, fps=25)
THREADS = 4


def _images() -> list[Image.Image]:
    p = portrait()
    return [p, ImageOps.mirror(p), p.resize((384, 384)), two_faces(), p.rotate(8, fillcolor=(90, 90, 90)),
            ImageOps.pad(p, (700, 512), color=(200, 180, 160))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("threads")
    pairs = []
    for i, image in enumerate(_images()):
        image.save(d / f"face{i}.png")
        write_wav(d / f"voice{i}.wav", voice(0.12 + 0.04 * (i % 3)))  # 3 to 5 frames: one or two clips
        pairs.append((d / f"face{i}.png", d / f"voice{i}.wav"))
    return pairs


def _concurrently(fn, items: list) -> list:
    """fn over items from THREADS threads started together (a barrier), results in item order."""
    barrier = threading.Barrier(THREADS)

    def worker(chunk: list) -> list:
        barrier.wait()
        return [fn(x) for x in chunk]

    chunks = [items[i::THREADS] for i in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(worker, chunks))
    out = [None] * len(items)
    for i, results in enumerate(done):
        out[i::THREADS] = results
    return out


def test_haar_detector_shared_by_threads_matches_serial():
    detector = HaarFaceDetector()
    images = [np.asarray(im) for im in _images()] * 4
    serial = [[f.box for f in detector.detect(im)] for im in images]
    threaded = _concurrently(lambda im: [f.box for f in detector.detect(im)], images)
    assert threaded == serial


def test_renders_from_threads_equal_serial_renders(tmp_path, inputs):
    renderer = Renderer.random(seed=3, device="cpu")
    jobs = [(k, image, audio, seed) for k, ((image, audio), seed) in enumerate(zip(inputs * 2, range(12), strict=True))]

    def render(job, where: str) -> np.ndarray:
        k, image, audio, seed = job
        out = tmp_path / where
        out.mkdir(exist_ok=True)
        renderer.render(image, audio, out / f"{k}.mp4", RUN, seed=seed, frames_out=out / f"{k}.npy")
        return np.load(out / f"{k}.npy")

    serial = [render(job, "serial") for job in jobs]
    threaded = _concurrently(lambda job: render(job, "threads"), jobs)
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in serial}) == len(jobs)  # every job really differs


def _in_thread(fn, timeout: float = 300) -> object:
    """Run fn in a daemon thread; fail (instead of hanging the test run) if it has not ended by `timeout`."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the test thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "deadlock: the call did not return"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_prepare_inside_a_stream_loop_does_not_deadlock(inputs):
    renderer = Renderer.random(seed=3, device="cpu")

    def stream_and_prepare_the_next() -> int:
        prepared = renderer.prepare(*inputs[2], RUN)
        clips = 0
        for _ in renderer.stream(prepared, RUN, seed=1):
            renderer.prepare(*inputs[0], RUN)  # the next video's inputs, while this one streams
            clips += 1
        return clips

    assert _in_thread(stream_and_prepare_the_next) == 2  # 5 frames: two clips


def test_second_stream_on_the_same_thread_is_refused_not_a_deadlock(inputs):
    renderer = Renderer.random(seed=3, device="cpu")

    def nested() -> None:
        prepared = renderer.prepare(*inputs[0], RUN)
        for _ in renderer.stream(prepared, RUN, seed=1):
            next(renderer.stream(prepared, RUN, seed=2))

    with pytest.raises(RuntimeError, match="still consuming a stream"):
        _in_thread(nested)
    prepared = renderer.prepare(*inputs[2], RUN)  # and the renderer is free again afterwards
    assert len(_in_thread(lambda: list(renderer.stream(prepared, RUN, seed=1)))) == 2
