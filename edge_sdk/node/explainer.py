"""Alert explanations, deferred: made after the decisions, off the decisions' path.

An alert's explanation occludes each neighbour event of its subgraph: dozens of
inferences per alert, and fraud raises alerts in bursts (a ring's transfers, a
burst's small payments), so a burst's occluded copies cost 40-80 ms of
inference on a 2-core node. The worker commits a batch's decisions,
acknowledges its messages and queues the batch's alerts here; who explains
them is the node's ``explain_in``:

* ``process`` (default): a thread of the node hands slices of up to
  :data:`PROCESS_COPIES` occluded copies to an explainer process
  (:mod:`.explain_process`, lower CPU priority) and commits each slice's
  ``alerts`` messages. The worker never waits for an explanation unless more
  than :data:`MAX_WAITING` alerts are queued (then it waits for room: alerts
  faster than they can be explained slow intake, not fill memory).
* ``worker``: the worker explains one slice of at most :data:`COPIES_PER_SLICE`
  copies (at least one alert) after each batch, and past :data:`MAX_WAITING`
  alerts before taking the next batch. At 1,000 tx/s on 2 cores this node fell
  behind (p99 1.2-2.1 s against 41-51 ms with the process:
  benchmarks/results/fraud_explain.md); a plain second thread did not help
  either (it contended with the worker for the CPU and Python's GIL).

The decision of an alerted event, with ``"alert": true``, is committed before
its message is acknowledged; its ``alerts`` message follows later. A node
process that dies in between loses that ``alerts`` message (the decision
stays): docs/node.md, "Scoring events".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .explain_process import ExplainerProcess, ModelKey

if TYPE_CHECKING:
    from ..eventgraph import Subgraph
    from ..runtime import Runtime
    from .events import Alert, EventScorer
    from .outbox import Outgoing
    from .worker_host import WorkerHost

log = logging.getLogger(__name__)

#: Most occluded copies the worker explains after one batch (``explain_in: worker``).
COPIES_PER_SLICE = 32
#: Most occluded copies per request to the explainer process (``explain_in: process``).
PROCESS_COPIES = 256
#: Most alerts waiting: past it the worker waits for room (``process``) or explains
#: before it takes the next batch (``worker``): alerts faster than they can be
#: explained slow intake, not fill memory.
MAX_WAITING = 256


class Explanations:
    """Alerts whose decisions are committed, waiting for their ``why``.

    Args:
        host: The node (its model, config and message builders).
        commit: Commits a slice's ``alerts`` messages (the worker's commit).
        copies_per_slice: Most occluded copies per :meth:`step` (at least one
            alert); default :data:`COPIES_PER_SLICE`, or :data:`PROCESS_COPIES`
            with a ``process``.
        max_waiting: Most alerts left waiting by :meth:`add`.
        process: The explainer process; None: the worker explains (:meth:`step`).
    """

    def __init__(
        self,
        host: WorkerHost,
        commit: Callable[[list[Outgoing]], None],
        copies_per_slice: int | None = None,
        max_waiting: int = MAX_WAITING,
        process: ExplainerProcess | None = None,
    ) -> None:
        if copies_per_slice is None:
            copies_per_slice = COPIES_PER_SLICE if process is None else PROCESS_COPIES
        if copies_per_slice < 1:
            raise ValueError(f"copies_per_slice must be >= 1, got {copies_per_slice}")
        self.host = host
        self.copies_per_slice = copies_per_slice
        self.max_waiting = max_waiting
        self.process = process
        self._commit = commit
        self._queue: deque[tuple[EventScorer, Alert]] = deque()
        self._cond = threading.Condition()
        self._busy = False  # the thread holds a slice it took from the queue
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        """Alerts waiting (and, with a process, being explained)."""
        with self._cond:
            return len(self._queue) + self._busy

    @property
    def on_worker(self) -> bool:
        """Whether the worker explains (it then calls :meth:`step` after each batch)."""
        return self.process is None

    def add(self, scorer: EventScorer, alerts: Sequence[Alert]) -> None:
        """Queue ``alerts`` (their decisions are committed); explain down to ``max_waiting``."""
        with self._cond:
            self._queue.extend((scorer, a) for a in alerts)
            self._cond.notify_all()
        if self.process is None:
            while len(self._queue) > self.max_waiting:
                self.step()
            return
        self._ensure_thread()
        with self._cond:
            while len(self._queue) + self._busy > self.max_waiting and not self._stopping:
                self._cond.wait(0.1)

    def step(self) -> int:
        """The worker's turn (``explain_in: worker``): explain and commit the next slice.

        Returns how many alerts it explained; 0 with a process (its thread explains).
        """
        if self.process is not None:
            return 0
        with self._cond:
            chunk = self._take()
        if chunk is not None:
            self._explain(*chunk)
        return 0 if chunk is None else len(chunk[1])

    def close(self, timeout_s: float = 5.0) -> None:
        """Explain what is queued (for up to ``timeout_s``), then stop the thread and process.

        The worker calls it as it stops; ``Worker.stop`` waits 10 s for that.
        """
        if self.process is None:
            deadline = time.monotonic() + timeout_s
            while self.step() and time.monotonic() < deadline:
                pass
            return
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._queue or self._busy) and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%d alert(s) left unexplained at stop", len(self._queue))
                    break
                self._cond.wait(min(left, 0.1))
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.process.close()

    # -- internals ---------------------------------------------------------------------
    def _take(self) -> tuple[EventScorer, list[Alert]] | None:
        """The next slice: one scorer's alerts, up to ``copies_per_slice`` copies (lock held)."""
        if not self._queue:
            return None
        scorer, first = self._queue.popleft()
        chunk, copies = [first], len(first.graph.neighbour_events())
        while self._queue and self._queue[0][0] is scorer:
            more = len(self._queue[0][1].graph.neighbour_events())
            if copies + more > self.copies_per_slice:
                break
            chunk.append(self._queue.popleft()[1])
            copies += more
        return scorer, chunk

    def _explain(self, scorer: EventScorer, chunk: list[Alert]) -> None:
        """Explain ``chunk`` and commit its ``alerts`` messages; failures are logged, counted."""
        out: list[Outgoing] = []
        try:  # explain() gives a failed explanation an empty why; this is the rest
            why_of = None if self.process is None else self._in_process  # None: the scorer's own
            scorer.explain(self.host, chunk, out, why_of)
            self._commit(out)
        except Exception:  # never let it stop the worker (or the thread)
            log.exception("explaining or committing %d alert(s) failed", len(chunk))
            self.host.stats.errors += 1

    def _in_process(
        self, rt: Runtime, graphs: list[Subgraph], scores: list[float | None], top_k: int
    ) -> list[list[dict[str, Any]]]:
        """The explainer process's ``why`` of ``graphs``, scored by the node's ``rt``."""
        assert self.process is not None
        cfg = self.host.config
        key = ModelKey.of(rt, self.host.model.source, cfg.profile, cfg.trusted_keys)
        return self.process.explain(key, graphs, scores, top_k)

    def _ensure_thread(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run, name="edge-node-explanations", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:  # close() waited for the queue; what is left stays
                    return
                chunk = self._take()
                self._busy = chunk is not None
            try:
                if chunk is not None:
                    self._explain(*chunk)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


__all__ = ["COPIES_PER_SLICE", "MAX_WAITING", "PROCESS_COPIES", "Explanations"]
