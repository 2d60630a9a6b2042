"""Garbage-collector settings for a long-running node process.

A full (generation 2) pass of CPython's cyclic collector walks every tracked
object and stops every thread meanwhile. A started node holds ~70,000 objects
that live as long as the process (modules, the loaded model, schemas), and an
event-scoring node's store grows to ~140,000 more (entity histories, with no
reference cycles: freed by reference counting when evicted). Scoring 1,000
events/s, full passes paused every thread for 80-220 ms every ~7 s
(benchmarks/fraud_node.py, docs/node.md "Scoring events").
"""

from __future__ import annotations

import gc

#: Generation-1 passes between full collections (CPython's default: 10).
FULL_GC_EVERY = 100


def freeze_startup_heap() -> None:
    """Leave start-up objects out of full passes and make full passes 10x rarer.

    Call it once the node is started (``edge-node run`` does). Frozen objects
    are still freed when their reference count drops to zero (a swapped-out
    model is); only cycles among them are never collected. The young
    generations, where nearly all cyclic garbage dies, are collected as
    often as before. Process-wide: a program embedding :class:`EdgeNode`
    decides for itself whether to call it.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)


__all__ = ["FULL_GC_EVERY", "freeze_startup_heap"]
