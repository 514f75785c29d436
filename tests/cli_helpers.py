"""Running emo-run's main() in-process and checking how it refuses bad input."""
from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from emo.cli.run import main

FAST = ["--size", "64", "--steps", "1", "--frames-per-clip", "4", "--motion-frames", "2", "--quiet"]


def quiet(fn, *args: str) -> tuple[int, str]:
    """Run a console script's main(argv) in-process, its output swallowed -> (exit code, stderr)."""
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = fn(list(args))
    return rc, err.getvalue()


def run_cli(tmp_path: Path, *args: str) -> tuple[int, str, list[str]]:
    """Run the CLI's main() in-process -> (exit code, stderr, names of the files in tmp_path/out)."""
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    rc, err = quiet(main, *args)
    return rc, err, sorted(p.name for p in out_dir.iterdir())


def one_error_line(err: str, prog: str) -> str:
    """stderr that is exactly one `PROG: error:` line, without a traceback -> that line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error:") and "Traceback" not in err, err
    return lines[0]


def assert_refused(tmp_path: Path, args: list[str], match: str, code: int | None = None) -> str:
    """One `emo-run: error:` line containing `match`, no traceback, nothing in tmp_path/out; exit `code` (any
    non-zero when None) -> the line."""
    rc, err, left = run_cli(tmp_path, *args)
    assert rc != 0 if code is None else rc == code, (rc, err)
    line = one_error_line(err, "emo-run")
    assert match.lower() in err.lower(), err
    assert left == [], left
    return line
