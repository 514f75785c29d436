"""TensorRT execution for the tensorrt backend: each component's deserialized engine, checked against its
binding plan, and the execution contexts that run it.

Tensors are bound by IO-spec name to torch CUDA tensors (set_input_shape, set_tensor_address) and run with
execute_async_v3 on a torch stream. All execution contexts run one at a time on one stream, so they share one
scratch buffer, sized for the shapes actually run (not the profile's maximum).
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch

from ..io_spec import ComponentSpec
from ..manifest import EngineDirError
from ..tensorrt.plan_dir import TRT_DTYPES, ProfileBindings, check_feed
from .graph_backend import TORCH_DTYPES, dtype_name


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
            raise EngineDirError(f"{path}: the engine's tensors {sorted(names)} / "
                                 f"{self.engine.num_optimization_profiles} profile(s) are not the manifest's "
                                 f"{sorted(want)} / {len(plan)}")
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

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run once on the current stream: inputs converted as the binding plan wants them, new outputs."""
        self._context = self._context or self.new_context()
        stream = torch.cuda.current_stream(self.device)
        out = self._context.bind({k: self.as_input(k, x) for k, x in inputs.items()}, stream)
        self._context.enqueue(stream)
        return out
