"""Configs: one preset record per model, unknown keys refused by name, one geometry for every size calculation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import emo
from emo.checkpoints.model_dir import CONFIG_FILE, load_model_dir, random_models, save_model_dir
from emo.config import HALLO_SD15, PRESETS, TINY, ModelConfig, ShapeRanges, preset
from emo.errors import InputError
from emo.geometry import Geometry, size_unit


def test_presets_tie_model_run_and_ranges():
    assert set(PRESETS) == {"tiny", "demo", "hallo-sd15", "echomimic-tiny", "echomimic-sd15"}
    for name, p in PRESETS.items():
        assert p.name == p.model.name == name
        p.run.validate(p.model)
        assert p.ranges.size[0] <= p.run.size <= p.ranges.size[2]
        assert p.ranges.frames[0] <= p.run.frames <= p.ranges.frames[2]
    assert preset("tiny").model == TINY and preset("hallo-sd15").model == HALLO_SD15
    shipped = json.loads((Path(emo.__file__).parent / "assets/demo_model/emo_config.json").read_text())
    assert ModelConfig.from_dict(shipped) == preset("demo").model  # the trained weights' own config
    with pytest.raises(ValueError, match="unknown preset 'sd21'"):
        preset("sd21")


def test_round_trip_and_unknown_keys_named():
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    assert ShapeRanges.from_dict(json.loads(json.dumps(ShapeRanges().to_dict()))) == ShapeRanges()
    d = TINY.to_dict()
    d["unet"]["head"] = 4  # a misspelt "heads" must not be dropped silently
    with pytest.raises(ValueError, match="unknown config key unet.'head' for UNetConfig"):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match="unknown config key 'framez'"):
        ShapeRanges.from_dict({"framez": [1, 2, 3]})


def test_model_dir_with_a_foreign_config_key_is_refused(tmp_path):
    root = save_model_dir(random_models(), tmp_path / "models")
    d = json.loads((root / CONFIG_FILE).read_text())
    d["vae"]["scale_factor"] = 0.2
    (root / CONFIG_FILE).write_text(json.dumps(d))
    with pytest.raises(InputError, match="vae.'scale_factor'"):
        load_model_dir(root)


def test_geometry():
    g = Geometry.of(HALLO_SD15, 512)
    assert (g.latent, g.levels, g.mid) == (64, 4, 8)
    assert [g.side(k) for k in range(4)] == [64, 32, 16, 8] and g.tokens(1) == 1024
    assert size_unit(HALLO_SD15) == 64 and Geometry.of_latent(HALLO_SD15.unet, 64) == g
    with pytest.raises(ValueError, match="multiple of 64"):
        Geometry.of(TINY, 96)
