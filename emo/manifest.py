"""The manifest of an ONNX export directory (emo-export) or a TensorRT plan directory (emo-build-engine): what was
exported or built, from which model and weights, with which tools. "Engine directory" names either, as the
`--engine-dir` option takes either.

Written by emo-export (and emo-build-engine), read by the runtime, which rebuilds the IO specs from the stored
model config and refuses a directory that does not match (format version, config hash, specs, files).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from .config import FAMILIES, ModelConfig
from .errors import InputError
from .io_spec import ShapeRanges, component_specs

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


class EngineDirError(InputError):
    """An export or plan directory that is missing, incomplete or made for another model, format or device."""


@dataclass
class GraphEntry:
    file: str
    data_file: str | None
    bytes: int
    precision: str  # the graph's own precision ("fp32" for fp32-only components)
    spec: dict  # ComponentSpec.to_dict()
    export_seconds: float = 0.0
    # plan directories (emo-build-engine) only:
    sha256: str | None = None  # of the plan file: a damaged plan is refused before TensorRT reads it
    source_sha256: str | None = None  # of the ONNX graph (+ its data file) the plan was built from
    profiles: list[dict] | None = None  # optimisation profiles: {"point", "shapes", "values"}, in engine order
    network_io: list[dict] | None = None  # the parsed network's inputs and outputs, as TensorRT saw them
    build: dict | None = None  # seconds, peak RSS


@dataclass
class Manifest:
    format: str  # "onnx" (emo-export) or "tensorrt" (emo-build-engine)
    precision: str
    opset: int
    model_config: dict
    config_hash: str
    weights_hash: str
    ranges: dict  # ShapeRanges.to_dict()
    components: dict[str, GraphEntry] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    engine: dict | None = None  # plan directories: flavour, version, targets, typing, flags, source export
    quantization: dict = field(default_factory=dict)  # int8 / fp8 exports: policy, calibration, accuracy gate
    family: str = "hallo"  # the run family the weights are for: hallo, echomimic or echomimic-acc
    conversion: dict = field(default_factory=dict)  # half-precision graphs converted from an fp32 export: how

    def model(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model_config)

    def shape_ranges(self) -> ShapeRanges:
        return ShapeRanges.from_dict(self.ranges)

    def write(self, directory: Path) -> Path:
        """Atomically (write, then rename) so a reader never sees half a manifest."""
        path = Path(directory) / MANIFEST_FILE
        tmp = path.with_name(f".{MANIFEST_FILE}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        return path


def tool_versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in ("emo-runtime", *packages):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def file_sha256(*paths: Path) -> str:
    """Content hash of one or more files (a graph and its data file), streamed."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def check_audio_length(ranges: ShapeRanges, longest: int, samples: int) -> None:
    """Refuse audio of `samples` (padded to whole clips) longer than the exported audio encoder's `longest`."""
    if samples > longest:
        seconds = samples / ranges.sample_rate
        raise EngineDirError(f"audio of {seconds:.1f} s (padded to whole clips) is longer than the exported audio "
                             f"encoder accepts ({ranges.audio_seconds[2]:g} s); re-export with emo-export "
                             f"--max-audio-seconds {math.ceil(seconds)}, or split the audio")


MAKER = {"onnx": "emo-export", "tensorrt": "emo-build-engine"}


def manifest_format(directory: str | Path) -> str | None:
    """"onnx" (an export directory) or "tensorrt" (a plan directory), None when there is no readable manifest
    (for backend choice)."""
    try:
        return json.loads((Path(directory) / MANIFEST_FILE).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def manifest_family(directory: str | Path) -> str | None:
    """The run family a directory's graphs are for ("hallo" for manifests from before families), None when there
    is no readable manifest (for choosing a backend and renderer before anything loads)."""
    try:
        return json.loads((Path(directory) / MANIFEST_FILE).read_text()).get("family", "hallo")
    except (OSError, ValueError, AttributeError):
        return None


def read_manifest(directory: str | Path, expect_format: str, components: tuple[str, ...] = ()) -> Manifest:
    """Load and check the manifest of an export directory (`expect_format` "onnx") or a plan directory
    ("tensorrt"): version, config hash, IO specs, and that the files are there."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise EngineDirError(f"engine directory not found: {directory}")
    if not path.is_file():
        raise EngineDirError(f"{directory} has no {MANIFEST_FILE} (make one with {MAKER.get(expect_format)})")
    try:
        raw = json.loads(path.read_text())
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise EngineDirError(f"{path} has format version {version}; this runtime reads version {FORMAT_VERSION} "
                                 f"(re-export with this version of emo-export)")
        raw["components"] = {k: GraphEntry(**v) for k, v in raw["components"].items()}
        m = Manifest(**raw)
        cfg = m.model()
        ranges = m.shape_ranges()
    except EngineDirError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise EngineDirError(f"{path} is not a valid manifest: {type(e).__name__}: {e}") from None
    if m.format != expect_format:
        raise EngineDirError(f"{directory} holds {m.format} graphs, this backend runs {expect_format}")
    if cfg.config_hash() != m.config_hash:
        raise EngineDirError(f"{path}: model config does not match its hash {m.config_hash} (edited or corrupt)")
    if m.family not in FAMILIES or (m.family == "hallo") != (cfg.family == "hallo"):
        raise EngineDirError(f"{path}: run family {m.family!r} does not fit its model config ({cfg.family})")
    specs = component_specs(cfg, ranges)
    missing = [c for c in components if c not in m.components]
    if missing:
        raise EngineDirError(f"{directory} lacks the component(s) {', '.join(missing)} "
                             f"(make them with {MAKER.get(m.format)})")
    for name, entry in m.components.items():
        if name not in specs:
            raise EngineDirError(f"{path}: unknown component {name!r}")
        if entry.spec != specs[name].to_dict():
            raise EngineDirError(f"{path}: the IO spec of {name} differs from this runtime's for that model config "
                                 f"(exported by another version; re-export)")
        for f in (entry.file, entry.data_file):
            if f is not None and not confined(directory, f, f"{path}: {name}").is_file():
                raise EngineDirError(f"{directory} is incomplete: {f} is missing")
    return m


def confined(directory: Path, name: str, what: str) -> Path:
    """directory / name, refused unless it stays inside the directory once resolved: no absolute path, no ../,
    no symlink out (a manifest must not make the runtime load a graph from elsewhere)."""
    if not isinstance(name, str) or not name:
        raise EngineDirError(f"{what}: file name {name!r} is not a relative path")
    path = directory / name
    root = directory.resolve()
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root):
        raise EngineDirError(f"{what}: {name} is outside the engine directory {directory}; refusing to load it")
    return path
