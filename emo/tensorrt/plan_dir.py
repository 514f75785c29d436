"""A TensorRT plan directory (made by emo-build-engine from an ONNX export directory) as the runtime reads it,
checked before any plan is deserialized.

Refused, each in one line: a manifest of another format version or model config (`read_manifest`); plans built
with another TensorRT flavour or version than the one installed, or for other GPUs; a missing, truncated or
damaged plan (size and SHA-256 from the manifest, then the flavour's own engine-validity check where it has one);
a network whose inputs and outputs are not the IO spec's. What is left is the binding plan: for every component
and optimisation profile, each tensor's name, direction, dtype, shape range and memory (host for shape inputs).
None of this needs a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..io_spec import COMPONENTS, ComponentSpec, component_specs
from ..manifest import EngineDirError, GraphEntry, Manifest, file_sha256, read_manifest
from .flavours import FLAVOURS, collecting_logger, import_flavour, sm_name

TRT_DTYPES = {"float": "float32", "half": "float16", "bf16": "bfloat16", "int64": "int64", "int32": "int32"}
PLAN_PROBLEMS = ("MALFORMED_ENGINE", "VERSION_MISMATCH", "UNSUPPORTED_CC")  # engine-validity bits about the plan


@dataclass(frozen=True)
class Binding:
    name: str
    mode: str  # "input" or "output"
    dtype: str  # torch/numpy dtype name
    shape: tuple[int | str, ...]  # the IO spec's shape (dimension names for dynamic axes)
    shapes: tuple[tuple[int, ...], ...] | None  # inputs: min, opt, max shape in this profile
    values: tuple[tuple[int, ...], ...] | None  # shape inputs: min, opt, max value in this profile
    host: bool  # shape inputs live in host memory


@dataclass(frozen=True)
class ProfileBindings:
    index: int  # TensorRT's optimisation profile index
    point: tuple[int, int, int]  # the (frames, motion frames, size) it is tuned for
    bindings: tuple[Binding, ...]

    def opt_shapes(self) -> dict[str, tuple[int, ...]]:
        return {b.name: b.shapes[1] for b in self.bindings if b.shapes is not None}


def plan_module(manifest: Manifest, directory: Path) -> ModuleType:
    """The installed module of the flavour the plans were built with, at the same version; else refused."""
    engine = manifest.engine or {}
    flavour = FLAVOURS.get(engine.get("flavour"))
    if flavour is None:
        raise EngineDirError(f"{directory} was not built by emo-build-engine (no known TensorRT flavour)")
    try:
        trt = import_flavour(flavour)
    except Exception as e:  # InputError with the install hint
        raise EngineDirError(f"{directory} holds {flavour.name} {engine.get('version')} engines; {e}") from None
    if trt.__version__ != engine.get("version"):
        raise EngineDirError(f"{directory} was built with {flavour.name} {engine.get('version')}, this runtime has "
                             f"{trt.__version__} (rebuild with emo-build-engine, or install that version)")
    return trt


def check_target(manifest: Manifest, directory: Path, capability: int, gpu_name: str = "this GPU") -> None:
    """Refuse plans built for other GPUs than one of compute capability `capability`."""
    targets = (manifest.engine or {}).get("targets", [])
    if sm_name(capability) not in targets:
        raise EngineDirError(f"{directory} holds engines for {', '.join(targets) or 'no GPU'}; {gpu_name} is "
                             f"{sm_name(capability)} (build engines for it with emo-build-engine --target)")


def check_plan_file(trt: ModuleType, directory: Path, name: str, entry: GraphEntry) -> None:
    """Size and hash against the manifest, then the runtime's engine-validity check on the plan's header."""
    path = directory / entry.file
    size = path.stat().st_size
    if size != entry.bytes:
        raise EngineDirError(f"{path} is damaged: {size} bytes, the manifest says {entry.bytes} (rebuild {name})")
    if entry.sha256 is None or file_sha256(path) != entry.sha256:
        raise EngineDirError(f"{path} is damaged: its SHA-256 does not match the manifest's (rebuild {name})")
    errors: list[str] = []
    runtime = trt.Runtime(collecting_logger(trt, errors))
    if not hasattr(runtime, "get_engine_validity"):  # classic TensorRT: deserialization is the check
        return
    with open(path, "rb") as f:
        header = f.read(runtime.engine_header_size)
    _, diagnostics = runtime.get_engine_validity(header)
    bits = [k for k in PLAN_PROBLEMS if int(diagnostics) & int(getattr(trt.EngineInvalidityDiagnostics, k))]
    if bits:
        raise EngineDirError(f"{path} is not a usable {(trt.__name__)} plan ({', '.join(bits).lower()}); "
                             f"rebuild {name} with emo-build-engine")


def _binding_error(name: str, what: str) -> EngineDirError:
    return EngineDirError(f"{name}: the plan's {what} (rebuild it with this version of emo-build-engine)")


def binding_plan(spec: ComponentSpec, entry: GraphEntry, source_precision: str) -> list[ProfileBindings]:
    """Names, dtypes and shape ranges per profile, from the IO spec, checked against the network the builder saw
    and the profiles it was given."""
    io = {t["name"]: t for t in entry.network_io or []}
    dtypes = {t.name: t.numpy_dtype(spec.precision(source_precision)) for t in (*spec.inputs, *spec.outputs)}
    for mode, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        for t in tensors:
            got = io.get(t.name)
            if got is None or got["mode"] != mode:
                raise _binding_error(spec.name, f"network has no {mode} {t.name}")
            if TRT_DTYPES.get(got["dtype"]) != dtypes[t.name]:
                raise _binding_error(spec.name, f"{t.name} is {got['dtype']}, the IO spec wants {dtypes[t.name]}")
            # an output's fixed size may reach the network as -1 (e.g. the guided combination slices the halves
            # axis); TensorRT resolves it per call and the runtime reads the shape it reports
            fixed_ok = len(got["shape"]) == len(t.shape) and all(
                g == s or (g == -1 and mode == "output")
                for g, s in zip(got["shape"], t.shape, strict=True) if isinstance(s, int))
            if not fixed_ok:
                raise _binding_error(spec.name, f"{t.name} has shape {got['shape']}, the IO spec says {t.shape}")
            if got["shape_input"] != (t.value_of is not None):
                raise _binding_error(spec.name, f"{t.name} is {'' if got['shape_input'] else 'not '}a shape input")
    if len(io) != len(spec.inputs) + len(spec.outputs):
        raise _binding_error(spec.name, f"network has other tensors than the IO spec ({', '.join(sorted(io))})")
    if not entry.profiles:
        raise _binding_error(spec.name, "manifest lists no optimisation profile")
    plan = []
    for index, prof in enumerate(entry.profiles):
        shapes = {k: tuple(tuple(s) for s in v) for k, v in prof["shapes"].items()}
        values = {k: tuple(tuple(s) for s in v) for k, v in prof["values"].items()}
        for which in range(3):
            problem = spec.check_shapes({k: v[which] for k, v in shapes.items()})
            if problem:
                raise _binding_error(spec.name, f"profile {index} is outside the IO spec: {problem}")
        for t in spec.inputs:
            if t.value_of is None:
                continue
            d = spec.dims[t.value_of]
            if t.name not in values or any(not d.min <= x <= d.max for v in values[t.name] for x in v):
                raise _binding_error(spec.name, f"profile {index} gives {t.name} no values in [{d.min}, {d.max}]")
        bindings = [Binding(t.name, "input", dtypes[t.name], t.shape, shapes[t.name], values.get(t.name),
                            t.value_of is not None) for t in spec.inputs]
        bindings += [Binding(t.name, "output", dtypes[t.name], t.shape, None, None, False) for t in spec.outputs]
        plan.append(ProfileBindings(index, tuple(prof["point"]), tuple(bindings)))
    return plan


def select_profile(plan: list[ProfileBindings], shapes: dict[str, tuple[int, ...]]) -> int:
    """The profile whose opt shapes are the given ones, else the one nearest to them (every profile spans the
    IO spec's whole range)."""
    def distance(p: ProfileBindings) -> int:
        opt = p.opt_shapes()
        return sum(abs(a - b) for k, s in shapes.items() if k in opt for a, b in zip(s, opt[k], strict=True))

    return min(plan, key=distance).index


Feed = dict[str, tuple[tuple[int, ...], str, bool]]  # input name -> (shape, dtype name, in host memory)


def check_feed(spec: ComponentSpec, plan: list[ProfileBindings], feed: Feed) -> int:
    """The profile that runs `feed`; refused, in one line naming the input, when the feed is not what the binding
    plan binds: other names, a shape outside the IO spec or the profile, another dtype or memory."""
    extra = sorted(set(feed) - {t.name for t in spec.inputs})
    if extra:
        raise EngineDirError(f"{spec.name}: the engine has no input named {', '.join(extra)}")
    problem = spec.check_shapes({k: v[0] for k, v in feed.items()})
    if problem:
        raise EngineDirError(problem)
    bindings = [b for b in plan[0].bindings if b.mode == "input"]
    index = select_profile(plan, {b.name: feed[b.name][0] for b in bindings if not b.host})
    for b in (b for b in plan[index].bindings if b.mode == "input"):
        shape, dtype, host = feed[b.name]
        if (dtype, host) != (b.dtype, b.host):
            raise EngineDirError(f"{spec.name}: {b.name} must be {b.dtype} in {'host' if b.host else 'device'} "
                                 f"memory (got {dtype} in {'host' if host else 'device'} memory)")
        lo, _, hi = b.shapes
        if not all(a <= x <= c for a, x, c in zip(lo, shape, hi, strict=True)):
            raise EngineDirError(f"{spec.name}: {b.name} of shape {shape} is outside profile {index} ({lo} to {hi})")
    return index


@dataclass
class PlanDir:
    directory: Path
    manifest: Manifest
    specs: dict[str, ComponentSpec]
    plans: dict[str, list[ProfileBindings]]  # component -> its binding plan


def open_plan_dir(directory: str | Path, trt: ModuleType | None = None,
                  components: tuple[str, ...] = COMPONENTS) -> tuple[PlanDir, ModuleType]:
    """Every check that needs no GPU; `trt` defaults to the installed module of the manifest's flavour."""
    directory = Path(directory)
    manifest = read_manifest(directory, "tensorrt", components)
    trt = trt or plan_module(manifest, directory)
    specs = component_specs(manifest.model(), manifest.shape_ranges())
    source_precision = (manifest.engine or {}).get("source_precision", manifest.precision)
    plans = {}
    for name in components:
        entry = manifest.components[name]
        check_plan_file(trt, directory, name, entry)
        plans[name] = binding_plan(specs[name], entry, source_precision)
    return PlanDir(directory, manifest, specs, plans), trt
