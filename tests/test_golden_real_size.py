"""At SD1.5 size the model reproduces the public Hallo code: every real-size golden case, on the hallo-sd15 preset.

A real-size case stores inputs and outputs only. Its weights (2.5 B parameters) are rebuilt from their names and
shapes (`emo.golden.recipe`), checked against the fingerprints the case records, and loaded through the `net.pth`
loader into the `hallo-sd15` preset: the preset itself is under test, not a config read from the case. Without
the float16 rounding of the ReferenceNet's records, step 0 and the final latents are over their tolerances here,
as on the tiny recipe cases. Peak memory is about one float32 copy of the model (~10 GB).
"""
from __future__ import annotations

import pytest

from emo.config import RunConfig, preset
from emo.golden.cases import REAL_SIZE_TOLERANCES, REPO_GOLDEN_DIR, cases, load_case
from emo.golden.run import golden_net, golden_vae, max_err, run_case

CASES = cases("real_size")


def test_repository_has_a_real_size_case():
    assert cases("real_size", labels=("repo",)), f"no real-size golden case in {REPO_GOLDEN_DIR}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_real_size_case(case):
    meta, t = load_case(case)
    cfg = preset("hallo-sd15").model
    run = RunConfig.from_hallo(meta)
    net, vae = golden_net(meta, t, cfg), golden_vae(meta, t, cfg.vae)
    out = run_case(net, vae, cfg, run, t)
    del net, vae  # ~10 GB: not kept alive by a failure's traceback
    errors = {name: max_err(out[name], t[f"out.{name}"]) for name in REAL_SIZE_TOLERANCES}
    over = {name: f"{e:.2e} > {REAL_SIZE_TOLERANCES[name]:.0e}" for name, e in errors.items()
            if e > REAL_SIZE_TOLERANCES[name]}
    assert not over, f"max abs errors over tolerance: {over}"
