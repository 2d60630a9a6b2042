"""Load generation for ``edge-export bench``: closed-loop and open-loop, with percentiles.

* **Closed loop**: ``concurrency`` clients each send a request, wait for its
  answer, and send the next: throughput at a fixed number of requests in
  flight, the way a fixed pool of local clients behaves.
* **Open loop**: requests are scheduled at a fixed rate whatever the answers
  do; each latency is measured from the *scheduled* send time, so a stall shows
  up in the percentiles instead of silently slowing the load down (the
  coordinated-omission trap of closed-loop tools).

Both take any ``predict(inputs) -> outputs`` callable: ``Runtime.infer``, a
:class:`~edge_sdk.serving.batcher.DynamicBatcher`'s ``infer``, or a raw session.

It stays in the product package although benchmarks/ and tests use it too:
``edge-export bench`` (:mod:`edge_sdk.serving.bench`) runs it on the device,
where neither benchmarks/ nor tests/ is installed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Predict = Callable[[Any], Any]
MakeInputs = Callable[[int], Any]


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured.

    Attributes:
        mode: ``closed`` or ``open``.
        concurrency: Clients (closed) or most requests in flight (open).
        requests: Requests answered in the measured period.
        errors: Requests that raised.
        seconds: Measured wall time.
        throughput_rps: Answered requests per second.
        p50_ms: Median latency.
        p90_ms: 90th percentile latency.
        p99_ms: 99th percentile latency.
        rate_rps: Offered rate (open loop), else None.
    """

    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    rate_rps: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summarise(
    mode: str,
    concurrency: int,
    latencies: list[float],
    errors: int,
    seconds: float,
    rate: float | None = None,
) -> LoadResult:
    lat = np.asarray(latencies, np.float64) * 1e3
    p50, p90, p99 = np.percentile(lat, [50, 90, 99]) if lat.size else (np.nan,) * 3
    return LoadResult(
        mode=mode,
        concurrency=concurrency,
        requests=int(lat.size),
        errors=errors,
        seconds=seconds,
        throughput_rps=lat.size / seconds if seconds > 0 else 0.0,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        rate_rps=rate,
    )


def closed_loop(
    predict: Predict,
    make_inputs: MakeInputs,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
) -> LoadResult:
    """Run ``concurrency`` clients back to back for ``duration_s`` after a warm-up.

    Args:
        predict: The call under test.
        make_inputs: ``make_inputs(i)`` builds request ``i`` (prepared before
            the clock starts would cost memory; keep it cheap or cached).
        concurrency: Number of client threads.
        duration_s: Measured period.
        warmup_s: Unmeasured period before it.
    """
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]

    def client(cid: int) -> None:
        i = cid
        mine: list[float] = []
        bad = 0
        while True:
            inputs = make_inputs(i)
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            try:
                predict(inputs)
            except Exception:
                bad += 1
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                mine.append(t1 - t0)
            i += concurrency
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summarise("closed", concurrency, latencies, errors[0], duration_s)


def async_closed_loop(
    apredict: Callable[[Any], Awaitable[Any]],
    make_inputs: MakeInputs,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
) -> LoadResult:
    """:func:`closed_loop` with ``concurrency`` asyncio tasks on one event loop.

    The way an async server (one loop, many connections) drives
    :meth:`~edge_sdk.serving.batcher.DynamicBatcher.ainfer`.
    """
    latencies: list[float] = []
    errors = [0]

    async def client(cid: int, measure_from: float, stop_at: float) -> None:
        i = cid
        while (t0 := time.perf_counter()) < stop_at:
            try:
                await apredict(make_inputs(i))
            except Exception:
                errors[0] += 1
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                latencies.append(t1 - t0)
            i += concurrency

    async def main() -> None:
        measure_from = time.perf_counter() + warmup_s
        stop_at = measure_from + duration_s
        await asyncio.gather(*(client(c, measure_from, stop_at) for c in range(concurrency)))

    asyncio.run(main())
    return _summarise("closed-async", concurrency, latencies, errors[0], duration_s)


def open_loop(
    predict: Predict,
    make_inputs: MakeInputs,
    rate_rps: float,
    duration_s: float,
    max_outstanding: int = 64,
) -> LoadResult:
    """Send requests at ``rate_rps`` for ``duration_s``; latency from the scheduled time.

    Args:
        predict: The call under test.
        make_inputs: ``make_inputs(i)`` builds request ``i``.
        rate_rps: Offered load.
        duration_s: How long to offer it.
        max_outstanding: Worker threads (requests in flight at most); a
            saturated system shows as growing latency, not a lower rate.
    """
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    n = int(rate_rps * duration_s)

    def one(i: int, due: float) -> None:
        try:
            predict(make_inputs(i))
            ok = True
        except Exception:
            ok = False
        done = time.perf_counter()
        with lock:
            if ok:
                latencies.append(done - due)
            else:
                errors[0] += 1

    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(max_workers=max_outstanding) as pool:
        for i in range(n):
            due = start + i / rate_rps
            while (lag := due - time.perf_counter()) > 0:
                time.sleep(min(lag, 0.001))
            pool.submit(one, i, due)
    elapsed = time.perf_counter() - start
    return _summarise("open", max_outstanding, latencies, errors[0], elapsed, rate_rps)
