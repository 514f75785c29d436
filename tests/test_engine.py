"""emo-build-engine with TensorRT for RTX, ahead of time on the CPU: every component of a small model built once
per module, the manifest, the runtime's binding plan against the IO spec, each refusal of an engine dir, one-line
build failures, and the runtime's import hygiene. Running the plans needs a GPU: see test_engine_gpu.py."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from emo.checkpoints.model_dir import random_models
from emo.cli.build_engine import main as build_main
from emo.cli.run import main as run_main
from emo.config import PRESETS, TINY
from emo.engine.precision import network_typing
from emo.errors import InputError
from emo.export.exporter import export_models
from emo.io_spec import COMPONENTS, component_specs
from emo.manifest import EngineDirError, file_sha256, read_manifest
from emo.tensorrt.plan_dir import TRT_DTYPES, check_target, open_plan_dir, select_profile

from .cli_helpers import one_error_line, quiet

trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT for RTX is not installed "
                                                          "(pip install 'emo-runtime[tensorrt-rtx]')")
pytest.importorskip("onnx")

# CI builds for one target at builder optimisation level 0 (fastest build, fewest tactics); the plans are the
# same kind as a default build, only less tuned.
FAST = ["--opt-level", "0", "--target", "sm_89", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]
# The tiny model with one layer per UNet block and one temporal attention per motion module: every component and
# kind of layer of the tiny model, the same IO spec layout and shape ranges, and a denoiser with half its layers,
# which builds about three times faster (the denoiser is most of the build time). The GPU tests build the tiny model.
MICRO = replace(TINY, name="micro", unet=replace(TINY.unet, layers_per_block=1),
                motion=replace(TINY.motion, attention_blocks=1))


def micro_models():
    return random_models(cfg=MICRO)


_cli, _one_line = quiet, one_error_line


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export") / "fp32"
    export_models(micro_models(), d, "fp32", PRESETS["tiny"].ranges)
    return d


@pytest.fixture(scope="module")
def engine_dir(export_dir, tmp_path_factory) -> Path:
    """Every component of the model, through the command line, once per module."""
    out = tmp_path_factory.mktemp("engine") / "plans"
    start = time.perf_counter()
    rc, err = _cli(build_main, str(export_dir), "--out", str(out), *FAST)
    assert rc == 0, err
    print(f"\nbuilt {len(COMPONENTS)} plans in {time.perf_counter() - start:.0f} s")
    return out


def _copy(src: Path, dst: Path) -> Path:
    """A copy of an engine dir: plans hard-linked (never modified in place: tests write new files)."""
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix == ".plan":
            os.link(f, dst / f.name)
        else:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_manifest(d: Path, edit) -> None:
    raw = json.loads((d / "manifest.json").read_text())
    edit(raw)
    (d / "manifest.json").write_text(json.dumps(raw))


def test_every_component_built_and_described(engine_dir, export_dir):
    m = read_manifest(engine_dir, "tensorrt", COMPONENTS)
    source = read_manifest(export_dir, "onnx")
    assert m.engine["flavour"] == "tensorrt-rtx" and m.engine["version"] == trt.__version__
    assert m.engine["targets"] == ["sm_89"] and m.engine["gpu"] is None and m.engine["optimization_level"] == 0
    assert m.engine["user_allocation"]  # TensorRT for RTX: plans whose enqueue can be captured in a CUDA graph
    ref_index = next(t for t in m.components["denoiser"].network_io if t["name"] == "ref_index")
    assert (ref_index["mode"], ref_index["dtype"], ref_index["shape_input"]) == ("input", "int64", False)
    assert (m.precision, m.config_hash, m.weights_hash, m.engine["export_ranges"]) == \
        (source.precision, source.config_hash, source.weights_hash, source.ranges)
    # the profiles cover the export's opt clip length and size (micro is no preset), not all it allows
    r, export = m.shape_ranges(), source.shape_ranges()
    assert (r.frames, r.size) == ((1, 4, 4), (128, 128, 128)) and (export.frames[2], export.size[2]) == (16, 256)
    assert (r.motion_frames, r.audio_seconds) == (export.motion_frames, export.audio_seconds)
    specs = component_specs(m.model(), r)
    for name in COMPONENTS:
        e, s = m.components[name], source.components[name]
        plan = engine_dir / e.file
        assert e.file == f"{name}.plan" and plan.stat().st_size == e.bytes > 100_000
        assert e.sha256 == file_sha256(plan)
        assert e.source_sha256 == file_sha256(export_dir / s.file)
        assert e.spec == specs[name].to_dict() and e.precision == "fp32"
        assert e.build["strongly_typed"] and e.build["seconds"] > 0 and e.build["peak_rss_mib"] > 0
        memory = e.build["memory"]  # the estimate fits the budget, and held
        assert memory["need_gib"] <= memory["budget_gib"]
        assert e.build["peak_rss_mib"] / 1024 <= 1.25 * memory["need_gib"], (name, e.build)
        assert [t["name"] for t in e.network_io] == [t["name"] for t in (*s.spec["inputs"], *s.spec["outputs"])]
    assert not list(engine_dir.glob(".*")), "temporary files left behind"


def test_shape_input_gets_profile_values(engine_dir):
    """num_frames is a shape tensor of the audio encoder: its profile carries values, the audio_frames range."""
    m = read_manifest(engine_dir, "tensorrt")
    e = m.components["audio_encoder"]
    assert [t["name"] for t in e.network_io if t["shape_input"]] == ["num_frames"]
    d = component_specs(m.model(), m.shape_ranges())["audio_encoder"].dims["audio_frames"]
    assert e.profiles[0]["values"]["num_frames"] == [[d.min], [d.opt], [d.max]]


@pytest.mark.parametrize("component", COMPONENTS)
def test_binding_plan_matches_the_io_spec(engine_dir, component):
    d, _ = open_plan_dir(engine_dir)
    spec = d.specs[component]
    (profile,) = d.plans[component]
    names = [t.name for t in (*spec.inputs, *spec.outputs)]
    assert [b.name for b in profile.bindings] == names
    assert [b.mode for b in profile.bindings] == ["input"] * len(spec.inputs) + ["output"] * len(spec.outputs)
    for b, t in zip(profile.bindings, (*spec.inputs, *spec.outputs), strict=True):
        assert b.dtype == t.numpy_dtype("fp32") and b.shape == t.shape
        assert b.host == (t.name == "num_frames")
    # the default profile is the IO spec's own min / opt / max
    assert {b.name: b.shapes for b in profile.bindings if b.mode == "input"} == spec.profile()
    # and TensorRT's parsed network agrees on every dtype and fixed dimension
    io = {t["name"]: t for t in d.manifest.components[component].network_io}
    for b in profile.bindings:
        assert TRT_DTYPES[io[b.name]["dtype"]] == b.dtype
        # (an output's fixed size may be -1 there: the guided combination slices the dynamic halves axis)
        assert all(g == s or (g == -1 and (isinstance(s, str) or b.mode == "output"))
                   for g, s in zip(io[b.name]["shape"], b.shape, strict=True))
    assert not any(-1 in io[b.name]["shape"] and b.mode == "input"
                   for b in profile.bindings if all(isinstance(s, int) for s in b.shape))


@pytest.fixture(scope="module")
def step_protocol():
    """(frames, motion frames) -> a first clip's conditioning and one step's inputs, as the step protocol hands them
    to every backend (made by eager torch on the CPU, in the dtypes the tensorrt backend keeps them in for an fp32
    engine), and the static buffers a captured step binds."""
    import torch

    from emo.runtime.backend import TorchBackend
    from emo.runtime.renderer import Renderer
    from emo.sampling.conditioning import StepSchedule
    from emo.sampling.ddim import DDIM

    from .media_factory import PORTRAIT, SPEECH

    backend = TorchBackend(micro_models(), "cpu")
    run = PRESETS["tiny"].run
    prepared = Renderer(backend).prepare(PORTRAIT, SPEECH, run)

    def make(frames: int, motion: int):
        video = backend.prepare_video(prepared.portrait, motion)
        clip = backend.prepare_clip(video, prepared.portrait.pixels.expand(motion, -1, -1, -1),
                                    prepared.windows[:frames])
        lat = run.size // backend.cfg.vae.downscale
        schedule = StepSchedule(DDIM(backend.cfg.scheduler, run.steps).timesteps, run, backend.device, backend.dtype)
        return clip, schedule.inputs(torch.zeros(1, 4, frames, lat, lat), 0)

    return make


def _described(feed) -> dict:
    from emo.runtime.graph_backend import dtype_name

    return {k: (tuple(t.shape), dtype_name(t.dtype), False) for k, t in feed.items()}


@pytest.mark.parametrize("frames, motion", [(4, 2), (3, 0)])
def test_step_feed_is_what_the_denoiser_plan_binds(engine_dir, step_protocol, frames, motion):
    """Every name the step protocol feeds (the conditioning's and the step's, reference entries and the int64
    ref_index included) is a denoiser input of the plan, in its dtype and device memory, inside profile 0; the
    static buffers a captured step binds are copies of them, contiguous. What the plan does not bind is refused
    in one line naming the input."""
    import torch

    from emo.runtime.static_step import StaticStep
    from emo.tensorrt.plan_dir import check_feed

    d, _ = open_plan_dir(engine_dir)
    spec, plan = d.specs["denoiser"], d.plans["denoiser"]
    clip, inputs = step_protocol(frames, motion)
    feed = clip.feed() | inputs.feed()
    assert set(feed) == {t.name for t in spec.inputs}
    assert check_feed(spec, plan, _described(feed)) == 0
    static = StaticStep.cloned(clip, inputs).feed()
    assert _described(static) == _described(feed) and all(t.is_contiguous() for t in static.values())
    for name, t in static.items():  # the same values in memory of their own: binding a step writes into them
        own = t.numel() == 0 or t.untyped_storage().data_ptr() != feed[name].untyped_storage().data_ptr()
        assert torch.equal(t, feed[name]) and own, name
    assert feed["motion_features"].shape[1] == motion and feed["ref_index"].shape == (frames,)

    def edited(name, value):
        return _described(feed) | ({name: value} if value is not None else {})

    ok = _described(feed)
    for described, match in [
        ({k: v for k, v in ok.items() if k != "ref_index"}, "denoiser: input ref_index is missing"),
        (edited("ref_index", ((frames,), "int32", False)), "ref_index must be int64 in device memory (got int32"),
        (edited("sample", (ok["sample"][0], "float32", True)), "sample must be float32 in device memory (got float32 "
                                                               "in host memory)"),
        (edited("ref_index_2", ((frames,), "int64", False)), "the engine has no input named ref_index_2"),
        (edited("ref_index", ((frames - 1,), "int64", False)), "dimension frames is"),
    ]:
        with pytest.raises(EngineDirError, match=re.escape(match)):
            check_feed(spec, plan, described)


def test_shape_inputs_are_bound_from_host_memory(engine_dir):
    from emo.tensorrt.plan_dir import check_feed

    d, _ = open_plan_dir(engine_dir)
    spec, plan = d.specs["audio_encoder"], d.plans["audio_encoder"]
    samples = spec.dims["samples"].opt
    assert check_feed(spec, plan, {"waveform": ((1, samples), "float32", False),
                                   "num_frames": ((1,), "int64", True)}) == 0
    with pytest.raises(EngineDirError, match="num_frames must be int64 in host memory"):
        check_feed(spec, plan, {"waveform": ((1, samples), "float32", False), "num_frames": ((1,), "int64", False)})


def test_scratch_is_shared_and_grows_without_freeing_what_contexts_hold():
    """Contexts run one at a time on one stream and share one scratch buffer; a context keeps the buffer it was
    bound to (a captured graph holds its address) when a bigger one replaces it."""
    import torch

    from emo.runtime.tensorrt_runner import Scratch

    scratch = Scratch(torch.device("cpu"))
    first = scratch.at_least(100)
    assert scratch.at_least(50) is first and scratch.at_least(0) is first
    bigger = scratch.at_least(101)
    assert bigger is not first and bigger.numel() == 101 and first.numel() == 100 and scratch.at_least(101) is bigger


def test_extra_opt_points_give_profiles_and_the_runtime_picks_them(export_dir, tmp_path):
    out = tmp_path / "plans"
    parts = "imageproj,face_locator,vae_decoder"
    rc, err = _cli(build_main, str(export_dir), "--out", str(out), "--components", parts, "--opt-point", "8,2,192",
                   "--frames", "1:8", "--size", "128:192", *FAST)
    assert rc == 0, err
    d, _ = open_plan_dir(out, components=tuple(parts.split(",")))
    assert len(d.plans["imageproj"]) == 1  # depends on no opt-point dimension: one profile
    default, extra = d.plans["face_locator"]
    assert (default.point, extra.point) == ((4, 2, 128), (8, 2, 192))
    assert extra.opt_shapes() == {"face_region": (1, 3, 192, 192)}
    assert select_profile(d.plans["face_locator"], {"face_region": (1, 3, 192, 192)}) == 1
    assert select_profile(d.plans["face_locator"], {"face_region": (1, 3, 128, 128)}) == 0
    assert select_profile(d.plans["vae_decoder"], {"latents": (4, 4, 24, 24)}) == 1
    # built the same way again: added to the directory, not rebuilt from scratch
    rc, err = _cli(build_main, str(export_dir), "--out", str(out), "--components", "audioproj", "--opt-point",
                   "8,2,192", "--frames", "1:8", "--size", "128:192", *FAST)
    assert rc == 0, err
    assert set(read_manifest(out, "tensorrt").components) == {*parts.split(","), "audioproj"}


# --- refusals: the engine dir checks run before any GPU is needed ---

def _refused(d: Path, match: str) -> None:
    with pytest.raises(EngineDirError, match=re.escape(match)):
        open_plan_dir(d)
    rc, err = _cli(run_main, "--demo", "--backend", "tensorrt", "--engine-dir", str(d), "-o", str(d / "x.mp4"))
    assert rc == 2 and match in _one_line(err, "emo-run"), err
    assert not (d / "x.mp4").exists()


def test_refuses_a_missing_plan(engine_dir, tmp_path):
    d = _copy(engine_dir, tmp_path / "d")
    (d / "denoiser.plan").unlink()
    _refused(d, "denoiser.plan is missing")


def test_refuses_a_truncated_plan(engine_dir, tmp_path):
    d = _copy(engine_dir, tmp_path / "d")
    data = (engine_dir / "reference.plan").read_bytes()
    (d / "reference.plan").unlink()
    (d / "reference.plan").write_bytes(data[: len(data) // 2])
    _refused(d, "reference.plan is damaged")


def test_refuses_a_damaged_plan(engine_dir, tmp_path):
    d = _copy(engine_dir, tmp_path / "d")
    data = bytearray((engine_dir / "vae_decoder.plan").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "vae_decoder.plan").unlink()
    (d / "vae_decoder.plan").write_bytes(bytes(data))
    _refused(d, "vae_decoder.plan is damaged: its SHA-256")


def test_refuses_a_foreign_plan_through_the_engine_validity_check(engine_dir, tmp_path):
    """A file whose hash the manifest vouches for but that is no TensorRT-RTX plan: the runtime's own
    engine-validity check rejects its header."""
    d = _copy(engine_dir, tmp_path / "d")
    junk = os.urandom(4096)
    (d / "imageproj.plan").unlink()
    (d / "imageproj.plan").write_bytes(junk)

    def vouch(raw):
        raw["components"]["imageproj"] |= {"bytes": len(junk), "sha256": file_sha256(d / "imageproj.plan")}

    _edit_manifest(d, vouch)
    _refused(d, "imageproj.plan is not a usable tensorrt_rtx_bindings plan (malformed_engine)")


def test_refuses_another_tensorrt_version(engine_dir, tmp_path):
    d = _copy(engine_dir, tmp_path / "d")
    _edit_manifest(d, lambda raw: raw["engine"].update(version="1.6.0.0"))
    _refused(d, f"built with tensorrt-rtx 1.6.0.0, this runtime has {trt.__version__}")


def test_refuses_another_flavour(engine_dir, tmp_path):
    """Plans of classic TensorRT, which is not installed here (CI): refused with how to install it."""
    d = _copy(engine_dir, tmp_path / "d")
    _edit_manifest(d, lambda raw: raw["engine"].update(flavour="tensorrt", version="10.13.0"))
    if "tensorrt" in sys.modules or __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("classic TensorRT is installed here")
    _refused(d, "holds tensorrt 10.13.0 engines; tensorrt is not installed")


def test_refuses_an_export_dir_and_unknown_makers(export_dir, engine_dir, tmp_path):
    with pytest.raises(EngineDirError, match="holds onnx graphs, this backend runs tensorrt"):
        open_plan_dir(export_dir)
    d = _copy(engine_dir, tmp_path / "d")
    _edit_manifest(d, lambda raw: raw.update(engine=None))
    _refused(d, "was not built by emo-build-engine")


def test_refuses_another_model_config(engine_dir, tmp_path):
    d = _copy(engine_dir, tmp_path / "d")
    _edit_manifest(d, lambda raw: raw["model_config"]["unet"].update(heads=4))
    _refused(d, "model config does not match its hash")
    d = _copy(engine_dir, tmp_path / "e")
    _edit_manifest(d, lambda raw: raw["components"]["motion"]["spec"]["dims"]["motion"].update(max=99))
    _refused(d, "the IO spec of motion differs")


def test_refuses_a_network_that_is_not_the_io_spec(engine_dir, tmp_path):
    d = _copy(engine_dir, tmp_path / "d")
    _edit_manifest(d, lambda raw: raw["components"]["audioproj"]["network_io"][0].update(dtype="half"))
    _refused(d, "audioproj: the plan's windows is half")
    d = _copy(engine_dir, tmp_path / "e")
    _edit_manifest(d, lambda raw: raw["components"]["face_locator"]["profiles"][0]["shapes"]["face_region"][2]
                   .__setitem__(2, 4096))
    _refused(d, "profile 0 is outside the IO spec")


def test_refuses_another_gpu_architecture(engine_dir):
    """The GPU check itself (the backend calls it with the GPU's compute capability)."""
    m = read_manifest(engine_dir, "tensorrt")
    check_target(m, engine_dir, 89)
    with pytest.raises(EngineDirError, match="holds engines for sm_89; NVIDIA H100 is sm_90"):
        check_target(m, engine_dir, 90, "NVIDIA H100")


def test_valid_dir_still_needs_a_gpu(engine_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: test_engine_gpu.py runs the plans")
    rc, err = _cli(run_main, "--demo", "--engine-dir", str(engine_dir), "-o", str(tmp_path / "x.mp4"))
    assert rc == 2 and "the tensorrt backend needs a CUDA GPU" in _one_line(err, "emo-run")  # auto picked it


# --- refit ---

def test_refit_refusals(export_dir, engine_dir, tmp_path):
    """Refit needs refittable plans of the same model (and then a GPU: TensorRT refits a deserialized engine)."""
    import torch

    from emo.config import ModelConfig

    rc, err = _cli(build_main, str(export_dir), "--out", str(engine_dir), "--refit")
    assert rc == 2 and "was built without --refittable" in _one_line(err, "emo-build-engine")
    out = tmp_path / "refittable"
    rc, err = _cli(build_main, str(export_dir), "--out", str(out), "--components", "imageproj", "--refittable", *FAST)
    if not torch.cuda.is_available():  # without a GPU, TensorRT for RTX fails in its JIT (seen): refused up front
        assert rc == 2 and "compiles refittable plans with the GPU's JIT" in _one_line(err, "emo-build-engine")
        out = _copy(engine_dir, tmp_path / "marked")  # refit's own checks, on a manifest that says refittable
        _edit_manifest(out, lambda raw: raw["engine"].update(refittable=True))
    else:
        assert rc == 0, err
    assert read_manifest(out, "tensorrt").engine["refittable"]
    other = tmp_path / "other"  # an export of another model config (its scheduler differs, not the graphs)
    other.mkdir()
    (other / "imageproj.onnx").write_bytes((export_dir / "imageproj.onnx").read_bytes())
    raw = json.loads((export_dir / "manifest.json").read_text())
    raw["model_config"]["scheduler"]["beta_end"] = 0.02
    raw["config_hash"] = ModelConfig.from_dict(raw["model_config"]).config_hash()
    raw["components"] = {"imageproj": raw["components"]["imageproj"]}
    (other / "manifest.json").write_text(json.dumps(raw))
    rc, err = _cli(build_main, str(other), "--out", str(out), "--refit")
    assert rc == 2 and "of another model config" in _one_line(err, "emo-build-engine")
    if not torch.cuda.is_available():
        rc, err = _cli(build_main, str(export_dir), "--out", str(out), "--refit")
        assert rc == 2 and "needs a CUDA GPU" in _one_line(err, "emo-build-engine")


# --- build failures: one line naming component, node and op ---

def test_unparsable_graph_fails_in_one_line(export_dir, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    src = tmp_path / "export"
    src.mkdir()
    for f in export_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    m = read_manifest(src, "onnx")
    spec = component_specs(m.model(), m.shape_ranges())["imageproj"]
    node = helper.make_node("Mystery", ["face_embedding"], ["image_tokens"], name="strange_node",
                            domain="com.example")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("face_embedding", TensorProto.FLOAT, ["batch", 512])],
                              [helper.make_tensor_value_info("image_tokens", TensorProto.FLOAT, ["batch", 4, 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.example", 1)]),
              str(src / "imageproj.onnx"))
    assert spec.inputs[0].name == "face_embedding"
    out = tmp_path / "plans"
    rc, err = _cli(build_main, str(src), "--out", str(out), "--components", "imageproj", *FAST)
    line = _one_line(err, "emo-build-engine")
    assert rc == 2 and "imageproj: TensorRT cannot import node strange_node (op Mystery)" in line, line
    assert not out.exists() or not list(out.glob("*.plan"))


def test_builder_error_fails_in_one_line(export_dir, tmp_path):
    """TensorRT for RTX has no fp32 GEMM for Turing: the builder's own error, as one line."""
    rc, err = _cli(build_main, str(export_dir), "--out", str(tmp_path / "p"), "--components", "vae_decoder",
                   "--opt-level", "0", "--target", "sm_75")
    line = _one_line(err, "emo-build-engine")
    assert rc == 2 and "vae_decoder: TensorRT could not build the engine:" in line and "SM75" in line, line
    assert not list((tmp_path / "p").glob("*"))  # no plan, no temporary file, no manifest


@pytest.mark.parametrize("args, match", [
    (["--precision", "fp16"], "imageproj: this TensorRT builds strongly typed networks only (no FP16 builder flag)"),
    (["--precision", "int8"], "imageproj: --precision int8 needs a graph with int8 Q/DQ nodes"),
    (["--target", "sm_90"], "tensorrt-rtx cannot build for sm_90"),
    (["--flavour", "tensorrt"], "tensorrt is not installed"),
    (["--opt-point", "99,2,128"], "frames 99 is outside the export's range"),
    (["--size", "64:512"], "--size 64:512 is outside the export's range 64:256"),
    (["--frames", "8:2"], "--frames 8:2: the low end is above the high end"),
    (["--full-range", "--size", "128"], "--full-range takes the export's ranges"),
    (["--max-memory", "0.3"], "imageproj: building needs about 0.5 GiB of memory (0.0 GiB of weights, 4 nodes)"),
    (["--components", "imageproj,nope"], "unknown component(s) nope"),
])
def test_bad_build_options_fail_in_one_line(export_dir, tmp_path, args, match):
    if args[:2] == ["--flavour", "tensorrt"] and __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("classic TensorRT is installed here")
    rc, err = _cli(build_main, str(export_dir), "--out", str(tmp_path / "p"), "--components", "imageproj",
                   *FAST, *args)
    assert rc == 2 and match in _one_line(err, "emo-build-engine")
    assert not (tmp_path / "p").exists()


def test_a_workspace_too_small_for_the_profiles_fails_in_one_line(export_dir, tmp_path):
    rc, err = _cli(build_main, str(export_dir), "--out", str(tmp_path / "p"), "--components", "vae_decoder",
                   "--workspace", "0.001", *FAST)
    line = _one_line(err, "emo-build-engine")
    assert rc == 2 and "vae_decoder: the engine would need more device memory than --workspace 0.001 GiB allows " \
        "at its largest profile shapes (latents " in line and "narrow the profiles" in line, line
    assert not (tmp_path / "p" / "vae_decoder.plan").exists()


def test_full_range_profiles_span_the_export(export_dir, tmp_path):
    rc, err = _cli(build_main, str(export_dir), "--out", str(tmp_path / "p"), "--components", "face_locator",
                   "--full-range", *FAST)
    assert rc == 0, err
    m = read_manifest(tmp_path / "p", "tensorrt")
    assert m.ranges == read_manifest(export_dir, "onnx").ranges
    (lo, _, hi), = m.components["face_locator"].profiles[0]["shapes"].values()
    assert (lo[-1], hi[-1]) == (64, 256)


def test_memory_estimate_refuses_what_cannot_fit():
    from emo.engine.memory import plan_memory

    fp16 = plan_memory("denoiser", int(2.85 * (1 << 30)), 21986, budget_gib=20.0)  # the real-size fp16 denoiser
    assert 11.0 < fp16.need_gib < 12.5  # measured: 11.4 GiB peak RSS
    with pytest.raises(InputError, match=r"denoiser: building needs about 20\.6 GiB of memory \(5\.7 GiB of weights, "
                                         r"21986 nodes\), and 16\.0 GiB is available; build from an fp16 export"):
        plan_memory("denoiser", int(5.69 * (1 << 30)), 21986, budget_gib=16.0)  # its fp32 graph, a 16 GiB machine


def test_typing_is_decided_by_the_modules_builder_flags():
    """The same decision for both flavours, driven by what the module offers: classic TensorRT 10 has FP16/BF16
    builder flags (weakly typed build of an fp32 graph), TensorRT for RTX has none."""
    classic_like = SimpleNamespace(BuilderFlag=SimpleNamespace(FP16=1, BF16=2))
    t = network_typing(classic_like, "denoiser", "fp32", "fp16", {})
    assert (t.strongly_typed, t.flags, t.precision) == (False, ("FP16",), "fp16")
    assert network_typing(trt, "denoiser", "fp16", None, {}).strongly_typed
    assert network_typing(trt, "denoiser", "fp16", "fp8", {"fp8": 12}).precision == "fp8"
    with pytest.raises(InputError, match="strongly typed networks only"):
        network_typing(trt, "denoiser", "fp32", "bf16", {})
    with pytest.raises(InputError, match="needs a fp32 export"):
        network_typing(trt, "denoiser", "fp16", "fp32", {})


# --- import hygiene ---

def test_runtime_never_imports_the_builder_or_the_exporter():
    bad = []
    for path in (ROOT / "emo" / "runtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level:
                if node.module.split(".")[0] in ("engine", "export") and node.level == 2:
                    bad.append(f"{path.name}: from {'.' * node.level}{node.module}")
            named = isinstance(node, ast.ImportFrom) and node.module
            if named and node.module.startswith(("emo.engine", "emo.export")):
                bad.append(f"{path.name}: from {node.module}")
    assert not bad, bad
    code = ("import sys, emo.runtime.renderer, emo.runtime.tensorrt_backend, emo.tensorrt.plan_dir, "
            "emo.runtime.onnxruntime_backend, emo.cli.run; "
            "print(sorted(m for m in sys.modules if m.startswith(('emo.engine', 'emo.export'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
