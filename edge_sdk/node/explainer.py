"""Alert explanations, deferred: made by the worker in slices between batches.

An alert's explanation occludes each neighbour event of its subgraph: dozens of
inferences per alert, and fraud raises alerts in bursts (a ring's transfers, a
burst's small payments), so a burst's occluded copies cost 40-80 ms of
inference on a 2-core node. Explained before the next batch, that held back
every decision queued behind the burst. A second thread did not help: its
calls contended with the worker's for the model's backend and the CPU. So the
worker commits a batch's decisions, acknowledges its messages, queues the
batch's alerts here and explains one slice of at most :data:`COPIES_PER_SLICE`
occluded copies (at least one alert) after each batch, committing each
slice's ``alerts`` messages. Past :data:`MAX_WAITING` alerts waiting, it
explains before taking the next batch, as it used to.

The decision of an alerted event, with ``"alert": true``, is committed before
its message is acknowledged; its ``alerts`` message follows a few batches
later. A node process that dies in between loses that ``alerts`` message (the
decision stays): docs/node.md, "Scoring events".
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Alert, EventScorer
    from .outbox import Outgoing
    from .worker_host import WorkerHost

log = logging.getLogger(__name__)

#: Most occluded copies explained after one batch (each copy is one subgraph inference).
COPIES_PER_SLICE = 32
#: Most alerts waiting: past it the worker explains before it takes the next batch
#: (alerts faster than it can explain them slow intake, as before, not fill memory).
MAX_WAITING = 256


class Explanations:
    """Alerts whose decisions are committed, waiting for their ``why``.

    Args:
        host: The node (its model and message builders).
        commit: Commits a slice's ``alerts`` messages (the worker's commit).
        copies_per_slice: Most occluded copies per :meth:`step` (at least one alert).
        max_waiting: Most alerts left waiting by :meth:`add`.
    """

    def __init__(
        self,
        host: WorkerHost,
        commit: Callable[[list[Outgoing]], None],
        copies_per_slice: int = COPIES_PER_SLICE,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        if copies_per_slice < 1:
            raise ValueError(f"copies_per_slice must be >= 1, got {copies_per_slice}")
        self.host = host
        self.copies_per_slice = copies_per_slice
        self.max_waiting = max_waiting
        self._commit = commit
        self._queue: deque[tuple[EventScorer, Alert]] = deque()

    def __len__(self) -> int:
        """Alerts waiting."""
        return len(self._queue)

    def add(self, scorer: EventScorer, alerts: Sequence[Alert]) -> None:
        """Queue ``alerts`` (their decisions are committed); explain down to ``max_waiting``."""
        self._queue.extend((scorer, a) for a in alerts)
        while len(self._queue) > self.max_waiting:
            self.step()

    def step(self) -> int:
        """Explain and commit the next slice of alerts; returns how many.

        A failure past :meth:`EventScorer.explain`'s own (the outbox's disk)
        loses that slice's ``alerts`` messages, not their decisions; it is
        logged and counted in errors.
        """
        if not self._queue:
            return 0
        scorer, first = self._queue.popleft()
        chunk, copies = [first], len(first.graph.neighbour_events())
        while self._queue and self._queue[0][0] is scorer:
            more = len(self._queue[0][1].graph.neighbour_events())
            if copies + more > self.copies_per_slice:
                break
            chunk.append(self._queue.popleft()[1])
            copies += more
        out: list[Outgoing] = []
        try:  # explain() gives a failed explanation an empty why; this is the rest
            scorer.explain(self.host, chunk, out)
            self._commit(out)
        except Exception:  # never let it stop the worker
            log.exception("explaining or committing %d alert(s) failed", len(chunk))
            self.host.stats.errors += 1
        return len(chunk)


__all__ = ["COPIES_PER_SLICE", "MAX_WAITING", "Explanations"]
