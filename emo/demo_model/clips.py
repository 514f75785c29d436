"""Talking clips: an identity speaking a voice, framed as the renderer frames its reference, with the truth of
every frame (mouth openness, blink, head pose).

The reference is the identity at rest (mouth closed, eyes open, rest pose); the face is found in it by the
renderer's own detector and the clip is cropped and resized exactly as `prepare_portrait` crops the reference, so
training sees what inference sees. The mouth opens with the voice's loudness envelope (`openness_from_loudness`).
Identities whose detected face is not the drawn one (Haar cascades fire on textures) are skipped, by rule, so the
split is the same on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..preprocess.face import Face, HaarFaceDetector
from ..preprocess.portrait import square_crop
from ..quality.loudness import loudness_envelope, speech_level
from .faces import Identity, Pose, make_identity
from .voices import SAMPLE_RATE, synth_voice

CROP_SCALE = 2.0  # the renderer's default crop around the face
TRAIN_IDENTITIES = range(0, 1000)  # seed 0 is the demo portrait itself
HELD_OUT_IDENTITIES = range(1000, 2000)
TRAIN_VOICES = range(0, 500_000)
HELD_OUT_VOICES = range(500_000, 1_000_000)


@dataclass
class TalkingClip:
    frames: np.ndarray  # (T, S, S, 3) uint8 in the reference's crop
    audio: np.ndarray  # (samples,) float32 at SAMPLE_RATE
    openness: np.ndarray  # (T,) mouth openness in [0, 1]
    blink: np.ndarray  # (T,) eyelid closure in [0, 1]
    poses: np.ndarray  # (T, 4) dx, dy (pixels of the source image), angle (degrees), scale
    reference: np.ndarray  # (H, W, 3) uint8: the full reference image (identity at rest)
    face: Face  # the face found in the reference, in its pixels
    crop: tuple[int, int, int]  # left, top, side of the square crop in the reference's pixels
    fps: int
    sample_rate: int = SAMPLE_RATE


def openness_from_loudness(envelope: np.ndarray, gate: float = 0.08) -> np.ndarray:
    """The generator's rule: openness = loudness / loud-speech level, clipped to [0, 1], closed below the gate."""
    level = speech_level(envelope)
    if level <= 0:
        return np.zeros_like(envelope)
    o = np.clip(envelope / level, 0.0, 1.0)
    return np.where(envelope < gate * level, 0.0, o)


def blinks(rng: np.random.Generator, frames: int, fps: int) -> np.ndarray:
    """Blinks every 2–6 s, each a few frames of closing and opening."""
    shape = np.array([0.5, 1.0, 1.0, 0.6, 0.2])
    out = np.zeros(frames)
    t = int(rng.uniform(0.5, 4) * fps)
    while t < frames:
        end = min(frames, t + shape.size)
        out[t:end] = shape[:end - t]
        t += int(rng.uniform(2, 6) * fps)
    return out


def head_poses(rng: np.random.Generator, frames: int, fps: int, scale: float = 1.0) -> np.ndarray:
    """A slow random walk (mean-reverting) of shift, rotation and scale -> (frames, 4)."""
    limits = np.array([4.0 * scale, 3.0 * scale, 3.0, 0.025])
    theta = 1.5 / fps  # mean reversion per frame
    state = rng.uniform(-0.5, 0.5, 4) * limits
    out = np.empty((frames, 4))
    for i in range(frames):
        state = state - theta * state + rng.standard_normal(4) * limits * np.sqrt(2 * theta) * 0.5
        state = np.clip(state, -limits, limits)
        out[i] = state
    out[:, 3] += 1.0
    return out


def face_matches(face: Face, identity: Identity) -> bool:
    """The detected face is the drawn one: its box holds both eyes and the mouth."""
    x0, y0, x1, y1 = face.box
    return all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in (*identity.eyes, identity.mouth))


@lru_cache(maxsize=256)
def framed_identity(seed: int) -> tuple[Identity, Face, tuple[int, int, int]] | None:
    """(identity, detected face, crop) for identity `seed`, or None when the detector misses its face."""
    identity = make_identity(seed)
    rest = identity.frame()
    faces = _detector().detect(rest)
    if not faces or not face_matches(faces[0], identity):
        return None
    return identity, faces[0], square_crop(faces[0], rest.shape[0], rest.shape[1], CROP_SCALE)


@lru_cache(maxsize=1)
def _detector() -> HaarFaceDetector:
    return HaarFaceDetector()


def identities(seeds: range, count: int) -> list[int]:
    """The first `count` seeds of `seeds` whose face the detector finds."""
    out = []
    for seed in seeds:
        if framed_identity(seed) is not None:
            out.append(seed)
            if len(out) == count:
                return out
    raise ValueError(f"only {len(out)} usable identities in {seeds}")


def crop_frame(image: np.ndarray, crop: tuple[int, int, int], size: int) -> np.ndarray:
    """The renderer's crop of a full image: the square at `crop`, Lanczos-resized to size² (as prepare_portrait)."""
    from PIL import Image

    left, top, side = crop
    return np.array(Image.fromarray(image[top:top + side, left:left + side]).resize((size, size), Image.LANCZOS))


def make_clip(identity_seed: int, voice_seed: int, seconds: float, size: int = 128, fps: int = 25,
              audio: np.ndarray | None = None) -> TalkingClip:
    """Identity `identity_seed` speaking voice `voice_seed` (or `audio`, mono float32 at 16 kHz) for `seconds`."""
    framed = framed_identity(identity_seed)
    if framed is None:
        raise ValueError(f"identity {identity_seed} has no face the detector finds")
    identity, face, crop = framed
    if audio is None:
        audio = synth_voice(voice_seed, seconds)
    frames = int(np.ceil(audio.size / SAMPLE_RATE * fps))
    openness = openness_from_loudness(loudness_envelope(audio, SAMPLE_RATE, fps, frames))
    rng = np.random.default_rng([identity_seed, voice_seed, 0xC11])
    blink = blinks(rng, frames, fps)
    poses = head_poses(rng, frames, fps, identity.scale)
    video = np.stack([crop_frame(identity.frame(o, b, Pose(*p)), crop, size)
                      for o, b, p in zip(openness, blink, poses, strict=True)])
    return TalkingClip(video, audio, openness, blink, poses, identity.frame(), face, crop, fps)


def framed_face(clip: TalkingClip) -> Face:
    """The reference's face in the clip's frame pixels (as `prepare_portrait` maps it into its crop)."""
    left, top, side = clip.crop
    s = clip.frames.shape[1] / side
    return clip.face.mapped(lambda p: ((p[0] - left) * s, (p[1] - top) * s))


def reference_crop(clip: TalkingClip) -> np.ndarray:
    """The reference as the renderer sees it: (S, S, 3) uint8."""
    return crop_frame(clip.reference, clip.crop, clip.frames.shape[1])


def write_inputs(directory: Path, identity_seed: int, audio: np.ndarray, name: str = "case") -> tuple[Path, Path]:
    """The identity at rest as a PNG and the voice as a 16-bit WAV, as a user would give them -> (image, audio)."""
    import wave

    from PIL import Image

    framed = framed_identity(identity_seed)
    if framed is None:
        raise ValueError(f"identity {identity_seed} has no face the detector finds")
    directory.mkdir(parents=True, exist_ok=True)
    image, voice = directory / f"{name}.png", directory / f"{name}.wav"
    Image.fromarray(framed[0].frame()).save(image)
    with wave.open(str(voice), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes())
    return image, voice
