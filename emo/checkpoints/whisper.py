"""openai-whisper checkpoints (EchoMimic's `whisper_tiny.pt`) -> WhisperEncoder.

The `.pt` file is a pickle of {"dims": {...}, "model_state_dict": {...}}: a dict of ints and a dict of tensors,
which `torch.load(weights_only=True)` reads without running any code. openai ships the tensors in float16; they
are cast to the requested dtype (float32 by default, as the reference builds its model). A `.safetensors` file
holds the same state dict (the "encoder." tensors at least) and its dims as the json `dims` metadata entry; without
that entry the dims come from the tensor shapes, with whisper's 64 channels per attention head.
Only the encoder is needed: the decoder's tensors are returned as ignored.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from torch import nn

from ..models.whisper_encoder import WhisperConfig, WhisperEncoder
from .state_dict import CheckpointError, load_into

PREFIX = "encoder."
HEAD_DIM = 64  # channels per attention head in every openai whisper model (tiny: 384 / 6)
DIM_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


def _read_pt(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = next((ln for ln in str(e).splitlines() if "Unsupported global" in ln), "not a weights-only pickle")
        raise CheckpointError(f"{path} is not a weights-only whisper checkpoint, refusing to unpickle it "
                              f"({first.strip().removeprefix('WeightsUnpickler error: ')})") from None
    except Exception as e:  # corrupt / truncated files surface as many exception types
        raise CheckpointError(f"cannot read whisper checkpoint {path}: {type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0]}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("dims"), dict) or not isinstance(
            ckpt.get("model_state_dict"), dict):
        raise CheckpointError(f"{path} is not an openai-whisper checkpoint (a dict with 'dims' and "
                              "'model_state_dict')")
    return ckpt["dims"], ckpt["model_state_dict"]


def _read_safetensors(path: Path) -> tuple[dict | None, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"cannot read whisper checkpoint {path}: {type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0]}") from None
    return (json.loads(meta["dims"]) if "dims" in meta else None), sd


def _dims_from_shapes(sd: dict[str, torch.Tensor], what: str) -> dict:
    conv1 = sd.get(PREFIX + "conv1.weight")
    pos = sd.get(PREFIX + "positional_embedding")
    if conv1 is None or pos is None:
        name = PREFIX + ("conv1.weight" if conv1 is None else "positional_embedding")
        raise CheckpointError(f"{what} has no dims and no {name} to read them from")
    layers = {int(k.split(".")[2]) for k in sd if k.startswith(PREFIX + "blocks.")}
    return {"n_mels": conv1.shape[1], "n_audio_ctx": pos.shape[0], "n_audio_state": conv1.shape[0],
            "n_audio_head": conv1.shape[0] // HEAD_DIM, "n_audio_layer": len(layers)}


def read_whisper_checkpoint(path: str | Path) -> tuple[WhisperConfig, dict[str, torch.Tensor], list[str]]:
    """(config, the encoder's tensors with their "encoder." names, names of the ignored non-encoder tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"whisper checkpoint not found: {path}")
    dims, sd = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pt(path)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: model_state_dict holds something other than tensors")
    what = f"whisper checkpoint {path}"
    dims = dims if dims is not None else _dims_from_shapes(sd, what)
    missing = [k for k in DIM_KEYS if k not in dims]
    if missing:
        raise CheckpointError(f"{what}: dims lack {', '.join(missing)}")
    encoder_sd = {k: v for k, v in sd.items() if k.startswith(PREFIX)}
    return WhisperConfig.from_dims(dims), encoder_sd, sorted(k for k in sd if not k.startswith(PREFIX))


def load_whisper_encoder(path: str | Path, dtype: torch.dtype = torch.float32
                         ) -> tuple[WhisperEncoder, list[str]]:
    """(encoder in eval mode, ignored tensor names). A missing or misshaped encoder tensor is a CheckpointError
    naming it."""
    cfg, sd, ignored = read_whisper_checkpoint(path)
    with torch.device("meta"):
        holder = nn.ModuleDict({PREFIX[:-1]: WhisperEncoder(cfg)})  # names the tensors as the file does
    load_into(holder, sd, what=f"whisper checkpoint {path}", dtype=dtype)
    return holder[PREFIX[:-1]].eval(), ignored
