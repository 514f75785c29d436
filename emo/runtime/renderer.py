"""The renderer: load once, render many; image + voice -> frames of any length, clip by clip.

Clips are chained as the reference does: the first clip's motion frames are the reference image repeated n times,
later ones the last n decoded frames of the previous clip. Frames leave the renderer clip by clip (streaming), so
memory stays flat however long the audio is.

Thread safety: one Renderer may be shared by threads; calls that run the model are serialised by a lock (the
modules and their buffers are shared), so concurrent results equal serial ones. Preprocessing (decoding, face
detection, embedding) runs outside it and is itself thread-safe. prepare() may be called while this thread
consumes a stream(); a second stream() or render() on that thread is refused (it would wait for itself).
"""
from __future__ import annotations

import threading
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator

import numpy as np
import torch

from ..config import ModelConfig, RunConfig
from ..errors import InputError
from ..geometry import Geometry
from ..media.audio import load_audio
from ..media.mp4 import Mp4Writer
from ..media.npy import NpyWriter
from ..media.outputs import output_target, refuse_overlaps
from ..preprocess.audio_features import FrameWindows, compute_audio_features, padded_frame_count
from ..preprocess.face import HaarFaceDetector
from ..preprocess.face_models import FaceModels, load_face_models
from ..preprocess.image import load_image
from ..preprocess.portrait import Portrait, prepare_portrait
from ..preprocess.vocals import VocalSeparator
from ..sampling.conditioning import ClipConditioning, StepSchedule
from ..sampling.cost import run_evaluations
from ..sampling.loop import sample
from ..sampling.sampler import Sampler, make_sampler
from ..sampling.step_plan import StepPlan, plans
from ..validation import check_face_expand_ratio, check_seed
from .backend import Backend

if TYPE_CHECKING:
    from .factory import RendererSpec
from ..checkpoints.model_dir import Models


@dataclass(frozen=True)
class Progress:
    clip: int  # 0-based
    clips: int
    step: int  # steps done in this clip
    steps: int
    frames_done: int
    frames_total: int
    elapsed: float


@dataclass
class Prepared:
    portrait: Portrait
    windows: FrameWindows  # (padded_frames, 5, layers, hidden) windowed audio features, made per slice
    frames: int  # ceil(seconds · fps): frames in the output
    audio_path: Path


@dataclass
class RenderResult:
    path: Path
    frames: int
    seconds: float
    faces_found: int
    face_box: tuple[float, float, float, float]  # the face used, in the image's pixels (x0, y0, x1, y1)
    first_frame_seconds: float  # from the call to the first frames leaving the renderer
    unet_evaluations: float  # UNet frame-evaluations of the whole render (emo.sampling.cost)

    @property
    def unet_evaluations_per_frame(self) -> float:
        return self.unet_evaluations / max(self.frames, 1)


Interrupt = Callable[[str], None]
"""Called with a stage name before each unit of work of a render (the stages of `StageTimer`); raising from it
stops the render there, the model's turn released (a server's cancellation: `emo.serve.worker`)."""

StageTimer = Callable[[str], ContextManager[None]]
"""A stage name -> a context manager around that stage's work: "reference" (prepare_video), "clip"
(prepare_clip), "step" (each denoising step), "decode" (decode_split), "frames" (waiting for a clip's host
frames) and "consumer" (what the caller does with a yielded clip, e.g. encoding)."""


def _untimed(stage: str) -> ContextManager[None]:
    return nullcontext()


def _checked(timer: StageTimer, interrupt: Interrupt | None) -> StageTimer:
    """`timer` with `interrupt(stage)` called before each stage begins."""
    if interrupt is None:
        return timer

    def stage(name: str) -> ContextManager[None]:
        interrupt(name)
        return timer(name)

    return stage


def clip_spans(prepared: Prepared, run: RunConfig) -> list[tuple[int, int]]:
    """The frames [start, stop) of each clip to render: a first clip of run.first_clip_frames when set, then
    clips of run.frames. Refuses a Prepared made for other settings than `run` (clip lengths, frame size)."""
    rows, size = prepared.windows.shape[0], prepared.portrait.pixels.shape[-1]
    if size != run.size:
        raise InputError(f"the inputs were prepared at {size}x{size} pixels, the run renders {run.size}x{run.size}; "
                         "prepare them with the same settings")
    first = run.first_clip_frames or 0
    if rows != padded_frame_count(prepared.frames, run.frames, first):
        raise InputError(f"the inputs hold {rows} frames of audio features for {prepared.frames} video frames, "
                         f"which is not whole clips of {run.frames}"
                         + (f" after a first clip of {first}" if first else "")
                         + "; prepare them with the same settings")
    starts = ([0] if first else []) + list(range(first, rows, run.frames))
    return [(a, b) for a, b in zip(starts, [*starts[1:], rows], strict=True)]


def _deliver(timer: StageTimer, frames_of: Callable[[], torch.Tensor], keep: int) -> Iterator[np.ndarray]:
    """Yield the first `keep` frames of a decoded clip as float32 (keep, H, W, 3)."""
    with timer("frames"):
        frames = frames_of()[:keep].numpy()
    with timer("consumer"):
        yield frames


def face_analysis(face_models: str | Path | FaceModels | None) -> tuple[object, object | None]:
    """-> (detector, embedder): InsightFace's SCRFD and ArcFace when given, else OpenCV's Haar cascades and no
    embedder (prepare_portrait then computes a stand-in embedding)."""
    if face_models is not None and not isinstance(face_models, FaceModels):
        face_models = load_face_models(face_models)
    if face_models is None:
        return HaarFaceDetector(), None
    return face_models.detector, face_models.embedder


def decode_inputs(image: str | Path, audio: str | Path, run: RunConfig, cfg: ModelConfig, detector,
                  embedder=None, vocal_separator: VocalSeparator | None = None, face_expand_ratio: float = 1.2,
                  crop_scale: float = 2.0) -> tuple[Portrait, np.ndarray]:
    """Check the settings, decode and check both inputs and find the face: everything prepare() does before the
    model runs, so that a server can refuse bad uploads with the same messages before it queues a render."""
    run.validate(cfg)
    portrait = prepare_portrait(load_image(image), run.size, run.size // cfg.vae.downscale, detector,
                                face_expand_ratio, crop_scale, embedder, source=str(image))
    if vocal_separator is not None:
        samples = vocal_separator.load_vocals(audio, run.sample_rate)
    else:
        samples = load_audio(audio, run.sample_rate)
    if samples.shape[0] < run.sample_rate / run.fps:
        raise InputError(f"audio {audio} is shorter than one video frame "
                         f"({1000 * samples.shape[0] / run.sample_rate:.1f} ms)")
    return portrait, samples


class Renderer:
    """face_models: a directory of InsightFace ONNX models (Hallo's face_analysis) for SCRFD detection and the
    ArcFace embedding; without it faces are found by OpenCV's Haar cascades and the embedding is a stand-in.
    vocal_separator: an MDX-Net ONNX model (Hallo's Kim_Vocal_2.onnx); when given, the voice is separated from
    music before the audio features are computed (the video keeps the original track)."""

    timer: StageTimer | None = None  # a hook timing each stage of the clip loop (emo-bench sets it)

    def __init__(self, backend: Backend, face_expand_ratio: float = 1.2, crop_scale: float = 2.0,
                 face_models: str | Path | FaceModels | None = None,
                 vocal_separator: str | Path | VocalSeparator | None = None):
        check_face_expand_ratio(face_expand_ratio)
        self.backend = backend
        self.cfg = backend.cfg
        self.face_expand_ratio, self.crop_scale = face_expand_ratio, crop_scale
        self.detector, self.embedder = face_analysis(face_models)
        if vocal_separator is not None and not isinstance(vocal_separator, VocalSeparator):
            vocal_separator = VocalSeparator(vocal_separator)
        self.vocal_separator = vocal_separator
        self._lock = threading.Lock()  # the model's turn; a plain Lock, so a stream closed from another thread frees it
        self._holder: int | None = None  # the thread that has the turn

    @contextmanager
    def _model_turn(self, reentrant: bool = False):
        """Hold the model for a block. reentrant: the block may run inside this thread's own stream() (prepare);
        otherwise a thread that already has the turn is refused rather than left waiting for itself."""
        me = threading.get_ident()
        if self._holder == me:
            if not reentrant:
                raise RuntimeError("this thread is still consuming a stream() of this Renderer: close or exhaust it "
                                   "before starting another render")
            yield
            return
        with self._lock:
            self._holder = me
            try:
                yield
            finally:
                self._holder = None

    @classmethod
    def build(cls, spec: "RendererSpec", models: Models | None = None, **preprocessing) -> "Renderer":
        """The renderer a RendererSpec asks for (emo.runtime.factory: every entry point builds through it).
        preprocessing: FaceModels / VocalSeparator objects or crop_scale, used instead of the spec's paths."""
        from .factory import build_renderer

        return build_renderer(spec, models, **preprocessing)

    @classmethod
    def from_model_dir(cls, path: str | Path, device: str = "auto", dtype: str | None = "fp32",
                       backend: str = "torch", **kw) -> "Renderer":
        """A model directory in Hallo's `pretrained_models` layout (its face_analysis models too, when present);
        eager torch in fp32 unless told otherwise."""
        return cls._from(dict(models=str(path), device=device, dtype=dtype, backend=backend), kw)

    @classmethod
    def demo(cls, device: str = "auto", dtype: str | None = "fp32", backend: str = "torch", **kw) -> "Renderer":
        """The trained demo model shipped with the package."""
        return cls._from(dict(demo=True, device=device, dtype=dtype, backend=backend), kw)

    @classmethod
    def random(cls, preset: str = "tiny", seed: int = 0, device: str = "auto", dtype: str | None = "fp32",
               backend: str = "torch", **kw) -> "Renderer":
        """A preset's architecture with seeded random weights (benchmarks, tests)."""
        return cls._from(dict(random=preset, random_seed=seed, device=device, dtype=dtype, backend=backend), kw)

    @classmethod
    def fast(cls, models: Models, device: str = "cuda", dtype: str = "fp16", **kw) -> "Renderer":
        """torch-fast (CUDA graphs, static buffers) on loaded models."""
        return cls._from(dict(device=device, dtype=dtype, backend="torch-fast"), kw, models)

    @classmethod
    def from_engine_dir(cls, path: str | Path, device: str = "auto", backend: str = "auto", **kw) -> "Renderer":
        """An ONNX export directory (ONNX Runtime) or a TensorRT plan directory (TensorRT)."""
        return cls._from(dict(engine_dir=str(path), device=device, backend=backend, dtype=None), kw)

    @classmethod
    def _from(cls, spec: dict, kw: dict, models: Models | None = None) -> "Renderer":
        """Spec fields from `spec` and the path-valued keywords of `kw`; objects in `kw` go to the Renderer."""
        from .factory import RendererSpec

        preprocessing = {}
        for key, field in (("face_models", "face_models"), ("vocal_separator", "separate_vocals")):
            value = kw.pop(key, None)
            if isinstance(value, (str, Path)):
                spec[field] = str(value)
            elif value is not None:
                preprocessing[key] = value
        if "crop_scale" in kw:
            preprocessing["crop_scale"] = kw.pop("crop_scale")
        return cls.build(RendererSpec(**spec, **kw), models, **preprocessing)

    def settings(self, **options) -> RunConfig:
        """The settings of this model's preset with RunOptions applied and checked, e.g. settings(speed="fast")
        or settings(steps=20, sampler="dpm++")."""
        from ..config import PRESETS, RunOptions

        base = PRESETS.get(self.cfg.name, PRESETS["hallo-sd15"]).run
        return RunOptions(**options).apply(base, self.cfg)

    def prepare(self, image: str | Path, audio: str | Path, run: RunConfig) -> Prepared:
        """Decode and check the inputs, detect the face, compute the audio features (no diffusion yet)."""
        check_backend_runs(self.backend.name, run)
        if hasattr(self.backend, "check_run"):  # graph backends: the shapes their graphs or plans take
            self.backend.check_run(run)
        portrait, samples = decode_inputs(image, audio, run, self.cfg, self.detector, self.embedder,
                                          self.vocal_separator, self.face_expand_ratio, self.crop_scale)
        with self._model_turn(reentrant=True):
            feats, frames = compute_audio_features(self.backend.audio_features, samples, run.fps, run.frames,
                                                   run.sample_rate, run.first_clip_frames or 0)
        return Prepared(portrait, FrameWindows(feats.float().cpu()), frames, Path(audio))

    def stream(self, prepared: Prepared, run: RunConfig, seed: int = 0,
               progress: Callable[[Progress], None] | None = None, interrupt: Interrupt | None = None
               ) -> Iterator[np.ndarray]:
        """Yield each clip's frames as float32 (k, H, W, 3) in [0, 1], trimmed to the audio's length.

        With a pipelined backend (torch-fast on CUDA) a clip is yielded once the next clip's denoising has been
        queued on the GPU: its decode, the copy to the host and whatever the caller does with the frames (encoding)
        overlap that denoising, at the cost of one clip of latency.

        interrupt(stage) is called before each unit of work (reference, each clip's conditioning, each step, each
        decode, each delivered clip); what it raises ends the stream there.

        This is the one clip loop: emo-run, the Python API and emo-bench (through `timer`) all run it."""
        be, cfg = self.backend, self.cfg
        n = run.motion_frames
        spans = clip_spans(prepared, run)
        latent = Geometry.of(cfg, run.size).latent
        timer = _checked(self.timer or _untimed, interrupt)
        gen = torch.Generator().manual_seed(seed)
        sampler: Sampler = make_sampler(cfg.scheduler, run.sampler, run.steps)  # one per video; state per clip
        step_plans = plans(run)
        start, done = time.perf_counter(), 0
        with self._model_turn():
            with timer("reference"):
                video = be.prepare_video(prepared.portrait, n)
            steps = StepSchedule(sampler.timesteps, run, be.device, be.dtype)
            motion = prepared.portrait.pixels.to(be.device, be.dtype).expand(n, -1, -1, -1)
            pending = None  # a pipelined backend's previous clip: (its frames when decoded, frames to keep)
            for c, (a, b) in enumerate(spans):
                with timer("clip"):
                    clip = be.prepare_clip(video, motion, prepared.windows[a:b])
                noise = torch.randn((1, cfg.vae.latent_channels, b - a, latent, latent), generator=gen)

                def predict(x: torch.Tensor, i: int, plan: StepPlan, clip: ClipConditioning = clip) -> torch.Tensor:
                    with timer("step"):
                        return be.step(clip, steps.inputs(x, i, plan.halves), plan)

                def on_step(i: int, c: int = c, done: int = done) -> None:
                    if progress is not None:
                        progress(Progress(c, len(spans), i + 1, run.steps, done, prepared.frames,
                                          time.perf_counter() - start))

                latents = sample(predict, sampler, noise.to(be.device, be.dtype), on_step, step_plans)
                with timer("decode"):
                    tail, frames_of = be.decode_split(latents, n)
                if n:
                    motion = tail.to(be.device, be.dtype) * 2 - 1
                keep = min(b - a, prepared.frames - done)
                done += keep
                if pending is not None:  # the previous clip, decoded while this one was denoised
                    yield from _deliver(timer, *pending)
                pending = (frames_of, keep)
                if not be.pipelined:
                    yield from _deliver(timer, *pending)
                    pending = None
            if pending is not None:
                yield from _deliver(timer, *pending)

    def render(self, image: str | Path, audio: str | Path, output: str | Path, run: RunConfig, seed: int = 0,
               frames_out: str | Path | None = None, progress: Callable[[Progress], None] | None = None,
               interrupt: Interrupt | None = None) -> RenderResult:
        """Render to an MP4 (H.264 + the original audio as AAC); optionally also the raw frames as .npy.

        Outputs are checked before any work (see `check_outputs`); the encoder is opened before the first step;
        each file appears under its name only when complete."""
        called = time.perf_counter()
        check_seed(seed)
        check_outputs(output, frames_out, image, audio)
        prepared = self.prepare(image, audio, run)
        start, first = time.perf_counter(), None
        written = 0
        with ExitStack() as outputs:  # entered in this order, finished in reverse: the video first
            raw = (outputs.enter_context(NpyWriter(frames_out, (prepared.frames, run.size, run.size, 3)))
                   if frames_out is not None else None)
            writer = outputs.enter_context(Mp4Writer(output, run.fps, run.size, prepared.audio_path))
            for frames in self.stream(prepared, run, seed, progress, interrupt):
                first = time.perf_counter() - called if first is None else first
                writer.write(np.round(frames * 255).astype(np.uint8))
                if raw is not None:
                    raw.write(frames)
                written += len(frames)
        p = prepared.portrait
        return RenderResult(Path(output), written, time.perf_counter() - start, p.faces_found, p.source_box,
                            first, self.evaluations(prepared, run))

    def evaluations(self, prepared: Prepared, run: RunConfig) -> float:
        """UNet frame-evaluations of rendering `prepared` with `run` (emo.sampling.cost)."""
        return run_evaluations(self.cfg, run, [b - a for a, b in clip_spans(prepared, run)])


def check_backend_runs(backend: str, run: RunConfig) -> None:
    """Refuse, in one line, settings the backend cannot run: deep-feature reuse on the graph backends."""
    if run.cache_interval > 1 and backend in ("onnxruntime", "tensorrt"):
        raise InputError(f"a cache interval above 1 needs the torch or torch-fast backend (not {backend})")


def check_outputs(output: str | Path, frames_out: str | Path | None, image: str | Path, audio: str | Path,
                  names: tuple[str, ...] = ("output", "frames output", "stats"), stats: str | Path | None = None
                  ) -> None:
    """Refuse, before any work, an output that is not a regular file or symlink to one, or whose directory is
    missing or read-only, and any output that is an input or another output. names: how the outputs (video,
    frames, stats) are called in messages (the CLI passes its option names)."""
    given = zip(names, (output, frames_out, stats), strict=False)
    outputs = {name: Path(path) for name, path in given if path is not None}
    for name, path in outputs.items():
        output_target(path, name)
    refuse_overlaps(outputs, {"image": Path(image), "audio": Path(audio)})
