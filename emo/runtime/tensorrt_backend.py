"""TensorRT backend: runs the plans of an emo-build-engine directory on a CUDA GPU (classic TensorRT or TensorRT
for RTX, whichever built them).

Everything that needs no GPU is checked first (`tensorrt_engine_dir`: manifest, flavour and version, plan hashes
and validity, the binding plan against the IO spec); then the GPU's compute capability against the engine's
targets. Each component gets one deserialized engine and one execution context whose tensors are bound by IO-spec
name to torch CUDA tensors (set_input_shape, set_tensor_address) and run with execute_async_v3 on the current torch
stream; scratch memory is sized for the shapes actually run, not the profile's maximum. The reference K/V are
computed once per video; the denoiser's enqueue is captured in a CUDA graph per input shape, over static buffers
that per-video, per-clip and per-step values are copied into, and replayed for every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from ..config import RunConfig
from ..io_spec import ComponentSpec, mask_name
from ..manifest import EngineDirError
from ..preprocess.portrait import Portrait
from ..sampling.reference import motion_context, reference_context
from ..trt_flavours import collecting_logger
from .backend import decode_split
from .tensorrt_engine_dir import ProfileBindings, check_target, open_engine_dir, select_profile

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32}
STEP_INPUTS = ("sample", "timestep", "guidance_scale", "motion_scale")  # denoiser inputs that change every step


class EngineRunner:
    """One component: its engine, one execution context, and the binding of IO-spec names to torch tensors."""

    def __init__(self, trt: ModuleType, runtime, path: Path, spec: ComponentSpec, plan: list[ProfileBindings],
                 device: torch.device, errors: list[str]):
        self.trt, self.spec, self.plan, self.device, self.errors = trt, spec, plan, device, errors
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineDirError(f"cannot load {path}: {errors[-1] if errors else 'TensorRT gave no reason'}")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        want = {b.name for b in plan[0].bindings}
        if names != want or self.engine.num_optimization_profiles != len(plan):
            raise EngineDirError(f"{path}: the engine's tensors {sorted(names)} / {self.engine.num_optimization_profiles}"
                                 f" profile(s) are not the manifest's {sorted(want)} / {len(plan)}")
        for b in plan[0].bindings:
            got = self.engine.get_tensor_dtype(b.name).name.lower()
            if TORCH_DTYPES[b.dtype] != TORCH_DTYPES.get({"float": "float32", "half": "float16",
                                                          "bf16": "bfloat16"}.get(got, got)):
                raise EngineDirError(f"{path}: {b.name} is {got} in the engine, {b.dtype} in the binding plan")
        self.context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        self.profile = -1
        self.scratch: torch.Tensor | None = None

    def dtype(self, name: str) -> torch.dtype:
        return next(TORCH_DTYPES[b.dtype] for b in self.plan[0].bindings if b.name == name)

    def bind(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream,
             outputs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Shapes and addresses of `inputs` (shape inputs as host int64 tensors, the others on the device in the
        binding dtype), outputs allocated (or the given ones), scratch memory sized for these shapes."""
        ctx, spec = self.context, self.spec
        problem = spec.check_shapes({k: tuple(v.shape) for k, v in inputs.items()})
        if problem:
            raise EngineDirError(problem)
        profile = select_profile(self.plan, {t.name: tuple(inputs[t.name].shape) for t in spec.inputs
                                             if t.value_of is None})
        if profile != self.profile:
            ctx.set_optimization_profile_async(profile, stream.cuda_stream)
            self.profile = profile
        for b in self.plan[profile].bindings:
            if b.mode != "input":
                continue
            t = inputs[b.name]
            want = (torch.device("cpu") if b.host else self.device, TORCH_DTYPES[b.dtype])
            if (t.device.type, t.dtype) != (want[0].type, want[1]) or not t.is_contiguous():
                raise ValueError(f"{spec.name}: {b.name} must be a contiguous {want[1]} tensor on {want[0]}")
            ctx.set_input_shape(b.name, tuple(t.shape))
            ctx.set_tensor_address(b.name, t.data_ptr())
        out = {}
        for t in spec.outputs:
            shape = tuple(ctx.get_tensor_shape(t.name))
            given = (outputs or {}).get(t.name)
            out[t.name] = given if given is not None else torch.empty(shape, dtype=self.dtype(t.name),
                                                                      device=self.device)
            if tuple(out[t.name].shape) != shape:
                raise ValueError(f"{spec.name}: output {t.name} is {shape}, the buffer {tuple(out[t.name].shape)}")
            ctx.set_tensor_address(t.name, out[t.name].data_ptr())
        size = ctx.update_device_memory_size_for_shapes()
        if self.scratch is None or self.scratch.numel() < size:
            self.scratch = torch.empty(max(size, 1), dtype=torch.uint8, device=self.device)
        ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
        return out

    def enqueue(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.spec.name}: TensorRT enqueue failed: "
                               f"{self.errors[-1] if self.errors else 'no reason given'}")

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream(self.device)
        out = self.bind(inputs, stream)
        self.enqueue(stream)
        return out


@dataclass
class TrtVideo:
    feed: dict[str, torch.Tensor]  # denoiser inputs constant over the video (tokens, face feature, masks, K/V)
    image_tokens: torch.Tensor  # (2, t, c)
    motion_frames: int


@dataclass
class TrtClip:
    video: TrtVideo
    feed: dict[str, torch.Tensor]  # the video's feed + audio tokens and motion features


@dataclass
class _Graph:
    """A captured denoiser step for one input shape: static buffers, its scratch memory and the CUDA graph."""
    buffers: dict[str, torch.Tensor]
    output: torch.Tensor
    scratch: torch.Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None
    video: TrtVideo | None = None  # whose constants the buffers hold
    clip: TrtClip | None = None
    eager: bool = False  # capture failed: enqueue every step instead


class TensorRTBackend:
    name = "tensorrt"
    pipelined = False

    def __init__(self, engine_dir: str | Path, device: str = "cuda", capture: bool = True):
        self.dir, self.trt = open_engine_dir(engine_dir)
        self.cfg = self.dir.manifest.model()
        if not torch.cuda.is_available():
            raise EngineDirError("the tensorrt backend needs a CUDA GPU (none is visible here)")
        self.device = torch.device("cuda" if device in ("auto", "cuda") else device)
        if self.device.type != "cuda":
            raise EngineDirError(f"the tensorrt backend runs on a CUDA GPU, not {device!r}")
        major, minor = torch.cuda.get_device_capability(self.device)
        check_target(self.dir.manifest, self.dir.directory, major * 10 + minor, torch.cuda.get_device_name(self.device))
        self.errors: list[str] = []
        self._logger = collecting_logger(self.trt, self.errors)
        self._runtime = self.trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.runners = {name: EngineRunner(self.trt, self._runtime, self.dir.directory / entry.file,
                                               self.dir.specs[name], self.dir.plans[name], self.device, self.errors)
                            for name, entry in self.dir.manifest.components.items()}
        self.dtype = self.runners["denoiser"].dtype("sample")
        self.capture = capture
        self._graphs: dict[tuple, _Graph] = {}

    def _in(self, name: str, input_name: str, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.runners[name].dtype(input_name)).contiguous()

    @torch.no_grad()
    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        out = self.runners["audio_encoder"](waveform=self._in("audio_encoder", "waveform", waveform.reshape(1, -1)),
                                            num_frames=torch.tensor([num_frames], dtype=torch.int64))
        return out["audio_features"].float().cpu()

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.runners["vae_encoder"](pixels=self._in("vae_encoder", "pixels", pixels))["latents"]

    @torch.no_grad()
    def prepare_video(self, portrait: Portrait, motion_frames: int) -> TrtVideo:
        emb = portrait.face_emb.reshape(1, -1).float()
        tokens = self.runners["imageproj"](face_embedding=self._in("imageproj", "face_embedding",
                                                                   torch.cat([torch.zeros_like(emb), emb])))
        tokens = tokens["image_tokens"]
        feature = self.runners["face_locator"](face_region=self._in("face_locator", "face_region",
                                                                    portrait.face_region[None]))["face_feature"]
        ref = self.runners["reference"]
        kv = ref(ref_latent=self._in("reference", "ref_latent", self._encode(portrait.pixels[None])),
                 ref_context=self._in("reference", "ref_context", reference_context(tokens, motion_frames)))
        den = "denoiser"
        feed = {name: self._in(den, name, kv[name]) for name in kv}
        feed |= {mask_name(k): self._in(den, mask_name(k), m) for k, m in enumerate(portrait.masks)}
        feed |= {"image_tokens": self._in(den, "image_tokens", tokens),
                 "face_feature": self._in(den, "face_feature", torch.cat([torch.zeros_like(feature), feature]))}
        return TrtVideo(feed, tokens, motion_frames)

    @torch.no_grad()
    def prepare_clip(self, video: TrtVideo, motion_pixels: torch.Tensor, windows: torch.Tensor) -> TrtClip:
        tokens = self.runners["audioproj"](windows=self._in("audioproj", "windows", windows[None]))["audio_tokens"]
        n = video.motion_frames
        if n:
            motion = self.runners["motion"](
                motion_latents=self._in("motion", "motion_latents", self._encode(motion_pixels)),
                motion_context=self._in("motion", "motion_context", motion_context(video.image_tokens, n))
            )["motion_features"]
        else:
            levels = len(self.cfg.unet.block_out_channels)
            hm = motion_pixels.shape[-1] // self.cfg.vae.downscale // 2 ** (levels - 1)
            motion = torch.zeros(2, 0, self.cfg.unet.block_out_channels[-1], hm, hm)
        feed = video.feed | {"audio_tokens": self._in("denoiser", "audio_tokens",
                                                      torch.cat([torch.zeros_like(tokens), tokens])),
                             "motion_features": self._in("denoiser", "motion_features", motion)}
        return TrtClip(video, feed)

    def _step_graph(self, clip: TrtClip, latents: torch.Tensor) -> _Graph:
        """The static buffers (and, once captured, the CUDA graph) for this clip's shapes, holding its values."""
        runner = self.runners["denoiser"]
        shapes = {k: tuple(v.shape) for k, v in clip.feed.items()} | {"sample": (2, *latents.shape[1:])}
        key = tuple(sorted(shapes.items()))
        g = self._graphs.get(key)
        if g is None:
            step = {"sample": (2, *latents.shape[1:]), "timestep": (1,), "guidance_scale": (1,), "motion_scale": (3,)}
            buffers = {t.name: torch.empty(shapes.get(t.name, step.get(t.name)), dtype=runner.dtype(t.name),
                                           device=self.device) for t in runner.spec.inputs}
            f, h = latents.shape[2], latents.shape[-1]
            g = self._graphs[key] = _Graph(buffers, torch.empty((1, self.cfg.unet.out_channels, f, h, h),
                                                                dtype=runner.dtype("noise_pred"), device=self.device))
        if g.clip is not clip:
            names = clip.feed if g.video is not clip.video else ("audio_tokens", "motion_features")
            for name in names:
                g.buffers[name].copy_(clip.feed[name])
            g.video, g.clip = clip.video, clip
        return g

    def _capture(self, g: _Graph) -> None:
        """Warm up (TensorRT finishes lazy initialisation on its first enqueue), then capture one enqueue."""
        runner = self.runners["denoiser"]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            runner.bind(g.buffers, side, {"noise_pred": g.output})
            g.scratch = runner.scratch
            runner.enqueue(side)
        torch.cuda.current_stream(self.device).wait_stream(side)
        runner.scratch = None  # the graph keeps its own scratch buffer alive
        if not self.capture:
            g.eager = True
            return
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                runner.enqueue(torch.cuda.current_stream(self.device))
            g.graph = graph
        except RuntimeError:
            g.eager = True

    @torch.no_grad()
    def predict(self, clip: TrtClip, latents: torch.Tensor, t: int, run: RunConfig) -> torch.Tensor:
        g = self._step_graph(clip, latents)
        b = g.buffers
        b["sample"].copy_(torch.cat([latents, latents]))
        b["timestep"].fill_(float(t))
        b["guidance_scale"].fill_(run.guidance_scale)
        b["motion_scale"].copy_(torch.tensor(run.motion_scale, dtype=b["motion_scale"].dtype))
        if g.graph is None and not g.eager:
            self._capture(g)
        if g.graph is not None:
            g.graph.replay()
        else:
            runner = self.runners["denoiser"]
            runner.bind(b, torch.cuda.current_stream(self.device), {"noise_pred": g.output})
            runner.enqueue(torch.cuda.current_stream(self.device))
        return g.output.clone()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents[0].transpose(0, 1)  # c f h w -> f c h w
        chunk = self.dir.manifest.shape_ranges().decode_batch
        dec = self.runners["vae_decoder"]
        return torch.cat([dec(latents=self._in("vae_decoder", "latents", z[i:i + chunk]))["frames"].float()
                          for i in range(0, z.shape[0], chunk)])

    def decode_split(self, latents: torch.Tensor, tail: int):
        return decode_split(self, latents, tail)
