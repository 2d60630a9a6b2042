"""Stream sensor rows through ``edge-node`` over a local broker; collect with ``edge-fleet watch``.

The MQTT part of the TEP demo (``tep.py``), generic over the data: a broker
(mosquitto when installed, else the embedded amqtt), the node serving a
bundle in a child process, ``edge-fleet watch --json`` in another, and a
paho publisher sending one sensor row per message at an accelerated rate.
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

from edge_sdk.errors import BackendUnavailableError
from edge_sdk.fleet.brokers import EmbeddedBroker, start_local_broker

#: The node runs what the export chose for this profile (OpenVINO INT8).
NODE_PROFILE = "intel-core-cpu"
GROUP, NODE = "tep-plant", "line-1"
Say = Callable[[str], None]


@dataclass
class StreamResult:
    """What came back from the node over MQTT while the test files were streamed."""

    files: list[int]
    rows: int
    seconds: float
    results: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    status: list[dict[str, Any]] = field(default_factory=list)
    broker: str = ""
    note: str = ""


def _tool(name: str) -> str:
    """The console script ``name`` of this environment (beside the interpreter)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install the SDK (pip install -e .)")
    return found


class _Watch:
    """``edge-fleet watch --json`` in a subprocess; its lines are parsed by a thread."""

    def __init__(self, url: str, say: Say) -> None:
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self._say = say
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [_tool("edge-fleet"), "watch", "--broker", url, "--group", GROUP, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                body = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = str(body.get("type", "?"))
            with self._cond:
                self.messages.setdefault(kind, []).append(body)
                self._cond.notify_all()
            if kind == "alerts":
                cls = body.get("label", body.get("class"))
                end = body.get("window", {}).get("t_end", float("nan"))
                self._say(
                    f"  [edge-fleet watch] alert [bold]{body.get('state')}[/] on "
                    f"{body.get('node')}: {cls}, score {body.get('score')} "
                    f"(window ending at plant time {end / 3600:.1f} h)"
                )

    def wait(
        self, ready: Callable[[dict[str, list[dict[str, Any]]]], bool], timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not ready(self.messages):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._thread.join(timeout=5)


def stream_through_node(
    bundle: Path,
    runs: Sequence[tuple[int, str, np.ndarray]],
    workdir: Path,
    rate: float,
    say: Say,
    seconds_per_row: float = 180.0,
) -> StreamResult:
    """Serve ``bundle`` with ``edge-node`` against a local broker and stream ``runs``.

    Each run (fault id, name, raw readings ``[T, 52]``) is published row by row
    on the node's ``sensors`` topic, one after the other as the plant would
    report them, ``rate`` rows per second; row ``i`` of the stream carries the
    plant time ``t = i * seconds_per_row``. ``edge-fleet watch --json``
    collects what the node publishes.

    The broker is mosquitto when installed, else the embedded amqtt (MQTT
    3.1.1 only): then the node and the publisher are told to speak 3.1.1, and
    ``edge-fleet watch`` falls back to it by itself (``protocol: auto``).
    Without either broker the MQTT part is skipped with a note.
    """
    import paho.mqtt.client as mqtt

    from edge_sdk.mqtt.topics import Inbound, JsonScheme

    rows = sum(len(r) for _, _, r in runs)
    result = StreamResult([f for f, _, _ in runs], rows, 0.0)
    try:
        broker = start_local_broker(workdir / "broker")
    except BackendUnavailableError as exc:
        result.note = f"{exc}; the MQTT part was skipped"
        say(f"[yellow]{result.note}[/]")
        return result
    if isinstance(broker, EmbeddedBroker):
        result.broker = f"amqtt {broker.version} (embedded; mosquitto not found) on {broker.url}"
    else:
        result.broker = f"mosquitto on {broker.url}"
    say(f"broker: {result.broker}")
    watch = _Watch(broker.url, say)
    node_log = (workdir / "node.log").open("w")
    node = subprocess.Popen(
        [
            _tool("edge-node"),
            "run",
            "--bundle",
            str(bundle),
            "--broker",
            broker.url,
            "--node-id",
            NODE,
            "--group",
            GROUP,
            "--state-dir",
            str(workdir / "node-state"),
            "--profile",
            NODE_PROFILE,
            "--threads",
            "1",
            "--telemetry-interval",
            "2",
            # The broker's own version: "auto" would also find 3.1.1 on amqtt, after
            # waiting out its CONNACK timeout on the MQTT 5 attempt.
            "--protocol",
            broker.protocol,
        ],
        stdout=node_log,
        stderr=subprocess.STDOUT,
    )
    v311 = broker.protocol == "3.1.1"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311 if v311 else mqtt.MQTTv5
    )
    try:
        online = watch.wait(
            lambda m: any(s.get("state") == "online" for s in m.get("status", [])), 60
        )
        if not online:
            raise RuntimeError(f"edge-node did not come online; see {workdir / 'node.log'}")
        time.sleep(0.5)  # the node is subscribed once it publishes its birth
        say(f"edge-node {NODE} online (profile {NODE_PROFILE}); streaming {rows} sensor rows")
        client.connect(broker.host, broker.port)
        client.loop_start()
        topic = JsonScheme(GROUP, NODE).topic(Inbound.SENSORS)
        t0 = time.perf_counter()
        i = 0
        for _, name, readings in runs:
            say(f"  streaming {name} ({len(readings)} rows)")
            for row in readings:
                msg = {"t": i * seconds_per_row, "values": row.tolist()}
                client.publish(topic, json.dumps(msg), qos=1)
                i += 1
                ahead = i / rate - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        last_t = (rows - 1) * seconds_per_row
        done = watch.wait(
            lambda m: any(r["window"]["t_end"] >= last_t for r in m.get("results", [])), 60
        )
        result.seconds = time.perf_counter() - t0
        if not done:
            result.note = "not every window's result arrived within 60 s"
        watch.wait(lambda m: len(m.get("telemetry", [])) >= 1, 5)
    finally:
        client.loop_stop()
        client.disconnect()
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.kill()
        node_log.close()
        watch.stop()
        broker.stop()
    m = watch.messages
    result.results = sorted(m.get("results", []), key=lambda r: r["window"]["t_end"])
    result.alerts = m.get("alerts", [])
    result.telemetry = m.get("telemetry", [])
    result.status = m.get("status", [])
    return result
