"""Golden cases: where they are found, what kind each is, and reading one.

A case is a `<name>.json` + `<name>.safetensors` pair made by running the public Hallo code. Cases are read from
the checkout's `tests/data/golden/` (always), `$EMO_GOLDEN_DIR` (when set) and `../shared/golden` beside the
checkout (when it exists). What a case is comes from its json, never from its file name:

- "model": one clip of the full model; the config comes from the case (`ModelConfig.from_hallo`);
- "real_size": the same for a case whose model is the `hallo-sd15` preset; it runs on that preset;
- "audio": wav2vec2 features.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig, preset

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root when the package runs from its checkout
REPO_GOLDEN_DIR = CHECKOUT / "tests" / "data" / "golden"
SHARED_GOLDEN_DIR = CHECKOUT.parent / "shared" / "golden"  # beside the checkout

# Max absolute errors allowed (float32, CPU), as the golden README gives them.
TOLERANCES = {"audio_tokens": 1e-5, "step0_model_output": 5e-5, "final_latents": 2e-4, "video": 2e-4}
REAL_SIZE_TOLERANCES = {**TOLERANCES, "audio_tokens": 5e-5}  # the reference's own rounding is ~1.1e-5 there


def golden_dirs() -> list[tuple[str, Path]]:
    """(label, directory) of every place cases are read from, each directory once."""
    found = [("repo", REPO_GOLDEN_DIR)]
    if os.environ.get("EMO_GOLDEN_DIR"):
        found.append(("env", Path(os.environ["EMO_GOLDEN_DIR"])))
    if SHARED_GOLDEN_DIR.is_dir():
        found.append(("shared", SHARED_GOLDEN_DIR))
    seen, out = set(), []
    for label, d in found:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append((label, d))
    return out


@dataclass(frozen=True)
class Case:
    path: Path  # the json
    label: str  # where it was found: repo / env / shared

    @property
    def id(self) -> str:
        return f"{self.label}:{self.path.stem}"


def _is_real_size(meta: dict) -> bool:
    sd15 = preset("hallo-sd15").model
    return dataclasses.replace(ModelConfig.from_hallo(meta), name=sd15.name) == sd15


def kind_of(meta: dict) -> str | None:
    if "wav2vec2_config" in meta:
        return "audio"
    if "unet2d" in meta:
        return "real_size" if _is_real_size(meta) else "model"
    return None


def cases(kind: str, labels: tuple[str, ...] = ("repo", "env", "shared")) -> list[Case]:
    """Cases of one kind ("model", "real_size", "audio") from the directories with these labels."""
    found = []
    for label, d in golden_dirs():
        if label not in labels:
            continue
        for p in sorted(d.glob("*.json")):
            if p.with_suffix(".safetensors").is_file() and kind_of(json.loads(p.read_text())) == kind:
                found.append(Case(p, label))
    return found


def golden_file(name: str) -> Path | None:
    """A non-case file of the golden data (e.g. the real net.pth's tensor list), wherever it is found first."""
    return next((d / name for _, d in golden_dirs() if (d / name).is_file()), None)


def load_case(case: Case | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    path = case.path if isinstance(case, Case) else case
    return json.loads(path.read_text()), load_file(str(path.with_suffix(".safetensors")))
