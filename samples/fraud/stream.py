"""Serve the fraud bundle on a short SYNTHETIC stream: ``edge-node`` over MQTT, or locally.

The serving step of ``fraud.py``. Over MQTT: a local broker (mosquitto, else
the embedded amqtt), ``edge-node`` serving the bundle in a child process (once
with its batcher merging up to ``max_batch`` subgraphs per backend call, once
with ``max_batch: 1``), a paho client in this process that publishes one
transaction per message (QoS 1) on ``edge/{group}/{node}/events`` at a fixed
offered rate and subscribes to the node's ``results`` and ``alerts``. Latency
is end to end on one clock: publish call -> decision received (the node's
subgraph build, inference, the outbox and two broker hops).

Without the node's event path (a bundle the node cannot serve as events, or
no broker), :func:`serve_locally` runs the same stream through the SDK's
``EventGraphStore`` and ``DynamicBatcher`` in this process and says so.

This is a demo-length measurement (seconds); the sustained 60 s numbers are
``benchmarks/fraud_node.py``'s.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GROUP, NODE = "fraud-demo", "branch-1"
#: The node runs the export's choice for the first of these profiles the bundle has.
NODE_PROFILES = ("intel-core-cpu", "generic-x86")
RUNS = (("batched", 32), ("unbatched", 1))
Say = Callable[[str], None]


@dataclass
class ServeRun:
    """One serving run: what was sent, what came back, how fast."""

    name: str
    max_batch: int
    transactions: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    last_at: float = 0.0  # perf_counter of the latest decision received
    ids: set[str] = field(default_factory=set)  # transactions decided so far

    def summary(self) -> dict[str, Any]:
        """The ``serving.runs`` entry of ``results.json``."""
        ids = {_event_id(d) for d in self.decisions}
        lat = np.asarray(self.latency_ms, dtype=np.float64)
        return {
            "transactions": self.transactions,
            "decisions": len(ids),
            "duplicates": len(self.decisions) - len(ids),
            "lost": self.transactions - len(ids),
            "alerts": len(self.alerts),
            "seconds": round(self.seconds, 3),
            "throughput_tps": round(len(ids) / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": {
                "p50": round(float(np.percentile(lat, 50)), 3),
                "p99": round(float(np.percentile(lat, 99)), 3),
                "n": int(lat.size),
            }
            if lat.size
            else {},
            "max_batch": self.max_batch,
            "note": self.note,
        }


def _event_id(decision: dict[str, Any]) -> str:
    """The transaction id a decision answers (``event``, else ``tx``, else ``id``)."""
    for key in ("event", "tx", "event_id", "id"):
        v = decision.get(key)
        if isinstance(v, str | int) and not isinstance(v, bool):
            return str(v)
    return ""


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install the SDK (pip install -e .)")
    return found


class _Collector:
    """Subscribes to the node's results, alerts and status; stamps each result on arrival."""

    def __init__(self, client: Any, sent: dict[str, float]) -> None:
        self.sent = sent
        self.status: list[str] = []
        self.run: ServeRun | None = None
        self.cond = threading.Condition()
        client.on_message = self._on_message

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        try:
            body = json.loads(msg.payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        kind = msg.topic.rsplit("/", 1)[-1]
        with self.cond:
            if kind == "status":
                self.status.append(str(body.get("state")))
            elif self.run is not None and kind == "results":
                # one message per node batch: {"decisions": [...]}; a lone decision is accepted too
                for d in body.get("decisions", [body]):
                    sent = self.sent.get(_event_id(d))
                    if sent is not None:
                        self.run.latency_ms.append((now - sent) * 1e3)
                    self.run.decisions.append(d)
                    self.run.ids.add(_event_id(d))
                    self.run.last_at = now
            elif self.run is not None and kind == "alerts":
                self.run.alerts.append(body)
            self.cond.notify_all()

    def wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.2))
            return True


def serve_over_mqtt(
    bundle: Path,
    events: Sequence[dict[str, Any]],
    workdir: Path,
    *,
    seconds: float,
    rate: float,
    say: Say,
    prime: Sequence[dict[str, Any]] = (),
    profile: str = NODE_PROFILES[0],
    runs: Sequence[tuple[str, int]] = RUNS,
) -> tuple[str, list[ServeRun]]:
    """Serve ``bundle`` with ``edge-node`` and stream the first ``seconds * rate`` events.

    Each run's node first gets ``prime`` (the transactions just before
    ``events``) in bulk messages of 200, so its store has some history; those
    decisions are awaited and not measured.

    Returns:
        The broker's description and one :class:`ServeRun` per ``runs`` entry.

    Raises:
        BackendUnavailableError: No broker can be started here.
        RuntimeError: The node did not come online (its log is named).
    """
    import paho.mqtt.client as mqtt

    from edge_sdk.fleet.brokers import EmbeddedBroker, start_local_broker

    workdir.mkdir(parents=True, exist_ok=True)
    broker = start_local_broker(workdir / "broker")
    kind = (
        "amqtt (embedded; mosquitto not found)"
        if isinstance(broker, EmbeddedBroker)
        else "mosquitto"
    )
    described = f"{kind} on {broker.url}"
    say(f"  broker: {described}")
    v311 = broker.protocol == "3.1.1"
    sent: dict[str, float] = {}
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311 if v311 else mqtt.MQTTv5
    )
    collector = _Collector(client, sent)
    base = f"edge/{GROUP}/{NODE}"
    done: list[ServeRun] = []
    try:
        client.connect(broker.host, broker.port)
        client.loop_start()
        for topic in ("results", "alerts", "status"):
            client.subscribe(f"{base}/{topic}", qos=1)
        n = max(1, min(len(events), round(seconds * rate)))
        for name, max_batch in runs:
            run = ServeRun(name, max_batch, transactions=n)
            sent.clear()
            _one_run(
                bundle,
                prime,
                events[:n],
                workdir / name,
                broker,
                client,
                collector,
                run,
                rate,
                profile,
                say,
            )
            done.append(run)
    finally:
        collector.run = None
        client.loop_stop()
        client.disconnect()
        broker.stop()
    return described, done


def _one_run(
    bundle: Path,
    prime: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    workdir: Path,
    broker: Any,
    client: Any,
    collector: _Collector,
    run: ServeRun,
    rate: float,
    profile: str,
    say: Say,
) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "node.json"
    config.write_text(json.dumps({"max_batch": run.max_batch, "telemetry_interval_s": 0}))
    log = (workdir / "node.log").open("w")
    collector.status.clear()
    node = subprocess.Popen(
        [
            _tool("edge-node"),
            "run",
            "-c",
            str(config),
            "--bundle",
            str(bundle),
            "--broker",
            broker.url,
            "--node-id",
            NODE,
            "--group",
            GROUP,
            "--state-dir",
            str(workdir / "state"),
            "--profile",
            profile,
            "--threads",
            "1",
            "--protocol",
            broker.protocol,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if not collector.wait(lambda: "online" in collector.status, 60):
            raise RuntimeError(f"edge-node did not come online; see {workdir / 'node.log'}")
        time.sleep(0.3)  # subscribed once it has published its birth
        topic = f"edge/{GROUP}/{NODE}/events"
        if prime:
            warm = collector.run = ServeRun("prime", run.max_batch, transactions=len(prime))
            for i in range(0, len(prime), 200):
                client.publish(topic, json.dumps({"events": list(prime[i : i + 200])}), qos=1)
            ids = {str(e["id"]) for e in prime}
            if not collector.wait(lambda: ids <= warm.ids, 120):
                run.note = "priming did not finish; "
        collector.run = run
        say(f"  {run.name} (max_batch {run.max_batch}): {len(events)} transactions at {rate:.0f}/s")
        t0 = time.perf_counter()
        for i, event in enumerate(events):
            collector.sent[str(event["id"])] = time.perf_counter()
            client.publish(topic, json.dumps(event), qos=1)
            ahead = (i + 1) / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        want = {str(e["id"]) for e in events}
        if not collector.wait(lambda: len(run.ids) >= len(want), 60 + len(events) / 40):
            run.note += "not every decision arrived within the wait"
        # An alert's explanation follows its decision by a few node batches.
        alerted = {_event_id(d) for d in run.decisions if d.get("alert")}
        collector.wait(lambda: len(run.alerts) >= len(alerted), 10)
        run.seconds = max((run.last_at or time.perf_counter()) - t0, 1e-9)
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.kill()
        log.close()


def serve_locally(
    bundle: Path,
    spec: Any,
    events: Sequence[dict[str, Any]],
    *,
    seconds: float,
    rate: float,
    say: Say,
    profile: str = NODE_PROFILES[0],
    runs: Sequence[tuple[str, int]] = RUNS,
) -> list[ServeRun]:
    """The same stream through ``EventGraphStore`` + ``DynamicBatcher`` in this process.

    Latency: the event's arrival (its scheduled time) -> its score is back
    (subgraph build + queue + inference); no broker, no outbox.
    """
    from edge_sdk import Runtime
    from edge_sdk.eventgraph import EventGraphStore
    from edge_sdk.serving import BatcherConfig, DynamicBatcher

    n = max(1, min(len(events), round(seconds * rate)))
    out = []
    for name, max_batch in runs:
        run = ServeRun(name, max_batch, transactions=n, note="local: no MQTT, no outbox")
        rt = Runtime.load(bundle, profile=profile, threads=1)
        names = [i.name for i in rt.manifest.inputs]
        store = EventGraphStore(spec)
        pending: list[tuple[str, float, Any]] = []
        say(f"  {name} (max_batch {max_batch}): {n} transactions at {rate:.0f}/s, in process")
        with rt, DynamicBatcher(rt, BatcherConfig(max_batch=max_batch)) as batcher:
            t0 = time.perf_counter()
            for i, event in enumerate(events[:n]):
                due = t0 + i / rate
                while time.perf_counter() < due:
                    time.sleep(max(0.0, min(due - time.perf_counter(), 0.001)))
                graph = store.score_request(event)
                pending.append((str(event["id"]), due, batcher.submit(graph.inputs(names))))
            for tx, due, fut in pending:
                logits = np.asarray(fut.result(timeout=60)["logits"], dtype=np.float64)[0]
                score = float(1.0 / (1.0 + np.exp(logits[0] - logits[1])))
                run.decisions.append({"event": tx, "score": score})
                run.latency_ms.append((time.perf_counter() - due) * 1e3)
            run.seconds = time.perf_counter() - t0
        out.append(run)
    return out


def serve_demo(
    args: Any,
    out: Path,
    say: Say,
    results: dict[str, Any],
    arrays: dict[str, np.ndarray],
    bundle: Path | None,
    spec: Any,
    req: Any,
) -> None:
    """``fraud.py``'s serving step: fills ``results["serving"]``, ``["alerts"]``, latencies.

    The first ``args.seconds * args.rate`` test transactions, over MQTT; where
    that cannot run, in process (and ``results["skipped"]`` says why).
    """
    test = np.flatnonzero(req.test)
    events = [req.events[i] for i in test]
    before = np.flatnonzero(~req.test & (np.arange(len(req.test)) < test[0]))
    prime = [req.events[i] for i in before[-args.prime :]] if args.prime else []
    profile = next((p for p in NODE_PROFILES if p in args.profiles), "auto")
    serving: dict[str, Any] = {"benchmark": "benchmarks/results/fraud_node.md", "profile": profile}
    results["serving"] = serving
    if bundle is None or args.seconds == 0:
        results["skipped"].append("serving: no bundle or --seconds 0")
        return
    try:
        serving["broker"], runs = serve_over_mqtt(
            bundle,
            events,
            out / "node",
            seconds=args.seconds,
            rate=args.rate,
            say=say,
            prime=prime,
            profile=profile,
        )
        serving["mode"] = "mqtt"
    except Exception as exc:  # the node's event path or the broker is missing here
        why = f"{type(exc).__name__}: {exc}"
        results["skipped"].append(f"serving over MQTT ({why}); served in process instead")
        say(f"  [yellow]MQTT serving unavailable ({why}); serving in process[/]")
        runs = serve_locally(bundle, spec, events, seconds=args.seconds, rate=args.rate, say=say)
        serving["mode"] = "local-batcher"
    serving["runs"] = {r.name: r.summary() for r in runs}
    for r in runs:
        arrays[f"latency/{r.name}"] = np.asarray(r.latency_ms, dtype=np.float64)
        s = serving["runs"][r.name]
        lat = s.get("latency_ms", {})
        say(
            f"  {r.name}: {s['decisions']}/{s['transactions']} decisions, {s['lost']} lost, "
            f"{s['throughput_tps']:.0f} tx/s, p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms"
        )
    index = {str(req.events[i]["id"]): int(i) for i in test}
    # the alert message's own "id" may be the outbox's; (payer, time) finds the event then
    by_src_t = {(str(req.events[i]["src"]), float(req.events[i]["t"])): int(i) for i in test}
    names = ["none", *results["patterns"]]
    alerts = []
    for a in runs[0].alerts:
        i = index.get(_event_id(a))
        if i is None:
            i = by_src_t.get((str(a.get("src")), float(a.get("t", "nan"))))
        if i is None:
            continue
        tx = str(req.events[i]["id"])
        alerts.append(
            {**a, "id": tx, "label": int(req.y[i]), "pattern": names[int(req.pattern[i])]}
        )
    # fraud first, so the report's few examples show the patterns' why
    alerts.sort(key=lambda a: (-a["label"], -float(a.get("score", 0.0))))
    results["alerts"] = alerts[:8]
    for a in results["alerts"][:3]:
        truth = f"fraud, {a['pattern']}" if a["label"] else "legit"
        why = "; ".join(
            f"{w.get('event')} via {w.get('role')} {w.get('entity')} "
            f"(drop {float(w.get('drop', 0)):.3f})"
            for w in a.get("why", [])
        )
        say(f"  alert {a['id']} score {float(a.get('score', 0)):.3f} ({truth}): why {why or '-'}")
