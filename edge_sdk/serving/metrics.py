"""Prometheus metrics of the inference server, served as text at ``/metrics``.

Built on the ``prometheus_client`` library (the ``[serve]`` extra), imported
lazily so that the device core never needs it unless it serves HTTP. Every
:class:`ServingMetrics` owns a private ``CollectorRegistry``: several servers
in one process (tests, a node serving beside a benchmark) never share or
double-register series.

Series (all prefixed ``edge_sdk_``):

* ``http_requests_total{model, code}``: inference requests by HTTP status;
* ``http_errors_total{kind}``: every error answer, by kind (``bad_request``,
  ``unauthorized``, ``not_found``, ``method_not_allowed``, ``timeout`` (408:
  request not whole by its deadline), ``evicted`` (408: an unfinished request
  whose connection made room for a new one), ``length_required``,
  ``too_large``, ``overloaded``, ``not_ready``, ``internal``);
* ``http_request_seconds``: inference request latency, from the request line
  read to the response written (histogram);
* ``batch_size`` and ``batch_seconds``: requests merged per backend call and
  its duration (histograms, fed by the batcher's ``on_batch`` hook);
* ``queue_depth``: requests waiting in the batcher (read at scrape time);
* ``cache_hits_total`` / ``cache_misses_total``: the batcher's result cache
  (read at scrape time from its ``stats``, when it has one);
* ``model_info{backend, model, version, precision}``: what is being served
  (read at scrape time, so a node's model update shows at once).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._optional import require

#: Latency buckets (seconds), from a sub-millisecond cache hit to a stalled request.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Batch-size buckets: powers of two up to the largest sensible edge batch.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

#: Keys looked up in the predictor's ``stats`` (first present wins).
_QUEUE_KEYS = ("queue_depth", "queued", "pending")
_HIT_KEYS = ("cache_hits", "hits")
_MISS_KEYS = ("cache_misses", "misses")


def _stat(stats: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = stats.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    for nested in ("cache",):  # {"cache": {"hits": .., "misses": ..}}
        sub = stats.get(nested)
        if isinstance(sub, Mapping):
            found = _stat(sub, keys)
            if found is not None:
                return found
    return None


class ServingMetrics:
    """The metrics of one inference server, in a private registry.

    Example:
        >>> m = ServingMetrics()                                  # doctest: +SKIP
        >>> m.observe_request("tep", 200, 0.004)                   # doctest: +SKIP
        >>> body, content_type = m.render()                        # doctest: +SKIP

    Raises:
        BackendUnavailableError: ``prometheus_client`` is not installed (the
            message names the ``[serve]`` extra).
    """

    def __init__(self) -> None:
        prom = require("prometheus_client", "the /metrics endpoint of the inference server")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = prom.Counter(
            "edge_sdk_http_requests",
            "Inference requests by model and HTTP status code.",
            ["model", "code"],
            registry=r,
        )
        self.errors = prom.Counter(
            "edge_sdk_http_errors", "Error answers by kind.", ["kind"], registry=r
        )
        self.latency = prom.Histogram(
            "edge_sdk_http_request_seconds",
            "Inference request latency in seconds (request read to response written).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = prom.Histogram(
            "edge_sdk_batch_size",
            "Requests merged into one backend call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = prom.Histogram(
            "edge_sdk_batch_seconds",
            "Duration of one backend call in seconds.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._lock = threading.Lock()
        self._stats: Callable[[], Mapping[str, Any] | None] = lambda: None
        self._info: Callable[[], Mapping[str, str]] = dict
        r.register(_ScrapeTimeCollector(self))

    # -- recording --------------------------------------------------------------------------
    def observe_request(self, model: str, code: int, seconds: float | None = None) -> None:
        """Count one inference request, and its latency when given."""
        self.requests.labels(model=model, code=str(code)).inc()
        if seconds is not None:
            self.latency.observe(seconds)

    def count_error(self, kind: str) -> None:
        """Count one error answer of ``kind``."""
        self.errors.labels(kind=kind).inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one backend batch (signature of the batcher's ``on_batch`` hook)."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    # -- wiring -------------------------------------------------------------------------------
    def bind(
        self,
        info: Callable[[], Mapping[str, str]],
        predictor: Any = None,
    ) -> None:
        """Connect the scrape-time series to what is served.

        Args:
            info: Returns the ``model_info`` labels (``backend``, ``model``,
                ``version``, ``precision``) at scrape time.
            predictor: The object requests go through. When it has an
                ``on_batch`` attribute (the batcher), batches are recorded
                (an existing hook is kept and called first); when it has a
                ``stats`` mapping, queue depth and cache counters are read
                from it at scrape time.
        """
        with self._lock:
            self._info = info
            if predictor is None:
                return
            if hasattr(predictor, "stats"):
                self._stats = lambda: _read_stats(predictor)
            if hasattr(predictor, "on_batch"):
                previous = predictor.on_batch
                if previous is None:
                    predictor.on_batch = self.observe_batch
                else:

                    def chained(size: int, seconds: float) -> None:
                        previous(size, seconds)
                        self.observe_batch(size, seconds)

                    predictor.on_batch = chained

    # -- exposition -----------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

    def snapshot(self) -> tuple[Callable[[], Mapping[str, Any] | None], Callable[[], Any]]:
        """The current stats and info readers (for the scrape-time collector)."""
        with self._lock:
            return self._stats, self._info


def _read_stats(predictor: Any) -> Mapping[str, Any] | None:
    stats = predictor.stats
    stats = stats() if callable(stats) else stats
    return stats if isinstance(stats, Mapping) else None


class _ScrapeTimeCollector:
    """Series computed when scraped: model info, queue depth, cache counters."""

    def __init__(self, owner: ServingMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Any]:
        return []  # families are dynamic: skip the registry's name-collision check

    def collect(self) -> Iterator[Any]:
        core = self._owner._prom.metrics_core
        read_stats, read_info = self._owner.snapshot()
        try:
            labels = {k: str(v) for k, v in dict(read_info()).items()}
        except Exception:  # a closing model must not break the scrape
            labels = {}
        info = core.InfoMetricFamily("edge_sdk_model", "The model being served.")
        info.add_metric([], labels)
        yield info
        try:
            stats = read_stats() or {}
        except Exception:
            stats = {}
        depth = _stat(stats, _QUEUE_KEYS)
        yield core.GaugeMetricFamily(
            "edge_sdk_queue_depth", "Requests waiting in the batcher.", value=depth or 0.0
        )
        hits, misses = _stat(stats, _HIT_KEYS), _stat(stats, _MISS_KEYS)
        if hits is not None or misses is not None:
            yield core.CounterMetricFamily(
                "edge_sdk_cache_hits", "Requests answered from the result cache.", value=hits or 0
            )
            yield core.CounterMetricFamily(
                "edge_sdk_cache_misses",
                "Requests the result cache could not answer.",
                value=misses or 0,
            )
