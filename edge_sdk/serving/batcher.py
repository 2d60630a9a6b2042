"""Dynamic batching: merge concurrent requests into fewer, larger backend calls.

One window through the TEP-size model costs about as much fixed per-call
overhead as compute; stacked 32 at a time it costs about half per window. A
:class:`DynamicBatcher` sits between many callers (threads, asyncio tasks, an
HTTP server) and one :class:`~edge_sdk.Runtime`: callers submit requests and
get futures; one worker thread takes the first queued request, keeps taking
until ``max_batch`` rows or ``max_delay_ms`` after that request arrived (by
default 0: whatever is queued when the backend is free), runs them as one
call, and splits the outputs back.

* Static and learned forms stack along B; a request may carry B > 1 itself
  and is never split (one larger than ``max_batch`` runs alone).
* Dynamic graphs merge as one disjoint union (see
  :meth:`~edge_sdk.Runtime.infer_batch`, which the batcher reuses: bucket
  grouping, readout models without a batch input, unbatching).
* Every request is validated when submitted, on the caller's thread: a bad
  one raises :class:`~edge_sdk.errors.InvalidInputError` there and never
  reaches a batch.
* A backend failure of a merged batch does not fail unrelated requests: the
  batch's requests are re-run one by one, and each future gets its own
  result or error.
* A full queue refuses at once with :class:`~edge_sdk.errors.OverloadedError`
  (HTTP 503) instead of growing latency without bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InternalError, OverloadedError
from ..graph import Graph, StaticGraph, as_graph
from ..io_contract import GraphForm
from ..runtime import Runtime
from .cache import ResultCache
from .loop_sink import LoopSink, hand_to_loops

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatcherConfig:
    """How a :class:`DynamicBatcher` forms batches.

    Attributes:
        max_batch: Most rows per backend call: windows (B) for the static
            and learned forms, graphs for the dynamic form. Capped further by
            the model's ``max_batch`` and a fixed batch dim.
        max_delay_ms: Longest a request waits for others to join its batch,
            counted from its arrival. The default 0 is continuous batching:
            the worker runs whatever is queued as soon as the backend is free,
            so a lone request waits for nothing, and requests that arrive
            while a batch runs form the next one. Measured on the TEP-size
            model (benchmarks/serving.py), 0 gave more throughput than 2 ms
            for thread and asyncio clients alike; a delay only pays when the
            backend gains much more from full batches than this CPU does.
        queue_size: Most requests waiting; one more is refused with
            :class:`~edge_sdk.errors.OverloadedError`.

    Raises:
        ValueError: A value out of range.
    """

    max_batch: int = 32
    max_delay_ms: float = 0.0
    queue_size: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not self.max_delay_ms >= 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {self.max_delay_ms}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")


@dataclass(eq=False)
class _Request:
    graph: Graph
    rows: int
    future: Future[Outputs] | LoopSink
    key: bytes | None
    arrived: float  # time.monotonic()


class DynamicBatcher:
    """Merge concurrent requests to one runtime into batched backend calls.

    Thread-safe: ``submit``/``infer`` from any number of threads, ``ainfer``
    from asyncio. Results are exactly those of ``runtime.infer`` on each
    request alone (batching is exact; see :mod:`edge_sdk.packing`).

    Failures stay with their request: a request that does not validate is
    refused at :meth:`submit`; when the backend fails on a merged batch, the
    batch's requests are re-run one by one, so only a request that also fails
    alone gets an error (the others get their results, a little later).

    Example:
        >>> with DynamicBatcher(Runtime.load("tep.bundle")) as batcher:   # doctest: +SKIP
        ...     out = batcher.infer(window)           # from many threads at once
        ...     out = await batcher.ainfer(window)    # or from asyncio

    Args:
        runtime: The loaded model. The batcher does not close it.
        config: Batch size, delay and queue bound.
        cache: Optional result cache, checked at submit: a hit resolves the
            future at once without queuing.

    Attributes:
        on_batch: Called after every backend batch with the number of
            requests merged and the seconds it took (including any one-by-one
            re-runs); for metrics. Exceptions it raises are logged, not raised.
    """

    def __init__(
        self,
        runtime: Runtime,
        config: BatcherConfig = BatcherConfig(),  # frozen: one shared default is safe
        cache: ResultCache | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.cache = cache
        self.on_batch: Callable[[int, float], None] | None = None
        manifest = runtime.manifest
        self._spec = manifest.graph
        self._dynamic = self._spec.form is GraphForm.DYNAMIC
        limit = config.max_batch
        if not self._dynamic:
            limit = min(limit, self._spec.max_batch)
            first = manifest.inputs[0].shape[0] if manifest.inputs else None
            if isinstance(first, int):
                limit = min(limit, first)  # a fixed batch dim: never merge past it
        self._limit = limit
        self._identity = (manifest.model.name, manifest.model.version, runtime.artifact.name)
        self._delay_s = config.max_delay_ms / 1e3
        self._cv = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        # Rows the gathering worker still waits for (0: it waits for a first request).
        # Submitting wakes it only when that many are queued: one wake-up per batch,
        # not one per request.
        self._wanted_rows = 0
        self._thread: threading.Thread | None = None
        self._closed = False
        # counters, under self._cv
        self._requests = 0
        self._batches = 0
        self._batched_requests = 0
        self._rows = 0
        self._sizes: Counter[int] = Counter()
        self._rejected = 0
        self._failed = 0
        self._retried = 0
        self._hits = 0
        self._misses = 0
        self._max_depth = 0

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> DynamicBatcher:
        """Start the worker thread (idempotent).

        Returns:
            The batcher itself.

        Raises:
            OverloadedError: The batcher was closed.
        """
        with self._cv:
            if self._closed:
                raise OverloadedError("the batcher is closed; create a new one")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="edge-sdk-batcher", daemon=True
                )
                self._thread.start()
        return self

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking requests, fail queued ones, let the running batch finish.

        Requests still queued fail with :class:`~edge_sdk.errors.OverloadedError`
        (they were never run). Idempotent.

        Args:
            timeout_s: Longest to wait for the worker (None: until it exits).
        """
        with self._cv:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
            self._cv.notify_all()
            thread = self._thread
        if pending:
            error = OverloadedError(
                f"the batcher closed before this request ran ({len(pending)} request(s) "
                "were waiting); retry on a running server"
            )
            for request in pending:
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(error)
            hand_to_loops(r.future for r in pending)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def __enter__(self) -> DynamicBatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------
    def submit(self, inputs: Any) -> Future[Outputs]:
        """Validate one request now and queue it.

        Args:
            inputs: What :meth:`~edge_sdk.Runtime.infer` takes.

        Returns:
            A future of the outputs (those of ``runtime.infer(inputs)``); a
            backend error is set on it. Outputs answered from the cache are
            read-only arrays (see :class:`ResultCache`).

        Raises:
            InvalidInputError: The request does not match the model (only this
                request fails; nothing is queued).
            OverloadedError: The queue is full (the message says how many
                requests are waiting) or the batcher is closed.
            RuntimeError: The batcher was never started.
        """
        future: Future[Outputs] = Future()
        self._admit(inputs, future)
        return future

    def _admit(self, inputs: Any, future: Future[Outputs] | LoopSink) -> None:
        """Validate, answer from the cache, or queue (see :meth:`submit`)."""
        graph = as_graph(inputs, self._spec)
        rows = graph.batch_size if isinstance(graph, StaticGraph) else graph.num_graphs
        with self._cv:
            self._check_open()
        key = hit = None
        if self.cache is not None:
            model, version, artifact = self._identity
            key = ResultCache.make_key(model, version, graph, artifact=artifact)
            hit = self.cache.get(key)
        if hit is not None:
            with self._cv:
                self._requests += 1
                self._hits += 1
            future.set_result(hit)
            return
        request = _Request(graph, rows, future, key, time.monotonic())
        with self._cv:
            self._misses += self.cache is not None
            self._check_open()
            depth = len(self._queue)
            if depth >= self.config.queue_size:
                self._rejected += 1
                raise OverloadedError(
                    f"overloaded: {depth} requests waiting in the batcher queue "
                    f"(queue_size {self.config.queue_size}); retry later"
                )
            self._queue.append(request)
            self._queued_rows += rows
            self._requests += 1
            self._max_depth = max(self._max_depth, depth + 1)
            if self._queued_rows >= self._wanted_rows:
                self._cv.notify()

    def _check_open(self) -> None:
        """Raise unless requests can be queued (call under ``self._cv``)."""
        if self._closed:
            raise OverloadedError("the batcher is closed; it takes no more requests")
        if self._thread is None:
            raise RuntimeError(
                "DynamicBatcher is not started: call start() or use it in a with block"
            )

    def infer(self, inputs: Any, timeout_s: float | None = None) -> Outputs:
        """Submit one request and wait for its outputs.

        Args:
            inputs: What :meth:`~edge_sdk.Runtime.infer` takes.
            timeout_s: Longest to wait (None: no limit). On timeout a request
                that has not started is withdrawn.

        Returns:
            Outputs by name.

        Raises:
            InvalidInputError: The request does not match the model.
            OverloadedError: The queue is full or the batcher closed.
            TimeoutError: No result within ``timeout_s``.
        """
        future = self.submit(inputs)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    async def ainfer(self, inputs: Any) -> Outputs:
        """:meth:`infer` for asyncio: await the outputs without blocking the loop.

        Validation (and a cache lookup) runs on the calling thread; cancelling
        the awaiting task withdraws a request that has not started.
        """
        loop = asyncio.get_running_loop()
        sink = LoopSink(loop, loop.create_future())
        self._admit(inputs, sink)
        sink.settle()  # a cache hit is settled already
        return await sink.fut

    # -- introspection ------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        """Counters since creation.

        ``requests`` accepted (cache hits included), ``batches`` run,
        ``batched_requests`` and ``rows`` that went through them,
        ``mean_batch_size`` (requests per batch), ``batch_sizes`` (requests
        per batch -> batches), ``queue_depth`` now and ``max_queue_depth``,
        ``rejected`` (queue full), ``failed`` (requests that got an error),
        ``retried_batches`` (merged batches re-run one by one after an error),
        ``cache_hits`` and ``cache_misses`` (0 without a cache).
        """
        with self._cv:
            return {
                "requests": self._requests,
                "batches": self._batches,
                "batched_requests": self._batched_requests,
                "rows": self._rows,
                "mean_batch_size": self._batched_requests / self._batches if self._batches else 0.0,
                "batch_sizes": dict(sorted(self._sizes.items())),
                "queue_depth": len(self._queue),
                "max_queue_depth": self._max_depth,
                "rejected": self._rejected,
                "failed": self._failed,
                "retried_batches": self._retried,
                "cache_hits": self._hits,
                "cache_misses": self._misses,
            }

    # -- the worker ---------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._execute(batch)
            except Exception as exc:  # a bug here must not strand callers or kill the worker
                log.exception("batcher failed to run a batch")
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(
                            InternalError(f"batcher failed: {type(exc).__name__}: {exc}")
                        )
                hand_to_loops(r.future for r in batch)

    def _next_batch(self) -> list[_Request] | None:
        """Block for the first request, then gather until the row limit or the deadline."""
        with self._cv:
            self._wanted_rows = 0
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            first = self._take()
            batch, rows = [first], first.rows
            deadline = first.arrived + self._delay_s
            while rows < self._limit:
                if self._queue:
                    if rows + self._queue[0].rows > self._limit:
                        break  # it leads the next batch; a request is never split
                    request = self._take()
                    batch.append(request)
                    rows += request.rows
                    continue
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    break
                self._wanted_rows = self._limit - rows
                self._cv.wait(remaining)
            self._wanted_rows = 1 << 62  # busy running: submitting need not wake it
            return batch

    def _take(self) -> _Request:
        request = self._queue.popleft()
        self._queued_rows -= request.rows
        return request

    def _execute(self, batch: list[_Request]) -> None:
        live = [r for r in batch if r.future.set_running_or_notify_cancel()]
        if not live:
            return
        t0 = time.perf_counter()
        outcomes: list[Outputs | Exception]
        retried = False
        try:
            outcomes = list(self.runtime.infer_validated([r.graph for r in live]))
        except Exception as exc:
            if len(live) == 1:
                outcomes = [exc]
            else:
                # Isolate the culprit: only the request(s) that fail alone get an error.
                retried = True
                outcomes = [self._run_alone(r) for r in live]
        seconds = time.perf_counter() - t0
        failed = 0
        for request, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, Exception):
                failed += 1
                request.future.set_exception(outcome)
                continue
            if self.cache is not None and request.key is not None:
                self.cache.put(request.key, outcome)
            request.future.set_result(outcome)
        hand_to_loops(r.future for r in live)
        with self._cv:
            self._batches += 1
            self._batched_requests += len(live)
            self._rows += sum(r.rows for r in live)
            self._sizes[len(live)] += 1
            self._failed += failed
            self._retried += retried
        hook = self.on_batch
        if hook is not None:
            try:
                hook(len(live), seconds)
            except Exception:
                log.exception("the batcher's on_batch hook failed")

    def _run_alone(self, request: _Request) -> Outputs | Exception:
        try:
            return self.runtime.infer_validated([request.graph])[0]
        except Exception as exc:
            return exc


__all__ = ["BatcherConfig", "DynamicBatcher"]
