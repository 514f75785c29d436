"""Optimisation profiles from the IO specs: every symbolic dimension and every shape input gets its min/opt/max.

Every profile spans the whole of the build's ranges (`build_ranges`: by default the shapes the run preset uses), so
any shape the runtime may feed has a profile; profiles differ in their opt point (frames, motion frames, size), the
shapes TensorRT tunes its kernels for. The runtime sizes its device memory for the shapes it actually runs, but the
builder must fit the largest shapes of a profile in its memory pool: that is why the default ranges are the
preset's, not the export's. Extra opt points are for users who render at more than one size or clip length.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..io_spec import ComponentSpec, ShapeRanges, dim_values

Point = tuple[int, int, int]  # frames, motion frames, square size in pixels


@dataclass(frozen=True)
class Profile:
    point: Point
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> min, opt, max shape
    values: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # shape input -> min, opt, max

    def to_dict(self) -> dict:
        return {"point": list(self.point),
                "shapes": {k: [list(s) for s in v] for k, v in self.shapes.items()},
                "values": {k: [list(s) for s in v] for k, v in self.values.items()}}


def default_point(ranges: ShapeRanges) -> Point:
    return ranges.frames[1], ranges.motion_frames[1], ranges.size[1]


def check_point(point: Point, ranges: ShapeRanges) -> None:
    for value, (lo, _, hi), what in zip(point, (ranges.frames, ranges.motion_frames, ranges.size),
                                        ("frames", "motion frames", "size"), strict=True):
        if not lo <= value <= hi:
            raise ValueError(f"opt point {point}: {what} {value} is outside the export's range [{lo}, {hi}]")


def component_profiles(cfg: ModelConfig, ranges: ShapeRanges, spec: ComponentSpec, points: list[Point]
                       ) -> list[Profile]:
    """One profile per opt point, in order, skipping points that give a component the same opt shapes (the audio
    encoder, for instance, depends on none of them)."""
    out: list[Profile] = []
    seen = set()
    for point in points:
        check_point(point, ranges)
        f, n, size = point
        at = dim_values(cfg, ranges, f, n, size, ranges.audio_seconds[1], min(ranges.decode_batch, f))
        opt = {k: min(max(at[k], d.min), d.max) for k, d in spec.dims.items()}
        key = tuple(sorted(opt.items()))
        if key in seen:
            continue
        seen.add(key)
        lo, hi = spec.values("min"), spec.values("max")
        shapes = {t.name: (t.resolve(lo), t.resolve(opt), t.resolve(hi)) for t in spec.inputs}
        values = {t.name: tuple((v[t.value_of],) * t.shape[0] for v in (lo, opt, hi))
                  for t in spec.inputs if t.value_of is not None}
        out.append(Profile(point, shapes, values))
    return out
