"""A pytest plugin: end a hung test with every thread's stack even when it holds the GIL.

pytest-timeout (``timeout_method = "thread"``, pyproject.toml) dumps the stacks
and exits when a test outlives its limit, but its timer is Python code and
needs the GIL. A native call that blocks while holding the GIL (an OpenVINO
``CompiledModel`` destructor joining a worker that waits for the GIL: issue
#15) freezes every Python thread, that timer included. faulthandler's watchdog
is a C thread that needs no GIL: armed for each test phase at the test's
pytest-timeout limit plus a grace (ini ``hang_watchdog_grace_s``, default
60 s), it prints every thread's stack to the real stderr and ends the process
with exit status 1 if pytest-timeout could not.

Loaded by ``tests/conftest.py`` (``pytest_plugins``); ``-p hang_watchdog``
loads it elsewhere (tests/test_hangs.py runs a hanging test that way).
"""

from __future__ import annotations

import faulthandler
import os
import sys
from collections.abc import Generator

import pytest

DEFAULT_GRACE_S = 60.0
_STDERR_FD = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "hang_watchdog_grace_s",
        "seconds a hung test phase gets beyond its pytest-timeout limit before the "
        "GIL-independent watchdog prints every stack and exits",
        default=str(DEFAULT_GRACE_S),
    )


def pytest_configure(config: pytest.Config) -> None:
    # A copy of the real stderr, taken while capture is off: per-test capture swaps fd 2 for
    # a temp file that nobody would read after the watchdog's exit.
    config.stash[_STDERR_FD] = os.dup(sys.stderr.fileno())


def pytest_unconfigure(config: pytest.Config) -> None:
    fd = config.stash.get(_STDERR_FD, None)
    if fd is not None:
        os.close(fd)


def timeout_limit_s(item: pytest.Item) -> float | None:
    """The pytest-timeout limit of ``item`` in seconds (marker, ``--timeout``, ini); None: none."""
    mark = item.get_closest_marker("timeout")
    if mark is not None:
        value = mark.kwargs.get("timeout", mark.args[0] if mark.args else None)
    else:
        value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    try:
        limit = float(value)
    except (TypeError, ValueError):
        return None
    return limit if limit > 0 else None


def _watched(item: pytest.Item) -> Generator[None, object, object]:
    limit = timeout_limit_s(item)
    if limit is None:
        return (yield)
    grace = float(str(item.config.getini("hang_watchdog_grace_s")))
    faulthandler.dump_traceback_later(limit + grace, exit=True, file=item.config.stash[_STDERR_FD])
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()


# One watchdog per phase: pytest's own faulthandler plugin cancels it when a phase fails.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _watched(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _watched(item))
