"""Where the node explains alerts, side by side: ``explain_in`` worker against process.

The fraud node's batched mode of ``benchmarks/fraud_node.py`` (``max_batch`` 32,
``max_delay_ms`` 10, a local mosquitto, the node in its own process, this
process publishing one transaction per MQTT message and receiving the
decisions) at one rate (``--rate``, 1,000 tx/s) for ``--seconds`` (60), once
per ``explain_in`` and round, alternating (worker, process, worker, ...), each
run on a fresh broker and node primed with ``--prime`` transactions. Only
where alerts are explained differs: on the worker thread, a slice after each
batch (``worker``), or in the node's explainer process at nice +10
(``process``, the default). The prime is larger than fraud_node.py's
(100,000: later in the stream, subgraphs are larger, as entity histories fill
up). Reported per run: end-to-end latency p50 / p99 / max, decisions lost,
node CPU per transaction (the node process and its explainer process),
alerts; and per mode the median p99.

Usage (a trained bundle: ``make demo-fraud`` writes ``out/fraud/fraud.bundle``):
    python benchmarks/fraud_explain.py --bundle out/fraud/fraud.bundle

Writes benchmarks/results/fraud_explain.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import fraud_node as fn
from _common import machine_meta, meta_line

MODES = ("worker", "process")


def run(
    args: argparse.Namespace, bundle: Path, thr: float, mode: str, work: Path
) -> dict[str, Any]:
    """One batched run at ``args.rate`` with ``explain_in`` = ``mode``."""
    one = argparse.Namespace(
        steps=[args.rate],
        step_seconds=args.seconds,
        refine=0,
        confirm=0,
        warmup=args.warmup,
        p99_ms=args.p99_ms,
        prime=args.prime,
        seconds=args.seconds,
        explain_in=mode,
    )
    out = fn.run_mode(one, bundle, thr, args.batch, work, args.max_delay_ms)
    (probe,) = out["probes"]
    return {
        "explain_in": mode,
        "latency_ms": probe["latency_ms"],
        "throughput_per_s": probe["throughput_per_s"],
        "lost": probe["lost"],
        "node_cpu_ms_per_tx": probe["node_cpu_ms_per_tx"],
        "load_average_1m": probe["load_average_1m"],
        "alerts": out["alerts"],
        "node": out["node"],
    }


def render_md(meta: dict[str, Any], args: argparse.Namespace, result: dict[str, Any]) -> str:
    lines = [
        "# Alerts explained on the worker or in the explainer process (fraud node, SYNTHETIC)",
        "",
        meta_line(meta),
        "",
        f"Batched node (max_batch {args.batch}, max_delay_ms {args.max_delay_ms:g}) at "
        f"{args.rate:g} tx/s for {args.seconds:g} s per run, one transaction per MQTT message "
        f"at QoS 1, loopback, 2 s warm-up not measured; {args.prime:,} transactions primed; "
        f"bundle `{meta['bundle']}`, alert threshold {meta['alert_threshold']:.4f}.",
        "",
        "| run | explain_in | p50 ms | p99 ms | max ms | lost | tx/s | node CPU ms/tx | "
        "alerts | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["runs"], 1):
        lat = r["latency_ms"]
        lines.append(
            f"| {i} | {r['explain_in']} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
            f"{lat['max']:.1f} | {r['lost']} | {r['throughput_per_s']:.0f} | "
            f"{r['node_cpu_ms_per_tx']:.2f} | {r['alerts']} | {r['load_average_1m']:.1f} |"
        )
    med = result["median_p99_ms"]
    lines += [
        "",
        "Median p99: " + ", ".join(f"{m} **{med[m]:.1f} ms**" for m in MODES) + ".",
        "",
        "Node CPU counts the node process and its explainer process (user + system, /proc). "
        "Reproduce with `python benchmarks/fraud_explain.py --bundle <a trained fraud.bundle>`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="a trained fraud bundle")
    ap.add_argument("--rate", type=float, default=1000.0, help="transactions per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="one run, s")
    ap.add_argument("--rounds", type=int, default=2, help="runs per mode (alternating)")
    ap.add_argument("--warmup", type=float, default=2.0, help="first seconds not measured")
    ap.add_argument("--p99-ms", type=float, default=50.0, help="latency bound (reported)")
    ap.add_argument(
        "--prime",
        type=int,
        default=100_000,
        help="transactions primed in bulk (100,000: ~11 days, most entities' histories "
        "full, as on a node that has run a while)",
    )
    ap.add_argument("--batch", type=int, default=32, help="max_batch")
    ap.add_argument("--max-delay-ms", type=float, default=10.0, help="max_delay_ms")
    ap.add_argument("--out", type=Path, default=fn.REPO / "benchmarks" / "results")
    args = ap.parse_args()

    load_start = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-explain-"))
    thr = fn.alert_threshold(args.bundle, fn.stream(args.prime)[-3000:])
    runs = []
    for i in range(args.rounds):
        for mode in MODES:
            print(f"round {i + 1}, explain_in {mode}", flush=True)
            runs.append(run(args, args.bundle, thr, mode, work / f"{i}-{mode}"))
    meta = {
        **machine_meta("edge-graph-sdk", "paho-mqtt", "onnxruntime", "numpy"),
        "bundle": str(args.bundle),
        "alert_threshold": thr,
        "load_average_1m_at_start_and_end": [load_start, round(os.getloadavg()[0], 2)],
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    result = {
        "meta": meta,
        "runs": runs,
        "median_p99_ms": {
            m: statistics.median(r["latency_ms"]["p99"] for r in runs if r["explain_in"] == m)
            for m in MODES
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fraud_explain.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render_md(meta, args, result)
    (args.out / "fraud_explain.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
