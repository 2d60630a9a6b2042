"""The node as a Sparkplug B 3.0 edge node, against a real mosquitto.

Every message the node publishes is decoded here with the protobuf module
compiled from the Sparkplug B schema (``sparkplug_b_pb2``), not with the node's
own codec, and the broker's log (``log_type all``) shows what the node sent on
the wire and in which order.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_helpers import Received, sensor_rows

from edge_sdk import Runtime
from edge_sdk.fleet.brokers import LocalBroker
from edge_sdk.mqtt.sparkplug import sparkplug_b_pb2 as pb
from edge_sdk.node.config import OutboxConfig, SparkplugConfig

N_SENSORS, WINDOW = 52, 20
GROUP, NODE = "plant", "n1"
CLIENT_ID = f"edge-node-{GROUP}-{NODE}"
# Per-type value fields of the schema (the specification's mapping of datatypes).
_INT32 = {pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32}
_INT64 = {pb.Int64, pb.UInt64, pb.DateTime}


@dataclass(frozen=True)
class Msg:
    kind: str
    device: str | None
    seq: int | None
    metrics: dict[str, Any]  # name -> value (None when is_null)
    datatypes: dict[str, int]
    historical: bool  # every metric is_historical
    timestamps: list[int]
    raw: Any


def _value(m: Any, dt: int) -> Any:
    if m.is_null:
        return None
    if dt in _INT32:
        v = m.int_value
        return v - (1 << 32) if dt in {pb.Int8, pb.Int16, pb.Int32} and v >= 1 << 31 else v
    if dt in _INT64:
        v = m.long_value
        return v - (1 << 64) if dt == pb.Int64 and v >= 1 << 63 else v
    if dt == pb.DoubleArray:
        return list(np.frombuffer(m.bytes_value, "<f8"))
    field = m.WhichOneof("value")
    return getattr(m, field) if field else None


def decode(rec: Received, births: dict[str | None, dict[str, int]]) -> Msg:
    """Decode one message; DATA metrics carry no datatype, so it comes from the birth."""
    parts = rec.topic.split("/")
    assert parts[0] == "spBv1.0" and parts[1] == GROUP, rec.topic
    kind, device = parts[2], parts[4] if len(parts) == 5 else None
    p = pb.Payload.FromString(rec.payload)
    if kind in ("NBIRTH", "DBIRTH"):
        births[device] = {m.name: m.datatype for m in p.metrics}
    declared = births.get(device, {})
    types = {m.name: m.datatype if m.HasField("datatype") else declared[m.name] for m in p.metrics}
    return Msg(
        kind=kind,
        device=device,
        seq=p.seq if p.HasField("seq") else None,
        metrics={m.name: _value(m, types[m.name]) for m in p.metrics},
        datatypes={m.name: m.datatype for m in p.metrics if m.HasField("datatype")},
        historical=bool(p.metrics) and all(m.is_historical for m in p.metrics),
        timestamps=[m.timestamp for m in p.metrics],
        raw=p,
    )


_FROM_NODE = ("NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA")


def sparkplug(messages: list[Received]) -> list[Msg]:
    """Every message the node published under spBv1.0, decoded, in arrival order."""
    births: dict[str | None, dict[str, int]] = {}
    out = []
    for m in messages:
        parts = m.topic.split("/")
        if (
            parts[0] == "spBv1.0"
            and len(parts) >= 4
            and parts[2] in _FROM_NODE
            and parts[3] == NODE
        ):
            out.append(decode(m, births))
    return out


def _feed(node: Any, rows: np.ndarray, start: int = 0) -> None:
    for t, row in enumerate(rows, start):
        node.submit_sensors({"t": t, "values": row.tolist()})


def _results(msgs: list[Msg]) -> list[Msg]:
    return [m for m in msgs if m.kind == "DDATA" and "Result/Id" in m.metrics]


def _kinds(msgs: list[Msg]) -> list[str]:
    return [m.kind for m in msgs]


def _cut_link(node: Any) -> None:
    """Drop the node's TCP connection without an MQTT DISCONNECT (as a network failure does)."""
    sock = node.link._client.socket()
    assert sock is not None
    sock.shutdown(socket.SHUT_RDWR)


def ncmd(**metrics: tuple[int, Any]) -> bytes:
    p = pb.Payload(timestamp=int(time.time() * 1000))
    for name, (dt, value) in metrics.items():
        m = p.metrics.add(name=name.replace("__", "/").replace("_", " "), datatype=dt)
        if dt == pb.Boolean:
            m.boolean_value = value
        elif dt == pb.Double:
            m.double_value = value
        elif dt == pb.String:
            m.string_value = value
    return p.SerializeToString()


@pytest.fixture
def wire_broker(mosquitto_path: str, tmp_path: Path):
    """A broker that logs every packet (CONNECT flags, will, SUBSCRIBE, PUBLISH)."""
    b = LocalBroker(tmp_path / "broker", extra_config="log_type all").start()
    try:
        yield b
    finally:
        b.stop(timeout_s=5)


@pytest.fixture
def sp_node(make_node, sensor_bundles):
    """A Sparkplug node on the v1 sensor bundle; without a primary host, returned once born.

    (Results produced between the CONNACK and the births are historical by
    definition; tests of live data feed the node only after its births.)
    """

    def make(broker: LocalBroker, **cfg: Any) -> Any:
        cfg.setdefault("outbox", OutboxConfig(replay_s=0))
        node = make_node(broker, sensor_bundles["v1"], scheme="sparkplug", **cfg)
        deadline = time.monotonic() + 10
        while node.config.sparkplug.primary_host is None and not node.sparkplug.born:
            assert time.monotonic() < deadline, "the node sent no births"
            time.sleep(0.01)
        return node

    return make


def test_births_will_and_data_on_the_wire(
    wire_broker, sp_node, mqtt_client_factory, sensor_bundles
):
    host = mqtt_client_factory(wire_broker)
    host.subscribe("spBv1.0/#", qos=1)
    node = sp_node(wire_broker, telemetry_interval_s=0)
    rows = sensor_rows(WINDOW + 9)
    _feed(node, rows)
    msgs = sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m))) >= 10, timeout=20))

    # -- births: NBIRTH seq 0 with bdSeq 0 (first connect ever), then DBIRTH of the model device
    assert _kinds(msgs)[:2] == ["NBIRTH", "DBIRTH"]
    nbirth, dbirth = msgs[0], msgs[1]
    assert nbirth.seq == 0 and dbirth.seq == 1
    assert nbirth.metrics["bdSeq"] == 0 and nbirth.datatypes["bdSeq"] == pb.Int64
    assert nbirth.metrics["Node Control/Rebirth"] is False
    assert nbirth.datatypes["Node Control/Rebirth"] == pb.Boolean
    assert nbirth.metrics["Node Info/Model Name"] == "tep-sensor-gcn"
    assert nbirth.metrics["Node Info/Backend"] == node.describe()["backend"]
    for name in ("Telemetry/Latency p99 ms", "Telemetry/Queue Depth", "Telemetry/Outbox Pending"):
        assert name in nbirth.metrics  # declared (null until the first telemetry)
    assert dbirth.device == "model"
    assert dbirth.metrics["Model/Version"] == "1.0.0"
    assert dbirth.datatypes["Result/Outputs/out"] == pb.DoubleArray
    assert dbirth.metrics["Alert/Active"] is False
    assert not any(k.startswith("Anomaly/") for k in dbirth.metrics)  # no decision rule

    # -- every DATA metric was declared by the birth; DATA leaves datatypes out (SHOULD NOT)
    data = msgs[2:]
    assert data and all(m.kind == "DDATA" and m.device == "model" for m in data)
    for m in data:
        assert set(m.metrics) <= set(dbirth.datatypes) and m.datatypes == {}
        assert all(ts > 0 for ts in m.timestamps)  # every metric timestamped
    # -- seq continues across all message types; data is live (not historical) and QoS 0
    assert [m.seq for m in msgs] == list(range(len(msgs)))
    assert not any(m.historical for m in data)
    assert all(r.qos == 0 and not r.retain for r in host.messages if "/DDATA/" in r.topic)

    # -- the values are the model's outputs for those windows
    results = _results(msgs)
    with Runtime.load(sensor_bundles["v1"]) as rt:
        for r in results[:10]:
            k = r.metrics["Result/Window Seq"]
            expected = rt.infer(rows[k : k + WINDOW].T[None])["out"][0]
            np.testing.assert_allclose(r.metrics["Result/Outputs/out"], expected, atol=1e-5)
            assert r.metrics["Result/Class"] == int(np.argmax(expected))
    assert [r.metrics["Result/Window Seq"] for r in results[:10]] == list(range(10))

    # -- the broker's view: clean session, will = NDEATH at QoS 1 not retained,
    #    NCMD subscribed before NBIRTH was published
    log = wire_broker.log_tail(100_000)
    connect = re.search(rf"as {CLIENT_ID} \(p\d, c(\d), k\d+\)", log)
    assert connect and connect.group(1) == "1", "Sparkplug needs a clean session"
    will = re.search(r"Will message specified \(\d+ bytes\) \(r(\d), q(\d)\)\.\n\d+: \t(\S+)", log)
    assert will and will.groups() == ("0", "1", f"spBv1.0/{GROUP}/NDEATH/{NODE}")
    sub = log.find(f"\tspBv1.0/{GROUP}/NCMD/{NODE} (QoS 1)")
    birth = log.find(
        f"Received PUBLISH from {CLIENT_ID} (d0, q0, r0, m0, 'spBv1.0/{GROUP}/NBIRTH/{NODE}'"
    )
    assert sub != -1 and birth != -1 and sub < birth, "NCMD must be subscribed before NBIRTH"


def test_bdseq_in_the_will_increments_per_connect_and_survives_a_restart(
    broker, sp_node, mqtt_client_factory, tmp_path
):
    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    state = tmp_path / "state-sp"
    node = sp_node(broker, state_dir=state)
    host.wait_for(lambda m: _kinds(sparkplug(m)).count("NBIRTH") >= 1)

    _cut_link(node)  # the broker publishes the will: NDEATH with this connect's bdSeq
    msgs = sparkplug(host.wait_for(lambda m: _kinds(sparkplug(m)).count("NBIRTH") >= 2, timeout=20))
    births = [m for m in msgs if m.kind == "NBIRTH"]
    deaths = [m for m in msgs if m.kind == "NDEATH"]
    assert [b.metrics["bdSeq"] for b in births] == [0, 1]
    assert [d.metrics["bdSeq"] for d in deaths] == [0]
    assert deaths[0].seq is None  # NDEATH carries no seq
    assert (
        _kinds(msgs).index("NDEATH") < [i for i, k in enumerate(_kinds(msgs)) if k == "NBIRTH"][1]
    )
    assert births[1].seq == 0

    node.stop()  # intentional: DDEATH, then NDEATH (bdSeq 1), then DISCONNECT
    msgs = sparkplug(host.wait_for(lambda m: _kinds(sparkplug(m)).count("NDEATH") >= 2, timeout=10))
    tail = [m for m in msgs if m.kind in ("DDEATH", "NDEATH")][-2:]
    assert [m.kind for m in tail] == ["DDEATH", "NDEATH"]
    assert tail[1].metrics["bdSeq"] == 1
    assert (state / "sparkplug-bdseq").read_text().strip() == "1"

    sp_node(broker, state_dir=state)  # a new process of the same node continues at 2
    msgs = sparkplug(host.wait_for(lambda m: _kinds(sparkplug(m)).count("NBIRTH") >= 3, timeout=15))
    assert [m.metrics["bdSeq"] for m in msgs if m.kind == "NBIRTH"] == [0, 1, 2]


def test_bdseq_wraps_and_a_damaged_file_restarts_at_zero(tmp_path):
    from edge_sdk.node.sparkplug import BdSeq

    path = tmp_path / "sparkplug-bdseq"
    path.write_text("254\n")
    seq = BdSeq(path)
    assert [seq.advance() for _ in range(3)] == [255, 0, 1]
    assert BdSeq(path).value == 1
    path.write_text("garbage")
    assert BdSeq(path).advance() == 0


def test_rebirth_keeps_bdseq_and_ncmd_drives_the_node(broker, sp_node, mqtt_client_factory):
    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    host.subscribe(f"edge/{GROUP}/{NODE}/errors", qos=1)
    node = sp_node(broker)
    _feed(node, sensor_rows(WINDOW + 2))
    host.wait_for(lambda m: len(_results(sparkplug(m))) >= 3)
    connects = node.link.stats.connects

    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", ncmd(Node_Control__Rebirth=(pb.Boolean, True)))
    msgs = sparkplug(host.wait_for(lambda m: _kinds(sparkplug(m)).count("DBIRTH") >= 2))
    births = [m for m in msgs if m.kind == "NBIRTH"]
    assert [b.metrics["bdSeq"] for b in births] == [0, 0]  # same bdSeq: no new connection
    i = [k for k, m in enumerate(msgs) if m.kind == "NBIRTH"][1]
    assert msgs[i].seq == 0 and msgs[i + 1].kind == "DBIRTH" and msgs[i + 1].seq == 1
    assert node.link.stats.connects == connects

    # Telemetry interval by NCMD: applied, echoed as NDATA, declared in the next birth
    host.publish(
        f"spBv1.0/{GROUP}/NCMD/{NODE}", ncmd(Node_Control__Telemetry_Interval=(pb.Double, 0.3))
    )
    msgs = sparkplug(host.wait_for(lambda m: any(x.kind == "NDATA" for x in sparkplug(m))))
    ndata = next(m for m in msgs if m.kind == "NDATA")
    assert ndata.metrics["Node Control/Telemetry Interval"] == pytest.approx(0.3)
    assert "Telemetry/Queue Depth" in ndata.metrics
    assert node._telemetry_interval == pytest.approx(0.3)

    # A metric the node does not take, or garbage: an error naming it, the node carries on
    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", ncmd(Bogus=(pb.String, "x")))
    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", b"\xff\xff not protobuf")
    errs = host.wait_for(lambda m: sum(r.topic.endswith("/errors") for r in m) >= 2)
    bodies = [json.loads(r.payload) for r in errs if r.topic.endswith("/errors")]
    assert bodies[0]["field"] == "Bogus" and "writable" in bodies[0]["error"]
    assert "Sparkplug B payload" in bodies[1]["error"]
    _feed(node, sensor_rows(3, seed=5), start=WINDOW + 2)
    host.wait_for(lambda m: len(_results(sparkplug(m))) >= 6)


def test_seq_runs_0_to_255_and_wraps(broker, sp_node, mqtt_client_factory):
    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    node = sp_node(broker)
    _feed(node, sensor_rows(WINDOW - 1 + 300))
    msgs = sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m))) >= 300, timeout=30))
    seqs = [m.seq for m in msgs]
    assert seqs[0] == 0 and len(seqs) == 302  # NBIRTH, DBIRTH, 300 DDATA
    assert seqs == [i % 256 for i in range(302)]
    assert 255 in seqs and seqs[seqs.index(255) + 1] == 0


def test_data_produced_offline_is_replayed_historical_and_in_order(
    broker, sp_node, mqtt_client_factory
):
    """Broker killed mid-stream: what the node produced meanwhile comes after the new births,
    every metric is_historical, oldest first, with its original timestamp; live data follows."""
    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    node = sp_node(broker, sparkplug=SparkplugConfig(primary_host="scada"))
    state = "spBv1.0/STATE/scada"

    def host_state(online: bool) -> None:
        body = json.dumps({"online": online, "timestamp": int(time.time() * 1000)})
        host.client.publish(state, body, qos=1).wait_for_publish(5)

    host_state(True)
    rows = sensor_rows(WINDOW - 1 + 40)
    _feed(node, rows[: WINDOW - 1 + 10])
    host.wait_for(lambda m: len(_results(sparkplug(m))) >= 10)

    broker.kill()
    before = len(host.messages)
    _feed(node, rows[WINDOW - 1 + 10 : WINDOW - 1 + 30], start=WINDOW - 1 + 10)
    deadline = time.monotonic() + 10
    while node.stats.inferences < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.stats.inferences == 30
    broker.restart()
    host.wait_ready(timeout=20, min_connects=2)
    host.subscribe("spBv1.0/#", qos=1)
    assert node.link.wait_connected(20)
    assert not node.sparkplug.born  # after a reconnect the node waits for the host's STATE
    host_state(True)  # the primary host is back: births, then the backlog
    host.wait_for(lambda m: len(_results(sparkplug(m[before:]))) >= 20, timeout=20)
    _feed(node, rows[WINDOW - 1 + 30 :], start=WINDOW - 1 + 30)
    msgs = sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m[before:]))) >= 30)[before:])

    first = msgs[:12]
    assert [m.kind for m in first[:2]] == ["NBIRTH", "DBIRTH"] and first[0].metrics["bdSeq"] >= 1
    results = _results(msgs)
    windows = [r.metrics["Result/Window Seq"] for r in results]
    assert windows == list(range(10, 40))  # in order, none lost, none duplicated
    historical = [r.historical for r in results]
    assert historical == [True] * 20 + [False] * 10
    stamps = [r.timestamps[0] for r in results]
    assert stamps == sorted(stamps)
    nbirth_ts = msgs[0].raw.timestamp
    assert all(ts < nbirth_ts for ts in stamps[:20]) and all(ts >= nbirth_ts for ts in stamps[20:])
    assert [m.seq for m in msgs] == list(range(len(msgs)))


def test_primary_host_state_gates_data_and_older_state_is_ignored(
    broker, sp_node, mqtt_client_factory
):
    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    node = sp_node(broker, sparkplug=SparkplugConfig(primary_host="scada"))
    state = "spBv1.0/STATE/scada"
    t0 = int(time.time() * 1000)

    def send(online: bool, ts: int) -> None:
        host.client.publish(
            state, json.dumps({"online": online, "timestamp": ts}), qos=1, retain=True
        ).wait_for_publish(5)

    rows = sensor_rows(WINDOW - 1 + 12)
    _feed(node, rows[:WINDOW])  # one window while the host has not said it is online
    time.sleep(1.0)
    assert not any(m.topic.startswith(f"spBv1.0/{GROUP}/") for m in host.messages), (
        "no birth before STATE online"
    )

    send(True, t0)
    msgs = sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m))) >= 1))
    assert _kinds(msgs)[:2] == ["NBIRTH", "DBIRTH"] and _results(msgs)[0].historical

    send(False, t0 + 1000)
    time.sleep(0.5)
    send(True, t0 + 500)  # older than the offline: ignored
    _feed(node, rows[WINDOW : WINDOW + 5], start=WINDOW)
    time.sleep(1.5)
    assert len(_results(sparkplug(host.messages))) == 1, "no data while the host is offline"
    assert node.stats.inferences == 6

    send(True, t0 + 2000)
    msgs = sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m))) >= 6))
    assert _kinds(msgs).count("NBIRTH") == 2
    assert [r.historical for r in _results(msgs)[1:]] == [True] * 5


def test_sensor_inputs_arrive_as_ddata_from_another_sparkplug_device(
    broker, sp_node, mqtt_client_factory, sensor_bundles
):
    names = [f"XMEAS{i + 1}" for i in range(N_SENSORS)]
    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    node = sp_node(
        broker,
        window={"sensors": names},
        sparkplug=SparkplugConfig(sensor_sources=["plc7/line3"]),
    )
    rows = sensor_rows(WINDOW + 1, seed=3)
    rows[:, 0] = np.round(rows[:, 0] * 10)  # XMEAS1 is an Int32 (negative values included)
    t0 = 1_700_000_000_000
    # DBIRTH declares names, aliases and datatypes; DDATA then carries aliases and values only
    birth = pb.Payload(timestamp=t0, seq=1)
    for i, name in enumerate(names):
        m = birth.metrics.add(name=name, alias=100 + i, timestamp=t0 - 1000)
        if i == 0:
            m.datatype, m.int_value = pb.Int32, 0
        else:
            m.datatype, m.float_value = pb.Float, 0.0
    birth.metrics.add(name="Status", alias=99, datatype=pb.String, string_value="running")
    host.publish("spBv1.0/plant/DBIRTH/plc7/line3", birth.SerializeToString(), qos=0)
    half = N_SENSORS // 2
    for k, row in enumerate(rows):
        for part in (range(half), range(half, N_SENSORS)):  # one sample split over two messages
            p = pb.Payload(timestamp=t0 + 1000 * k, seq=(2 + k) % 256)
            for i in part:
                m = p.metrics.add(alias=100 + i, timestamp=t0 + 1000 * k)
                if i == 0:
                    m.int_value = int(row[0]) & 0xFFFFFFFF  # two's complement, per the spec
                else:
                    m.float_value = float(row[i])
            host.publish("spBv1.0/plant/DDATA/plc7/line3", p.SerializeToString(), qos=0)
    assert (rows[: WINDOW + 1, 0] < 0).any()
    results = _results(sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m))) >= 2)))
    with Runtime.load(sensor_bundles["v1"]) as rt:
        for r in results[:2]:
            k = r.metrics["Result/Window Seq"]
            expected = rt.infer(rows[k : k + WINDOW].T[None])["out"][0]
            np.testing.assert_allclose(r.metrics["Result/Outputs/out"], expected, atol=1e-5)
            assert r.metrics["Result/Window Start"] == pytest.approx((t0 + 1000 * k) / 1000)
    assert node.stats.errors == 0


def test_updates_travel_the_json_path_while_the_host_is_offline_then_rebirth_and_rollback(
    broker, sp_node, mqtt_client_factory, sensor_bundles, fleet_keys, tmp_path
):
    """OTA does not depend on the Sparkplug host: the update installs while data is held;
    the births that follow name the new model, and an NCMD rollback births the old one."""
    from edge_sdk.fleet.deploy import Deployer, prepare_bundle
    from edge_sdk.mqtt.config import BrokerConfig

    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    node = sp_node(broker, sparkplug=SparkplugConfig(primary_host="scada"))
    _feed(node, sensor_rows(WINDOW))  # one result, held: the host has not come online
    prepared = prepare_bundle(
        sensor_bundles["v2"], tmp_path / "packed", key=fleet_keys["key"], chunk_size=8192
    )
    outcome = Deployer(BrokerConfig(url=broker.url), GROUP, prepared, node=NODE).run(timeout_s=60)
    assert outcome[NODE].step == "swapped"
    assert node.model.runtime.manifest.model.version == "1.1.0"
    assert sparkplug(host.messages) == [], "nothing Sparkplug before the host is online"

    body = json.dumps({"online": True, "timestamp": int(time.time() * 1000)})
    host.client.publish("spBv1.0/STATE/scada", body, qos=1, retain=True).wait_for_publish(5)
    msgs = sparkplug(host.wait_for(lambda m: len(_results(sparkplug(m))) >= 1))
    assert _kinds(msgs)[:2] == ["NBIRTH", "DBIRTH"]
    assert msgs[0].metrics["Node Info/Model Version"] == "1.1.0"
    assert msgs[1].metrics["Model/Version"] == "1.1.0"
    assert _results(msgs)[0].historical  # produced (by 1.0.0) before these births

    host.publish(f"spBv1.0/{GROUP}/NCMD/{NODE}", ncmd(Node_Control__Rollback=(pb.Boolean, True)))
    msgs = sparkplug(host.wait_for(lambda m: _kinds(sparkplug(m)).count("DBIRTH") >= 2, timeout=20))
    dbirths = [m for m in msgs if m.kind == "DBIRTH"]
    assert dbirths[-1].metrics["Model/Version"] == "1.0.0"
    assert node.model.runtime.manifest.model.version == "1.0.0"


def test_edge_fleet_follows_sparkplug_nodes_and_sends_ncmd(broker, sp_node, mqtt_client_factory):
    from typer.testing import CliRunner

    from edge_sdk.cli.fleet_cli import app as fleet
    from edge_sdk.fleet.watch import FleetWatcher
    from edge_sdk.mqtt.config import BrokerConfig

    seen: list[tuple[str, dict]] = []
    with FleetWatcher(
        BrokerConfig(url=broker.url), GROUP, on_message=lambda k, b: seen.append((k, b))
    ) as w:
        node = sp_node(broker)
        _feed(node, sensor_rows(WINDOW + 4))
        deadline = time.monotonic() + 15
        while sum(k == "sparkplug/DDATA" for k, _ in seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        (view,) = w.snapshot()
        assert (view.node, view.state, view.version, view.results) == (NODE, "online", "1.0.0", 5)
        assert view.backend == node.describe()["backend"]

        def command(name: str) -> Any:
            args = ["command", name, "--group", GROUP, "--node", NODE, "--sparkplug"]
            return CliRunner().invoke(fleet, [*args, "--broker", broker.url])

        res = command("rebirth")
        assert res.exit_code == 0, res.output
        while sum(k == "sparkplug/NBIRTH" for k, _ in seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(k == "sparkplug/NBIRTH" for k, _ in seen) == 2
        bad = command("telemetry")  # not a Sparkplug node command
        assert bad.exit_code != 0 and "NCMD" in bad.output

        # A will left over from an older connection (another bdSeq) does not kill the node's view
        stale = pb.Payload(timestamp=1)
        stale.metrics.add(name="bdSeq", datatype=pb.Int64, long_value=77)
        mqtt_client_factory(broker).publish(
            f"spBv1.0/{GROUP}/NDEATH/{NODE}", stale.SerializeToString()
        )
        time.sleep(0.3)
        assert w.snapshot()[0].state == "online"
        node.stop()
        while w.snapshot()[0].state != "offline" and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert w.snapshot()[0].state == "offline"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"sparkplug.primary_host": "scada"}, "need scheme: sparkplug"),
        ({"scheme": "sparkplug", "sparkplug.sensor_sources": ["plc7"]}, "edge_node_id/device_id"),
        ({"scheme": "sparkplug", "sparkplug.device": "a/b"}, "not a valid name"),
        ({"scheme": "mqtt"}, "'json' or 'sparkplug'"),
    ],
)
def test_sparkplug_config_errors_name_the_field(overrides, words):
    from edge_sdk.errors import ConfigError
    from edge_sdk.node import load_config

    with pytest.raises(ConfigError, match=words):
        load_config(None, **overrides)


def test_an_outbox_row_that_cannot_be_encoded_is_reported_and_does_not_stop_the_pump(
    broker, sp_node, mqtt_client_factory
):
    from edge_sdk.node.outbox import Outgoing

    host = mqtt_client_factory(broker)
    host.subscribe("spBv1.0/#", qos=1)
    host.subscribe(f"edge/{GROUP}/{NODE}/errors", qos=1)
    node = sp_node(broker)
    host.wait_for(lambda m: "DBIRTH" in _kinds(sparkplug(m)))
    bad = node.outbox.put(Outgoing(f"spBv1.0/{GROUP}/DDATA/{NODE}/model", b"{not json", qos=0))
    node.link.wake()
    _feed(node, sensor_rows(WINDOW))
    msgs = host.wait_for(
        lambda m: any(r.topic.endswith("/errors") for r in m) and len(_results(sparkplug(m))) >= 1
    )
    (err,) = [json.loads(r.payload) for r in msgs if r.topic.endswith("/errors")]
    assert err["field"] == "sparkplug" and f"row {bad} not sent" in err["error"]
    seqs = [m.seq for m in sparkplug(msgs)]
    assert seqs == list(range(len(seqs)))  # the bad row used no seq
