"""Per-event cost of the event-graph store: one subgraph built and the event ingested.

Streams the fraud sample's SYNTHETIC transactions (``samples/fraud/generate.py``,
seed 0, the first ``--events``) through :class:`edge_sdk.eventgraph.EventGraphStore`
with the sample's spec (``samples/fraud/spec.py``) at several fan-outs, side by
side in one run, and records per event the wall time (``perf_counter``) and the
thread's CPU time (``thread_time``: less sensitive to other processes on a
shared machine) of ``score_request`` (request then ingest, sharing the work),
and at the default fan-out of ``request()`` + ``ingest()`` as two calls. Also
the subgraph sizes and the memory the store keeps (entities, longest history).
The garbage collector stays on, as in a node: its pauses show in p99 and max.

Usage:
    python benchmarks/eventgraph_store.py [--events 50000] [--warmup 2000]

Writes benchmarks/results/eventgraph_store.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, meta_line, sample_module

from edge_sdk.eventgraph import EventGraphStore

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FRAUD = REPO / "samples" / "fraud"


def _pct(values: np.ndarray) -> dict[str, float]:
    return {
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def run(events: list[dict[str, Any]], spec: Any, mode: str, warmup: int) -> dict[str, Any]:
    """Stream ``events`` through a fresh store; per-event wall and CPU microseconds."""
    store = EventGraphStore(spec)
    if mode == "score_request":
        step: Callable[[dict[str, Any]], Any] = store.score_request
    else:

        def step(e: dict[str, Any]) -> Any:
            sg = store.request(e)
            store.ingest(e)
            return sg

    wall = np.empty(len(events))
    cpu = np.empty(len(events))
    sizes = np.empty((len(events), 2), dtype=np.int64)
    perf, thread = time.perf_counter, time.thread_time
    for i, e in enumerate(events):
        w0, c0 = perf(), thread()
        sg = step(e)
        cpu[i], wall[i] = thread() - c0, perf() - w0
        sizes[i] = sg.num_nodes, sg.num_edges
    keep = slice(warmup, None)
    row = {
        "mode": mode,
        "fanout": spec.fanout,
        "events_timed": len(events) - warmup,
        "wall_us": _pct(wall[keep] * 1e6),
        "cpu_us": _pct(cpu[keep] * 1e6),
        "over_1ms": int((wall[keep] > 1e-3).sum()),
        "nodes": _pct(sizes[keep, 0].astype(float)),
        "edges": _pct(sizes[keep, 1].astype(float)),
        "max_nodes_spec": spec.max_nodes,
        "entities_at_end": store.num_entities,
        "longest_history": store.max_history_length(),
    }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    gen = sample_module("_edge_sdk_sample_fraud_generate", FRAUD / "generate.py")
    fraud_spec = sample_module("_edge_sdk_sample_fraud_spec", FRAUD / "spec.py").fraud_spec
    tx = gen.generate(0)
    events = list(tx.events(np.arange(min(args.events, len(tx)))))
    load_before = os.getloadavg()
    rows = []
    for fanout in args.fanouts:
        rows.append(run(events, fraud_spec(fanout=fanout), "score_request", args.warmup))
        print(json.dumps(rows[-1]))
    rows.append(run(events, fraud_spec(fanout=16), "request+ingest", args.warmup))
    print(json.dumps(rows[-1]))
    meta = {
        **machine_meta("edge-graph-sdk", "numpy"),
        "workload": f"first {len(events)} SYNTHETIC transactions of samples/fraud "
        f"generate(seed=0); statistics over the events after the first {args.warmup}",
        "load_average_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eventgraph_store.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# Event-graph store: µs per event (subgraph built + event ingested)",
        "",
        meta_line(meta),
        "",
        "| call | fan-out | wall median | wall p99 | CPU median | CPU p99 | > 1 ms | "
        "nodes p50 / p99 / max | edges p50 / p99 | entities kept | longest history |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w, c, n, e = r["wall_us"], r["cpu_us"], r["nodes"], r["edges"]
        lines.append(
            f"| {r['mode']} | {r['fanout']} | {w['median']:.0f} | {w['p99']:.0f} | "
            f"{c['median']:.0f} | {c['p99']:.0f} | {r['over_1ms']} | "
            f"{n['median']:.0f} / {n['p99']:.0f} / {n['max']:.0f} (≤ {r['max_nodes_spec']}) | "
            f"{e['median']:.0f} / {e['p99']:.0f} | {r['entities_at_end']} | "
            f"{r['longest_history']} |"
        )
    lines += [
        "",
        f"{meta['workload']}. Pure Python + numpy, one thread, garbage collector on. "
        "CPU = the thread's CPU time (robust to other processes); wall includes "
        "preemption: the 1-minute load average was "
        f"{meta['load_average_1m'][0]} before and {meta['load_average_1m'][1]} after the run "
        f"on {meta['cpus']} CPUs.",
    ]
    (args.out / "eventgraph_store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
