"""The manifest of an engine directory: what was exported, from which model and weights, with which tools.

Written by emo-export (and emo-build-engine), read by the runtime, which rebuilds the IO specs from the stored
model config and refuses a directory that does not match (format version, config hash, specs, files).
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from .config import ModelConfig
from .errors import InputError
from .io_spec import ShapeRanges, component_specs

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


class EngineDirError(InputError):
    """An engine directory that is missing, incomplete or made for another model, format or device."""


@dataclass
class GraphEntry:
    file: str
    data_file: str | None
    bytes: int
    precision: str  # the graph's own precision ("fp32" for fp32-only components)
    spec: dict  # ComponentSpec.to_dict()
    export_seconds: float = 0.0


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
    quantization: dict = field(default_factory=dict)  # int8 / fp8 exports: policy, calibration, accuracy gate

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


def read_manifest(directory: str | Path, expect_format: str, components: tuple[str, ...] = ()) -> Manifest:
    """Load and check an engine dir's manifest: version, config hash, IO specs, and that the files are there."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise EngineDirError(f"engine directory not found: {directory}")
    if not path.is_file():
        raise EngineDirError(f"{directory} has no {MANIFEST_FILE} (make one with emo-export)")
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
    specs = component_specs(cfg, ranges)
    missing = [c for c in components if c not in m.components]
    if missing:
        raise EngineDirError(f"{directory} lacks the component(s) {', '.join(missing)} (export them with emo-export)")
    for name, entry in m.components.items():
        if name not in specs:
            raise EngineDirError(f"{path}: unknown component {name!r}")
        if entry.spec != specs[name].to_dict():
            raise EngineDirError(f"{path}: the IO spec of {name} differs from this runtime's for that model config "
                                 f"(exported by another version; re-export)")
        for f in (entry.file, entry.data_file):
            if f is not None and not (directory / f).is_file():
                raise EngineDirError(f"{directory} is incomplete: {f} is missing")
    return m
