"""The precision policy of every fused kernel, in one place.

- Floating operands are float32, float16 or bfloat16, all of one dtype; anything else runs the plain-torch
  fallback (integer operands, such as indices, are not data and do not count).
- Dot products: float16/bfloat16 operands go to the tensor cores as they are; float32 operands are multiplied in
  full IEEE float32 (`DOT_PRECISION`), never silently rounded to TF32, so a float32 run keeps float32 accuracy.
- Every accumulation (dot products, softmax sums, normalisation statistics) is float32; results are rounded to
  the operands' dtype once, when stored.
"""
from __future__ import annotations

import torch

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DOT_PRECISION = "ieee"  # tl.dot's input_precision, passed to every kernel that multiplies matrices


def supported(*tensors: torch.Tensor) -> bool:
    """Do these operands fit the policy (one floating dtype, and one the kernels take)?"""
    dtypes = {t.dtype for t in tensors if t.is_floating_point()}
    return len(dtypes) == 1 and dtypes.pop() in DTYPES
