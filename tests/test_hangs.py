"""A hanging test fails within its limit, with every thread's stack, instead of hanging CI.

Each case writes a deliberately hanging test to ``tmp_path`` (test-only: it is
never shipped nor collected by the suite) and runs it in a pytest subprocess
with this suite's timeout settings and a 3 s limit; the subprocess itself is
bounded, so this test cannot hang either.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
LIMIT_S, GRACE_S = 3, 2
BOUND_S = 60  # the subprocess, pytest start-up included; a watchdog that never fires fails here

PYTHON_HANG = """
import threading


def wait_for_a_reply_that_never_comes():
    threading.Event().wait()


def test_hangs():
    worker = threading.Thread(target=wait_for_a_reply_that_never_comes, daemon=True)
    worker.start()
    worker.join()
"""

# libc sleep() through ctypes.PyDLL keeps the GIL, as a native destructor joining a thread that
# waits for the GIL did (issue #15): no Python thread, pytest-timeout's included, runs again.
GIL_HANG = """
import ctypes


def hold_the_gil_in_native_code():
    ctypes.PyDLL(None).sleep(600)


def test_hangs():
    hold_the_gil_in_native_code()
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}


def _run_hanging_test(
    tmp_path: Path, source: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    (tmp_path / "test_hanging.py").write_text(source)
    # The suite's own settings (pyproject.toml), with a short limit and grace.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n"
        f"timeout = {LIMIT_S}\n"
        "timeout_method = thread\n"
        f"hang_watchdog_grace_s = {GRACE_S}\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-p", "hang_watchdog", "-p", "no:cacheprovider"]
    start = time.monotonic()
    proc = subprocess.run(
        [*cmd, "test_hanging.py"],
        cwd=tmp_path,
        env={**_clean_env(), "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=BOUND_S,
    )
    return proc, time.monotonic() - start


@pytest.mark.timeout(2 * BOUND_S)
def test_a_hanging_test_fails_at_its_limit_with_the_stacks(tmp_path: Path) -> None:
    proc, took = _run_hanging_test(tmp_path, PYTHON_HANG)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Timeout" in out, out
    assert "wait_for_a_reply_that_never_comes" in out, out  # the hung thread's stack
    assert "test_hangs" in out, out  # and the test's own
    assert took < BOUND_S


@pytest.mark.timeout(2 * BOUND_S)
def test_a_hang_that_holds_the_gil_is_ended_by_the_watchdog(tmp_path: Path) -> None:
    proc, took = _run_hanging_test(tmp_path, GIL_HANG)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    fired = f"Timeout ({dt.timedelta(seconds=LIMIT_S + GRACE_S)})!"  # faulthandler's watchdog
    assert fired in out, out
    assert "hold_the_gil_in_native_code" in out, out
    assert took < BOUND_S
