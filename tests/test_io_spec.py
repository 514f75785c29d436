"""IO specs and manifests: ranges, profiles, shape checks, and the runtime's refusal of foreign engine dirs."""
from __future__ import annotations

import json

import pytest

from emo.config import HALLO_SD15, PRESETS, TINY, ShapeRanges
from emo.io_spec import COMPONENTS, component_specs, dim_values, trace_values
from emo.manifest import EngineDirError, GraphEntry, Manifest, read_manifest
from emo.models.unet_layout import transformer_count


def test_real_size_denoiser_spec_matches_the_design_shapes():
    spec = component_specs(HALLO_SD15, PRESETS["hallo-sd15"].ranges)["denoiser"]
    opt = {name: shapes[1] for name, shapes in spec.profile().items()}
    assert opt["sample"] == (2, 4, 16, 64, 64)
    assert opt["audio_tokens"] == (2, 16, 32, 768)
    assert opt["image_tokens"] == (2, 4, 768)
    assert opt["motion_features"] == (2, 2, 1280, 8, 8)
    assert opt["mask_0"] == (3, 64 * 64) and opt["mask_3"] == (3, 8 * 8)
    kv = sorted(n for n in opt if n.startswith(("ref_k_", "ref_v_")))
    assert len(kv) == 2 * transformer_count(HALLO_SD15.unet) == 32
    assert opt["ref_index"] == (16,)  # one reference entry per cond frame; the K/V hold the two entries once
    assert opt["ref_k_00"] == (2, 8, 4096, 40)  # first down block: 320 channels, 8 heads, 64x64 tokens
    assert opt["ref_v_06"] == (2, 8, 64, 160)  # the mid block: 1280 channels at 8x8
    assert opt["ref_k_15"] == (2, 8, 4096, 40)  # the last up block, back at 64x64
    lo, _, hi = spec.profile()["sample"]
    assert lo == (1, 4, 1, 32, 32) and hi == (2, 4, 24, 96, 96)  # halves: 1 (conditional-only) to 2 (guided)


@pytest.mark.parametrize("preset", ["tiny", "hallo-sd15"])
def test_profiles_are_ordered_and_points_fit_every_spec(preset):
    cfg, ranges = PRESETS[preset].model, PRESETS[preset].ranges
    specs = component_specs(cfg, ranges)
    assert tuple(specs) == COMPONENTS
    for spec in specs.values():
        for name, (lo, opt, hi) in spec.profile().items():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True)), (spec.name, name)
        for values in (trace_values(cfg, ranges), spec.values("min"), spec.values("max")):
            shapes = {t.name: t.resolve(values | spec.values("min") if values is None else values)
                      for t in spec.inputs}
            assert spec.check_shapes(shapes) is None, spec.name


def test_check_shapes_names_the_problem():
    spec = component_specs(TINY, PRESETS["tiny"].ranges)["denoiser"]
    shapes = {t.name: t.resolve(trace_values(TINY, PRESETS["tiny"].ranges)) for t in spec.inputs}
    assert spec.check_shapes(shapes) is None
    assert "frames = 40 is outside" in spec.check_shapes(shapes | {"sample": (2, 4, 40, 16, 16)})
    assert "frames is 5 in one input and 3 in audio_tokens" in spec.check_shapes(shapes | {"sample": (2, 4, 5, 16, 16)})
    assert "expected ('halves', 4, 'frames'" in spec.check_shapes(shapes | {"sample": (2, 3, 3, 16, 16)})
    assert "timestep is missing" in spec.check_shapes({k: v for k, v in shapes.items() if k != "timestep"})


def test_audio_frames_cover_whole_clips():
    r = PRESETS["hallo-sd15"].ranges
    v = dim_values(HALLO_SD15, r, frames=16, motion=2, size=512, seconds=4.06, images=4)
    assert v["audio_frames"] == 112 and v["samples"] == 112 * 640  # ceil(4.06 * 25) = 102 -> 7 clips of 16
    with pytest.raises(ValueError, match="multiple of 64"):
        dim_values(HALLO_SD15, r, 16, 2, 500, 1.0, 4)
    with pytest.raises(ValueError, match="may not exceed 32"):
        component_specs(HALLO_SD15, ShapeRanges(frames=(1, 16, 30)))


def _write_manifest(d, cfg=TINY, **changes):
    ranges = PRESETS["tiny"].ranges
    spec = component_specs(cfg, ranges)["imageproj"]
    (d / "imageproj.onnx").write_bytes(b"")
    m = Manifest(format="onnx", precision="fp32", opset=17, model_config=cfg.to_dict(),
                 config_hash=cfg.config_hash(), weights_hash="0" * 16, ranges=ranges.to_dict(),
                 components={"imageproj": GraphEntry("imageproj.onnx", None, 0, "fp32", spec.to_dict())})
    m.write(d)
    raw = json.loads((d / "manifest.json").read_text())
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (d / "manifest.json").write_text(json.dumps(raw))
    return d


def test_manifest_round_trip(tmp_path):
    m = read_manifest(_write_manifest(tmp_path), "onnx", ("imageproj",))
    assert m.model() == TINY and m.shape_ranges() == PRESETS["tiny"].ranges
    assert m.components["imageproj"].spec == component_specs(TINY, PRESETS["tiny"].ranges)["imageproj"].to_dict()


@pytest.mark.parametrize("change, match", [
    ({"format_version": 99}, "format version 99"),
    ({"format": "tensorrt"}, "holds tensorrt graphs"),
    ({"model_config.unet.heads": 4}, "does not match its hash"),
    ({"components.imageproj.spec.inputs": []}, "IO spec of imageproj differs"),
    ({"components.imageproj.file": "gone.onnx"}, "gone.onnx is missing"),
    ({"ranges": {"bogus": 1}}, "not a valid manifest"),
])
def test_foreign_or_damaged_manifests_are_refused(tmp_path, change, match):
    with pytest.raises(EngineDirError, match=match):
        read_manifest(_write_manifest(tmp_path, **change), "onnx")


def test_missing_components_and_dirs_are_named(tmp_path):
    with pytest.raises(EngineDirError, match="lacks the component.*denoiser"):
        read_manifest(_write_manifest(tmp_path), "onnx", ("imageproj", "denoiser"))
    with pytest.raises(EngineDirError, match="has no manifest.json"):
        read_manifest(tmp_path / "..", "onnx")
    with pytest.raises(EngineDirError, match="not found"):
        read_manifest(tmp_path / "nope", "onnx")
