"""Assemble model input windows from sensor messages.

A factory model sees the plant as a graph: one node per sensor, and per node
the last ``size`` samples as features. For Tennessee Eastman that is 52
sensors and windows of 20 samples, i.e. an input ``x`` of shape ``[52, 20]``.
Sensor data reaches the node as messages, each either a full row (every
sensor at one timestamp) or a partial row (some sensors at a timestamp, e.g.
from different PLCs). :class:`WindowAssembler` turns that stream into
windows:

* Partial rows for the same timestamp merge (a sensor sent twice: last value
  wins). A sample is *complete* once every sensor has a value.
* Samples enter the window in timestamp order: a complete sample waits until
  every earlier incomplete one has completed or expired.
* A sample still incomplete ``timeout_s`` after its first value arrived is
  given up: it is reported as :class:`Incomplete` (naming the missing
  sensors) and dropped, so the window never advances with a hole in it.
  At most ``max_pending`` incomplete samples are buffered; beyond that the
  oldest is given up the same way.
* Data for a timestamp older than the newest sample in the window, or for a
  sample already given up, raises :class:`~edge_sdk.errors.InvalidInputError`
  and leaves the assembler unchanged, unless it is a *duplicate*: an exact
  repeat of a sample still in the window, or any such row the caller marks as
  ``redelivered`` (an MQTT QoS 1 redelivery after a reconnect or a restart).
  Duplicates are dropped and counted in :attr:`WindowAssembler.duplicates`.
* Timestamps are bounded against the wall clock when the spec says so
  (``max_future_s``, ``max_past_s``): a row from a sensor whose clock is far
  off is refused (field ``t``) and cannot push the window into the future,
  where every real row would then be out of order.
* With ``period_s`` set, consecutive samples further apart than
  ``period_s * (1 + gap_tolerance)`` are a :class:`Gap` (rows lost upstream).
  ``on_gap="skip"`` (default) restarts the window after the gap, so no window
  spans it; ``on_gap="flag"`` keeps computing windows and marks those that
  span it (:attr:`Window.gap`).
* A :class:`Window` is emitted when ``size`` samples are buffered and then
  every ``stride`` samples; its array is a copy the caller may keep.
* :meth:`WindowAssembler.state` serialises everything buffered (the window,
  pending and given-up samples, counters) and :meth:`WindowAssembler.restore`
  loads it back, so the node can commit it with its outbox and resume after a
  crash without losing the samples a window still needed.

Not thread-safe: the node calls ``add``/``poll`` from one thread.
"""

from __future__ import annotations

import bisect
import json
import math
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, InvalidInputError
from .window_spec import Gap, Incomplete, Window, WindowSpec, names_list

__all__ = ["Gap", "Incomplete", "Window", "WindowAssembler", "WindowSpec"]

#: Version of :meth:`WindowAssembler.state`'s format.
_STATE_VERSION = 1


class _Pending:
    __slots__ = ("deadline", "present", "values")

    def __init__(self, n: int, deadline: float) -> None:
        self.values = np.zeros(n, dtype=np.float32)
        self.present = np.zeros(n, dtype=bool)
        self.deadline = deadline


Event = Window | Incomplete | Gap


class WindowAssembler:
    """Buffer sensor samples and emit :class:`Window` / :class:`Incomplete` events.

    Args:
        spec: Window layout.
        clock: Monotonic clock in seconds, used for ``timeout_s`` only (sample
            timestamps ``t`` are whatever the sensors send). Inject a fake
            clock in tests.
        wall: Wall clock (``time.time``) the timestamp bounds are checked against.

    Attributes:
        duplicates: Rows dropped as duplicates (see :meth:`add`).
        changes: Bumped by every change of the buffered state; compare it to
            know whether :meth:`state` needs saving again.

    Not thread-safe: call ``add`` and ``poll`` from one thread.
    """

    def __init__(
        self,
        spec: WindowSpec,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._wall = wall
        self.duplicates = 0
        self.changes = 0
        n = len(spec.sensors)
        self._index = {name: i for i, name in enumerate(spec.sensors)}
        # Ring buffer of complete samples; column self._head is the next to write.
        self._buf = np.zeros((n, spec.size), dtype=np.float32)
        self._times = np.zeros(spec.size, dtype=np.float64)
        self._head = 0
        self._filled = 0
        self._appended = 0  # complete samples appended in total
        self._run = 0  # complete samples appended since the window last (re)started
        self._gap_at: int | None = None  # _appended index of the first sample after a gap
        self._seq = 0
        self._last_t: float | None = None  # newest appended timestamp
        self._pending: dict[float, _Pending] = {}
        self._order: list[float] = []  # sorted keys of _pending
        # Timestamps given up recently (newer than _last_t at the time), so late
        # values for them are refused instead of starting a new sample.
        self._given_up: deque[float] = deque()
        self._given_up_set: set[float] = set()

    # -- public ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Samples buffered outside the window: incomplete ones, and complete ones
        waiting behind an earlier incomplete sample."""
        return len(self._pending)

    def add(
        self,
        t: float,
        values: Mapping[str, float] | Sequence[float] | np.ndarray,
        redelivered: bool = False,
    ) -> list[Event]:
        """Add a full or partial row at timestamp ``t``.

        Args:
            t: Sample timestamp (any finite number; typically epoch seconds).
            values: Either a sequence (or 1-D array) of exactly N numbers in
                ``spec.sensors`` order, or a mapping ``{sensor name: value}`` for some sensors.
            redelivered: The row may have been seen before (an MQTT redelivery,
                DUP flag set): if its timestamp is already consumed (older than
                the newest sample, or given up) it is a duplicate, not an error.

        Returns:
            Events that became ready, in the order they happened: gaps, windows,
            and samples given up (an :class:`Incomplete` is reported when it is
            given up, which may be before windows holding older samples).
            A duplicate returns no event of its own and counts in
            :attr:`duplicates`.

        Raises:
            InvalidInputError: ``t`` is not finite, outside the spec's clock
                bounds, older than the newest sample in the window or already
                given up (field ``t``); ``values`` has the wrong count, unknown
                sensor names or non-finite numbers (field ``values``). The
                assembler is unchanged.
        """
        t = self._check_t(t)
        idx, vals = self._parse(values)
        now = self._clock()
        if self._last_t is not None and t <= self._last_t:
            if redelivered or self._is_repeat(t, idx, vals):
                self.duplicates += 1
                return self._drain(now)
            raise InvalidInputError(
                "t",
                f"sample t={t!r} is out of order: the window already holds t={self._last_t!r}; "
                "samples must arrive in timestamp order (late data is dropped)",
            )
        if t in self._given_up_set:
            if redelivered:
                self.duplicates += 1
                return self._drain(now)
            raise InvalidInputError(
                "t",
                f"sample t={t!r} was already given up after timeout_s={self.spec.timeout_s:g} s "
                "(reported as Incomplete); late values for it are dropped",
            )
        sample = self._pending.get(t)
        if sample is None:
            sample = _Pending(len(self.spec.sensors), now + self.spec.timeout_s)
            self._pending[t] = sample
            bisect.insort(self._order, t)
        sample.values[idx] = vals
        sample.present[idx] = True
        self.changes += 1
        return self._drain(now)

    def poll(self) -> list[Event]:
        """Give up samples whose timeout passed; return the events that became ready.

        Call periodically (e.g. every ``timeout_s / 4``) so a sensor that goes
        silent is reported even when no further messages arrive.
        """
        return self._drain(self._clock())

    # -- validation --------------------------------------------------------------------

    def _check_t(self, t: float) -> float:
        try:
            value = float(t)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInputError("t", f"expected a number, got {t!r}") from None
        if not math.isfinite(value):
            raise InvalidInputError("t", f"expected a finite timestamp, got {t!r}")
        ahead, behind = self.spec.max_future_s, self.spec.max_past_s
        if ahead is not None or behind is not None:
            wall = self._wall()
            if ahead is not None and value > wall + ahead:
                raise InvalidInputError(
                    "t",
                    f"sample t={value!r} is {value - wall:.6g} s ahead of the node's clock "
                    f"(time.time()={wall:.3f}); at most window.max_future_s={ahead:g} s is "
                    "accepted: check the sensor's clock",
                )
            if behind is not None and value < wall - behind:
                raise InvalidInputError(
                    "t",
                    f"sample t={value!r} is {wall - value:.6g} s behind the node's clock "
                    f"(time.time()={wall:.3f}); at most window.max_past_s={behind:g} s is "
                    "accepted: check the sensor's clock",
                )
        return value

    def _parse(
        self, values: Mapping[str, float] | Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (sensor indices, float32 values) or raise InvalidInputError('values')."""
        n = len(self.spec.sensors)
        if isinstance(values, Mapping):
            unknown = [str(k) for k in values if k not in self._index]
            if unknown:
                raise InvalidInputError(
                    "values",
                    f"unknown sensors: {names_list(unknown)}; expected names from the window "
                    f"spec ({n} sensors: {names_list(list(self.spec.sensors))})",
                )
            if not values:
                raise InvalidInputError("values", "no sensor values in the message")
            names = list(values)
            idx = np.fromiter((self._index[k] for k in names), dtype=np.intp, count=len(names))
            raw: object = [values[k] for k in names]
        else:
            if isinstance(values, str | bytes):
                raise InvalidInputError(
                    "values", f"expected {n} sensor values or a mapping, got a string"
                )
            names = list(self.spec.sensors)
            idx = np.arange(n, dtype=np.intp)
            raw = values
        try:
            with np.errstate(over="ignore"):  # beyond float32 range -> inf, reported below
                arr = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError("values", f"expected numbers: {exc}") from None
        if isinstance(values, Mapping):
            if arr.ndim != 1:
                raise InvalidInputError("values", "each sensor value must be a single number")
        elif arr.ndim != 1 or arr.shape[0] != n:
            got = arr.shape[0] if arr.ndim == 1 else f"an array of shape {list(arr.shape)}"
            raise InvalidInputError("values", f"expected {n} sensor values, got {got}")
        bad = ~np.isfinite(arr)
        if bad.any():
            bad_names = [names[i] for i in np.flatnonzero(bad)]
            raise InvalidInputError(
                "values",
                f"non-finite values (NaN, inf or beyond float32 range) for "
                f"{len(bad_names)} sensor(s): {names_list(bad_names)}",
            )
        return idx, arr

    def _is_repeat(self, t: float, idx: np.ndarray, vals: np.ndarray) -> bool:
        """The same values for a sample still in the window (a redelivered row)."""
        size = self.spec.size
        for back in range(1, self._filled + 1):
            col = (self._head - back) % size
            if self._times[col] == t:
                return bool(np.array_equal(self._buf[idx, col], vals))
            if self._times[col] < t:
                break
        return False

    # -- assembly ----------------------------------------------------------------------

    def _drain(self, now: float) -> list[Event]:
        out: list[Event] = []
        # Over max_pending: the oldest incomplete samples are given up first.
        excess = len(self._pending) - self.spec.max_pending
        blocked = False
        keep: list[float] = []
        for t in self._order:
            sample = self._pending[t]
            complete = bool(sample.present.all())
            if not complete and (sample.deadline <= now or excess > 0):
                self._give_up(t, out)
                excess -= 1
            elif complete and not blocked:
                del self._pending[t]
                self._append(t, sample.values, out)
                excess -= 1
            else:
                blocked = True
                keep.append(t)
        self._order = keep
        return out

    def _give_up(self, t: float, out: list[Event]) -> None:
        self.changes += 1
        sample = self._pending.pop(t)
        missing = tuple(self.spec.sensors[i] for i in np.flatnonzero(~sample.present))
        out.append(Incomplete(t=t, missing=missing))
        self._given_up.append(t)
        self._given_up_set.add(t)
        while len(self._given_up) > self.spec.max_pending:
            self._given_up_set.discard(self._given_up.popleft())

    def _append(self, t: float, values: np.ndarray, out: list[Event]) -> None:
        spec = self.spec
        size = spec.size
        self.changes += 1
        if (
            spec.period_s is not None
            and self._last_t is not None
            and t - self._last_t > spec.period_s * (1 + spec.gap_tolerance)
        ):
            skip = spec.on_gap == "skip"
            missing = max(1, round((t - self._last_t) / spec.period_s) - 1)
            out.append(Gap(t_from=self._last_t, t_to=t, missing=missing, skipped=skip))
            if skip:  # the window starts again after the hole
                self._filled = 0
                self._run = 0
            else:
                self._gap_at = self._appended
        self._buf[:, self._head] = values
        self._times[self._head] = t
        self._head = (self._head + 1) % size
        self._filled = min(self._filled + 1, size)
        self._appended += 1
        self._run += 1
        self._last_t = t
        while self._given_up and self._given_up[0] <= t:  # the _last_t check covers these now
            self._given_up_set.discard(self._given_up.popleft())
        if self._filled == size and (self._run - size) % spec.stride == 0:
            # Oldest column is at _head once the ring is full; concatenate copies.
            x = np.concatenate((self._buf[:, self._head :], self._buf[:, : self._head]), axis=1)
            first = self._appended - size  # _appended index of column 0
            out.append(
                Window(
                    x=x,
                    t_start=float(self._times[self._head]),
                    t_end=t,
                    seq=self._seq,
                    gap=self._gap_at is not None and first < self._gap_at,
                )
            )
            self._seq += 1

    # -- persistence -------------------------------------------------------------------

    def state(self) -> bytes:
        """Everything buffered, as bytes for :meth:`restore` (possibly in another process).

        Incomplete samples keep the time they have left before ``timeout_s``,
        counted again from the restore.
        """
        now = self._clock()
        header: dict[str, Any] = {
            "version": _STATE_VERSION,
            "sensors": list(self.spec.sensors),
            "size": self.spec.size,
            "head": self._head,
            "filled": self._filled,
            "appended": self._appended,
            "run": self._run,
            "gap_at": self._gap_at,
            "seq": self._seq,
            "last_t": self._last_t,
            "duplicates": self.duplicates,
            "given_up": list(self._given_up),
            "pending": [
                [
                    t,
                    max(0.0, p.deadline - now),
                    np.flatnonzero(p.present).tolist(),
                    p.values[p.present].tolist(),
                ]
                for t, p in ((t, self._pending[t]) for t in self._order)
            ],
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack(">I", len(head)) + head + self._buf.tobytes() + self._times.tobytes()

    def restore(self, data: bytes) -> None:
        """Load what :meth:`state` saved, replacing everything buffered.

        Raises:
            ConfigError: ``data`` is not a state of this format, or was saved for
                other sensors or another window size (nothing is changed then).
        """
        n, size = len(self.spec.sensors), self.spec.size
        try:
            (hlen,) = struct.unpack(">I", data[:4])
            header = json.loads(data[4 : 4 + hlen])
            body = data[4 + hlen :]
        except (struct.error, ValueError) as exc:
            raise ConfigError(f"saved window state is unreadable: {exc}") from None
        if header.get("version") != _STATE_VERSION:
            raise ConfigError(f"saved window state has version {header.get('version')!r}")
        if tuple(header.get("sensors", ())) != self.spec.sensors or header.get("size") != size:
            raise ConfigError(
                "saved window state is for another window layout "
                f"({len(header.get('sensors', ()))} sensors x {header.get('size')} samples; "
                f"this one is {n} x {size})"
            )
        if len(body) != n * size * 4 + size * 8:
            raise ConfigError("saved window state is truncated")
        buf = np.frombuffer(body[: n * size * 4], dtype=np.float32).reshape(n, size).copy()
        times = np.frombuffer(body[n * size * 4 :], dtype=np.float64).copy()
        now = self._clock()
        pending: dict[float, _Pending] = {}
        for t, left, idx, vals in header["pending"]:
            sample = _Pending(n, now + float(left))
            sample.values[idx] = vals
            sample.present[idx] = True
            pending[float(t)] = sample
        self._buf, self._times = buf, times
        self._head, self._filled = int(header["head"]), int(header["filled"])
        self._appended, self._run = int(header["appended"]), int(header["run"])
        self._gap_at = header["gap_at"]
        self._seq = int(header["seq"])
        self._last_t = header["last_t"]
        self.duplicates = int(header["duplicates"])
        self._given_up = deque(float(t) for t in header["given_up"])
        self._given_up_set = set(self._given_up)
        self._pending = pending
        self._order = sorted(pending)
        self.changes += 1
