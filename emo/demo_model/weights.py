"""The trained demo model shipped with the package: a model directory in Hallo's layout (net.safetensors under
net.pth's names, the VAE in diffusers' layout, the audio encoder in transformers'), read by the loader every
model directory goes through, and the record of how it was made."""
from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from ..checkpoints.model_dir import Models, load_model_dir, save_model_dir

TRAINING_RECORD = "training.json"


def demo_model_dir() -> Path:
    """Where the package keeps the trained demo model."""
    return Path(str(resources.files("emo").joinpath("assets/demo_model")))


def ship(models: Models, root: Path | None = None, training: dict | None = None) -> Path:
    """Write `models` (+ the training record) as a model directory, replacing what is at `root` only once the
    new directory is complete."""
    root = Path(root) if root is not None else demo_model_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    save_model_dir(models, tmp, net_file="hallo/net.safetensors")
    if training is not None:
        (tmp / TRAINING_RECORD).write_text(json.dumps(training, indent=1))
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def demo_models() -> Models:
    """The trained demo model, through the loader every model directory goes through."""
    from ..errors import InputError

    root = demo_model_dir()
    if not (root / "hallo").is_dir():
        raise InputError(f"the demo model is missing from this installation ({root}); "
                         "make it with python -m emo.demo_model.train")
    return load_model_dir(root)
