"""Model and run configuration: frozen dataclasses with named presets.

One `ModelConfig` describes every component of an EMO/Hallo model. It is stored next to weights and engines
(`to_dict` / `from_dict`, `config_hash`) and is built from a Hallo golden case's json by `from_hallo`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .validation import in_range


@dataclass(frozen=True)
class UNetConfig:
    """SD1.5-style UNet shared by the 2D ReferenceNet and the 3D denoiser."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_attention: tuple[bool, ...] = (True, True, True, False)  # CrossAttnDownBlock vs DownBlock
    up_attention: tuple[bool, ...] = (False, True, True, True)  # UpBlock vs CrossAttnUpBlock
    layers_per_block: int = 2
    heads: int = 8  # diffusers' `attention_head_dim`, which SD1.5 uses as the number of heads
    cross_attention_dim: int = 768
    in_channels: int = 4
    out_channels: int = 4
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @classmethod
    def from_diffusers(cls, u: dict[str, Any]) -> "UNetConfig":
        """A diffusers UNet2DConditionModel config (its config.json) -> our UNet settings (defaults for absent
        keys are diffusers' own)."""
        heads = u.get("attention_head_dim", 8)
        if not isinstance(heads, int):
            raise ValueError("per-block attention_head_dim is not supported")
        d = cls()
        return cls(
            block_out_channels=tuple(u["block_out_channels"]),
            down_attention=tuple(t.startswith("CrossAttn") for t in u["down_block_types"]),
            up_attention=tuple(t.startswith("CrossAttn") for t in u["up_block_types"]),
            layers_per_block=u["layers_per_block"], heads=heads, cross_attention_dim=u["cross_attention_dim"],
            in_channels=u.get("in_channels", d.in_channels), out_channels=u.get("out_channels", d.out_channels),
            norm_num_groups=u.get("norm_num_groups", d.norm_num_groups), norm_eps=u.get("norm_eps", d.norm_eps),
            flip_sin_to_cos=u.get("flip_sin_to_cos", d.flip_sin_to_cos), freq_shift=u.get("freq_shift", d.freq_shift),
            downsample_padding=u.get("downsample_padding", d.downsample_padding),
            mid_block_scale_factor=u.get("mid_block_scale_factor", d.mid_block_scale_factor),
        )


@dataclass(frozen=True)
class MotionConfig:
    """AnimateDiff-style temporal modules of the denoiser."""

    heads: int = 8
    num_layers: int = 1  # transformer blocks per module
    attention_blocks: int = 2  # "Temporal_Self" attentions per block
    max_len: int = 32  # temporal positional encoding length (n + f must fit)
    resolutions: tuple[int, ...] = (1, 2, 4, 8)
    mid_block: bool = True
    decoder_only: bool = False


@dataclass(frozen=True)
class AudioAttentionConfig:
    """How the denoiser attends to audio. placement "modules": Hallo's audio modules after each spatial
    transformer (hierarchical full/face/lip attention); "cross_attention": EchoMimic's, the audio tokens are the
    context of each transformer's own cross-attention, its output scaled by `scale` (no image tokens, no modules)."""

    dim: int = 768  # audio token width
    placement: str = "modules"  # "modules" | "cross_attention"
    scale: float = 1.0  # output scale of the cross-attention over audio ("cross_attention" only)
    stacked_blocks: tuple[str, ...] = ("up", "down", "mid")
    stacked_depths: tuple[int, ...] = (0, 1, 2, 3)

    def stacked(self, block: str, depth: int) -> bool:
        return block in self.stacked_blocks and depth in self.stacked_depths


@dataclass(frozen=True)
class AudioProjConfig:
    seq_len: int = 5  # window of frames (±2)
    blocks: int = 12  # wav2vec2 hidden states kept
    channels: int = 768  # wav2vec2 hidden size
    intermediate_dim: int = 512
    output_dim: int = 768
    context_tokens: int = 32


@dataclass(frozen=True)
class ImageProjConfig:
    cross_attention_dim: int = 768
    embedding_dim: int = 512  # ArcFace embedding
    tokens: int = 4


@dataclass(frozen=True)
class FaceLocatorConfig:
    embedding_channels: int = 320
    conditioning_channels: int = 3
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)


@dataclass(frozen=True)
class VAEConfig:
    """diffusers AutoencoderKL settings (sd-vae-ft-mse by default)."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class SchedulerConfig:
    """DDIM with zero-terminal-SNR, v-prediction and trailing spacing (Hallo's inference sampler)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    prediction_type: str = "v_prediction"
    rescale_betas_zero_snr: bool = True
    timestep_spacing: str = "trailing"
    steps_offset: int = 1
    clip_sample: bool = False
    set_alpha_to_one: bool = True
    eta: float = 0.0


@dataclass(frozen=True)
class Wav2VecConfig:
    """The wav2vec2 fields that shape the audio encoder; `to_transformers` fills in the rest."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    feat_extract_norm: str = "group"
    do_stable_layer_norm: bool = False
    layer_norm_eps: float = 1e-5

    def to_transformers(self):
        from transformers import Wav2Vec2Config

        kw = dataclasses.asdict(self)
        return Wav2Vec2Config(**{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()})

    @classmethod
    def from_transformers(cls, cfg: dict[str, Any]) -> "Wav2VecConfig":
        return _from_dict(cls, {f.name: cfg[f.name] for f in dataclasses.fields(cls) if f.name in cfg})


@dataclass(frozen=True)
class ModelConfig:
    name: str = "hallo-sd15"
    family: str = "hallo"  # "hallo" | "echomimic": which conditioning and sampling the model was trained for
    unet: UNetConfig = field(default_factory=UNetConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    audio_attention: AudioAttentionConfig = field(default_factory=AudioAttentionConfig)
    audioproj: AudioProjConfig = field(default_factory=AudioProjConfig)
    imageproj: ImageProjConfig = field(default_factory=ImageProjConfig)
    face_locator: FaceLocatorConfig = field(default_factory=FaceLocatorConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    wav2vec: Wav2VecConfig = field(default_factory=Wav2VecConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, d)

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_hallo(cls, case: dict[str, Any], name: str = "hallo-case") -> "ModelConfig":
        """Map a Hallo/diffusers config (a golden case's json) onto our config type."""
        u, extra = case["unet2d"], case["unet3d_extra"]
        if not extra.get("use_motion_module", True) or not extra.get("use_audio_module", True):
            raise ValueError("only denoisers with motion and audio modules are supported")
        if extra.get("unet_use_cross_frame_attention") or extra.get("unet_use_temporal_attention"):
            raise ValueError("cross-frame / temporal attention in the spatial blocks is not supported")
        unet = UNetConfig.from_diffusers(u)
        mk = extra["motion_module_kwargs"]
        if (any(t != "Temporal_Self" for t in mk["attention_block_types"])
                or mk.get("temporal_attention_dim_div", 1) != 1):
            raise ValueError("only Temporal_Self motion attention with dim_div 1 is supported")
        motion = MotionConfig(
            heads=mk["num_attention_heads"], num_layers=mk["num_transformer_block"],
            attention_blocks=len(mk["attention_block_types"]), max_len=mk["temporal_position_encoding_max_len"],
            resolutions=tuple(extra["motion_module_resolutions"]), mid_block=extra["motion_module_mid_block"],
            decoder_only=extra["motion_module_decoder_only"],
        )
        audio_attention = AudioAttentionConfig(
            dim=extra["audio_attention_dim"], stacked_blocks=tuple(extra["stack_enable_blocks_name"]),
            stacked_depths=tuple(extra["stack_enable_blocks_depth"]),
        )
        ap, ip, fl, vae, sc = case["audioproj"], case["imageproj"], case["face_locator"], case["vae"], case["scheduler"]
        return cls(
            name=name, unet=unet, motion=motion, audio_attention=audio_attention,
            audioproj=AudioProjConfig(**ap),
            imageproj=ImageProjConfig(cross_attention_dim=ip["cross_attention_dim"],
                                      embedding_dim=ip["clip_embeddings_dim"], tokens=ip["clip_extra_context_tokens"]),
            face_locator=FaceLocatorConfig(embedding_channels=fl["conditioning_embedding_channels"]),
            vae=VAEConfig(block_out_channels=tuple(vae["block_out_channels"]), layers_per_block=vae["layers_per_block"],
                          latent_channels=vae["latent_channels"], norm_num_groups=vae["norm_num_groups"],
                          scaling_factor=vae["scaling_factor"]),
            scheduler=SchedulerConfig(**{k: v for k, v in sc.items() if k != "name"}),
        )


MAX_FPS = 120
MAX_SIZE = 4096  # square side in pixels: 64x the 512 the models are trained at, far beyond any GPU's memory
MAX_GUIDANCE = 30.0  # far above any useful guidance scale (Hallo 3.5, EchoMimic 2.5)
MAX_MOTION_SCALE = 10.0
MAX_FRAMES_PER_CLIP = 256
MAX_SAMPLE_RATE = 192_000
SAMPLERS = ("ddim", "dpm++")


@dataclass(frozen=True)
class ShapeRanges:
    """What an exported graph (and an engine's profiles) must accept: (min, opt, max) per user-facing setting."""

    frames: tuple[int, int, int] = (1, 16, 24)
    motion_frames: tuple[int, int, int] = (0, 2, 4)
    size: tuple[int, int, int] = (256, 512, 768)  # square frame side in pixels, multiples of 64
    audio_seconds: tuple[float, float, float] = (0.04, 10.0, 120.0)
    fps: int = 25
    sample_rate: int = 16000
    decode_batch: int = 4  # frames per VAE decoder call

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeRanges":
        return _from_dict(cls, d)


@dataclass(frozen=True)
class RunConfig:
    """Per-render settings (Hallo's inference defaults)."""

    frames: int = 16  # frames per clip
    motion_frames: int = 2
    steps: int = 40
    guidance_scale: float = 3.5
    motion_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # full / face / lip
    size: int = 512
    fps: int = 25
    sample_rate: int = 16000
    sampler: str = "ddim"  # "ddim" (Hallo's, golden-exact) or "dpm++" (DPM-Solver++ 2M)
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # guided steps: lo <= i / steps < hi; the rest cond-only
    cache_interval: int = 1  # a full UNet step every N steps, deep features reused between (1 = off)
    cache_levels: int = 1  # outer UNet levels a step reusing deep features runs
    first_clip_frames: int | None = None  # a shorter first clip, for a stream's first frames sooner
    context_overlap: int = 3  # EchoMimic: frames shared by neighbouring context windows of `frames` frames

    def validate(self, model: ModelConfig | None = None) -> None:
        """Raise InputError with a one-line message for settings the model cannot run (every number finite, in
        range, and consistent with the others)."""
        steps_max = (model.scheduler if model is not None else SchedulerConfig()).num_train_timesteps
        in_range("steps", self.steps, 1, steps_max)
        in_range("fps", self.fps, 1, MAX_FPS)
        in_range("motion frames", self.motion_frames, 0)
        if self.motion_frames > self.frames:  # the next clip's motion frames are the last n frames of this one
            raise InputError(f"motion frames must be <= frames per clip (got {self.motion_frames} > {self.frames})")
        in_range("size", self.size, 64, MAX_SIZE)
        if self.size % 64:
            raise InputError(f"size must be a positive multiple of 64 (got {self.size})")
        in_range("guidance scale", self.guidance_scale, 1, MAX_GUIDANCE)
        for name, s in zip(("full", "face", "lip"), self.motion_scale, strict=True):
            in_range(f"{name} motion scale", s, 0, MAX_MOTION_SCALE)
        in_range("sample rate", self.sample_rate, 1, MAX_SAMPLE_RATE)
        in_range("frames per clip", self.frames, 1, MAX_FRAMES_PER_CLIP)
        in_range("context overlap", self.context_overlap, 0, MAX_FRAMES_PER_CLIP)  # < frames: ContextWindows
        self._validate_speed()
        if model is not None and self.frames + self.motion_frames > model.motion.max_len:
            raise InputError(f"frames + motion frames must be <= {model.motion.max_len} "
                             f"(got {self.frames} + {self.motion_frames})")

    def _validate_speed(self) -> None:
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r})")
        lo, hi = self.guidance_interval
        in_range("guidance interval start", lo, 0, 1)
        in_range("guidance interval end", hi, 0, 1)
        if lo > hi:
            raise InputError(f"guidance interval start must be <= its end (got {lo}:{hi})")
        in_range("cache interval", self.cache_interval, 1, self.steps)
        in_range("cache levels", self.cache_levels, 1, 3)  # of the UNet's four levels (the innermost is cached)
        if self.first_clip_frames is not None:
            in_range("first clip frames", self.first_clip_frames, 1, self.frames)
            if self.first_clip_frames < self.motion_frames:  # the next clip's motion frames come from it
                raise InputError(f"first clip frames must be >= motion frames "
                                 f"(got {self.first_clip_frames} < {self.motion_frames})")

    def guided(self, i: int) -> bool:
        """Whether step i computes both CFG halves (else the conditional half alone): inside the guidance
        interval and with a guidance scale above 1 (at scale 1 the halves' difference is multiplied by 0)."""
        lo, hi = self.guidance_interval
        return self.guidance_scale != 1.0 and lo <= i / self.steps < hi

    @classmethod
    def from_hallo(cls, case: dict[str, Any]) -> "RunConfig":
        r = case["run"]
        if r["width"] != r["height"]:
            raise ValueError("only square frames are supported (as in the reference)")
        return cls(frames=r["frames"], motion_frames=r["motion_frames"], steps=r["steps"],
                   guidance_scale=r["guidance_scale"], motion_scale=tuple(r["motion_scale"]), size=r["width"])


@dataclass(frozen=True)
class RunOptions:
    """Overrides of a preset's RunConfig, None meaning "the preset's": the one way emo-run's options, emo-serve's
    form fields and the Python API change render settings. Seeds are not render settings (see check_seed).

    speed: a speed preset (SPEEDS) applied first; the other options then override its settings, except under
    `quality`, which is Hallo's settings exactly and is refused together with a sampling option."""

    speed: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    fps: int | None = None
    size: int | None = None
    frames: int | None = None  # frames per clip
    motion_frames: int | None = None
    sampler: str | None = None
    guidance_interval: tuple[float, float] | None = None
    cache_interval: int | None = None
    cache_levels: int | None = None
    first_clip_frames: int | None = None

    def apply(self, base: RunConfig, model: ModelConfig | None = None) -> RunConfig:
        """base with the speed preset and these overrides, checked (RunConfig.validate's one-line InputErrors)."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                 if f.name != "speed" and getattr(self, f.name) is not None}
        if self.speed is not None:
            if self.speed not in SPEEDS:
                raise InputError(f"speed must be one of {', '.join(SPEEDS)} (got {self.speed!r})")
            sampling = sorted(set(given) & SAMPLING_OPTIONS)
            if self.speed == "quality" and sampling:
                raise InputError(f"speed quality is Hallo's settings exactly; it does not take "
                                 f"{sampling[0].replace('_', ' ')} (choose another speed, or no speed)")
            base = dataclasses.replace(base, **dataclasses.asdict(SPEEDS[self.speed]))
        if "guidance_interval" in given and given.get("guidance_scale", base.guidance_scale) == 1.0:
            raise InputError("a guidance interval needs a guidance scale above 1 (at 1 no step is guided)")
        run = dataclasses.replace(base, **given)
        run.validate(model)
        return run


def parse_interval(text: str) -> tuple[float, float]:
    """"A:B" (fractions of the schedule, e.g. "0:0.5") -> (A, B); InputError in one line otherwise."""
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise InputError(f"guidance interval must be START:END, fractions of the schedule such as 0:0.5 "
                         f"(got {text!r})") from None


@dataclass(frozen=True)
class Speed:
    """The sampling settings of a speed preset (RunOptions.speed): how many UNet evaluations a frame costs."""

    steps: int
    guidance_scale: float
    sampler: str
    guidance_interval: tuple[float, float]
    cache_interval: int = 1
    cache_levels: int = 1
    first_clip_frames: int | None = None


SAMPLING_OPTIONS = {f.name for f in dataclasses.fields(Speed)}
# measured on the trained demo model (docs/performance.md, bench/speed_presets.py)
SPEEDS = {
    "quality": Speed(40, 3.5, "ddim", (0.0, 1.0)),  # Hallo's: 80 UNet frame-evaluations a frame
    "balanced": Speed(12, 3.5, "dpm++", (0.0, 1.0)),
    "fast": Speed(8, 3.5, "dpm++", (0.0, 1.0)),
    "realtime": Speed(4, 3.5, "dpm++", (0.0, 1.0)),
}


def _from_dict(cls, d: dict[str, Any], path: str = ""):
    """Build a (nested) config dataclass from a dict; a key the dataclass does not have is an error, named with
    its dotted path, so that a misspelt or foreign setting is never silently dropped."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown config key {path}{unknown[0]!r} for {cls.__name__}"
                         + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
            v = _from_dict(f.default_factory, v, f"{path}{f.name}.")
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


TINY = ModelConfig(
    name="tiny",
    unet=UNetConfig(block_out_channels=(32, 32, 32, 32), cross_attention_dim=64),
    motion=MotionConfig(),
    audio_attention=AudioAttentionConfig(dim=64),
    audioproj=AudioProjConfig(blocks=3, channels=32, intermediate_dim=32, output_dim=64, context_tokens=8),
    imageproj=ImageProjConfig(cross_attention_dim=64),
    face_locator=FaceLocatorConfig(embedding_channels=32),
    vae=VAEConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1),
    wav2vec=Wav2VecConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                          conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
)

HALLO_SD15 = ModelConfig()

# EchoMimic (antgroup/echomimic): the SD image-variations UNet as ReferenceNet and denoiser, whisper-tiny audio tokens
# (50 x 384 per frame) in each transformer's own cross-attention scaled by 3, a face locator on a one-channel face
# mask, and the same zero-SNR v-prediction DDIM. Its Hallo-only parts (audio / image projections) go unused.
ECHOMIMIC_SD15 = ModelConfig(
    name="echomimic-sd15", family="echomimic",
    audio_attention=AudioAttentionConfig(dim=384, placement="cross_attention", scale=3.0),
    face_locator=FaceLocatorConfig(embedding_channels=320, conditioning_channels=1,
                                   block_out_channels=(16, 32, 96, 256)),
)


def demo_config(vae_scaling_factor: float) -> ModelConfig:
    """The trained demo model: tiny's architecture and compute with two heads of 16 channels (tiny's eight heads
    of 4 cannot match reference and audio tokens well) and the latent scale of its own trained VAE."""
    return dataclasses.replace(
        TINY, name="demo", unet=dataclasses.replace(TINY.unet, heads=2),
        motion=dataclasses.replace(TINY.motion, heads=2),
        vae=dataclasses.replace(TINY.vae, scaling_factor=vae_scaling_factor))


@dataclass(frozen=True)
class Preset:
    """A named model with the run settings and export shape ranges that go with it: one record, so that a model,
    its default render and its engine profiles cannot drift apart."""

    model: ModelConfig
    run: RunConfig
    ranges: ShapeRanges

    @property
    def name(self) -> str:
        return self.model.name


DEMO_LATENT_SCALE = 0.72194  # the demo VAE's 1 / std of latent means, measured when it was trained
TINY_RANGES = ShapeRanges(frames=(1, 4, 16), motion_frames=(0, 2, 4), size=(64, 128, 256),
                          audio_seconds=(0.04, 4.0, 60.0))

ECHOMIMIC_TINY = dataclasses.replace(
    ECHOMIMIC_SD15, name="echomimic-tiny",
    unet=UNetConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1, cross_attention_dim=64),
    face_locator=dataclasses.replace(ECHOMIMIC_SD15.face_locator, embedding_channels=32),
    vae=TINY.vae,
)

# EchoMimic's own settings per published model: 30 steps at guidance 2.5, or the accelerated model's 6 steps at
# guidance 1 (no unconditional half); 12-frame context windows overlapping by 3, 24 fps, no motion frames.
ECHOMIMIC_RUNS: dict[str, RunConfig] = {
    "echomimic": RunConfig(frames=12, motion_frames=0, steps=30, guidance_scale=2.5, fps=24, context_overlap=3),
    "echomimic-acc": RunConfig(frames=12, motion_frames=0, steps=6, guidance_scale=1.0, fps=24, context_overlap=3),
}
FAMILIES = ("hallo", *ECHOMIMIC_RUNS)

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(TINY, RunConfig(size=128, steps=4), TINY_RANGES),
    Preset(demo_config(DEMO_LATENT_SCALE), RunConfig(size=128, steps=8), TINY_RANGES),
    Preset(HALLO_SD15, RunConfig(), ShapeRanges()),
    Preset(ECHOMIMIC_TINY, dataclasses.replace(ECHOMIMIC_RUNS["echomimic-acc"], size=128), TINY_RANGES),
    Preset(ECHOMIMIC_SD15, ECHOMIMIC_RUNS["echomimic"], ShapeRanges()),
)}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
