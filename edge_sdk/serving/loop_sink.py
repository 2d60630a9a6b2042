"""Futures of asyncio callers settled from a worker thread, one loop wake-up per batch.

Used by :class:`~edge_sdk.serving.batcher.DynamicBatcher` for ``ainfer``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import numpy as np

Outputs = dict[str, np.ndarray]


class LoopSink:
    """The future of an asyncio caller, settled in one loop callback per batch.

    ``concurrent.futures`` + ``asyncio.wrap_future`` would wake the event loop
    once per request; a batch of 32 answers then costs 32 cross-thread
    wake-ups. The worker instead records each outcome here and hands a whole
    batch's outcomes to each loop with one ``call_soon_threadsafe``.
    """

    __slots__ = ("fut", "loop", "outcome")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Outputs]) -> None:
        self.loop = loop
        self.fut = fut
        self.outcome: tuple[bool, Any] | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return not self.fut.cancelled()  # a benign cross-thread read

    def set_result(self, value: Outputs) -> None:
        self.outcome = (True, value)

    def set_exception(self, exc: BaseException) -> None:
        self.outcome = (False, exc)

    def done(self) -> bool:
        return self.outcome is not None

    def settle(self) -> None:
        """Apply the outcome (call on the loop's thread)."""
        if self.outcome is None or self.fut.done():
            return
        ok, value = self.outcome
        if ok:
            self.fut.set_result(value)
        else:
            self.fut.set_exception(value)


def _settle_all(sinks: list[LoopSink]) -> None:
    for sink in sinks:
        sink.settle()


def hand_to_loops(futures: Iterable[object]) -> None:
    """One ``call_soon_threadsafe`` per event loop for the settled :class:`LoopSink` s."""
    by_loop: dict[asyncio.AbstractEventLoop, list[LoopSink]] = {}
    for f in futures:
        if isinstance(f, LoopSink) and f.outcome is not None:
            by_loop.setdefault(f.loop, []).append(f)
    for loop, sinks in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            loop.call_soon_threadsafe(_settle_all, sinks)


__all__ = ["LoopSink", "hand_to_loops"]
