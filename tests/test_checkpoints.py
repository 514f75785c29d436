"""Checkpoint loading: the real net.pth layout, safe unpickling, and errors that name the bad tensors."""
from __future__ import annotations

import pickle

import pytest
import torch

from emo.checkpoints.hallo_net import load_hallo_net
from emo.checkpoints.names import emo_to_hallo, hallo_to_emo
from emo.checkpoints.state_dict import CheckpointError, read_weights
from emo.config import HALLO_SD15, TINY
from emo.golden.cases import golden_file
from emo.models.hallo import HalloNet
from emo.models.init import randomize_

KEYS_TSV = golden_file("hallo_sd15_net_keys.tsv")

# Parameter counts of the design table (millions, rounded as printed there).
SD15_PARAMS_M = {"reference_unet": 859.5, "denoising_unet": 1525.5, "face_locator": 0.51, "imageproj": 1.58,
                 "audioproj": 36.5}


def _real_layout() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in KEYS_TSV.read_text().splitlines():
        name, shape, _ = line.split("\t")
        out[name] = tuple(int(s) for s in shape.split("x")) if shape != "scalar" else ()
    return out


needs_keys = pytest.mark.skipif(KEYS_TSV is None, reason="no hallo_sd15_net_keys.tsv in the golden data")


@needs_keys
def test_sd15_preset_accepts_exactly_the_real_net_pth_layout():
    layout = _real_layout()
    assert len(layout) == 2656
    meta_sd = {name: torch.empty(shape, device="meta") for name, shape in layout.items()}
    net = load_hallo_net(meta_sd, HALLO_SD15)  # raises on any missing / unexpected / misshaped name
    ours = net.state_dict()
    assert len(ours) == 2656
    assert {emo_to_hallo(k) for k in ours} == set(layout)
    assert all(tuple(ours[hallo_to_emo(k)].shape) == s for k, s in layout.items())


def test_sd15_parameter_counts_match_design_table():
    with torch.device("meta"):
        net = HalloNet(HALLO_SD15)
    for name, millions in SD15_PARAMS_M.items():
        n = sum(p.numel() for p in getattr(net, name).parameters()) / 1e6
        assert round(n, 1 if millions >= 10 else 2) == millions, (name, n)


@pytest.fixture(scope="module")
def tiny_net():
    return randomize_(HalloNet(TINY), seed=3).eval()


def _hallo_state_dict(net: HalloNet) -> dict[str, torch.Tensor]:
    return {emo_to_hallo(k): v for k, v in net.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_round_trip_through_a_hallo_file(tmp_path, tiny_net, suffix):
    path = tmp_path / f"net{suffix}"
    sd = _hallo_state_dict(tiny_net)
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_hallo_net(path, TINY).state_dict()
    for k, v in tiny_net.state_dict().items():
        assert torch.equal(loaded[k], v), k


def test_wrong_shape_is_named(tmp_path, tiny_net):
    sd = _hallo_state_dict(tiny_net)
    name = "denoising_unet.conv_in.weight"
    sd[name] = torch.zeros(7, 4, 3, 3)
    del sd["audioproj.norm.bias"]
    sd["extra.tensor"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        load_hallo_net(sd, TINY)
    msg = str(e.value)
    assert "1 missing (audioproj.norm.bias)" in msg
    assert "1 unexpected (extra.tensor)" in msg
    assert "denoising_unet.conv_in.weight (7, 4, 3, 3) != (32, 4, 3, 3)" in msg


@needs_keys
def test_sd15_checkpoint_refused_by_tiny_model():
    meta_sd = {name: torch.empty(shape, device="meta") for name, shape in _real_layout().items()}
    with pytest.raises(CheckpointError, match="misshaped"):
        load_hallo_net(meta_sd, TINY)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickle_with_code_is_refused(tmp_path, writer, capsys):
    path = tmp_path / "evil.pth"
    if writer == "torch":
        torch.save({"x": _Payload()}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"x": _Payload()}, f)
    with pytest.raises(CheckpointError, match="not a weights-only (torch )?checkpoint"):
        read_weights(path)
    assert "code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_corrupt_file_is_refused(tmp_path, content):
    path = tmp_path / "net.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_weights(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_weights(tmp_path / "nope.pth")
