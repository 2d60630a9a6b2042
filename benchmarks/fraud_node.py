"""Fraud scoring on the node over MQTT: transactions published -> decisions received.

One run, over loopback, with real processes: a local mosquitto, an ``edge-node``
serving a fraud GNN bundle with an event graph in its own process (one
inference thread), and this process as both the payment switch (one
transaction per message, QoS 1, on ``edge/bench/n1/events``, at a fixed rate)
and the risk team's subscriber (``results``, QoS 1). Each transaction is scored
on its 2-hop subgraph, built by the node's in-memory store as of its time.

Two node modes, side by side: **batched** (``max_batch 32``: the worker merges
the subgraphs of whatever waits into one disjoint union, one backend call per
32) and **unbatched** (``max_batch 1``: one backend call per transaction). Both
publish one ``results`` message per worker batch.

Per mode, on one node process (its store keeps growing, as a node's does):

1. **prime**: the first ``--prime`` transactions of the stream in bulk
   messages, so that subgraphs have the history of a running node (not timed);
2. **sustained**: ``--rate`` tx/s for ``--seconds`` (the first ``--warmup`` s
   not measured): throughput, p50/p99 latency, lost;
3. **max sustainable rate**: ``--steps`` rates for ``--step-seconds`` each, up
   to the first that fails (p99 > ``--p99-ms``, a loss, or < 97 % of the rate
   achieved); the last passing one is the mode's maximum.

Latency = publish -> decision received (both on this machine's monotonic
clock); a decision counts once (first copy, by event id). The stream is the
fraud sample's SYNTHETIC generator (``samples/fraud/generate.py``); the model is
``--bundle`` (a trained fraud bundle) or, by default, the sample's FraudGATv2
(hidden 48, 4 heads, seeded, untrained: the same compute, meaningless scores)
exported FP32 for ONNX Runtime with the sample's spec, alerting the top 1 %.

Usage:
    python benchmarks/fraud_node.py [--rate 1000] [--seconds 60] [--bundle out/fraud/...]

Writes benchmarks/results/fraud_node.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from edge_sdk.fleet.brokers import LocalBroker

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, meta_line, sample_module

REPO = Path(__file__).resolve().parents[1]
FRAUD = REPO / "samples" / "fraud"
TOPIC = "edge/bench/n1/events"


def fraud(name: str) -> Any:
    """A fraud sample module, under the name the sample's scripts use among themselves."""
    return sample_module(f"_edge_sdk_sample_fraud_{name}", FRAUD / f"{name}.py")


def default_bundle(out: Path) -> Path:
    """The sample's FraudGATv2 (seeded, untrained) exported FP32 with the sample's spec."""
    import torch

    from edge_sdk.eventgraph import EventGraphStore
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    spec = fraud("spec").fraud_spec()
    torch.manual_seed(0)
    model = fraud("models").build("gatv2", spec.num_node_features, spec.num_edge_features).eval()
    store = EventGraphStore(spec)
    graphs = [store.score_request(e) for e in stream(3000)]
    sample = sample_from_arrays(max(graphs, key=lambda g: g.num_nodes).inputs())
    cfg = ExportConfig(
        name="fraud-gatv2-untrained", form="dynamic", output_names=["logits"], event_graph=spec
    )
    export_model(model, sample, out, cfg)
    return out


_STREAM: list[dict[str, Any]] = []


def stream(n: int) -> list[dict[str, Any]]:
    """The first ``n`` SYNTHETIC transactions of the generator (seed 0), in time order."""
    if len(_STREAM) < n:
        tx = fraud("generate").generate(0, accounts=8000)
        _STREAM[:] = list(tx.events())
    if len(_STREAM) < n:
        raise SystemExit(f"the stream has {len(_STREAM)} transactions, {n} asked")
    return _STREAM[:n]


def alert_threshold(bundle: Path, events: list[dict[str, Any]], rate: float = 0.01) -> float:
    """The spec's threshold, else the score that alerts ``rate`` of ``events``."""
    from edge_sdk import Runtime
    from edge_sdk.eventgraph import EventGraphStore

    rt = Runtime.load(bundle)
    spec = rt.manifest.event_graph
    if spec.threshold is not None:
        return float(spec.threshold)
    store = EventGraphStore(spec)
    names = ["x", "edge_index", "edge_attr"] if rt.manifest.graph.edge_dim else ["x", "edge_index"]
    graphs = [store.score_request(e).inputs(names) for e in events]
    scores = []
    for i in range(0, len(graphs), 64):
        for out in rt.infer_batch(graphs[i : i + 64]):
            lg = out["logits"][0].astype(np.float64)
            scores.append(1.0 / (1.0 + np.exp(lg[0] - lg[1])))
    return float(np.quantile(scores, 1 - rate))


class Cloud:
    """Subscriber: first arrival time of each decision (by event id), telemetry, alerts."""

    def __init__(self, port: int) -> None:
        self.first: dict[str, float] = {}
        self.copies = 0
        self.alerts = 0
        self.messages = 0
        self.telemetry: list[dict] = []
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cloud", protocol=mqtt.MQTTv5
        )
        subs = [(f"edge/bench/n1/{k}", 1) for k in ("results", "alerts", "telemetry")]
        self.client.on_connect = lambda c, *_: (c.subscribe(subs),)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.monotonic()
        body = json.loads(msg.payload)
        kind = msg.topic.rsplit("/", 1)[1]
        with self.cond:
            if kind == "results":
                self.messages += 1
                for d in body["decisions"]:
                    self.copies += 1
                    self.first.setdefault(d["id"], now)
            elif kind == "alerts":
                self.alerts += 1
            else:
                self.telemetry.append(body)
            self.cond.notify_all()

    def wait_for(self, ids: list[str], stall_s: float) -> bool:
        """Wait until every id in ``ids`` has a decision, or none came for ``stall_s``."""
        missing = set(ids)
        last = time.monotonic()
        while True:
            with self.cond:
                left = {i for i in missing if i not in self.first}
            if not left:
                return True
            if len(left) < len(missing):
                last = time.monotonic()
            elif time.monotonic() - last > stall_s:
                return False
            missing = left
            time.sleep(0.25)


def start_node(bundle: Path, broker: LocalBroker, work: Path, max_batch: int, thr: float) -> Any:
    work.mkdir(parents=True)
    config = {
        "node_id": "n1",
        "group": "bench",
        "bundle": str(bundle),
        "state_dir": str(work / "state"),
        "threads": 1,
        "max_batch": max_batch,
        "telemetry_interval_s": 5,
        "alert": {"threshold": thr},
        "broker": {"url": broker.url},
    }
    (work / "node.json").write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli.node_cli", "run", "--config", str(work / "node.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def publish_at(plant: Any, events: list[dict[str, Any]], rate: float) -> np.ndarray:
    """Publish one transaction per message at ``rate``/s; returns each one's send time."""
    payloads = [json.dumps(e, separators=(",", ":")).encode() for e in events]
    sent = np.zeros(len(events))
    start = time.monotonic()
    for i, payload in enumerate(payloads):
        due = start + i / rate
        while (lag := due - time.monotonic()) > 0:
            time.sleep(min(lag, 0.002))
        sent[i] = time.monotonic()
        plant.publish(TOPIC, payload, qos=1)
    return sent


def measure(
    cloud: Cloud, plant: Any, events: list[dict[str, Any]], rate: float, warmup_s: float
) -> dict[str, Any]:
    """Stream ``events`` at ``rate``; latency and throughput after ``warmup_s``."""
    ids = [e["id"] for e in events]
    sent = publish_at(plant, events, rate)
    cloud.wait_for(ids, stall_s=20)  # a backlog drains; a loss stalls
    with cloud.cond:
        got = {i: cloud.first.get(i) for i in ids}
    lost = sum(v is None for v in got.values())
    measured = [k for k, i in enumerate(ids) if sent[k] >= sent[0] + warmup_s]
    lat = np.array([(got[ids[k]] - sent[k]) * 1e3 for k in measured if got[ids[k]] is not None])
    arrivals = np.sort([got[ids[k]] for k in measured if got[ids[k]] is not None])
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    if not len(lat):  # nothing came back: no latency to report
        lat = np.array([float("nan")])
    return {
        "rate_target_per_s": rate,
        "seconds": round(len(events) / rate, 1),
        "transactions": len(events),
        "lost": lost,
        "throughput_per_s": round((len(arrivals) - 1) / span, 1) if len(arrivals) > 1 else 0.0,
        "publish_rate_per_s": round(len(events) / (sent[-1] - sent[0]), 1),
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p90": round(float(np.percentile(lat, 90)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
            "max": round(float(np.max(lat)), 2),
        },
    }


def run_mode(
    args: argparse.Namespace, bundle: Path, thr: float, max_batch: int, work: Path
) -> dict:
    """Prime, sustained rate, then step the rate up, on one broker and node process."""
    broker = LocalBroker(work / "broker").start()
    node = start_node(bundle, broker, work / "node", max_batch, thr)
    cloud = Cloud(broker.port)
    cloud.ready.wait(10)
    plant = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plant", protocol=mqtt.MQTTv5
    )
    plant.max_inflight_messages_set(1000)
    plant.connect("127.0.0.1", broker.port)
    plant.loop_start()
    time.sleep(3.0)  # node up and subscribed
    need = args.prime + int(args.rate * args.seconds) + int(sum(args.steps) * args.step_seconds)
    events = stream(need)
    t0 = time.monotonic()
    prime = events[: args.prime]
    for i in range(0, len(prime), 200):
        plant.publish(TOPIC, json.dumps({"events": prime[i : i + 200]}), qos=1)
    primed = cloud.wait_for([e["id"] for e in prime], stall_s=30)
    out: dict[str, Any] = {
        "max_batch": max_batch,
        "prime": {"transactions": args.prime, "seconds": round(time.monotonic() - t0, 1)},
    }
    assert primed, "the node did not score the priming transactions"
    at = args.prime
    n = int(args.rate * args.seconds)
    out["sustained"] = measure(cloud, plant, events[at : at + n], args.rate, args.warmup)
    at += n
    steps = []
    for rate in args.steps:
        n = int(rate * args.step_seconds)
        r = measure(cloud, plant, events[at : at + n], rate, 2.0)
        at += n
        r["pass"] = bool(
            r["lost"] == 0
            and r["latency_ms"]["p99"] <= args.p99_ms
            and r["throughput_per_s"] >= 0.97 * rate
        )
        steps.append(r)
        print(f"  max_batch {max_batch}: {rate:.0f}/s -> {json.dumps(r)}", flush=True)
        if not r["pass"]:
            break
        time.sleep(1.0)
    out["steps"] = steps
    passing = [s["rate_target_per_s"] for s in steps if s["pass"]]
    out["max_sustainable_per_s"] = max(passing) if passing else 0.0
    with cloud.cond:
        tele = cloud.telemetry[-1] if cloud.telemetry else {}
        out["duplicates"] = cloud.copies - len(cloud.first)
        out["alerts"] = cloud.alerts
        out["results_messages"] = cloud.messages
        out["decisions"] = len(cloud.first)
    counters = tele.get("counters") or {}
    out["node"] = {
        "batches": counters.get("batches"),
        "inferences": counters.get("inferences"),
        "cpu_percent_last_5s": tele.get("cpu_percent"),
        "infer_ms_per_tx": tele.get("infer_ms"),
        "outbox_dropped": (tele.get("outbox") or {}).get("dropped"),
        # Refused with an errors message when the node's queue stayed full for 1 s
        # (overload): what "lost" counts when the offered rate exceeds capacity.
        "overloaded": counters.get("overloaded"),
        "errors": counters.get("errors"),
    }
    node.terminate()
    _, err = node.communicate(timeout=30)
    out["node_exit_code"] = node.returncode
    if node.returncode not in (0, -15):
        print(err[-3000:], file=sys.stderr)
    plant.loop_stop()
    cloud.client.loop_stop()
    broker.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="sustained rate, tx/s")
    ap.add_argument("--seconds", type=float, default=60.0, help="sustained run, seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="first seconds not measured")
    ap.add_argument(
        "--steps",
        type=float,
        nargs="+",
        default=[250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000],
    )
    ap.add_argument("--step-seconds", type=float, default=10.0)
    ap.add_argument("--p99-ms", type=float, default=50.0, help="latency bound of a passing step")
    ap.add_argument("--prime", type=int, default=20000, help="transactions primed in bulk")
    ap.add_argument("--batch", type=int, default=32, help="max_batch of the batched mode")
    ap.add_argument("--bundle", type=Path, default=None, help="a fraud bundle (event graph)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    load_start = round(os.getloadavg()[0], 2)  # other work on the machine skews every number
    work = Path(tempfile.mkdtemp(prefix="edge-bench-fraud-"))
    bundle = args.bundle or default_bundle(work / "fraud.bundle")
    thr = alert_threshold(bundle, stream(args.prime)[-3000:])
    modes = {}
    for name, mb in (("batched", args.batch), ("unbatched", 1)):
        print(f"{name} (max_batch {mb})", flush=True)
        modes[name] = run_mode(args, bundle, thr, mb, work / name)
        print(json.dumps(modes[name]["sustained"]), flush=True)
    from edge_sdk import Runtime

    m = Runtime.load(bundle).manifest
    b, u = modes["batched"], modes["unbatched"]
    meta = {
        **machine_meta("edge-graph-sdk", "paho-mqtt", "onnxruntime", "numpy"),
        "mosquitto": subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0],
        "bundle": str(args.bundle) if args.bundle else "default: FraudGATv2 untrained (seeded)",
        "model": f"{m.model.name} {m.model.version}, {m.graph.aggregation} aggregation",
        "spec": {"hops": m.event_graph.hops, "fanout": m.event_graph.fanout},
        "alert_threshold": thr,
        "load_average_1m_at_start_and_end": [load_start, round(os.getloadavg()[0], 2)],
        "workload": "SYNTHETIC payments (samples/fraud/generate.py, seed 0, 8,000 accounts); "
        "one transaction per message at QoS 1; decisions as JSON at QoS 1",
    }
    ratio = (
        b["max_sustainable_per_s"] / u["max_sustainable_per_s"]
        if u["max_sustainable_per_s"]
        else None
    )
    bs, us = b["sustained"]["throughput_per_s"], u["sustained"]["throughput_per_s"]
    saturated = round(bs / us, 2) if us else None  # both offered --rate: what each keeps up
    result = {
        "meta": meta,
        "modes": modes,
        "batched_over_unbatched": ratio,
        "saturated_throughput_ratio": saturated,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fraud_node.json").write_text(json.dumps(result, indent=2) + "\n")
    write_md(args, meta, modes, ratio, saturated)


def write_md(
    args: argparse.Namespace, meta: dict, modes: dict, ratio: float | None, saturated: float | None
) -> None:
    lines = [
        "# Fraud scoring on the node over MQTT (SYNTHETIC transactions, loopback, QoS 1)",
        "",
        meta_line(meta) + f" · {meta['mosquitto']} · node inference threads 1 · load average "
        f"(1 min) {meta['load_average_1m_at_start_and_end'][0]} at start, "
        f"{meta['load_average_1m_at_start_and_end'][1]} at end",
        "",
        f"Model: {meta['model']} ({meta['bundle']}); 2-hop subgraphs, fan-out "
        f"{meta['spec']['fanout']}; {args.prime:,} transactions primed before measuring.",
        "",
        "| mode | sustained run | achieved tx/s | p50 ms | p99 ms | max ms | lost | "
        f"max sustainable tx/s (p99 ≤ {args.p99_ms:.0f} ms, 0 lost) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in modes.items():
        s, lat = r["sustained"], r["sustained"]["latency_ms"]
        lines.append(
            f"| {name} (max_batch {r['max_batch']}) | {s['rate_target_per_s']:.0f}/s for "
            f"{s['seconds']:.0f} s | {s['throughput_per_s']:.0f} | {lat['p50']:.1f} | "
            f"{lat['p99']:.1f} | {lat['max']:.1f} | {s['lost']} | "
            f"{r['max_sustainable_per_s']:.0f} |"
        )
    lines += [
        "",
        f"Batched / unbatched max sustainable rate: **{ratio:.2f}x**"
        if ratio
        else "Batched / unbatched max sustainable rate: no step passed in one of the modes.",
        "",
        f"Batched / unbatched achieved throughput when both are offered {args.rate:.0f} tx/s "
        f"(the sustained run, each mode saturated if below it): **{saturated}x**.",
        "",
        "Steps (rate, achieved, p99 ms, lost, pass):",
        "",
    ]
    for name, r in modes.items():
        steps = ", ".join(
            f"{s['rate_target_per_s']:.0f}: {s['throughput_per_s']:.0f}/s p99 "
            f"{s['latency_ms']['p99']:.1f} lost {s['lost']} {'ok' if s['pass'] else 'FAIL'}"
            for s in r["steps"]
        )
        lines.append(f"- {name}: {steps}")
    lines += [
        "",
        "Publisher, mosquitto, the node process and the subscriber share the machine's CPUs. "
        "Latency: transaction published -> its decision received (first copy). "
        f"The first {args.warmup:.0f} s of the sustained run (2 s of each step) are not "
        "measured. Reproduce with `python benchmarks/fraud_node.py`.",
    ]
    (args.out / "fraud_node.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
