"""Run the installed ``edge-export`` console script as a user would (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def edge_export(
    *args: str, check: int | None = 0, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """``edge-export ARGS``; asserts the exit status ``check`` (None: any).

    ``columns`` sets the terminal width rich lays tables out for.
    """
    exe = Path(sys.executable).with_name("edge-export")
    proc = subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc
