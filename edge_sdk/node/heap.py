"""Garbage-collector keeping for a long-running node process.

A pass of CPython's cyclic collector walks its generation's tracked objects
and stops every thread meanwhile. A started node holds ~70,000 objects that
live as long as the process (modules, the loaded model, schemas), and an
event-scoring node's store ~145,000 more (entity histories: each entity's
object, arrays, event list and partner map), with no reference cycles: freed
by reference counting when evicted. A store at steady state frees about as
much as it allocates, so young passes come rarely and each walks everything
that survived meanwhile: at 1,000 events/s, passes of 58-105 ms, with or
without the start-up heap frozen (benchmarks/node_gc.py).

:class:`HeapKeeper` runs a full pass over what is not frozen yet every
second (a second's survivors: median 3 ms, at most 5.5 ms once running) and
moves the survivors into the permanent generation (``gc.freeze()``). The
price: a frozen object that later dies *in a reference cycle* is not
collected (acyclic ones, like the store's, are freed as usual), so once
every ``thaw_every_s`` the keeper unfreezes everything and runs one full
pass over it: one long pause an hour.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

log = logging.getLogger(__name__)

#: Seconds between two settles (a full pass over what is not frozen, then a freeze).
SETTLE_EVERY_S = 1.0
#: Seconds between two thaws (unfreeze, one full pass over everything, freeze).
THAW_EVERY_S = 3600.0


class HeapKeeper:
    """Keeps full GC passes short: what survives a second is frozen, thawed once an hour.

    Process-wide (the collector is): ``edge-node run`` starts one; a program
    embedding :class:`~edge_sdk.node.EdgeNode` decides for itself.

    Args:
        settle_every_s: Seconds between :meth:`settle` calls of the keeper's thread.
        thaw_every_s: Seconds between :meth:`thaw` calls (in place of a settle).

    Example:
        >>> keeper = HeapKeeper().start()  # once the node is started
        >>> ...
        >>> keeper.stop()
    """

    def __init__(
        self, settle_every_s: float = SETTLE_EVERY_S, thaw_every_s: float = THAW_EVERY_S
    ) -> None:
        if settle_every_s <= 0 or thaw_every_s < settle_every_s:
            raise ValueError(
                f"need 0 < settle_every_s <= thaw_every_s, got {settle_every_s}, {thaw_every_s}"
            )
        self.settle_every_s = settle_every_s
        self.thaw_every_s = thaw_every_s
        #: Settles and thaws done.
        self.settles = self.thaws = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def settle(self) -> None:
        """Collect what is not frozen (full pass), then freeze the survivors."""
        gc.collect()
        gc.freeze()
        self.settles += 1

    def thaw(self) -> int:
        """Unfreeze everything, collect it (one long full pass), freeze it again.

        Returns:
            How many unreachable objects the pass found: cycles that died frozen.
        """
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.thaws += 1
        if found:
            log.info("heap thaw collected %d objects that died in cycles while frozen", found)
        return found

    def start(self) -> HeapKeeper:
        """Settle once now (the start-up heap), then every ``settle_every_s`` in a thread."""
        self.settle()
        self._thread = threading.Thread(target=self._run, name="edge-node-heap", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        thawed = time.monotonic()
        while not self._stop.wait(self.settle_every_s):
            if time.monotonic() - thawed >= self.thaw_every_s:
                self.thaw()
                thawed = time.monotonic()
            else:
                self.settle()


__all__ = ["SETTLE_EVERY_S", "THAW_EVERY_S", "HeapKeeper"]
