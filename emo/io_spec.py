"""One IO spec per exportable component: names, dtypes, symbolic dimensions and their min/opt/max ranges.

The same objects drive ONNX export (input/output names, dynamic axes), the optimisation profiles of a plan
build, the runtime's checks and buffer shapes, and the tests. They are derived from a ModelConfig and a
ShapeRanges, never read back from files: a runtime rebuilds them from the config stored in the manifest of an
export or plan directory and compares.

Dimension names:
  frames (f), motion (n), motion2 (2n), images (VAE batch), batch (imageproj rows),
  halves (the denoiser's CFG halves: 2 for a guided step, 1 for a conditional-only one),
  pix (square frame side), lat (latent side), lat_k (lat >> k), tok_k ((lat >> k)^2 tokens at level k),
  samples (16 kHz waveform length), audio_frames (video frames the audio covers, padded to whole clips).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from .config import PRESETS, ModelConfig, ShapeRanges
from .errors import InputError
from .geometry import Geometry, size_unit
from .models.unet_layout import transformer_specs
from .models.whisper_encoder import whisper_preset
from .preprocess.whisper_features import WINDOW

FLOAT = "float"  # follows the precision of the export (float32 or float16)
COMPONENTS = ("audio_encoder", "audioproj", "imageproj", "face_locator", "vae_encoder", "vae_decoder",
              "reference", "motion", "denoiser")
ECHOMIMIC_COMPONENTS = ("audio_encoder", "face_locator", "vae_encoder", "vae_decoder", "reference", "denoiser")


def component_names(cfg: ModelConfig) -> tuple[str, ...]:
    """The exportable components of a model's family."""
    return ECHOMIMIC_COMPONENTS if cfg.family == "echomimic" else COMPONENTS


@dataclass(frozen=True)
class Dim:
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max:
            raise ValueError(f"invalid range {self}")


def default_ranges(cfg: ModelConfig) -> ShapeRanges:
    """The ranges of the model's preset (hallo-sd15's for other models)."""
    return PRESETS.get(cfg.name, PRESETS["hallo-sd15"]).ranges


def with_max_audio(r: ShapeRanges, seconds: float) -> ShapeRanges:
    """r with its audio range ending at `seconds` (the longest audio an exported audio encoder accepts)."""
    lo, opt, _ = r.audio_seconds
    if not math.isfinite(seconds) or seconds < max(lo, 1.0):
        raise InputError(f"--max-audio-seconds must be a finite number >= {max(lo, 1.0):g} (got {seconds})")
    return replace(r, audio_seconds=(lo, min(opt, seconds), seconds))


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # int: fixed; str: a dimension name
    dtype: str = FLOAT  # FLOAT, "float32" or "int64"
    value_of: str | None = None  # a shape input: this int64 tensor holds the value of that dimension

    def resolve(self, values: dict[str, int]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else values[d] for d in self.shape)

    def numpy_dtype(self, precision: str) -> str:
        """The array dtype a runtime feeds/reads for this tensor in a graph of `precision` ("fp32" | "fp16" |
        "bf16"; "bfloat16" is torch's and TensorRT's name, numpy has none)."""
        if self.dtype == FLOAT:
            return {"fp16": "float16", "bf16": "bfloat16"}.get(precision, "float32")
        return self.dtype


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, Dim]
    fp32_only: bool = False  # exported in float32 whatever the precision (cheap and precision-sensitive)

    def precision(self, requested: str) -> str:
        return "fp32" if self.fp32_only else requested

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: every named dimension of every input and output."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
                for t in (*self.inputs, *self.outputs)}

    def values(self, which: str) -> dict[str, int]:
        """Every dimension at its "min", "opt" or "max"."""
        return {k: getattr(d, which) for k, d in self.dims.items()}

    def profile(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """Optimisation profile: (min, opt, max) shape of each input, as a TensorRT build sets them."""
        v = {w: self.values(w) for w in ("min", "opt", "max")}
        return {t.name: (t.resolve(v["min"]), t.resolve(v["opt"]), t.resolve(v["max"])) for t in self.inputs}

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> str | None:
        """None if the input shapes fit the spec (fixed dims, ranges, one value per dimension), else why not."""
        seen: dict[str, int] = {}
        for t in self.inputs:
            if t.name not in shapes:
                return f"{self.name}: input {t.name} is missing"
            shape = tuple(shapes[t.name])
            if len(shape) != len(t.shape):
                return f"{self.name}: {t.name} has rank {len(shape)}, expected {len(t.shape)}"
            for want, got in zip(t.shape, shape, strict=True):
                if isinstance(want, int):
                    if want != got:
                        return f"{self.name}: {t.name} has shape {shape}, expected {t.shape}"
                    continue
                d = self.dims[want]
                if not d.min <= got <= d.max:
                    return f"{self.name}: {t.name} dimension {want} = {got} is outside [{d.min}, {d.max}]"
                if seen.setdefault(want, got) != got:
                    return f"{self.name}: dimension {want} is {seen[want]} in one input and {got} in {t.name}"
        return None

    def to_dict(self) -> dict:
        return {"name": self.name, "fp32_only": self.fp32_only,
                "inputs": [asdict(t) | {"shape": list(t.shape)} for t in self.inputs],
                "outputs": [asdict(t) | {"shape": list(t.shape)} for t in self.outputs],
                "dims": {k: asdict(d) for k, d in self.dims.items()}}


def kv_names(index: int) -> tuple[str, str]:
    """Names of the reference keys/values of the index-th spatial transformer (reference output, denoiser input)."""
    return f"ref_k_{index:02d}", f"ref_v_{index:02d}"


def mask_name(level: int) -> str:
    return f"mask_{level}"


def dim_values(cfg: ModelConfig, r: ShapeRanges, frames: int, motion: int, size: int, seconds: float,
               images: int, batch: int = 2, worst_padding: bool = False) -> dict[str, int]:
    """Every dimension at one operating point. Audio is padded to whole clips: exactly (a point) or by the worst
    case frames − 1 (the upper end of a range, which must hold for any clip length)."""
    geo = Geometry.of(cfg, size)
    covered = math.ceil(seconds * r.fps)
    audio_frames = covered + frames - 1 if worst_padding else -(-covered // frames) * frames
    values = {"frames": frames, "motion": motion, "motion2": 2 * motion, "images": images, "batch": batch,
              "halves": batch,
              "pix": size, "audio_frames": audio_frames,
              "samples": max(audio_frames * (r.sample_rate // r.fps), 400)}  # wav2vec2's CNN needs >= 400 samples
    for k in range(geo.levels):
        values[f"lat_{k}"] = geo.side(k)
        values[f"tok_{k}"] = geo.tokens(k)
    return values


def trace_values(cfg: ModelConfig, r: ShapeRanges) -> dict[str, int]:
    """A small operating point inside every range, for tracing exports and quick checks (no dimension at 1)."""
    def pick(lo_hi: tuple, want: int) -> int:
        return min(max(want, lo_hi[0]), lo_hi[2])

    return dim_values(cfg, r, pick(r.frames, 3), pick(r.motion_frames, 2), pick(r.size, 2 * size_unit(cfg)),
                      max(0.5, r.audio_seconds[0]),
                      pick((1, 0, max(r.frames[2], r.motion_frames[2], 1)), 2))


def _dims(cfg: ModelConfig, r: ShapeRanges) -> dict[str, Dim]:
    if r.frames[2] + r.motion_frames[2] > cfg.motion.max_len:
        raise ValueError(f"frames + motion frames may not exceed {cfg.motion.max_len}")
    images = (1, min(r.decode_batch, r.frames[2]), max(r.frames[2], r.motion_frames[2], 1))
    points = [dim_values(cfg, r, r.frames[i], r.motion_frames[i], r.size[i], r.audio_seconds[i], images[i],
                         batch=(1, 2, 2)[i], worst_padding=i == 2) for i in range(3)]
    return {k: Dim(*(p[k] for p in points)) for k in points[0]}


def _spec(dims: dict[str, Dim], name: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
          fp32_only: bool = False, at_least: dict[str, int] | None = None) -> ComponentSpec:
    """A component with the dimensions its tensors use (raised to `at_least` where given)."""
    used = {d for t in (*inputs, *outputs) for d in t.shape if isinstance(d, str)}
    own = {k: dims[k] for k in sorted(used)}
    for k, lo in (at_least or {}).items():
        own[k] = Dim(*(max(lo, v) for v in (own[k].min, own[k].opt, own[k].max)))
    return ComponentSpec(name, tuple(inputs), tuple(outputs), own, fp32_only)


def _kv_specs(cfg: ModelConfig, entries: int) -> list[TensorSpec]:
    """Reference keys/values of every denoiser self-attention layer: (entries, heads, tok_k, d) each."""
    u = cfg.unet
    return [TensorSpec(n, (entries, u.heads, f"tok_{block.depth}", block.channels // u.heads))
            for i, block in enumerate(transformer_specs(u)) for n in kv_names(i)]


def _vae_specs(cfg: ModelConfig, dims: dict[str, Dim]) -> list[ComponentSpec]:
    latents = TensorSpec("latents", ("images", cfg.vae.latent_channels, "lat_0", "lat_0"))
    return [_spec(dims, "vae_encoder", [TensorSpec("pixels", ("images", 3, "pix", "pix"))], [latents]),
            _spec(dims, "vae_decoder", [latents], [TensorSpec("frames", ("images", 3, "pix", "pix"))])]


def component_specs(cfg: ModelConfig, ranges: ShapeRanges) -> dict[str, ComponentSpec]:
    """The IO spec of every exportable component of a model config."""
    dims = _dims(cfg, ranges)
    if cfg.family == "echomimic":
        return _echomimic_specs(cfg, dims)
    u, a, w = cfg.unet, cfg.audioproj, cfg.wav2vec
    levels = len(u.block_out_channels)
    lat, c0, c_mid, lat_mid = "lat_0", u.block_out_channels[0], u.block_out_channels[-1], f"lat_{levels - 1}"
    img_tokens = (cfg.imageproj.tokens, u.cross_attention_dim)
    kv = _kv_specs(cfg, 2)
    masks = [TensorSpec(mask_name(k), (3, f"tok_{k}")) for k in range(levels)]

    def spec(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], fp32_only: bool = False,
             at_least: dict[str, int] | None = None) -> ComponentSpec:
        return _spec(dims, name, inputs, outputs, fp32_only, at_least)

    specs = [
        spec("audio_encoder",
             [TensorSpec("waveform", (1, "samples"), "float32"),
              TensorSpec("num_frames", (1,), "int64", value_of="audio_frames")],
             [TensorSpec("audio_features", ("audio_frames", w.num_hidden_layers, w.hidden_size), "float32")],
             fp32_only=True),
        spec("audioproj", [TensorSpec("windows", (1, "frames", a.seq_len, a.blocks, a.channels))],
             [TensorSpec("audio_tokens", (1, "frames", a.context_tokens, a.output_dim))]),
        spec("imageproj", [TensorSpec("face_embedding", ("batch", cfg.imageproj.embedding_dim))],
             [TensorSpec("image_tokens", ("batch", *img_tokens))]),
        spec("face_locator", [TensorSpec("face_region", (1, 3, "pix", "pix"))],
             [TensorSpec("face_feature", (1, c0, lat, lat))]),
        *_vae_specs(cfg, dims),
        spec("reference",
             [TensorSpec("ref_latent", (1, u.in_channels, lat, lat)), TensorSpec("ref_context", (2, *img_tokens))],
             kv),
        spec("motion",
             [TensorSpec("motion_latents", ("motion", u.in_channels, lat, lat)),
              TensorSpec("motion_context", ("motion2", *img_tokens))],
             [TensorSpec("motion_features", (2, "motion", c_mid, lat_mid, lat_mid))],
             at_least={"motion": 1, "motion2": 2}),  # only run when there are motion frames
        spec("denoiser",
             [TensorSpec("sample", ("halves", u.in_channels, "frames", lat, lat)),
              TensorSpec("timestep", (1,), "float32"),
              TensorSpec("guidance_scale", (1,)),
              TensorSpec("motion_scale", (3,)),
              TensorSpec("image_tokens", ("halves", *img_tokens)),
              TensorSpec("audio_tokens", ("halves", "frames", a.context_tokens, a.output_dim)),
              TensorSpec("face_feature", ("halves", c0, lat, lat)),
              TensorSpec("motion_features", ("halves", "motion", c_mid, lat_mid, lat_mid)),
              TensorSpec("ref_index", ("frames",), "int64"),  # the reference entry (of the 2) each frame reads
              *masks, *kv],
             [TensorSpec("noise_pred", (1, u.out_channels, "frames", lat, lat))]),
    ]
    return {s.name: s for s in specs}


def echomimic_audio_encoder(cfg: ModelConfig):
    """The whisper encoder shape every EchoMimic model uses (whisper-tiny's, at the model's audio width)."""
    return replace(whisper_preset("whisper-tiny"), n_state=cfg.audio_attention.dim)


def _echomimic_specs(cfg: ModelConfig, dims: dict[str, Dim]) -> dict[str, ComponentSpec]:
    """EchoMimic's components: no image tokens, masks or motion frames; one reference entry (E = 1) read by every
    cond frame; the audio tokens are the denoiser's cross-attention context. The log-mel and the per-frame
    windows of the whisper features stay on the host (`emo.preprocess.whisper_features`)."""
    u, fl = cfg.unet, cfg.face_locator
    lat, c0 = "lat_0", u.block_out_channels[0]
    w = echomimic_audio_encoder(cfg)
    frame_tokens = (sum(WINDOW) * w.hidden_states, w.n_state)  # 10 feature steps x hidden states per video frame
    kv = _kv_specs(cfg, 1)
    specs = [
        _spec(dims, "audio_encoder", [TensorSpec("mel", (1, w.n_mels, 2 * w.n_ctx), "float32")],
              [TensorSpec("hidden_states", (w.hidden_states, w.n_ctx, w.n_state), "float32")], fp32_only=True),
        _spec(dims, "face_locator", [TensorSpec("face_mask", (1, fl.conditioning_channels, "pix", "pix"))],
              [TensorSpec("face_feature", (1, c0, lat, lat))]),
        *_vae_specs(cfg, dims),
        _spec(dims, "reference", [TensorSpec("ref_latent", (1, u.in_channels, lat, lat))], kv),
        _spec(dims, "denoiser",
              [TensorSpec("sample", ("halves", u.in_channels, "frames", lat, lat)),
               TensorSpec("timestep", (1,), "float32"),
               TensorSpec("guidance_scale", (1,)),
               TensorSpec("audio_tokens", ("halves", "frames", *frame_tokens)),
               TensorSpec("face_feature", ("halves", c0, lat, lat)),
               *kv],
              [TensorSpec("noise_pred", (1, u.out_channels, "frames", lat, lat))]),
    ]
    return {s.name: s for s in specs}
