"""Checking a render request before it is queued: the form's settings and both uploads, with emo-run's own code.

The settings go through `RunOptions`, as emo-run's do (same defaults, same messages), and the uploads through
`decode_inputs`, the part of Renderer.prepare that runs before the model: decoded by content (never by file name
or extension), the face found with the replicas' detector, the audio decoded and measured. Messages name the
upload ("uploaded image"), never a server path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..config import ModelConfig, RunConfig, RunOptions, parse_interval
from ..errors import InputError
from ..validation import DEFAULT_SEED, check_seed
from .budget import Cost, check_budget, render_cost
from .errors import TooLarge
from .settings import Limits

CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckedInputs:
    run: RunConfig
    seed: int
    image: bytes
    audio: bytes
    cost: Cost


FORM_FIELDS = {"speed": "speed", "steps": "steps", "guidance_scale": "guidance_scale", "fps": "fps", "size": "size",
               "frames_per_clip": "frames", "motion_frames": "motion_frames", "sampler": "sampler",
               "guidance_interval": "guidance_interval", "cache_interval": "cache_interval",
               "first_clip_frames": "first_clip_frames"}  # form field -> RunOptions field


def run_options(form: dict, base: RunConfig, model: ModelConfig | None = None) -> tuple[RunConfig, int]:
    """Form fields (None: not given) -> the model's preset settings with them applied, checked as emo-run checks
    them, and the seed."""
    unknown = set(form) - set(FORM_FIELDS) - {"seed"}
    if unknown:
        raise InputError(f"unknown setting {sorted(unknown)[0]!r}")
    options = {FORM_FIELDS[k]: v for k, v in form.items() if k != "seed" and v is not None}
    if "guidance_interval" in options:
        options["guidance_interval"] = parse_interval(options["guidance_interval"])
    run = RunOptions(**options).apply(base, model)
    seed = DEFAULT_SEED if form.get("seed") is None else form["seed"]
    check_seed(seed)
    return run, seed


def save_upload(src: BinaryIO, dest: Path, budget: int, what: str) -> int:
    """Copy an upload into the private dir, refusing it past `budget` bytes -> its size."""
    size = 0
    with open(dest, "wb") as out:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > budget:
                raise TooLarge(f"{what} is larger than this server accepts ({budget // 2**20} MiB)")
            out.write(chunk)
    if size == 0:
        raise InputError(f"{what} is empty")
    return size


def _image_pixels(path: Path, limits: Limits) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError:
        raise TooLarge(f"uploaded image is larger than {limits.max_image_pixels} pixels") from None
    except Exception:  # not an image at all: decode_inputs says so in emo-run's words
        return
    if w * h > limits.max_image_pixels:
        raise TooLarge(f"uploaded image is {w}x{h}, larger than {limits.max_image_pixels} pixels")


def named(message: str, path: Path, what: str) -> str:
    """An error message about `path` (a file called image or audio) with the upload's name in its place."""
    kind = path.name
    return message.replace(f"{kind} {path}", what).replace(str(path), what)


def check_inputs(d: Path, run: RunConfig, seed: int, model: ModelConfig, detector, face_expand_ratio: float,
                 limits: Limits, frames_out: bool = False) -> CheckedInputs:
    """Check d/image and d/audio (saved by save_upload) for a render with `run` -> what a replica needs."""
    from ..media.audio import AudioTooLong, load_audio
    from ..runtime.renderer import decode_inputs

    if run.size > limits.max_size:
        raise TooLarge(f"size must be <= {limits.max_size} on this server (got {run.size})")
    image, audio = d / "image", d / "audio"
    _image_pixels(image, limits)
    try:  # the voice's length first, decoding no further than the limit
        load_audio(audio, run.sample_rate, max_seconds=limits.max_audio_seconds)
        _, samples = decode_inputs(image, audio, run, model, detector, face_expand_ratio=face_expand_ratio)
    except AudioTooLong:
        raise TooLarge(f"uploaded audio is longer than this server renders (at most "
                       f"{limits.max_audio_seconds:g} s)") from None
    except InputError as e:
        message = named(named(str(e), image, "uploaded image"), audio, "uploaded audio")
        raise InputError(message.replace(str(d), "upload")) from None
    cost = render_cost(run, samples.shape[0] / run.sample_rate, frames_out)
    check_budget(cost, limits)
    return CheckedInputs(run, seed, image.read_bytes(), audio.read_bytes(), cost)
