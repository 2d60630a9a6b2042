"""End-to-end MQTT inference: sensor message published -> result received in the cloud.

One run, over loopback, with real processes: a local mosquitto, an ``edge-node``
serving the TEP-size sensor model (52 sensors x a window of 20 samples, two GCN
layers of hidden 64, 22 classes) in its own process, and this process as both
the plant (publishing one row of 52 readings per message at a fixed rate, QoS 1)
and the cloud (subscribed to the node's results at QoS 1). Every row completes
one window (stride 1), so each row must come back as exactly one result.

Latency of a window = time its last row was published -> time its result was
received (both on this machine's monotonic clock). Reported: sustained
throughput over the measured period, p50/p90/p99 latency, results lost
(windows never received), duplicates (same message id twice), and the node's
own outbox drops and CPU.

The broker runs with unlimited queues (see edge_sdk.fleet.brokers): mosquitto's
defaults silently drop QoS 1 messages for a slow consumer; the node does its
own flow control (a bounded in-flight window, rows released on PUBACK).

Each rate runs once per result scheme, side by side: ``json`` (results as JSON
at QoS 1 on edge/bench/n1/results) and ``sparkplug`` (Sparkplug B DDATA at QoS
0 on spBv1.0/bench/DDATA/n1/model, decoded with the births' datatypes; the
sensor rows still arrive as JSON at QoS 1).

Usage:
    python benchmarks/mqtt_e2e.py [--rates 1000 1500] [--seconds 60] [--schemes json sparkplug]

Writes benchmarks/results/mqtt_e2e.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from edge_sdk.fleet.brokers import LocalBroker
from edge_sdk.mqtt.sparkplug.host import HostView

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_meta, meta_line, sensor_module

REPO = Path(__file__).resolve().parents[1]
N_SENSORS, WINDOW = 52, 20


def _sensor_bundle(out: Path) -> Path:
    return sensor_module().export_sensor_bundle(out).bundle_dir


class Cloud:
    """Subscriber: records (window t_end, receive time, id) of every result."""

    def __init__(self, port: int, scheme: str = "json") -> None:
        self.received: list[tuple[float, float, str]] = []
        self.telemetry: list[dict] = []
        self.payload_bytes: list[int] = []
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.host = HostView() if scheme == "sparkplug" else None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="bench-cloud", protocol=mqtt.MQTTv5
        )
        subs = (
            [("spBv1.0/bench/#", 0)]
            if self.host
            else [("edge/bench/n1/results", 1), ("edge/bench/n1/telemetry", 1)]
        )
        self.client.on_connect = lambda c, *_: (c.subscribe(subs),)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        if self.host is not None:
            self._on_sparkplug(msg, now)
            return
        body = json.loads(msg.payload)
        with self._lock:
            if msg.topic.endswith("/results"):
                self.payload_bytes.append(len(msg.payload))
            if msg.topic.endswith("/telemetry"):
                self.telemetry.append(body)
            else:
                self.received.append((body["window"]["t_end"], now, body["id"]))

    def _on_sparkplug(self, msg, now: float) -> None:
        assert self.host is not None
        body = self.host.message(msg.topic, bytes(msg.payload))
        if body is None:
            return
        m = body.get("metrics") or {}
        with self._lock:
            if body["type"] == "NDATA":  # the JSON telemetry fields this script reports
                self.telemetry.append(
                    {
                        "outbox": {"dropped": m.get("Telemetry/Outbox Dropped")},
                        "cpu_percent": m.get("Telemetry/CPU Percent"),
                        "infer_ms": {"p50": m.get("Telemetry/Inference p50 ms")},
                        "counters": {"inferences": m.get("Telemetry/Inferences")},
                    }
                )
            elif body["type"] == "DDATA" and "Result/Id" in m:
                self.payload_bytes.append(len(msg.payload))
                self.received.append((m["Result/Window End"], now, body["id"]))


def run_once(
    bundle: Path,
    work: Path,
    rate: float,
    seconds: float,
    warmup: float,
    threads: int,
    scheme: str = "json",
) -> dict:
    """One measured run at ``rate`` rows/s with a fresh broker and node."""
    broker = LocalBroker(work / "broker").start()
    total = int(rate * (warmup + seconds)) + WINDOW - 1
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_sdk.cli.node_cli",
            "run",
            "--bundle",
            str(bundle),
            "--broker",
            broker.url,
            "--node-id",
            "n1",
            "--group",
            "bench",
            "--state-dir",
            str(work / "state"),
            "--telemetry-interval",
            "5",
            "--threads",
            str(threads),
            "--scheme",
            scheme,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    cloud = Cloud(broker.port, scheme)
    cloud.ready.wait(10)
    plant = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-plant", protocol=mqtt.MQTTv5
    )
    plant.max_inflight_messages_set(1000)
    plant.connect("127.0.0.1", broker.port)
    plant.loop_start()
    time.sleep(3.0)  # node up, subscribed
    rows = np.random.default_rng(0).standard_normal((total, N_SENSORS)).round(4)
    payloads = [
        json.dumps({"t": t, "values": row.tolist()}, separators=(",", ":")).encode()
        for t, row in enumerate(rows)
    ]
    sent_at = np.zeros(total)
    start = time.monotonic()
    for t, payload in enumerate(payloads):
        due = start + t / rate
        while (lag := due - time.monotonic()) > 0:
            time.sleep(min(lag, 0.002))
        sent_at[t] = time.monotonic()
        plant.publish("edge/bench/n1/sensors", payload, qos=1)
    publish_s = time.monotonic() - start
    expected = total - (WINDOW - 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with cloud._lock:
            if len({r[0] for r in cloud.received}) >= expected:
                break
        time.sleep(0.2)
    time.sleep(1.0)
    node.terminate()
    _, node_err = node.communicate(timeout=30)
    if node.returncode not in (0, -15):
        print(node_err[-3000:], file=sys.stderr)
    plant.loop_stop()
    cloud.client.loop_stop()
    dropped_by_broker = broker.dropped_messages_logged()
    broker.stop()

    with cloud._lock:
        received = list(cloud.received)
        telemetry = list(cloud.telemetry)
    first_by_window: dict[int, float] = {}
    ids = [r[2] for r in received]
    for t_end, at, _ in received:
        first_by_window.setdefault(int(t_end), at)
    measured_from = start + warmup
    measured = {
        t: at
        for t, at in first_by_window.items()
        if sent_at[t] >= measured_from and t >= WINDOW - 1
    }
    lat_ms = np.array([(at - sent_at[t]) * 1e3 for t, at in measured.items()])
    arrivals = np.array(sorted(measured.values()))
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    lost = expected - len(first_by_window)
    last_tele = telemetry[-1] if telemetry else {}
    result = {
        "scheme": scheme,
        "rate_target_per_s": rate,
        "measured_s": seconds,
        "windows_expected": expected,
        "windows_received": len(first_by_window),
        "results_lost": lost,
        "duplicates": len(ids) - len(set(ids)),
        "publish_rate_per_s": total / publish_s,
        "sustained_results_per_s": (len(arrivals) - 1) / span,
        "latency_ms": {
            "p50": float(np.percentile(lat_ms, 50)),
            "p90": float(np.percentile(lat_ms, 90)),
            "p99": float(np.percentile(lat_ms, 99)),
            "max": float(lat_ms.max()),
        },
        "node_outbox_dropped": (last_tele.get("outbox") or {}).get("dropped"),
        "node_cpu_percent_last_5s": last_tele.get("cpu_percent"),
        "node_infer_ms_per_window": last_tele.get("infer_ms"),
        "node_batches": (last_tele.get("counters") or {}).get("batches"),
        "node_inferences": (last_tele.get("counters") or {}).get("inferences"),
        "broker_logged_drops": dropped_by_broker,
        "node_exit_code": node.returncode,
        "result_payload_bytes_mean": float(np.mean(cloud.payload_bytes)),
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--rates", type=float, nargs="+", default=[1000.0, 1500.0], help="sensor rows per second"
    )
    ap.add_argument("--seconds", type=float, default=60.0, help="measured period per rate")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    ap.add_argument("--threads", type=int, default=1, help="node inference threads")
    ap.add_argument(
        "--schemes", nargs="+", default=["json", "sparkplug"], choices=["json", "sparkplug"]
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-bench-mqtt-"))
    bundle = _sensor_bundle(work / "sensor.bundle")
    rows = []
    for i, rate in enumerate(args.rates):
        for scheme in args.schemes:
            result = run_once(
                bundle,
                work / f"run{i}-{scheme}",
                rate,
                args.seconds,
                args.warmup,
                args.threads,
                scheme,
            )
            print(json.dumps(result, indent=2))
            rows.append(result)
    meta = {
        **machine_meta("edge-graph-sdk", "paho-mqtt", "onnxruntime", "numpy"),
        "mosquitto": subprocess.run(
            ["mosquitto", "-h"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0],
        "node_threads": args.threads,
        "workload": "TEP-size static GCN: 52 sensors x 20 samples, hidden 64, 22 classes; "
        "one JSON row of 52 readings per message at QoS 1, stride 1; results as JSON at "
        "QoS 1 or as Sparkplug B DDATA at QoS 0",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mqtt_e2e.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        "# End-to-end MQTT inference over loopback (TEP-size model, JSON and Sparkplug B)",
        "",
        meta_line(meta) + f" · {meta['mosquitto']} · node inference threads {args.threads}",
        "",
        "| scheme | target rate | sustained results/s | p50 ms | p90 ms | p99 ms | max ms | "
        "lost | duplicates | node outbox drops | node CPU % | result bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['scheme']} | {r['rate_target_per_s']:.0f}/s for {r['measured_s']:.0f} s | "
            f"{r['sustained_results_per_s']:.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} | "
            f"{lat['p99']:.1f} | {lat['max']:.1f} | {r['results_lost']} | {r['duplicates']} | "
            f"{r['node_outbox_dropped']} | {r['node_cpu_percent_last_5s']} | "
            f"{r['result_payload_bytes_mean']:.0f} |"
        )
    lines += [
        "",
        "Plant publisher, mosquitto, the node process and the cloud subscriber share the "
        "machine's CPUs. Latency: last row of a window published -> its result received; "
        f"the first {args.warmup:.0f} s of each rate are warm-up and not measured. "
        "Node CPU % is the node process over its last telemetry period (100 % = one core). "
        "Reproduce with `python benchmarks/mqtt_e2e.py`.",
    ]
    (args.out / "mqtt_e2e.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
