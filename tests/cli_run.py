"""Run the installed console scripts (``edge-export``, ``edge-fleet``) as a user would."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path


def run_script(
    name: str,
    *args: str,
    check: int | None = 0,
    columns: int = 200,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``NAME ARGS`` (a subprocess); asserts the exit status ``check`` (None: any).

    ``columns`` sets the terminal width rich lays tables out for; ``env`` adds
    to (not replaces) this process's environment.
    """
    exe = Path(sys.executable).with_name(name)
    proc = subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": str(columns), **(env or {})},
    )
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def edge_export(
    *args: str, check: int | None = 0, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """``edge-export ARGS``; asserts the exit status ``check`` (None: any).

    ``columns`` sets the terminal width rich lays tables out for.
    """
    return run_script("edge-export", *args, check=check, columns=columns)


def edge_fleet(
    *args: str,
    check: int | None = 0,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``edge-fleet ARGS`` in ``cwd`` with ``env`` added; asserts the exit status ``check``."""
    return run_script("edge-fleet", *args, check=check, cwd=cwd, env=env, timeout=timeout)


def line_queue(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """The lines ``proc`` prints, as they come (a reader thread)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines
