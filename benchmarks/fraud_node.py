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

What it checks is #19's bar: the highest rate each mode holds for ``--seconds``
(60 by default) with p99 <= ``--p99-ms`` (50) end to end, 0 lost and >= 97 % of
the rate achieved, and batched / unbatched at that bound (>= 1.5x). Per mode, on
a fresh broker and node process (its store keeps growing, as a node's does):

1. **prime**: the first ``--prime`` transactions of the stream in bulk
   messages, so that subgraphs have the history of a running node (not timed);
2. **search**: ``--steps`` rates upwards for ``--step-seconds`` each, up to the
   first that fails, then ``--refine`` bisections between the last pass and it;
3. **hold**: the best rate found for the full ``--seconds``; if it fails there,
   15 % lower, up to ``--confirm`` tries. The rate held is the mode's result.

After every run the script waits until every decision has arrived (the node
drains a backlog; only 20 s without any decision ends the wait), so a
saturated run never spills into the next. The node's CPU time per transaction
(user + system of its process, from /proc) is reported with each run: on a
machine shared with other work it is the number to compare.

Latency = publish -> decision received (both on this machine's monotonic
clock); a decision counts once (first copy, by event id). The stream is the
fraud sample's SYNTHETIC generator (``samples/fraud/generate.py``); the model is
``--bundle`` (a trained fraud bundle) or, by default, the sample's FraudGATv2
(hidden 48, 4 heads, seeded, untrained: the same compute, meaningless scores)
exported FP32 for ONNX Runtime with the sample's spec, alerting the top 1 %.

Usage (the must-show check; build the bundle with
``python samples/fraud/fraud.py --out /tmp/fraud --epochs 1 --seconds 0``):
    python benchmarks/fraud_node.py --bundle /tmp/fraud/fraud.bundle
    python benchmarks/fraud_node.py --bundle ... --seconds 15 --step-seconds 5  # quick

Writes benchmarks/results/fraud_node.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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
from _common import cpu_seconds, machine_meta, sample_module
from fraud_node_report import render_md

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
    """The first ``n`` SYNTHETIC transactions of the generator (seed 0), in time order
    (``n`` = 0: all of them, ~530,000 over 60 days: a search and a 60 s hold at a few
    thousand tx/s use a few hundred thousand)."""
    if not _STREAM:
        tx = fraud("generate").generate(0, accounts=8000, days=60)
        _STREAM[:] = list(tx.events())
    if len(_STREAM) < n:
        raise SystemExit(f"the stream has {len(_STREAM)} transactions, {n} asked")
    return _STREAM[:n] if n else _STREAM


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
        self.status: dict[str, Any] = {}
        self.online = threading.Event()
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cloud", protocol=mqtt.MQTTv5
        )
        subs = [(f"edge/bench/n1/{k}", 1) for k in ("results", "alerts", "telemetry", "status")]
        self.client.on_connect = lambda c, *_: (c.subscribe(subs),)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_delay
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
            elif kind == "status":
                self.status = body
                if body.get("state") == "online":
                    self.online.set()
            else:
                self.telemetry.append(body)
            self.cond.notify_all()

    def wait_for(self, ids: list[str], stall_s: float) -> bool:
        """Wait until every id in ``ids`` has a decision, or no decision at all came for
        ``stall_s`` (a saturated node drains its backlog first: that is progress)."""
        missing = set(ids)
        seen, last = -1, time.monotonic()
        while True:
            with self.cond:
                missing = {i for i in missing if i not in self.first}
                total = len(self.first)
            if not missing:
                return True
            if total != seen:
                seen, last = total, time.monotonic()
            elif time.monotonic() - last > stall_s:
                return False
            time.sleep(0.1)


def no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY on a benchmark client's socket (paho leaves Nagle on, as the node did)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def start_node(
    bundle: Path,
    broker: LocalBroker,
    work: Path,
    max_batch: int,
    thr: float,
    delay_ms: float,
    explain_in: str = "process",
) -> Any:
    work.mkdir(parents=True)
    config = {
        "node_id": "n1",
        "group": "bench",
        "bundle": str(bundle),
        "state_dir": str(work / "state"),
        "threads": 1,
        "max_batch": max_batch,
        "max_delay_ms": delay_ms,
        "explain_in": explain_in,
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
    """Publish one transaction per message at ``rate``/s; returns each one's send time.

    Payloads are serialised before the clock starts: the publisher shares the CPUs.
    """
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
    cloud: Cloud, plant: Any, node: Any, events: list[dict[str, Any]], rate: float, args: Any
) -> dict[str, Any]:
    """Stream ``events`` at ``rate``, wait for every decision (the node drains), judge.

    Passes with 0 lost, p99 <= ``args.p99_ms`` and >= 97 % of ``rate`` achieved.
    Latency and throughput count what was sent after the first ``args.warmup`` s.
    """
    ids = [e["id"] for e in events]
    cpu0 = cpu_seconds(node.pid)
    sent = publish_at(plant, events, rate)
    cloud.wait_for(ids, stall_s=20)  # a backlog drains (progress); a loss stalls
    node_cpu = cpu_seconds(node.pid) - cpu0
    with cloud.cond:
        got = {i: cloud.first.get(i) for i in ids}
    lost = sum(v is None for v in got.values())
    measured = [k for k, i in enumerate(ids) if sent[k] >= sent[0] + args.warmup]
    lat = np.array([(got[ids[k]] - sent[k]) * 1e3 for k in measured if got[ids[k]] is not None])
    arrivals = np.sort([got[ids[k]] for k in measured if got[ids[k]] is not None])
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    if not len(lat):  # nothing came back: no latency to report
        lat = np.array([float("nan")])
    r = {
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
        "node_cpu_ms_per_tx": round(node_cpu * 1e3 / len(events), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    r["pass"] = bool(
        lost == 0 and r["latency_ms"]["p99"] <= args.p99_ms and r["throughput_per_s"] >= 0.97 * rate
    )
    return r


class Stream:
    """The transactions not yet sent, handed out in time order (the node's store grows)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events, self.at = events, 0

    def take(self, n: int) -> list[dict[str, Any]]:
        if self.at + n > len(self.events):
            raise SystemExit(f"the stream ran out ({len(self.events)} transactions)")
        self.at += n
        return self.events[self.at - n : self.at]


def search(run: Any, args: argparse.Namespace) -> tuple[list[dict], float]:
    """Probe ``args.steps`` upwards (``step_seconds`` each), bisect the first failing
    interval ``args.refine`` times; returns the probes and the best passing rate (0: none)."""
    probes: list[dict] = []
    lo, hi = 0.0, None
    for rate in args.steps:
        r = run(rate, args.step_seconds)
        probes.append(r)
        if not r["pass"]:
            hi = rate
            break
        lo = rate
    for _ in range(args.refine if hi is not None and lo > 0 else 0):
        mid = round((lo + hi) / 2 / 25) * 25
        if mid in (lo, hi):
            break
        r = run(mid, args.step_seconds)
        probes.append(r)
        lo, hi = (mid, hi) if r["pass"] else (lo, mid)
    return probes, lo


def run_mode(
    args: argparse.Namespace,
    bundle: Path,
    thr: float,
    max_batch: int,
    work: Path,
    delay_ms: float = 0.0,
) -> dict:
    """One broker and node process: prime, search the highest passing rate on short
    probes, then hold it for the full window (stepping down if it fails there)."""
    # mosquitto's own Nagle off as well (set_tcp_nodelay, mosquitto >= 2.0): its
    # forwards to the node and to the subscriber are small writes too.
    broker = LocalBroker(work / "broker", extra_config="set_tcp_nodelay true").start()
    node = start_node(bundle, broker, work / "node", max_batch, thr, delay_ms, args.explain_in)
    cloud = Cloud(broker.port)
    cloud.ready.wait(10)
    plant = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plant", protocol=mqtt.MQTTv5
    )
    plant.on_socket_open = no_delay
    plant.max_inflight_messages_set(1000)
    plant.connect("127.0.0.1", broker.port)
    plant.loop_start()
    # The node says "online" (retained) once its subscriptions are confirmed: what is
    # published before that would be lost (a loaded machine takes seconds to start it).
    assert cloud.online.wait(180), "the node did not come online"
    status = dict(cloud.status)
    feed = Stream(stream(0))
    t0 = time.monotonic()
    prime = feed.take(args.prime)
    for i in range(0, len(prime), 200):
        plant.publish(TOPIC, json.dumps({"events": prime[i : i + 200]}), qos=1)
    primed = cloud.wait_for([e["id"] for e in prime], stall_s=30)
    assert primed, "the node did not score the priming transactions"
    out: dict[str, Any] = {
        "max_batch": max_batch,
        "max_delay_ms": delay_ms,
        "explain_in": args.explain_in,
        "node": {k: status.get(k) for k in ("backend", "precision")},
        "prime": {"transactions": args.prime, "seconds": round(time.monotonic() - t0, 1)},
    }

    def run(rate: float, seconds: float) -> dict:
        r = measure(cloud, plant, node, feed.take(int(rate * seconds)), rate, args)
        print(f"  max_batch {max_batch}: {rate:.0f}/s for {seconds:.0f} s -> {json.dumps(r)}")
        time.sleep(1.0)
        return r

    out["probes"], best = search(run, args)
    held: list[dict] = []
    for _ in range(args.confirm if best else 0):
        r = run(best, args.seconds)
        held.append(r)
        if r["pass"]:
            break
        best = round(best * 0.85 / 25) * 25  # failed over the full window: a step down
    out["held"] = held
    out["max_sustained_per_s"] = held[-1]["rate_target_per_s"] if held and held[-1]["pass"] else 0
    with cloud.cond:
        tele = cloud.telemetry[-1] if cloud.telemetry else {}
        out["duplicates"] = cloud.copies - len(cloud.first)
        out["alerts"] = cloud.alerts
        out["results_messages"] = cloud.messages
        out["decisions"] = len(cloud.first)
    counters = tele.get("counters") or {}
    out["node"].update(
        batches=counters.get("batches"),
        inferences=counters.get("inferences"),
        outbox_dropped=(tele.get("outbox") or {}).get("dropped"),
        # Refused with an errors message when the node's queue stayed full for 1 s.
        overloaded=counters.get("overloaded"),
        errors=counters.get("errors"),
    )
    node.terminate()
    try:
        _, err = node.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        node.kill()
        _, err = node.communicate()
    out["node_exit_code"] = node.returncode
    if node.returncode not in (0, -15):
        print(err[-3000:], file=sys.stderr)
    plant.loop_stop()
    cloud.client.loop_stop()
    broker.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="window a rate is held, s")
    ap.add_argument("--warmup", type=float, default=2.0, help="first seconds not measured")
    ap.add_argument(
        "--steps",
        type=float,
        nargs="+",
        default=[250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000],
        help="rates probed upwards, tx/s",
    )
    ap.add_argument("--step-seconds", type=float, default=10.0, help="one probe, s")
    ap.add_argument("--refine", type=int, default=2, help="bisections of the failing step")
    ap.add_argument("--confirm", type=int, default=2, help="full-window tries (steps down)")
    ap.add_argument("--p99-ms", type=float, default=50.0, help="latency bound of a pass")
    ap.add_argument("--bar", type=float, default=1000.0, help="the must-show rate, tx/s")
    ap.add_argument("--prime", type=int, default=20000, help="transactions primed in bulk")
    ap.add_argument("--batch", type=int, default=32, help="max_batch of the batched mode")
    ap.add_argument(
        "--max-delay-ms",
        type=float,
        default=10.0,
        help="max_delay_ms of the batched mode (the unbatched one has no batch to wait for)",
    )
    ap.add_argument(
        "--explain-in",
        choices=["process", "worker"],
        default="process",
        help="where the node explains alerts (NodeConfig.explain_in; process is its default)",
    )
    ap.add_argument("--bundle", type=Path, default=None, help="a fraud bundle (event graph)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    args.steps = sorted(args.steps)

    load_start = round(os.getloadavg()[0], 2)  # other work on the machine skews every number
    work = Path(tempfile.mkdtemp(prefix="edge-bench-fraud-"))
    bundle = args.bundle or default_bundle(work / "fraud.bundle")
    thr = alert_threshold(bundle, stream(args.prime)[-3000:])
    modes = {}
    for name, mb, delay in (("batched", args.batch, args.max_delay_ms), ("unbatched", 1, 0.0)):
        print(f"{name} (max_batch {mb}, max_delay_ms {delay:g})", flush=True)
        modes[name] = run_mode(args, bundle, thr, mb, work / name, delay)
    from edge_sdk import Runtime

    m = Runtime.load(bundle).manifest
    b, u = modes["batched"]["max_sustained_per_s"], modes["unbatched"]["max_sustained_per_s"]
    meta = {
        **machine_meta("edge-graph-sdk", "paho-mqtt", "onnxruntime", "openvino", "numpy"),
        "mosquitto": subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0],
        "bundle": str(args.bundle) if args.bundle else "default: FraudGATv2 untrained (seeded)",
        "model": f"{m.model.name} {m.model.version}, {m.graph.aggregation} aggregation",
        "spec": {"hops": m.event_graph.hops, "fanout": m.event_graph.fanout},
        "alert_threshold": thr,
        "load_average_1m_at_start_and_end": [load_start, round(os.getloadavg()[0], 2)],
        "workload": "SYNTHETIC payments (samples/fraud/generate.py, seed 0, 8,000 accounts); "
        "one transaction per MQTT message at QoS 1; decisions as JSON at QoS 1",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    ratio = round(b / u, 2) if u else None
    result = {
        "meta": meta,
        "modes": modes,
        "batched_over_unbatched": ratio,
        "bar": {
            "rate_per_s": args.bar,
            "seconds": args.seconds,
            "p99_ms": args.p99_ms,
            "met": bool(b >= args.bar and args.seconds >= 60 and ratio and ratio >= 1.5),
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fraud_node.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render_md(args, meta, modes, result)
    (args.out / "fraud_node.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
