"""Reading weight files safely and matching them against a module, with errors that name the offending tensors."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weight file that cannot be read or does not fit the model."""


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from .safetensors or a weights-only torch pickle (never arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = _torch_load(path)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            culprit = next(ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln).split(" was ")[0]
            raise CheckpointError(f"{path} is not a weights-only checkpoint, refusing to unpickle code "
                                  f"({culprit.removeprefix('WeightsUnpickler error: ')})") from None
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, "
                              "or not a weights-only torch checkpoint") from None
    except Exception as e:  # corrupt / truncated files surface as many exception types
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {first_line}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a flat tensor state dict")
    return sd


def _torch_load(path: Path):
    """Memory-map zip-format checkpoints; legacy (pre-zip) pickles cannot be mapped and are read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def match_state_dict(module: nn.Module, sd: dict[str, torch.Tensor], rename: Callable[[str], str] = lambda k: k,
                     what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename `sd`'s keys and check names and shapes against `module`; raise listing the first mismatches."""
    mapped = {rename(k): v for k, v in sd.items()}
    expected = module.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    misshaped = [f"{k} {tuple(mapped[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                 if k in mapped and mapped[k].shape != v.shape]
    if missing or unexpected or misshaped:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if names:
                parts.append(f"{len(names)} {label} ({', '.join(names[:3])}{', …' if len(names) > 3 else ''})")
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(parts))
    return mapped


def load_into(module: nn.Module, sd: dict[str, torch.Tensor], rename: Callable[[str], str] = lambda k: k,
              what: str = "checkpoint", dtype: torch.dtype | None = None) -> nn.Module:
    """Check and load `sd` into a module built on the meta device (tensors are assigned, not copied)."""
    mapped = match_state_dict(module, sd, rename, what)
    if dtype is not None:
        mapped = {k: v.to(dtype) if v.is_floating_point() else v for k, v in mapped.items()}
    module.load_state_dict(mapped, strict=True, assign=True)
    return module


def weights_hash(*modules: nn.Module) -> str:
    """Content hash of every parameter and buffer (names, dtypes, shapes, bytes): identifies the weights an
    engine was exported from, whatever file they came from."""
    import hashlib

    h = hashlib.sha256()
    for i, module in enumerate(modules):
        for name, t in sorted(module.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{i}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
