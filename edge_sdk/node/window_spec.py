"""What a window assembler is told (:class:`WindowSpec`) and what it gives back.

:class:`Window` (a complete ``[sensors, samples]`` window), :class:`Incomplete`
(a sample given up on) and :class:`Gap` (a hole in the stream); the assembler
itself is :mod:`edge_sdk.node.windows`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError

_NAMES_SHOWN = 10


def names_list(names: Sequence[str]) -> str:
    """``a, b, c`` or ``a, b, ... (+N more)`` for long lists."""
    shown = ", ".join(names[:_NAMES_SHOWN])
    if len(names) > _NAMES_SHOWN:
        shown += f", ... (+{len(names) - _NAMES_SHOWN} more)"
    return shown


@dataclass(frozen=True)
class WindowSpec:
    """What a window looks like.

    Attributes:
        sensors: Sensor names in graph-node order; ``len(sensors)`` = N.
        size: Samples per window (F); the window is ``[N, size]``.
        stride: Emit a window every ``stride`` samples once ``size`` are buffered.
        timeout_s: How long an incomplete sample waits for its missing sensors
            (measured on the assembler's clock from its first value).
        max_pending: Most incomplete samples buffered; the oldest beyond that
            is given up as :class:`Incomplete`.
        period_s: Expected time between samples, in the unit of ``t``; None
            turns gap detection off.
        gap_tolerance: A step between consecutive samples above
            ``period_s * (1 + gap_tolerance)`` is a :class:`Gap`.
        on_gap: ``skip``: restart the window after a gap (no window spans it);
            ``flag``: keep computing windows, marking those that span it.
        max_future_s: Refuse samples whose ``t`` is more than this ahead of the
            wall clock (``time.time()``); None: no bound.
        max_past_s: Refuse samples whose ``t`` is more than this behind the
            wall clock; None: no bound (replays and relative timestamps).
    """

    sensors: tuple[str, ...]
    size: int
    stride: int = 1
    timeout_s: float = 2.0
    max_pending: int = 1024
    period_s: float | None = None
    gap_tolerance: float = 0.5
    on_gap: Literal["skip", "flag"] = "skip"
    max_future_s: float | None = None
    max_past_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sensors, str) or not all(isinstance(s, str) for s in self.sensors):
            raise ConfigError("WindowSpec.sensors must be a sequence of sensor names")
        object.__setattr__(self, "sensors", tuple(self.sensors))
        if not self.sensors:
            raise ConfigError("WindowSpec.sensors is empty: a window needs at least one sensor")
        dupes = [name for name, count in Counter(self.sensors).items() if count > 1]
        if dupes:
            raise ConfigError(f"WindowSpec.sensors has duplicate names: {names_list(dupes)}")
        for name in ("size", "stride", "max_pending"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"WindowSpec.{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.timeout_s, int | float) and self.timeout_s > 0):
            raise ConfigError(f"WindowSpec.timeout_s must be > 0 seconds, got {self.timeout_s!r}")
        for name in ("period_s", "max_future_s", "max_past_s"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ConfigError(f"WindowSpec.{name} must be None or > 0, got {value!r}")
        tol = self.gap_tolerance
        if not (isinstance(tol, int | float) and math.isfinite(tol) and tol >= 0):
            raise ConfigError(f"WindowSpec.gap_tolerance must be >= 0, got {tol!r}")
        if self.on_gap not in ("skip", "flag"):
            raise ConfigError(f"WindowSpec.on_gap must be 'skip' or 'flag', got {self.on_gap!r}")


@dataclass(frozen=True, eq=False)
class Window:
    """One model input window.

    Attributes:
        x: float32 ``[N, size]`` in ``spec.sensors`` order; column -1 is the
            newest sample. A copy owned by the caller.
        t_start: Timestamp of the oldest sample (column 0).
        t_end: Timestamp of the newest sample (column -1).
        seq: Windows emitted before this one by the same assembler (0-based).
        gap: The window spans a :class:`Gap` (only with ``on_gap="flag"``).
    """

    x: np.ndarray
    t_start: float
    t_end: float
    seq: int
    gap: bool = False


@dataclass(frozen=True)
class Incomplete:
    """A sample given up on: still missing sensors after ``timeout_s`` (or evicted).

    Attributes:
        t: The sample's timestamp.
        missing: Sensors that never sent a value for it, in spec order.
    """

    t: float
    missing: tuple[str, ...]


@dataclass(frozen=True)
class Gap:
    """Samples missing between two consecutive complete samples (lost upstream).

    Attributes:
        t_from: The last sample before the hole.
        t_to: The first sample after it.
        missing: Estimated samples lost: ``round((t_to - t_from) / period_s) - 1``,
            at least 1.
        skipped: True when the window restarted after the gap (``on_gap="skip"``);
            False when windows spanning it are computed and flagged.
    """

    t_from: float
    t_to: float
    missing: int
    skipped: bool
