"""Range checks for user settings, each a one-line InputError: finite numbers, bounds, integer seeds.

RunConfig.validate, the renderer and the command lines all check through these, so every entry point refuses the
same values with the same words (`nan` compares false with everything, so plain `<` checks let it through).
"""
from __future__ import annotations

import math

from .errors import InputError

DEFAULT_SEED = 42  # the initial noise's seed when none is given (emo-run, emo-serve)
SEED_RANGE = (0, 2**64 - 1)  # torch.Generator.manual_seed takes a 64-bit unsigned seed
FACE_EXPAND_RANGE = (0.1, 4.0)  # beyond 2 the face region already covers the whole 2x crop


def in_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Refuse NaN, infinities and values outside [low, high] (either bound may be None)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number (got {value!r})")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise InputError(f"{name} must be {bounds} (got {value})")


def check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer (got {seed!r})")
    in_range("seed", seed, *SEED_RANGE)


def check_face_expand_ratio(ratio: float) -> None:
    in_range("face expand ratio", ratio, *FACE_EXPAND_RANGE)
