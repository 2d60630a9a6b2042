"""WindowAssembler: sensor messages -> [N, size] model input windows."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest

from edge_sdk.errors import ConfigError, InvalidInputError
from edge_sdk.node.windows import Gap, Incomplete, Window, WindowAssembler, WindowSpec

SENSORS = tuple(f"xmeas_{i}" for i in range(1, 53))  # Tennessee Eastman: 52 sensors


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _rows(count: int, n: int = len(SENSORS), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, n)).astype(np.float32)


def _windows(events: list[Window | Incomplete]) -> list[Window]:
    return [e for e in events if isinstance(e, Window)]


@pytest.mark.parametrize("stride", [1, 3])
def test_full_rows_give_exact_windows(stride: int) -> None:
    size, count = 20, 47
    rows = _rows(count)
    asm = WindowAssembler(WindowSpec(SENSORS, size=size, stride=stride))
    got: list[Window] = []
    for i, row in enumerate(rows):
        events = asm.add(100.0 + i, row.tolist())
        assert not any(isinstance(e, Incomplete) for e in events)
        got += _windows(events)

    starts = list(range(0, count - size + 1, stride))
    assert len(got) == len(starts)
    for k, (w, s) in enumerate(zip(got, starts, strict=True)):
        expected = rows[s : s + size].T  # [N, size], column -1 newest
        assert w.x.dtype == np.float32 and w.x.shape == (len(SENSORS), size)
        np.testing.assert_array_equal(w.x, expected)
        assert (w.t_start, w.t_end, w.seq) == (100.0 + s, 100.0 + s + size - 1, k)
    # Emitted windows are copies: later samples don't rewrite earlier windows.
    np.testing.assert_array_equal(got[0].x, rows[:size].T)
    assert asm.pending == 0


def test_mapping_full_row_any_key_order() -> None:
    spec = WindowSpec(("a", "b", "c"), size=2)
    asm = WindowAssembler(spec)
    asm.add(1.0, {"c": 3.0, "a": 1.0, "b": 2.0})
    (w,) = _windows(asm.add(2.0, [4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(w.x, [[1, 4], [2, 5], [3, 6]])


def test_partial_rows_merge_last_value_wins() -> None:
    asm = WindowAssembler(WindowSpec(("a", "b", "c"), size=2), clock=FakeClock())
    assert asm.add(1.0, {"a": 1.0}) == []
    assert asm.add(1.0, {"b": 99.0}) == []
    assert asm.pending == 1
    assert asm.add(1.0, {"b": 2.0, "c": 3.0}) == []  # sample 1 complete; window needs 2
    assert asm.pending == 0
    asm.add(2.0, {"c": 6.0, "b": 5.0})
    (w,) = _windows(asm.add(2.0, {"a": 4.0}))
    np.testing.assert_array_equal(w.x, [[1, 4], [2, 5], [3, 6]])
    assert (w.t_start, w.t_end) == (1.0, 2.0)


def test_complete_sample_waits_for_earlier_incomplete_one() -> None:
    asm = WindowAssembler(WindowSpec(("a", "b"), size=1), clock=FakeClock())
    assert asm.add(1.0, {"a": 1.0}) == []
    assert asm.add(2.0, [3.0, 4.0]) == []  # complete, but t=1 is still waiting
    assert asm.pending == 2
    events = asm.add(1.0, {"b": 2.0})
    assert [w.t_end for w in _windows(events)] == [1.0, 2.0]
    np.testing.assert_array_equal(events[0].x, [[1], [2]])  # type: ignore[union-attr]


def test_timeout_gives_up_sample_without_a_hole() -> None:
    clock = FakeClock()
    asm = WindowAssembler(WindowSpec(("a", "b", "c"), size=2, timeout_s=2.0), clock=clock)
    asm.add(1.0, [1.0, 2.0, 3.0])
    assert asm.add(2.0, {"b": 50.0}) == []  # a and c never arrive
    clock.now = 1.0
    assert asm.add(3.0, [7.0, 8.0, 9.0]) == []  # complete but blocked behind t=2
    assert asm.poll() == []
    clock.now = 2.0  # t=2 has waited timeout_s
    events = asm.poll()
    assert events[0] == Incomplete(t=2.0, missing=("a", "c"))
    (w,) = _windows(events)
    np.testing.assert_array_equal(w.x, [[1, 7], [2, 8], [3, 9]])  # t=2 skipped, no NaN
    assert (w.t_start, w.t_end, w.seq) == (1.0, 3.0, 0)
    assert asm.pending == 0
    # Late values for the given-up sample are refused, not a new sample.
    with pytest.raises(InvalidInputError, match=r"out of order"):
        asm.add(2.0, {"a": 1.0})


def test_given_up_sample_newer_than_window_refuses_late_values() -> None:
    clock = FakeClock()
    asm = WindowAssembler(WindowSpec(("a", "b"), size=1, timeout_s=1.0), clock=clock)
    asm.add(5.0, {"a": 1.0})
    clock.now = 1.5
    assert asm.poll() == [Incomplete(t=5.0, missing=("b",))]
    with pytest.raises(InvalidInputError, match=r"t: sample t=5.0 was already given up"):
        asm.add(5.0, {"b": 2.0})
    assert asm.pending == 0
    assert _windows(asm.add(6.0, [1.0, 2.0]))[0].t_end == 6.0


def test_max_pending_gives_up_the_oldest() -> None:
    spec = WindowSpec(("a", "b"), size=1, timeout_s=1e9, max_pending=3)
    asm = WindowAssembler(spec, clock=FakeClock())
    for t in range(3):
        assert asm.add(float(t), {"a": 0.0}) == []
    assert asm.add(3.0, {"a": 0.0}) == [Incomplete(t=0.0, missing=("b",))]
    assert asm.pending == 3


def test_out_of_order_is_refused_and_assembler_still_works() -> None:
    rows = _rows(6, n=3)
    asm = WindowAssembler(WindowSpec(("a", "b", "c"), size=3))
    for t in (1.0, 2.0, 3.0):
        asm.add(t, rows[int(t) - 1].tolist())
    with pytest.raises(InvalidInputError, match=r"^t: sample t=2.5 is out of order.*t=3.0") as ei:
        asm.add(2.5, [9.0, 9.0, 9.0])
    assert ei.value.field == "t"
    with pytest.raises(InvalidInputError, match="out of order"):
        asm.add(3.0, [9.0, 9.0, 9.0])  # same t, different values
    assert asm.add(3.0, rows[2].tolist()) == []  # exact repeat (QoS 1 redelivery): ignored
    (w,) = _windows(asm.add(4.0, rows[3].tolist()))
    np.testing.assert_array_equal(w.x, rows[1:4].T)
    assert w.seq == 1


def test_wrong_count_names_field_and_numbers() -> None:
    asm = WindowAssembler(WindowSpec(SENSORS, size=20))
    with pytest.raises(
        InvalidInputError, match=r"^values: expected 52 sensor values, got 51$"
    ) as ei:
        asm.add(1.0, [0.0] * 51)
    assert ei.value.field == "values"
    with pytest.raises(InvalidInputError, match=r"expected 52 sensor values, got an array"):
        asm.add(1.0, np.zeros((52, 1)))
    with pytest.raises(InvalidInputError, match=r"^values: expected numbers"):
        asm.add(1.0, ["x"] * 52)  # type: ignore[list-item]
    assert asm.pending == 0


def test_non_finite_values_name_the_sensors() -> None:
    asm = WindowAssembler(WindowSpec(SENSORS, size=20))
    row = [0.0] * 52
    row[3], row[40] = math.nan, math.inf
    with pytest.raises(
        InvalidInputError, match=r"^values: non-finite .*2 sensor\(s\): xmeas_4, xmeas_41$"
    ):
        asm.add(1.0, row)
    with pytest.raises(InvalidInputError, match=r"xmeas_7"):
        asm.add(1.0, {"xmeas_7": -math.inf})
    with pytest.raises(InvalidInputError, match=r"xmeas_1\b"):
        asm.add(1.0, {"xmeas_1": 1e39})  # beyond float32
    with pytest.raises(InvalidInputError, match=r"^t: expected a finite timestamp"):
        asm.add(math.nan, row)
    assert asm.pending == 0


def test_unknown_sensor_names() -> None:
    asm = WindowAssembler(WindowSpec(SENSORS, size=20))
    with pytest.raises(
        InvalidInputError, match=r"^values: unknown sensors: temp_9, xmeas_53;"
    ) as ei:
        asm.add(1.0, {"xmeas_1": 1.0, "temp_9": 2.0, "xmeas_53": 3.0})
    assert ei.value.field == "values"
    assert "52 sensors" in str(ei.value)
    assert asm.pending == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sensors": (), "size": 2}, "empty"),
        ({"sensors": ("a", "a"), "size": 2}, "duplicate names: a"),
        ({"sensors": ("a",), "size": 0}, "size must be an integer >= 1"),
        ({"sensors": ("a",), "size": 2, "stride": 0}, "stride"),
        ({"sensors": ("a",), "size": 2, "timeout_s": 0}, "timeout_s"),
        ({"sensors": ("a",), "size": 2, "period_s": 0}, "period_s"),
        ({"sensors": ("a",), "size": 2, "max_future_s": math.inf}, "max_future_s"),
        ({"sensors": ("a",), "size": 2, "gap_tolerance": -1}, "gap_tolerance"),
        ({"sensors": ("a",), "size": 2, "on_gap": "guess"}, "on_gap"),
    ],
)
def test_bad_spec_is_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WindowSpec(**kwargs)  # type: ignore[arg-type]


# -- duplicates, gaps, clock bounds, persistence ------------------------------------------------


def test_redelivered_rows_already_consumed_are_counted_duplicates_not_errors() -> None:
    rows = _rows(30, n=3)
    asm = WindowAssembler(WindowSpec(("a", "b", "c"), size=3))
    got = [w for t in range(25) for w in _windows(asm.add(float(t), rows[t].tolist()))]
    assert len(got) == 23
    # A redelivered batch: rows older than the window (values no longer kept) and the newest.
    for t in range(10, 25):
        assert asm.add(float(t), rows[t].tolist(), redelivered=True) == []
    assert asm.duplicates == 15
    # Without the DUP flag, an old row is a real out-of-order error...
    with pytest.raises(InvalidInputError, match="out of order"):
        asm.add(10.0, rows[10].tolist())
    # ...unless it repeats a sample still in the window exactly.
    assert asm.add(23.0, rows[23].tolist()) == []
    assert asm.duplicates == 16
    (w,) = _windows(asm.add(25.0, rows[25].tolist()))
    assert (w.t_end, w.seq) == (25.0, 23)
    np.testing.assert_array_equal(w.x, rows[23:26].T)


def test_redelivered_values_for_a_given_up_sample_are_duplicates() -> None:
    clock = FakeClock()
    asm = WindowAssembler(WindowSpec(("a", "b"), size=1, timeout_s=1.0), clock=clock)
    asm.add(5.0, {"a": 1.0})
    clock.now = 2.0
    assert asm.poll() == [Incomplete(t=5.0, missing=("b",))]
    assert asm.add(5.0, {"a": 1.0}, redelivered=True) == []
    assert (asm.duplicates, asm.pending) == (1, 0)


@pytest.mark.parametrize("on_gap", ["skip", "flag"])
def test_a_gap_is_reported_with_its_bounds_and_windows_never_span_it_silently(
    on_gap: Literal["skip", "flag"],
) -> None:
    rows = _rows(40, n=2)
    spec = WindowSpec(("a", "b"), size=5, period_s=2.0, gap_tolerance=0.5, on_gap=on_gap)
    asm = WindowAssembler(spec)
    times = [2.0 * i for i in range(12)] + [2.0 * i for i in range(16, 30)]  # 24..30 lost
    events = [e for i, t in enumerate(times) for e in asm.add(t, rows[i].tolist())]
    gaps = [e for e in events if isinstance(e, Gap)]
    assert gaps == [Gap(t_from=22.0, t_to=32.0, missing=4, skipped=on_gap == "skip")]
    windows = _windows(events)
    spans = [w for w in windows if w.t_start < 32.0 <= w.t_end]
    if on_gap == "skip":
        assert spans == []  # the window starts again at t=32: first one ends at t=40
        assert [w.t_end for w in windows][7:9] == [22.0, 40.0]
        assert not any(w.gap for w in windows)
    else:
        assert len(spans) == 4 and all(w.gap for w in spans)
        assert not any(w.gap for w in windows if w not in spans)
    assert [w.seq for w in windows] == list(range(len(windows)))
    # Jitter within the tolerance is no gap.
    asm.add(60.0 + 2.9, rows[0].tolist())
    assert not [e for e in asm.add(60.0 + 2.9 + 2.9, rows[1].tolist()) if isinstance(e, Gap)]


def test_timestamps_far_from_the_node_clock_are_refused_and_change_nothing() -> None:
    wall = FakeClock()
    wall.now = 1_000_000.0
    spec = WindowSpec(("a",), size=2, max_future_s=60.0, max_past_s=3600.0)
    asm = WindowAssembler(spec, wall=wall)
    with pytest.raises(
        InvalidInputError, match=r"^t: sample t=1e\+300 is .* ahead .*max_future_s=60"
    ):
        asm.add(1e300, [1.0])
    with pytest.raises(InvalidInputError, match=r"^t: .* behind .*max_past_s=3600"):
        asm.add(wall.now - 3601, [1.0])
    with pytest.raises(InvalidInputError, match=r"^t: expected a finite timestamp"):
        asm.add(math.inf, [1.0])
    assert asm.pending == 0 and asm.changes == 0
    # The real rows after them are accepted.
    asm.add(wall.now - 1, [1.0])
    (w,) = _windows(asm.add(wall.now + 59, [2.0]))
    assert (w.t_start, w.t_end) == (wall.now - 1, wall.now + 59)


def test_state_round_trip_resumes_windows_pending_samples_and_numbering() -> None:
    rows = _rows(20, n=3)
    clock = FakeClock()
    spec = WindowSpec(("a", "b", "c"), size=4, stride=2, timeout_s=5.0)
    live = WindowAssembler(spec, clock=clock)
    for t in range(9):
        live.add(float(t), rows[t].tolist())
    live.add(9.0, {"a": 1.0})  # incomplete, waiting for b and c
    live.add(10.0, rows[10].tolist())  # complete, blocked behind t=9
    clock.now = 2.0
    saved = live.state()

    clock2 = FakeClock()
    resumed = WindowAssembler(spec, clock=clock2)
    resumed.restore(saved)
    assert resumed.pending == 2
    last: list[Window] = []
    for asm in (live, resumed):  # both must now behave the same
        events = asm.add(9.0, {"b": 2.0, "c": 3.0})
        assert [(w.t_end, w.seq) for w in _windows(events)] == [(9.0, 3)]
        assert asm.add(8.0, rows[8].tolist(), redelivered=True) == []
        last += _windows(asm.add(11.0, rows[11].tolist()))
    a, b = last
    assert (a.t_start, a.t_end, a.seq) == (b.t_start, b.t_end, b.seq) == (8.0, 11.0, 4)
    np.testing.assert_array_equal(a.x, b.x)
    assert live.duplicates == resumed.duplicates == 1
    # The incomplete sample keeps the time it had left (5 - 2 = 3 s) on the new clock.
    resumed.add(13.0, {"a": 1.0})
    clock2.now = 2.9
    assert not [e for e in resumed.poll() if isinstance(e, Incomplete)]
    clock2.now = 5.1  # t=13 waited 5.1 s
    assert [e for e in resumed.poll() if isinstance(e, Incomplete)] == [
        Incomplete(t=13.0, missing=("b", "c"))
    ]


def test_state_of_another_layout_is_refused_and_changes_nothing() -> None:
    asm = WindowAssembler(WindowSpec(("a", "b"), size=2))
    asm.add(1.0, [1.0, 2.0])
    other = WindowAssembler(WindowSpec(("a", "b", "c"), size=2))
    with pytest.raises(ConfigError, match="another window layout"):
        other.restore(asm.state())
    with pytest.raises(ConfigError, match="unreadable"):
        other.restore(b"\x00\x00\x00\x09not json!")
    assert other.pending == 0 and other.add(0.5, [1.0, 2.0, 3.0]) == []
