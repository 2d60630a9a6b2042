"""DynamicBatcher: exact per-request results from merged calls, isolation, backpressure."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import InvalidInputError, OverloadedError, Runtime
from edge_sdk.serving import BatcherConfig, DynamicBatcher, ResultCache

ATOL = 1e-5
N, F = 52, 20  # the TEP-size sensor model: x [B, 52, 20] -> out [B, 22]
POISON = 1234.5  # x[..., 0, 0] value the patched backend refuses


@pytest.fixture(scope="module")
def sensor_rt(sensor_bundle: Path) -> Iterator[Runtime]:
    with Runtime.load(sensor_bundle, threads=1) as rt:
        yield rt


@pytest.fixture(scope="module")
def gcn_rt(tiny_gcn_bundle: Path) -> Iterator[Runtime]:
    with Runtime.load(tiny_gcn_bundle, threads=1) as rt:
        yield rt


def _window(seed: int, b: int | None = None) -> np.ndarray:
    shape = (N, F) if b is None else (b, N, F)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _graph(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((n, 8), dtype=np.float32),
        "edge_index": rng.integers(0, n, size=(2, 2 * n)),
    }


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        np.testing.assert_allclose(got[name], value, atol=ATOL, rtol=0)


class Gate:
    """Patch a runtime's backend so calls can be held, and marked requests fail."""

    def __init__(self, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.calls: list[int] = []  # rows per backend call
        impl = rt.backend._infer_impl

        def gated(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            self.calls.append(int(feeds["x"].shape[0]))
            self.entered.set()
            assert self.release.wait(10), "test gate never released"
            if (feeds["x"][..., 0, 0] == POISON).any():
                raise RuntimeError("backend refused a poisoned window")
            return impl(feeds)

        monkeypatch.setattr(rt.backend, "_infer_impl", gated)

    def hold(self) -> None:
        self.entered.clear()
        self.release.clear()


def _submit_all(batcher: DynamicBatcher, requests: list[Any]) -> list[dict[str, np.ndarray]]:
    """Submit every request from its own thread at once; return results in order."""
    results: list[Any] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = batcher.infer(requests[i], timeout_s=30)
        except BaseException as exc:  # checked by the caller
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


# -- merged results are each request's own --------------------------------------------------


def test_64_concurrent_windows_each_get_their_own_result(sensor_rt: Runtime) -> None:
    windows = [_window(i) for i in range(64)]
    want = [sensor_rt.infer(w) for w in windows]
    sizes: list[int] = []
    config = BatcherConfig(max_batch=32, max_delay_ms=20)
    with DynamicBatcher(sensor_rt, config) as batcher:
        batcher.on_batch = lambda size, seconds: sizes.append(size)
        got = _submit_all(batcher, windows)
        stats = batcher.stats
    for g, w in zip(got, want, strict=True):
        assert isinstance(g, dict), g
        assert g["out"].shape == (1, 22)
        _assert_close(g, w)
    assert sum(sizes) == 64
    assert len(sizes) < 64, "no two requests were merged"
    assert max(sizes) <= 32
    assert stats["requests"] == 64 and stats["batched_requests"] == 64
    assert stats["batches"] == len(sizes) and sum(stats["batch_sizes"].values()) == len(sizes)
    assert stats["queue_depth"] == 0 and stats["failed"] == 0 and stats["rejected"] == 0
    assert stats["mean_batch_size"] == pytest.approx(64 / len(sizes))


def test_requests_carrying_a_batch_are_never_split(
    sensor_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(sensor_rt, monkeypatch)
    requests = [_window(1, 3), _window(2), _window(3, 5), _window(4, 2), _window(5, 1)]
    want = [sensor_rt.infer(r) for r in requests]
    gate.calls.clear()
    with DynamicBatcher(sensor_rt, BatcherConfig(max_batch=4, max_delay_ms=50)) as batcher:
        gate.hold()
        first = batcher.submit(_window(0))
        assert gate.entered.wait(10)
        futures = [batcher.submit(r) for r in requests]  # queued behind the held call
        gate.release.set()
        first.result(10)
        got = [f.result(10) for f in futures]
    for g, w, r in zip(got, want, requests, strict=True):
        assert g["out"].shape == (r.shape[0] if r.ndim == 3 else 1, 22)
        _assert_close(g, w)
    # 1 | 3+1 | 5 (alone: larger than max_batch) | 2+1
    assert gate.calls == [1, 4, 5, 3]


def test_dynamic_graphs_of_different_sizes(gcn_rt: Runtime) -> None:
    graphs = [_graph(i, n) for i, n in enumerate([3, 20, 7, 11, 2, 15, 9, 5] * 3)]
    want = [gcn_rt.infer(g) for g in graphs]
    sizes: list[int] = []
    with DynamicBatcher(gcn_rt, BatcherConfig(max_delay_ms=20)) as batcher:
        batcher.on_batch = lambda size, seconds: sizes.append(size)
        got = _submit_all(batcher, graphs)
    for g, w, graph in zip(got, want, graphs, strict=True):
        assert isinstance(g, dict), g
        assert g[next(iter(w))].shape[0] == graph["x"].shape[0]  # node-level rows
        _assert_close(g, w)
    assert sum(sizes) == len(graphs) and len(sizes) < len(graphs)


# -- failures stay with their request -------------------------------------------------------


def test_bad_requests_fail_alone_at_submit(sensor_rt: Runtime) -> None:
    nan = _window(1)
    nan[3, 4] = np.nan
    bad = {
        "shape": _window(2)[:, :7],
        "nan": nan,
        "field": {"x": _window(3), "edge_index": np.zeros((2, 1), np.int64)},
    }
    good = [_window(i) for i in range(10, 16)]
    with DynamicBatcher(sensor_rt, BatcherConfig(max_delay_ms=20)) as batcher:
        futures = [batcher.submit(w) for w in good[:3]]
        for name, request in bad.items():
            with pytest.raises(InvalidInputError) as info:
                batcher.submit(request)
            assert info.value.field in {"x", "edge_index"}, name
        futures += [batcher.submit(w) for w in good[3:]]
        got = [f.result(10) for f in futures]
        stats = batcher.stats
    for g, w in zip(got, good, strict=True):
        _assert_close(g, sensor_rt.infer(w))
    assert stats["requests"] == len(good) and stats["failed"] == 0


def test_backend_failure_in_a_merged_batch_fails_only_its_request(
    sensor_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(sensor_rt, monkeypatch)
    poisoned = _window(7)
    poisoned[0, 0] = POISON  # validates: a finite value
    good = [_window(i) for i in range(20, 25)]
    want = [sensor_rt.infer(w) for w in good]
    gate.calls.clear()
    with DynamicBatcher(sensor_rt, BatcherConfig(max_batch=32, max_delay_ms=50)) as batcher:
        gate.hold()
        first = batcher.submit(_window(0))
        assert gate.entered.wait(10)
        futures = [batcher.submit(w) for w in good[:2]]
        bad = batcher.submit(poisoned)
        futures += [batcher.submit(w) for w in good[2:]]
        gate.release.set()
        first.result(10)
        with pytest.raises(RuntimeError, match="poisoned"):
            bad.result(10)
        got = [f.result(10) for f in futures]
        stats = batcher.stats
    for g, w in zip(got, want, strict=True):
        _assert_close(g, w)
    # The held call, the merged batch of 6 (fails), then each of the 6 alone.
    assert gate.calls == [1, 6, 1, 1, 1, 1, 1, 1]
    assert stats["failed"] == 1 and stats["retried_batches"] == 1
    assert stats["batches"] == 2 and stats["batch_sizes"] == {1: 1, 6: 1}


def test_full_queue_refuses_then_recovers(
    sensor_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(sensor_rt, monkeypatch)
    config = BatcherConfig(max_batch=1, max_delay_ms=0, queue_size=2)
    with DynamicBatcher(sensor_rt, config) as batcher:
        gate.hold()
        running = batcher.submit(_window(0))
        assert gate.entered.wait(10)
        queued = [batcher.submit(_window(i)) for i in (1, 2)]
        assert batcher.stats["queue_depth"] == 2
        with pytest.raises(OverloadedError, match="2 requests waiting"):
            batcher.submit(_window(3))
        assert batcher.stats["rejected"] == 1
        gate.release.set()
        for f in [running, *queued]:
            assert f.result(10)["out"].shape == (1, 22)
        _assert_close(batcher.infer(_window(3), timeout_s=10), sensor_rt.infer(_window(3)))
        assert batcher.stats["requests"] == 4


def test_close_fails_queued_requests_and_lets_the_running_batch_finish(
    sensor_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(sensor_rt, monkeypatch)
    batcher = DynamicBatcher(sensor_rt, BatcherConfig(max_batch=1, max_delay_ms=0)).start()
    gate.hold()
    running = batcher.submit(_window(0))
    assert gate.entered.wait(10)
    queued = [batcher.submit(_window(i)) for i in (1, 2)]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    for f in queued:
        with pytest.raises(OverloadedError, match=r"closed before this request ran \(2 request"):
            f.result(10)
    assert closer.is_alive()  # joining the worker, which is still in the backend
    gate.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert running.result(0)["out"].shape == (1, 22)
    with pytest.raises(OverloadedError, match="closed"):
        batcher.submit(_window(3))
    batcher.close()  # idempotent


def test_timeout_withdraws_a_request_that_has_not_started(
    sensor_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(sensor_rt, monkeypatch)
    with DynamicBatcher(sensor_rt, BatcherConfig(max_batch=1, max_delay_ms=0)) as batcher:
        gate.hold()
        running = batcher.submit(_window(0))
        assert gate.entered.wait(10)
        with pytest.raises(TimeoutError):
            batcher.infer(_window(1), timeout_s=0.05)
        gate.release.set()
        running.result(10)
        batcher.infer(_window(2), timeout_s=10)
        assert batcher.stats["batched_requests"] == 2  # the withdrawn one never ran


def test_submit_needs_a_started_batcher(sensor_rt: Runtime) -> None:
    batcher = DynamicBatcher(sensor_rt)
    with pytest.raises(RuntimeError, match="not started"):
        batcher.submit(_window(0))
    batcher.close()
    with pytest.raises(OverloadedError, match="closed"):
        batcher.start()


def test_on_batch_hook_errors_are_contained(sensor_rt: Runtime) -> None:
    def broken(size: int, seconds: float) -> None:
        raise ValueError("metrics exploded")

    with DynamicBatcher(sensor_rt, BatcherConfig(max_delay_ms=0)) as batcher:
        batcher.on_batch = broken
        for i in range(3):
            _assert_close(batcher.infer(_window(i), timeout_s=10), sensor_rt.infer(_window(i)))


@pytest.mark.parametrize(
    "kwargs", [{"max_batch": 0}, {"max_delay_ms": -1.0}, {"queue_size": 0}], ids=str
)
def test_config_is_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BatcherConfig(**kwargs)


# -- asyncio ------------------------------------------------------------------------------


def test_asyncio_gather_of_32_requests(sensor_rt: Runtime) -> None:
    windows = [_window(100 + i) for i in range(32)]
    want = [sensor_rt.infer(w) for w in windows]

    async def run(batcher: DynamicBatcher) -> list[dict[str, np.ndarray]]:
        return list(await asyncio.gather(*(batcher.ainfer(w) for w in windows)))

    with DynamicBatcher(sensor_rt, BatcherConfig(max_delay_ms=20)) as batcher:
        got = asyncio.run(run(batcher))
        stats = batcher.stats
    for g, w in zip(got, want, strict=True):
        _assert_close(g, w)
    assert stats["batches"] < 32


# -- with a result cache ------------------------------------------------------------------


def test_cache_hits_skip_the_queue(sensor_rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = Gate(sensor_rt, monkeypatch)
    cache = ResultCache()
    window = _window(5)
    want = sensor_rt.infer(window)
    gate.calls.clear()
    with DynamicBatcher(sensor_rt, BatcherConfig(max_delay_ms=0), cache=cache) as batcher:
        first = batcher.infer(window, timeout_s=10)
        gate.hold()  # a second backend call would now hang: a hit must not make one
        hit: Future[dict[str, np.ndarray]] = batcher.submit(window[None])  # same, canonical
        assert hit.done()
        again = hit.result(0)
        gate.release.set()
        stats = batcher.stats
    _assert_close(first, want)
    _assert_close(again, want)
    assert not again["out"].flags.writeable
    assert gate.calls == [1]
    assert (stats["cache_hits"], stats["cache_misses"]) == (1, 1)
    assert stats["requests"] == 2 and stats["batches"] == 1
    assert cache.stats["entries"] == 1
