"""WindowAssembler: sensor messages -> [N, size] model input windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_sdk.errors import ConfigError, InvalidInputError
from edge_sdk.node.windows import Incomplete, Window, WindowAssembler, WindowSpec

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
    ],
)
def test_bad_spec_is_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WindowSpec(**kwargs)  # type: ignore[arg-type]
