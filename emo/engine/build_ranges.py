"""The shapes a plan build covers: by default those the model's run presets use, not every shape the export allows.

A profile's maximum shapes decide how much memory the builder and its tactics ask for; the export's ranges (up to
24 frames at 768 px for hallo-sd15) are far more than a render at the preset settings (16-frame clips at 512 px)
needs. A build covers, by default: clip lengths from the export's minimum (shorter first clips) up to the run
preset's clip length, and the preset's frame size alone; motion frames and audio lengths keep the export's ranges
(they cost little). `--frames LO:HI` and `--size LO:HI` widen or move them, `--full-range` takes the export's.

A plan directory's manifest holds the ranges it was built for, so the runtime refuses other shapes in one line
before running anything.
"""
from __future__ import annotations

import dataclasses

from ..config import PRESETS, ModelConfig, ShapeRanges
from ..errors import InputError
from ..geometry import size_unit

Span = tuple[int, int]  # lo, hi


def preset_point(cfg: ModelConfig, export: ShapeRanges) -> tuple[int, int]:
    """(clip frames, frame size) the model's run preset renders at; for a model that is no preset, the export's
    opt point."""
    if cfg.name not in PRESETS:
        return export.frames[1], export.size[1]
    run = PRESETS[cfg.name].run  # EchoMimic's: its context windows
    return run.frames, run.size


def parse_span(text: str, what: str) -> Span:
    """"8:16" -> (8, 16); "512" -> (512, 512)."""
    lo, sep, hi = text.partition(":")
    try:
        span = (int(lo), int(hi if sep else lo))
    except ValueError:
        raise InputError(f"--{what} wants LO:HI or one number (e.g. 8:16), not {text!r}") from None
    if span[0] > span[1]:
        raise InputError(f"--{what} {text}: the low end is above the high end")
    return span


def _within(span: Span, export: tuple[int, int, int], what: str, opt: int) -> tuple[int, int, int]:
    lo, hi = span
    if lo < export[0] or hi > export[2]:
        raise InputError(f"--{what} {lo}:{hi} is outside the export's range {export[0]}:{export[2]} "
                         f"(re-export with wider --ranges)")
    return lo, min(max(opt, lo), hi), hi


def build_ranges(cfg: ModelConfig, export: ShapeRanges, frames: Span | None = None, size: Span | None = None,
                 full_range: bool = False) -> ShapeRanges:
    """The ranges a build covers (see the module doc); every value inside the export's ranges."""
    if full_range:
        if frames is not None or size is not None:
            raise InputError("--full-range takes the export's ranges; leave out --frames and --size")
        return export
    run_frames, run_size = preset_point(cfg, export)

    def clamp(v: int, r: tuple[int, int, int]) -> int:
        return min(max(v, r[0]), r[2])

    f_hi = clamp(run_frames, export.frames)
    s = clamp(run_size, export.size)
    f_span = frames or (export.frames[0], f_hi)
    s_span = size or (s, s)
    unit = size_unit(cfg)
    if s_span[0] % unit or s_span[1] % unit:
        raise InputError(f"--size {s_span[0]}:{s_span[1]}: frame sizes are multiples of {unit}")
    return dataclasses.replace(export, frames=_within(f_span, export.frames, "frames", export.frames[1]),
                               size=_within(s_span, export.size, "size", export.size[1]))
