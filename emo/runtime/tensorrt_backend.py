"""TensorRT backend: runs the plans of an emo-build-engine directory on a CUDA GPU (classic TensorRT or TensorRT
for RTX, whichever built them), through the same step protocol as every backend (`emo.runtime.backend`).

Everything that needs no GPU is checked first (`tensorrt_engine_dir`: manifest, flavour and version, plan hashes
and validity, the binding plan against the IO spec); then the GPU's compute capability against the engine's
targets. Each component gets one deserialized engine; tensors are bound by IO-spec name to torch CUDA tensors
(set_input_shape, set_tensor_address) and run with execute_async_v3 on the current torch stream. All execution
contexts run one at a time on that stream, so they share one scratch buffer, sized for the shapes actually run
(not the profile's maximum).

Per video, the reference K/V entries are computed once and kept, like the rest of the conditioning, in the
denoiser's binding dtypes (`VideoConditioning`, `ClipConditioning`, named as the IO spec names the denoiser's
inputs, `ref_index` included). Per step, the denoiser runs over static buffers (`static_step`), one set per input
shape with its own execution context bound to them for good: the first step of a shape enqueues once (TensorRT
finishes its lazy initialisation; TensorRT for RTX, asked to specialise eagerly, compiles the shape's own
kernels), then that enqueue is captured in a CUDA graph and every later step replays it. A context TensorRT says
cannot be captured (`is_stream_capturable`, TensorRT for RTX) is enqueued each step instead.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from ..geometry import Geometry
from ..io_spec import ComponentSpec, kv_names, mask_name
from ..manifest import EngineDirError, check_audio_length
from ..preprocess.portrait import Portrait
from ..sampling.conditioning import ClipConditioning, StepInputs, VideoConditioning
from ..sampling.reference import motion_context, reference_context, reference_index
from ..trt_flavours import collecting_logger
from .backend import DecodedClip, decoded_now
from .static_step import StaticStep, StepCache
from .tensorrt_engine_dir import TRT_DTYPES, ProfileBindings, check_feed, check_target, open_engine_dir

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "int64": torch.int64, "int32": torch.int32}


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float16 -> "float16" (the binding plan's names)."""
    return str(dtype).removeprefix("torch.")


class Scratch:
    """The device memory every execution context of a backend runs in. Contexts run one at a time on one stream,
    so one buffer serves them all; it grows when a context needs more, and each context keeps the buffer it was
    bound to alive (a captured graph holds its address)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.buffer: torch.Tensor | None = None

    def at_least(self, size: int) -> torch.Tensor:
        if self.buffer is None or self.buffer.numel() < size:
            self.buffer = torch.empty(max(size, 1), dtype=torch.uint8, device=self.device)
        return self.buffer


class Context:
    """One execution context: the profile it is set to and the scratch buffer it was bound to."""

    def __init__(self, runner: "EngineRunner", context):
        self.runner, self.context = runner, context
        self.profile = -1
        self.scratch: torch.Tensor | None = None

    def bind(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        """Shapes and addresses of `inputs` (as the binding plan wants them: contiguous, shape inputs in host
        memory), new output tensors, scratch memory for these shapes -> the outputs by name."""
        r, ctx = self.runner, self.context
        profile = check_feed(r.spec, r.plan, {k: (tuple(t.shape), dtype_name(t.dtype), t.device.type == "cpu")
                                              for k, t in inputs.items()})
        if profile != self.profile:
            ctx.set_optimization_profile_async(profile, stream.cuda_stream)
            self.profile = profile
        for t in r.spec.inputs:
            x = inputs[t.name]
            if not x.is_contiguous():
                raise ValueError(f"{r.spec.name}: {t.name} must be contiguous")
            ctx.set_input_shape(t.name, tuple(x.shape))
            ctx.set_tensor_address(t.name, x.data_ptr() if x.numel() else r.placeholder.data_ptr())
        out = {t.name: torch.empty(tuple(ctx.get_tensor_shape(t.name)), dtype=r.dtype(t.name), device=r.device)
               for t in r.spec.outputs}
        for name, x in out.items():
            ctx.set_tensor_address(name, x.data_ptr() if x.numel() else r.placeholder.data_ptr())
        self.scratch = r.scratch.at_least(ctx.update_device_memory_size_for_shapes())
        ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
        return out

    def enqueue(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            errors = self.runner.errors
            raise RuntimeError(f"{self.runner.spec.name}: TensorRT enqueue failed: "
                               f"{errors[-1] if errors else 'no reason given'}")

    def capturable(self, stream: torch.cuda.Stream) -> bool:
        """Whether TensorRT can run this context under stream capture (TensorRT for RTX says; classic can)."""
        check = getattr(self.context, "is_stream_capturable", None)
        return check is None or bool(check(stream.cuda_stream))


class EngineRunner:
    """One component: its engine, checked against the binding plan, and the execution contexts it makes."""

    def __init__(self, trt: ModuleType, runtime, path: Path, spec: ComponentSpec, plan: list[ProfileBindings],
                 device: torch.device, errors: list[str], scratch: Scratch):
        self.trt, self.spec, self.plan, self.device, self.errors, self.scratch = \
            trt, spec, plan, device, errors, scratch
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
            if TRT_DTYPES.get(got) != b.dtype:
                raise EngineDirError(f"{path}: {b.name} is {got} in the engine, {b.dtype} in the binding plan")
        self.placeholder = torch.empty(1, dtype=torch.uint8, device=device)  # the address of empty tensors
        self._context: Context | None = None  # for one-off calls

    def dtype(self, name: str) -> torch.dtype:
        return next(TORCH_DTYPES[b.dtype] for b in self.plan[0].bindings if b.name == name)

    def as_input(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """x as the binding plan wants input `name`: its dtype, in host memory for shape inputs, contiguous."""
        host = next(b.host for b in self.plan[0].bindings if b.name == name)
        return x.to(torch.device("cpu") if host else self.device, self.dtype(name)).contiguous()

    def new_context(self, specialise_eagerly: bool = False) -> Context:
        """An execution context whose scratch memory the backend provides. `specialise_eagerly` (TensorRT for
        RTX): the first enqueue of a shape compiles that shape's kernels before it runs, instead of running
        fallback kernels while they compile in the background, so a capture after it records the fast ones."""
        trt = self.trt
        user = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        strategies = getattr(trt, "DynamicShapesKernelSpecializationStrategy", None)
        if specialise_eagerly and strategies is not None:
            config = self.engine.create_runtime_config()
            config.set_execution_context_allocation_strategy(user)
            config.dynamic_shapes_kernel_specialization_strategy = strategies.EAGER
            context = self.engine.create_execution_context(config)
        else:
            context = self.engine.create_execution_context(user)
        if context is None:
            raise RuntimeError(f"{self.spec.name}: TensorRT could not create an execution context: "
                               f"{self.errors[-1] if self.errors else 'no reason given'}")
        return Context(self, context)

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run once on the current stream: inputs converted as the binding plan wants them, new outputs."""
        self._context = self._context or self.new_context()
        stream = torch.cuda.current_stream(self.device)
        out = self._context.bind({k: self.as_input(k, x) for k, x in inputs.items()}, stream)
        self._context.enqueue(stream)
        return out


class TensorRTBackend:
    name = "tensorrt"
    pipelined = False

    def __init__(self, engine_dir: str | Path, device: str = "cuda", cuda_graphs: bool = True, max_graphs: int = 2):
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
        scratch = Scratch(self.device)
        with torch.cuda.device(self.device):
            self.runners = {name: EngineRunner(self.trt, self._runtime, self.dir.directory / entry.file,
                                               self.dir.specs[name], self.dir.plans[name], self.device, self.errors,
                                               scratch)
                            for name, entry in self.dir.manifest.components.items()}
        self.dtype = self.runners["denoiser"].dtype("sample")
        self.cuda_graphs = cuda_graphs
        self.step_cache = StepCache(max_graphs)  # static steps by shape, each with its context (and graph)

    @property
    def captures(self) -> int:
        """Static steps built: one per new shape."""
        return self.step_cache.captures

    def _for_denoiser(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.runners["denoiser"].as_input(name, x)

    @torch.no_grad()
    def audio_features(self, waveform: torch.Tensor, num_frames: int) -> torch.Tensor:
        check_audio_length(self.dir.manifest.shape_ranges(), self.dir.specs["audio_encoder"].dims["samples"].max,
                           waveform.numel())
        out = self.runners["audio_encoder"](waveform=waveform.reshape(1, -1),
                                            num_frames=torch.tensor([num_frames], dtype=torch.int64))
        return out["audio_features"].float().cpu()

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.runners["vae_encoder"](pixels=pixels)["latents"]

    @torch.no_grad()
    def prepare_video(self, portrait: Portrait, motion_frames: int) -> VideoConditioning:
        emb = portrait.face_emb.reshape(1, -1).float()
        tokens = self.runners["imageproj"](face_embedding=torch.cat([torch.zeros_like(emb), emb]))["image_tokens"]
        feature = self.runners["face_locator"](face_region=portrait.face_region[None])["face_feature"]
        kv = self.runners["reference"](ref_latent=self._encode(portrait.pixels[None]),
                                       ref_context=reference_context(tokens, motion_frames))
        den = self._for_denoiser
        entries = [tuple(den(n, kv[n]) for n in kv_names(i)) for i in range(len(kv) // 2)]
        return VideoConditioning(den("image_tokens", tokens),
                                 den("face_feature", torch.cat([torch.zeros_like(feature), feature])),
                                 [den(mask_name(k), m) for k, m in enumerate(portrait.masks)], entries)

    @torch.no_grad()
    def prepare_clip(self, video: VideoConditioning, motion_pixels: torch.Tensor, windows: torch.Tensor
                     ) -> ClipConditioning:
        tokens = self.runners["audioproj"](windows=windows[None])["audio_tokens"]
        n = motion_pixels.shape[0]
        if n:
            motion = self.runners["motion"](motion_latents=self._encode(motion_pixels),
                                            motion_context=motion_context(video.image_tokens, n))["motion_features"]
        else:
            mid = Geometry.of(self.cfg, motion_pixels.shape[-1]).mid
            motion = torch.zeros(2, 0, self.cfg.unet.block_out_channels[-1], mid, mid)
        den = self._for_denoiser
        return ClipConditioning(video, den("audio_tokens", torch.cat([torch.zeros_like(tokens), tokens])),
                                den("motion_features", motion),
                                den("ref_index", reference_index(tokens.shape[1], self.device)))

    def _capture(self, static: StaticStep) -> None:
        """A context bound to this shape's static buffers for good, one enqueue to warm it up, then that enqueue
        captured in a CUDA graph (when TensorRT says the context can be captured)."""
        context = self.runners["denoiser"].new_context(specialise_eagerly=True)
        stream = torch.cuda.current_stream(self.device)
        static.out = context.bind(static.feed(), stream)["noise_pred"]
        static.resources = (context,)
        context.enqueue(stream)
        side = torch.cuda.Stream(self.device)
        if not self.cuda_graphs or not context.capturable(side):
            return
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):  # waits for the warm-up; replays go to the current stream
            context.enqueue(side)
        static.graph = graph

    @torch.no_grad()
    def step(self, clip: ClipConditioning, inputs: StepInputs) -> torch.Tensor:
        static = self.step_cache.get(clip, inputs, self._capture)
        if static.graph is not None:
            static.graph.replay()
        else:
            static.resources[0].enqueue(torch.cuda.current_stream(self.device))
        return static.out.clone()  # the next step overwrites the static output

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (1, 4, f, h, w) -> frames (f, 3, H, W) in [0, 1], float32 on the device."""
        z = latents[0].transpose(0, 1)  # c f h w -> f c h w
        chunk = self.dir.manifest.shape_ranges().decode_batch
        dec = self.runners["vae_decoder"]
        return torch.cat([dec(latents=z[i:i + chunk])["frames"].float() for i in range(0, z.shape[0], chunk)])

    def decode_split(self, latents: torch.Tensor, tail: int) -> DecodedClip:
        return decoded_now(self.decode(latents), tail)
