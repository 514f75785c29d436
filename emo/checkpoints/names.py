"""The one name table between Hallo's `net.pth` and our modules.

Our modules keep Hallo's names except for a few wrappers that only exist in diffusers' layout (a ModuleList around
an output Linear, a Sequential feed-forward, the motion module's `temporal_transformer` shell).
"""
from __future__ import annotations

import re

# (pattern in Hallo's names, replacement in ours); applied in order to every key.
HALLO_TO_EMO: tuple[tuple[str, str], ...] = (
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.ff\.net\.0\.proj\.", ".ff.proj."),
    (r"\.ff\.net\.2\.", ".ff.out."),
    (r"\.motion_modules\.(\d+)\.temporal_transformer\.", r".motion_modules.\1."),
    (r"\.pos_encoder\.pe$", ".pe"),
)

EMO_TO_HALLO: tuple[tuple[str, str], ...] = (
    (r"\.to_out\.", ".to_out.0."),
    (r"\.ff\.proj\.", ".ff.net.0.proj."),
    (r"\.ff\.out\.", ".ff.net.2."),
    (r"\.motion_modules\.(\d+)\.", r".motion_modules.\1.temporal_transformer."),
    (r"(attention_blocks\.\d+)\.pe$", r"\1.pos_encoder.pe"),
)


def _rename(name: str, table: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in table:
        name = re.sub(pattern, repl, name)
    return name


def hallo_to_emo(name: str) -> str:
    return _rename(name, HALLO_TO_EMO)


def emo_to_hallo(name: str) -> str:
    return _rename(name, EMO_TO_HALLO)
