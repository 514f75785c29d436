"""One way to build a renderer: a frozen spec of what to load and how, checked before anything loads.

emo-run, emo-bench, emo-serve and the Python API (`Renderer.from_*`) all build through `build_renderer`, so a
backend, a device or a model source means the same thing everywhere and is refused with the same message.
The model comes from exactly one source: a model directory in Hallo's layout (`models`), an ONNX export directory
(emo-export) or a TensorRT plan directory (emo-build-engine) (`engine_dir`), the trained demo model (`demo`), or
seeded random weights of a preset (`random`, for benchmarks and tests).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..checkpoints.echomimic_dir import EchoMimicModels
from ..checkpoints.model_dir import Models, load_model_dir, random_models
from ..config import ECHOMIMIC_RUNS, FAMILIES, PRESETS, RunConfig
from ..errors import InputError
from ..validation import check_face_expand_ratio
from .backend import Backend, TorchBackend
from .compiled_step import COMPILE_MODES
from .fp8_linear import fp8_refusal
from .renderer import Renderer

BACKENDS = ("torch", "torch-fast", "onnxruntime", "tensorrt")
GRAPH_BACKENDS = ("onnxruntime", "tensorrt")  # run exported graphs, not torch modules
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
FAST_DTYPES = (None, "fp16", "bf16")  # torch-fast runs half precision only
DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class RendererSpec:
    models: str | None = None  # a model directory in Hallo's pretrained_models layout
    engine_dir: str | None = None  # an ONNX export directory or a TensorRT plan directory
    demo: bool = False  # the trained demo model shipped with the package
    random: str | None = None  # a preset name: its architecture with seeded random weights
    random_seed: int = 0
    backend: str = "auto"  # auto or one of BACKENDS
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dtype: str | None = None  # fp32, fp16, bf16 (None: the backend's default)
    face_models: str | None = None  # InsightFace ONNX models (default: face_analysis/ of `models` when there)
    separate_vocals: str | None = None  # None: off; "": `models`' Kim_Vocal_2.onnx; else an MDX-Net ONNX file
    face_expand_ratio: float = 1.2
    kernels: tuple[str, ...] | None = None  # torch-fast's fused kernels (None: its default)
    channels_last: bool = False  # NHWC convolutions (torch, torch-fast)
    fast_on_cpu: bool = False  # let torch-fast run its code path on the CPU in fp32 (emo-bench's harness, tests)
    family: str | None = None  # hallo, echomimic, echomimic-acc (None: what the model source is)
    compile: str | None = None  # torch-fast: the step through torch.compile, "graph" or "reduce-overhead"
    fp8_scales: str | None = None  # torch-fast: FP8 linear layers with this scales file (emo-calibrate --torch-scales)

    def sources(self) -> list[str]:
        return [name for name, given in (("models", self.models), ("engine_dir", self.engine_dir),
                                         ("demo", self.demo), ("random", self.random)) if given]

    def resolved_backend(self) -> str:
        """auto: with an engine directory, tensorrt for a plan directory or onnxruntime for an export directory;
        torch-fast on a CUDA GPU when the dtype is half precision (or not given); eager torch otherwise (and always
        for an EchoMimic model without an export)."""
        if self.backend != "auto":
            return self.backend
        if self.model_family() != "hallo" and not self.engine_dir:
            return "torch"
        if self.engine_dir:
            from ..manifest import manifest_format

            return "tensorrt" if manifest_format(self.engine_dir) == "tensorrt" else "onnxruntime"
        import torch

        gpu = self.device.startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())
        return "torch-fast" if gpu and self.dtype in FAST_DTYPES else "torch"

    def check(self, models_given: bool = False) -> str:
        """Every setting checked before anything is loaded -> the backend that will run. models_given: the caller
        brings loaded torch modules (no model source needed)."""
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r} (auto, {', '.join(BACKENDS)})")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r} (choose {', '.join(DTYPES)})")
        check_face_expand_ratio(self.face_expand_ratio)
        if not DEVICE.fullmatch(self.device):
            raise InputError(f"unknown device {self.device!r} (auto, cpu, cuda or cuda:N)")
        sources = self.sources()
        if len(sources) > 1 and sources != ["engine_dir", "demo"]:  # --demo with an export: its demo settings
            raise InputError(f"give one model source, not {' and '.join(sources)}")
        if self.random is not None and self.random not in PRESETS:
            raise InputError(f"unknown preset {self.random!r} (choose {', '.join(PRESETS)})")
        family = self.model_family()
        backend = self.resolved_backend()
        if family != "hallo" and backend != "torch" and not (backend == "onnxruntime" and self.engine_dir):
            raise InputError(f"EchoMimic models run on the torch backend (not {backend}), or on onnxruntime from "
                             "an export (--engine-dir DIR, made by emo-export)")
        graph = backend in GRAPH_BACKENDS
        if graph and not self.engine_dir:
            what = "emo-export" if backend == "onnxruntime" else "emo-build-engine"
            raise InputError(f"--backend {backend} needs --engine-dir DIR (make one with {what})")
        if graph and self.models:
            raise InputError(f"the {backend} backend reads its weights from --engine-dir; drop --models")
        if not graph and self.engine_dir:
            raise InputError("--engine-dir is for the onnxruntime and tensorrt backends")
        if not sources and not (models_given and not graph):
            raise InputError("give --models DIR (or --demo, or --engine-dir DIR)")
        if backend == "torch-fast" and not (self.fast_on_cpu and self.device == "cpu"):
            if self.device == "cpu":
                raise InputError("--backend torch-fast runs on a CUDA GPU (use --backend torch on the CPU)")
            if self.dtype not in FAST_DTYPES:
                raise InputError("--backend torch-fast runs fp16 or bf16 (use --backend torch for fp32)")
        if (self.compile or self.fp8_scales) and backend != "torch-fast":
            raise InputError(f"--compile and --fp8-scales are torch-fast options (not {backend})")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise InputError(f"unknown compile mode {self.compile!r} (choose {', '.join(COMPILE_MODES)})")
        if self.fp8_scales:
            refusal = fp8_refusal("cuda" if self.device == "auto" else self.device)
            if refusal:
                raise InputError(refusal)
        if backend != "onnxruntime":  # onnxruntime checks its own CUDA provider
            _check_cuda(self.device, needed=backend == "torch-fast" and self.device != "cpu", backend=backend)
        return backend

    def model_family(self) -> str:
        """The family of the model source (checked against --family; files are looked at, none is loaded)."""
        from ..checkpoints.echomimic_dir import detect_family, is_echomimic_dir
        from ..manifest import manifest_family

        if self.family is not None and self.family not in FAMILIES:
            raise InputError(f"unknown model family {self.family!r} (choose {', '.join(FAMILIES)})")
        if self.models and Path(self.models).is_dir() and is_echomimic_dir(Path(self.models)):
            if self.family == "hallo":
                raise InputError(f"{self.models} is an EchoMimic directory, not Hallo's")
            return detect_family(Path(self.models), self.family)
        if self.random is not None and PRESETS[self.random].model.family != "hallo":
            return self.family if self.family not in (None, "hallo") else "echomimic-acc"
        if self.engine_dir:
            exported = manifest_family(self.engine_dir)
            if exported is not None and self.family not in (None, exported):
                raise InputError(f"{self.engine_dir} holds an export for {exported}, not --family {self.family}")
            return exported or self.family or "hallo"
        if self.models and self.family not in (None, "hallo"):
            raise InputError(f"{self.models} is not in EchoMimic's pretrained_weights layout (it has no "
                             "reference_unet.pth or denoising_unet[_acc].pth)")
        return self.family or "hallo"

    def face_models_dir(self) -> str | None:
        """face_models, else face_analysis/ of `models` when present."""
        from ..preprocess.face_models import default_face_models

        if self.face_models:
            return self.face_models
        found = default_face_models(self.models) if self.models else None
        return None if found is None else str(found)

    def vocal_model(self) -> str | None:
        if self.separate_vocals is None:
            return None
        if self.separate_vocals:
            return self.separate_vocals
        if not self.models:
            raise InputError("--separate-vocals needs MODEL.onnx (or --models DIR with "
                             "audio_separator/Kim_Vocal_2.onnx)")
        return str(Path(self.models) / "audio_separator" / "Kim_Vocal_2.onnx")

    def preset_run(self) -> RunConfig:
        """The render settings this model is made for: the demo's for the demo model, the random preset's for
        random weights, Hallo's otherwise."""
        family = self.model_family()
        if family != "hallo":
            name = "echomimic-tiny" if self.demo else self.random or self._exported_preset() or "echomimic-sd15"
            size = PRESETS[name].run.size
            return dataclasses.replace(ECHOMIMIC_RUNS[family], size=size)
        if self.demo:
            return PRESETS["demo"].run
        if self.random:
            return PRESETS[self.random].run
        return PRESETS["hallo-sd15"].run


    def _exported_preset(self) -> str | None:
        """The preset an engine directory's model is (its run size), None when not a preset."""
        return exported_preset(self.engine_dir)


def exported_preset(engine_dir: str | None) -> str | None:
    """The preset an engine directory's model is (its graphs or plans take its settings), None when not a preset or
    no directory."""
    if not engine_dir:
        return None
    from ..manifest import MANIFEST_FILE

    try:
        name = json.loads((Path(engine_dir) / MANIFEST_FILE).read_text())["model_config"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if name in PRESETS else None


def _check_cuda(device: str, needed: bool, backend: str) -> None:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU is available (use --device cpu)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: there is no CUDA GPU {index} "
                             f"({torch.cuda.device_count()} available)")
    if needed and not torch.cuda.is_available():
        raise InputError(f"--backend {backend} needs a CUDA GPU, and none is available (use --backend torch)")


def load_models(spec: RendererSpec) -> Models | EchoMimicModels:
    """The torch modules of a spec's model source (the demo model, random weights or a model directory)."""
    family = spec.model_family()
    if family != "hallo":
        from ..checkpoints.echomimic_dir import load_echomimic_dir, random_echomimic_models

        if spec.models:
            return load_echomimic_dir(spec.models, family)
        preset = PRESETS[spec.random or "echomimic-tiny"].model  # --demo: no trained EchoMimic demo, random weights
        return random_echomimic_models(spec.random_seed, preset, family)
    if spec.demo:
        from ..demo_model.weights import demo_models

        return demo_models()
    if spec.random:
        return random_models(spec.random_seed, PRESETS[spec.random].model)
    if not spec.models:
        raise InputError("give --models DIR (or --demo)")
    return load_model_dir(spec.models)


def build_backend(spec: RendererSpec, models: Models | None = None) -> Backend:
    """The backend a (checked) spec asks for; `models`: already loaded torch modules to use instead of loading."""
    backend = spec.check(models_given=models is not None)
    if backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        device = "cpu" if spec.device == "auto" else spec.device
        if spec.model_family() != "hallo":
            from .echo_graph_backend import onnxruntime_echo_backend

            graphs = onnxruntime_echo_backend(spec.engine_dir, device)
        else:
            graphs = OnnxRuntimeBackend(spec.engine_dir, device)
        exported = graphs.manifest.precision
        if spec.dtype not in (None, exported):
            raise InputError(f"{spec.engine_dir} holds {exported} graphs; --dtype {spec.dtype} needs another export")
        return graphs
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(spec.engine_dir, "cuda" if spec.device == "auto" else spec.device)
    models = models if models is not None else load_models(spec)
    if isinstance(models, EchoMimicModels):
        from .echo_renderer import EchoTorchBackend

        if backend != "torch":
            raise InputError(f"EchoMimic models run on the torch backend (not {backend})")
        return EchoTorchBackend(models, spec.device, spec.dtype or "fp32")
    if backend == "torch-fast":
        from .torch_fast_backend import TorchFastBackend

        kw = {} if spec.kernels is None else {"kernels": spec.kernels}
        if spec.fp8_scales:
            from .fp8_convert import Fp8Scales

            kw["fp8"] = Fp8Scales.load(spec.fp8_scales)
        dtype = spec.dtype or ("fp32" if spec.device == "cpu" else "fp16")
        return TorchFastBackend(models, "cuda" if spec.device == "auto" else spec.device, dtype,
                                channels_last=spec.channels_last, compile=spec.compile, **kw)
    return TorchBackend(models, spec.device, spec.dtype or "fp32", channels_last=spec.channels_last)


def build_renderer(spec: RendererSpec, models: Models | None = None, **preprocessing) -> Renderer:
    """The Renderer a spec asks for: backend and device checked before anything loads. preprocessing: objects
    (FaceModels, VocalSeparator) or crop_scale to use instead of what the spec names."""
    spec.check(models_given=models is not None)
    kw = dict(face_expand_ratio=spec.face_expand_ratio, face_models=spec.face_models_dir(),
              vocal_separator=spec.vocal_model()) | preprocessing
    backend = build_backend(spec, models)
    if getattr(backend, "family", "hallo") != "hallo":
        from .echo_renderer import EchoRenderer

        return EchoRenderer(backend, **kw)
    return Renderer(backend, **kw)
