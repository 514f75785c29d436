"""Build one component's plan with a TensorRT module given as a parameter (classic TensorRT or TensorRT for RTX):
parse the ONNX graph, add the optimisation profiles, configure typing, targets and limits, serialize.

Errors are one line naming the component: a node the parser cannot import (with its name and op), a network
whose inputs are not the IO spec's, or the builder's own first error.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..errors import InputError
from ..io_spec import ComponentSpec
from ..tensorrt.flavours import collecting_logger
from .precision import Typing
from .profiles import Profile


class BuildError(InputError):
    """A graph TensorRT cannot import or build (one line: component, node, op, reason)."""


@dataclass(frozen=True)
class BuildOptions:
    targets: tuple[int, ...] = ()  # compute capabilities to compile for ahead of time; () = the build GPU
    optimization_level: int = 3  # TensorRT's builder optimisation level, 0 (fast build) to 5
    workspace_gib: float | None = None  # cap on the builder's scratch memory
    refittable: bool = False  # weights can be replaced later without a rebuild
    user_allocation: bool = False  # REQUIRE_USER_ALLOCATION: all memory from the runtime, so enqueues can be captured


_OOM = re.compile(r"OutOfMemory \(Requested size was (\d+) bytes")


def _largest(profiles: list[Profile]) -> str:
    """The largest point a build's profiles reach, in words (for out-of-memory reports)."""
    hi = {name: shape[2] for p in profiles for name, shape in p.shapes.items()}
    if "sample" in hi:  # the denoiser's latents say frames and size at once
        return f"sample {'x'.join(map(str, hi['sample']))}"
    biggest = max(hi.items(), key=lambda kv: math.prod(kv[1]), default=("(none)", ()))
    return f"{biggest[0]} {'x'.join(map(str, biggest[1]))}"


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "(no message)")


def parse_graph(trt: ModuleType, builder, logger_errors: list[str], component: str, path: Path,
                strongly_typed: bool):
    """-> (network, parser); the parser must outlive the network's use (it owns the weights)."""
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, builder.logger)
    if not parser.parse_from_file(str(path)):
        if parser.num_errors:
            e = parser.get_error(0)
            node = e.node_name() or (f"#{e.node()}" if e.node() >= 0 else "(graph)")
            raise BuildError(f"{component}: TensorRT cannot import node {node} (op {e.node_operator() or '?'}): "
                             f"{_first_line(e.desc())}")
        raise BuildError(f"{component}: TensorRT cannot parse {path.name}: "
                         f"{_first_line(logger_errors[0] if logger_errors else 'unknown error')}")
    return network, parser


def network_io(network) -> list[dict]:
    """The network's inputs and outputs as the parser made them (name, mode, dtype, shape with -1 for dynamic)."""
    out = []
    for mode, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for i in range(count):
            t = get(i)
            out.append({"name": t.name, "mode": mode, "dtype": t.dtype.name.lower(), "shape": list(t.shape),
                        "shape_input": bool(mode == "input" and t.is_shape_tensor)})
    return out


def _check_io(component: str, io: list[dict], spec: ComponentSpec) -> None:
    for mode, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        got = [t["name"] for t in io if t["mode"] == mode]
        want = [t.name for t in tensors]
        if sorted(got) != sorted(want):
            raise BuildError(f"{component}: the graph's {mode}s {got} are not the IO spec's {want}")
    for t in io:
        if t["shape_input"] and t["name"] not in {s.name for s in spec.inputs if s.value_of}:
            raise BuildError(f"{component}: input {t['name']} is a shape input but the IO spec gives no values for it")


def _add_profiles(trt: ModuleType, builder, config, component: str, io: list[dict], profiles: list[Profile]
                  ) -> None:
    shape_inputs = {t["name"] for t in io if t["shape_input"]}
    for k, prof in enumerate(profiles):
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in prof.shapes.items():
            if name in shape_inputs:
                p.set_shape_input(name, *prof.values[name])
            else:
                p.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(p) < 0:
            raise BuildError(f"{component}: TensorRT refused optimisation profile {k} ({prof.point})")


def build_plan(trt: ModuleType, component: str, onnx_path: Path, spec: ComponentSpec, profiles: list[Profile],
               typing: Typing, options: BuildOptions, out_path: Path, echo: bool = False) -> list[dict]:
    """Build and write `out_path`; returns the network's IO (for the manifest, checked by the runtime)."""
    errors: list[str] = []
    builder = trt.Builder(collecting_logger(trt, errors, echo))
    network, _parser = parse_graph(trt, builder, errors, component, onnx_path, typing.strongly_typed)
    io = network_io(network)
    _check_io(component, io, spec)
    config = builder.create_builder_config()
    config.builder_optimization_level = options.optimization_level
    if options.workspace_gib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    for flag in typing.flags + (("REFIT",) if options.refittable else ()) + \
            (("REQUIRE_USER_ALLOCATION",) if options.user_allocation else ()):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.targets:
        config.num_compute_capabilities = len(options.targets)
        for i, cc in enumerate(options.targets):
            config.set_compute_capability(trt.ComputeCapability(cc), i)
    _add_profiles(trt, builder, config, component, io, profiles)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        reason = _first_line(errors[0]) if errors else "no reason given"
        asked = _OOM.search(reason)
        if asked or "within workspace limit" in reason:  # the pool is too small for the largest profile shapes
            pool = f"--workspace {options.workspace_gib:g} GiB" if options.workspace_gib else "TensorRT's default pool"
            size = f"; TensorRT asked for {int(asked.group(1)) / (1 << 30):.1f} GiB" if asked else \
                "; no kernel fits in it"
            raise BuildError(f"{component}: the engine would need more device memory than {pool} allows at its "
                             f"largest profile shapes ({_largest(profiles)}{size}); narrow the profiles (--frames, "
                             f"--size)" + (" or raise --workspace" if options.workspace_gib else ""))
        raise BuildError(f"{component}: TensorRT could not build the engine: {reason}")
    with open(out_path, "wb") as f:
        f.write(plan)
    return io
