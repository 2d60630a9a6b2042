"""CPU per message of the node's outbox pump against a real mosquitto (SYNTHETIC rows).

One row is stored and ``link.wake()`` called per message at a steady rate, as the
node's worker commits one ``results`` message per batch (at 1,000 transactions/s
the batched fraud node sends ~250 such messages/s). Measured: the pump thread's
CPU time (its pthread CPU clock) and the whole process's (pump, paho's network
thread, the storing loop and an in-process subscriber) per message, until every
row is delivered and its PUBACK written. ``--baseline REV`` also runs the pump of
git revision ``REV`` (``edge_sdk/mqtt/pump.py`` as of then, executed into the
module) alternately with the working tree's, side by side in one run: on a shared
machine only such ratios and CPU times mean anything.

    python benchmarks/outbox_pump.py --baseline <rev> --out benchmarks/results/outbox_pump.json
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

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_meta  # noqa: E402

PAYLOAD = b'{"decisions": [' + b'{"id": "t1", "src": "a1", "score": 0.01}, ' * 4 + b"{}]}"


def run(rev: str | None, rate: float, seconds: float) -> dict[str, Any]:
    """One measurement in a fresh process (the pump module is replaced for ``rev``)."""
    cmd = [sys.executable, __file__, "--child", rev or "", "--rate", str(rate)]
    out = subprocess.run(
        [*cmd, "--seconds", str(seconds)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def child(rev: str, rate: float, seconds: float) -> None:
    import edge_sdk.mqtt.pump as pump

    if rev:
        src = subprocess.check_output(
            ["git", "-C", str(ROOT), "show", f"{rev}:edge_sdk/mqtt/pump.py"], text=True
        )
        exec(compile(src, pump.__file__, "exec"), pump.__dict__)
        for name, fallback in (("awaiting", _awaiting), ("puback", _puback)):
            if not hasattr(pump.Pump, name):  # a pump older than the link's calls
                setattr(pump.Pump, name, fallback)
    import edge_sdk.mqtt.link as link

    link.Pump = pump.Pump  # type: ignore[misc]
    from edge_sdk.fleet.brokers.mosquitto import LocalBroker
    from edge_sdk.mqtt.config import BrokerConfig
    from edge_sdk.node.outbox import Outbox, Outgoing

    work = Path(tempfile.mkdtemp())
    broker = LocalBroker(work / "broker").start()
    got = threading.Semaphore(0)
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cloud")
    sub.on_message = lambda c, u, m: got.release()
    sub.connect(broker.host, broker.port)
    sub.subscribe("plant/#", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    outbox = Outbox(work / "outbox.sqlite")
    node = link.MqttLink(BrokerConfig(url=broker.url), client_id="n1", outbox=outbox)
    try:
        node.start()
        assert node.wait_connected(10)
        thread = next(t for t in threading.enumerate() if t.name.endswith("-outbox"))
        clock = time.pthread_getcpuclockid(thread.ident or 0)
        n = int(rate * seconds)
        p0, c0, t0 = time.process_time(), time.clock_gettime(clock), time.monotonic()
        for k in range(n):
            outbox.put(Outgoing("plant/n1/results", PAYLOAD))
            node.wake()
            time.sleep(max(0.0, t0 + (k + 1) / rate - time.monotonic()))
        for _ in range(n):
            assert got.acquire(timeout=60), "a message never arrived"
        while outbox.stats().pending and time.monotonic() - t0 < seconds + 30:
            time.sleep(0.01)
        c1, p1 = time.clock_gettime(clock), time.process_time()
        result = {
            "pump": rev or "working tree",
            "messages": n,
            "rate_per_s": rate,
            "pending_after": outbox.stats().pending,
            "pump_thread_cpu_ms_per_msg": round((c1 - c0) * 1e3 / n, 4),
            "process_cpu_ms_per_msg": round((p1 - p0) * 1e3 / n, 4),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        node.stop()
        outbox.close()
        sub.loop_stop()
        broker.stop(timeout_s=5)
    print(json.dumps(result))


def _awaiting(self: Any) -> int:
    return len(self.inflight)


def _puback(self: Any) -> None:
    with self.cond:
        self.cond.notify_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rate", type=float, default=250.0, help="messages stored per second")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--baseline", help="git revision whose pump runs alternately with ours")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the runs here as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        child(a.child, a.rate, a.seconds)
        return
    runs = []
    for _ in range(a.repeat):
        for rev in ([a.baseline] if a.baseline else []) + [None]:
            runs.append(run(rev, a.rate, a.seconds))
            print(json.dumps(runs[-1]), flush=True)
    doc = {"workload": "SYNTHETIC results rows", "meta": machine_meta("paho-mqtt"), "runs": runs}
    if a.out:
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
