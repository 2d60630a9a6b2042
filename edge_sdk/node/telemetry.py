"""What a node measures about itself: counters, latency percentiles, CPU and memory.

Telemetry is built from one :class:`NodeStats` per node; the worker thread
updates it, the telemetry timer reads it (a slightly stale percentile is fine).
"""

from __future__ import annotations

import os
import resource
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Latency samples kept for the percentiles (the most recent ones).
LATENCY_SAMPLES = 4096
_COUNTERS = (
    "messages",
    "windows",
    "inferences",
    "batches",
    "errors",
    "incomplete",
    "overloaded",
    "alerts",
    "duplicates",
    "gaps",
    "retried_batches",
    "dropped",
)


@dataclass
class NodeStats:
    """Counters and latency samples published in telemetry."""

    messages: int = 0
    windows: int = 0
    inferences: int = 0
    batches: int = 0
    errors: int = 0
    incomplete: int = 0
    overloaded: int = 0
    alerts: int = 0
    duplicates: int = 0  # redelivered sensor rows dropped (already in the window state)
    gaps: int = 0  # holes in the sensor stream (window.period_s)
    retried_batches: int = 0  # merged window batches that failed and ran window by window
    dropped: int = 0  # messages whose outcome (even an error) could not be committed
    infer_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    e2e_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    started: float = field(default_factory=time.monotonic)
    _cpu_mark: tuple[float, float] = field(
        default_factory=lambda: (time.monotonic(), time.process_time())
    )

    def snapshot(self, queue_depth: int) -> dict[str, Any]:
        """Counters, percentiles and process load since the previous snapshot."""
        now, cpu = time.monotonic(), time.process_time()
        wall0, cpu0 = self._cpu_mark
        self._cpu_mark = (now, cpu)
        return {
            "uptime_s": round(now - self.started, 1),
            "counters": {k: getattr(self, k) for k in _COUNTERS},
            "infer_ms": percentiles(self.infer_ms),
            "latency_ms": percentiles(self.e2e_ms),
            "queue_depth": queue_depth,
            "cpu_percent": round(100 * (cpu - cpu0) / max(now - wall0, 1e-6), 1),
            "rss_mb": round(_rss_bytes() / 2**20, 1),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


def result_body(values: dict[str, np.ndarray], labels: list[str]) -> dict[str, Any]:
    """A result message body: outputs, and for a class vector its class, label and score."""
    body: dict[str, Any] = {
        "outputs": {k: np.round(v.astype(np.float64), 6).tolist() for k, v in values.items()}
    }
    first = next(iter(values.values()))
    if first.ndim == 1 and first.size > 1:
        z = first.astype(np.float64) - float(first.max())
        p = np.exp(z) / np.exp(z).sum()
        cls = int(p.argmax())
        body["class"] = cls
        body["score"] = round(float(p[cls]), 6)
        if cls < len(labels):
            body["label"] = labels[cls]
    return body


def percentiles(samples: deque[float]) -> dict[str, float]:
    if not samples:
        return {}
    arr = np.fromiter(samples, np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": round(p50, 3), "p90": round(p90, 3), "p99": round(p99, 3), "n": arr.size}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
