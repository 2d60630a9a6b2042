"""Garbage-collector pauses of an event-scoring node: CPython's defaults vs the heap keeper.

Streams the fraud sample's SYNTHETIC transactions (``samples/fraud/generate.py``,
seed 0, 8,000 accounts) through an :class:`edge_sdk.eventgraph.EventGraphStore`
with the sample's spec, the node's per-event store work (``score_request``):
``--prime`` at full speed (the history a running node holds; not measured),
then ``--events`` at ``--rate`` per second (the bar's 1,000), timing every collector pass
(``gc.callbacks``, the collecting thread's CPU time) and every event's latency
(wall time from its due time to its subgraph built: a pass on another thread
stalls it too). Three regimes, side by side in one run,
each in a fresh child process (the collector's state is process-wide):

- **default**: CPython's thresholds, nothing frozen;
- **startup-freeze**: the start-up heap frozen once and full passes 10x rarer
  (what ``edge-node run`` did before :class:`~edge_sdk.node.HeapKeeper`);
- **keeper**: :class:`~edge_sdk.node.HeapKeeper` started as ``edge-node run``
  starts it (what survives a second frozen after a pass over it).

The store's objects are what make full passes long: they grow with the
stream, and no pass can free them. Pauses stop every thread of a node, so
they add to the end-to-end latency of every decision in flight.

Usage:
    python benchmarks/node_gc.py [--prime 140000 --events 60000 --rate 1000]

Writes benchmarks/results/node_gc.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, meta_line, sample_module

HERE = Path(__file__).resolve().parent
FRAUD = HERE.parent / "samples" / "fraud"
REGIMES = ("default", "startup-freeze", "keeper")


def child(regime: str, prime: int, n: int, rate: float) -> dict[str, Any]:
    """Under ``regime``: ``prime`` events into a fresh store at full speed (a node's history,
    not measured), then ``n`` more at ``rate``/s, timing passes and events."""
    from edge_sdk.eventgraph import EventGraphStore
    from edge_sdk.node import HeapKeeper

    generate = sample_module("fraud_generate", FRAUD / "generate.py")
    spec = sample_module("fraud_spec", FRAUD / "spec.py").fraud_spec()
    events = list(generate.generate(0, accounts=8000, days=60).events())[: prime + n]
    store = EventGraphStore(spec)
    keeper = None
    if regime == "startup-freeze":
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 100)
    elif regime == "keeper":
        keeper = HeapKeeper().start()
    pauses: list[tuple[int, float, float]] = []  # generation, CPU s, when (s into the run)
    began = [0.0]

    def timer(phase: str, info: dict[str, Any]) -> None:
        # CPU time of the thread collecting: the keeper's passes run on its own thread,
        # which may wait for the interpreter lock between this callback and the pass.
        if phase == "start":
            began[0] = time.thread_time()
        else:
            when = time.perf_counter() - start
            pauses.append((info["generation"], time.thread_time() - began[0], when))

    for e in events[:prime]:
        store.score_request(e)
    per_event = np.empty(n)
    start = time.perf_counter()
    gc.callbacks.append(timer)
    for i, e in enumerate(events[prime:]):
        due = start + i / rate
        while (t0 := time.perf_counter()) < due:
            time.sleep(min(due - t0, 0.001))
        store.score_request(e)
        per_event[i] = time.perf_counter() - due  # from its arrival: a stall anywhere counts
    seconds = time.perf_counter() - start
    gc.callbacks.remove(timer)
    if keeper is not None:
        keeper.stop()
    ms = [p * 1e3 for _, p, _ in pauses]
    full = [p * 1e3 for g, p, _ in pauses if g == 2]
    longest = sorted(pauses, key=lambda p: -p[1])[:5]
    return {
        "regime": regime,
        "primed": prime,
        "events": n,
        "rate_per_s": rate,
        "seconds": round(seconds, 1),
        "tracked_objects_not_frozen": len(gc.get_objects()),
        "frozen_objects": gc.get_freeze_count(),
        "passes": len(ms),
        "full_passes": len(full),
        "full_pass_ms": {
            "median": round(float(np.median(full)), 1) if full else None,
            "max": round(max(full), 1) if full else None,
        },
        "pause_ms": {
            "p99": round(float(np.percentile(ms, 99)), 2) if ms else None,
            "max": round(max(ms), 1) if ms else None,
            "total": round(sum(ms), 1),
            "longest": [
                {"generation": g, "ms": round(p * 1e3, 1), "at_s": round(w, 1)}
                for g, p, w in longest
            ],
        },
        "event_latency_ms": {
            "p50": round(float(np.median(per_event)) * 1e3, 3),
            "p99": round(float(np.percentile(per_event, 99)) * 1e3, 3),
            "max": round(float(per_event.max()) * 1e3, 1),
        },
        "keeper": {"settles": keeper.settles, "thaws": keeper.thaws} if keeper else None,
    }


def report(
    meta: dict[str, Any], rows: list[dict[str, Any]], prime: int, events: int, rate: float
) -> str:
    """The Markdown table of one run."""
    lines = [
        "# Collector pauses of an event-scoring node (SYNTHETIC transactions)",
        "",
        meta_line(meta),
        "",
        f"{prime:,} transactions through `EventGraphStore.score_request` (fraud spec) at "
        f"full speed (a node's history, not measured), then {events:,} more at "
        f"{rate:g}/s, measured; "
        "one fresh process per regime; every collector pass timed by `gc.callbacks` "
        "(CPU time of the collecting thread); "
        "an event's latency runs from its due time to its subgraph built (a pass on the "
        "keeper's thread stalls the scoring one too).",
        "",
        "| regime | passes | full passes | full pass median / max ms | pause p99 / max ms "
        "| pauses total ms | event latency p99 / max ms | objects frozen / not |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fp, p, e = r["full_pass_ms"], r["pause_ms"], r["event_latency_ms"]
        lines.append(
            f"| {r['regime']} | {r['passes']} | {r['full_passes']} "
            f"| {fp['median'] or '-'} / {fp['max'] or '-'} "
            f"| {p['p99']} / {p['max']} | {p['total']} | {e['p99']} / {e['max']} "
            f"| {r['frozen_objects']:,} / {r['tracked_objects_not_frozen']:,} |"
        )
    lines += ["", "Longest passes (generation, seconds into the measured stream):", ""]
    for r in rows:
        longest = ", ".join(
            f"{p['ms']} ms (gen {p['generation']}, {p['at_s']} s)"
            for p in r["pause_ms"]["longest"][:3]
        )
        lines.append(f"- {r['regime']}: {longest}")
    lines += [
        "",
        "Reproduce: `python benchmarks/node_gc.py`. A pause stops every thread of the",
        "process; in a node it delays every decision in flight (benchmarks/fraud_node.py).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prime", type=int, default=140_000, help="transactions first, unmeasured")
    ap.add_argument("--events", type=int, default=60_000, help="transactions measured")
    ap.add_argument("--rate", type=float, default=1000.0, help="measured transactions per s")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--child", choices=REGIMES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.prime, args.events, args.rate)))
        return
    rows = []
    for regime in REGIMES:
        cmd = [sys.executable, __file__, "--child", regime]
        cmd += ["--prime", str(args.prime), "--events", str(args.events), "--rate", str(args.rate)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    meta = machine_meta("edge-graph-sdk", "numpy")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "node_gc.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    (args.out / "node_gc.md").write_text(report(meta, rows, args.prime, args.events, args.rate))


if __name__ == "__main__":
    main()
