"""Discovery of golden cases: every `<name>.json` + `<name>.safetensors` pair in $EMO_GOLDEN_DIR."""
from __future__ import annotations

import json
import os
from pathlib import Path

GOLDEN_DIR = Path(os.environ.get("EMO_GOLDEN_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "golden"))


def cases(kind: str) -> list[Path]:
    """json files of cases of one kind ("hallo_tiny" = model/pipeline cases, "hallo_audio" = audio features).

    The kind is read from the json's content, never from the file name.
    """
    found = []
    for p in sorted(GOLDEN_DIR.glob("*.json")):
        if not p.with_suffix(".safetensors").is_file():
            continue
        meta = json.loads(p.read_text())
        if (kind == "hallo_tiny" and "unet2d" in meta) or (kind == "hallo_audio" and "wav2vec2_config" in meta):
            found.append(p)
    return found


def load_case(path: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return json.loads(path.read_text()), load_file(str(path.with_suffix(".safetensors")))
