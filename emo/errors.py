"""User-facing errors: one clear line, no traceback (the CLI prints `emo-run: error: <message>`)."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a missing, corrupt or unusable image, audio, option, model directory or output path."""
