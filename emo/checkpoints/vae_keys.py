"""VAE checkpoints saved by diffusers < 0.14 (and VAEs converted from LDM with it) -> our VAE's parameter names."""
from __future__ import annotations

import torch

# Legacy attention module name -> current one, inside `<encoder|decoder>.mid_block.attentions.<i>.`.
LEGACY_ATTENTION_NAMES: dict[str, str] = {
    "query": "to_q",
    "key": "to_k",
    "value": "to_v",
    "proj_attn": "to_out.0",
}


def normalize_vae_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy mid-block attention tensors and flatten 1x1-conv attention weights to linear ones.

    Old VAE files name the projections query/key/value/proj_attn, and some (LDM conversions, under either naming)
    store them as (C, C, 1, 1) conv kernels; both describe the same per-pixel linear map. Every other tensor is
    returned unchanged. This is the one normalisation `load_vae` applies.
    """
    out = {}
    for name, tensor in sd.items():
        parts = name.split(".")  # ... attentions <i> <module> <param>
        if len(parts) >= 4 and parts[-4] == "attentions" and parts[-2] in LEGACY_ATTENTION_NAMES:
            name = ".".join([*parts[:-2], LEGACY_ATTENTION_NAMES[parts[-2]], parts[-1]])
        if ".attentions." in name and name.endswith(".weight") and tensor.dim() == 4 and tensor.shape[2:] == (1, 1):
            tensor = tensor.flatten(1)  # c_out c_in 1 1 -> c_out c_in
        out[name] = tensor
    return out
