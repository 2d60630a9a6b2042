"""The compatibility matrix: the real node and fleet end to end on mosquitto, ejabberd, RabbitMQ.

Each test runs once per broker (``compat_broker``: one broker process per
module and kind, tests/mqtt_fixtures.py). Where a broker cannot do what a
feature needs, the test asserts what the SDK does instead: it adapts (the
feature works anyway) or refuses with a reason that names the broker's
limitation and the setting that fixes it. docs/brokers.md "Compatibility"
is this file's table; keep them in step.

Node ids differ per test: the broker is shared, and the retained statuses of
one test's nodes stay on it.

Run one broker's column: ``pytest tests/fleet/compat -k rabbitmq``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_helpers import feed_in_background, sensor_rows

from edge_sdk.errors import EdgeSDKError
from edge_sdk.fleet.brokers import BrokerProcess, EjabberdBroker, ErlangBroker, RabbitBroker
from edge_sdk.fleet.connect import connect
from edge_sdk.fleet.deploy import NodeProgress, deploy
from edge_sdk.fleet.watch import FleetWatcher
from edge_sdk.mqtt.config import BrokerConfig
from edge_sdk.mqtt.link import MqttLink
from edge_sdk.mqtt.sparkplug import MessageType
from edge_sdk.mqtt.sparkplug import topic as sparkplug_topic
from edge_sdk.mqtt.sparkplug.host import command as sparkplug_command
from edge_sdk.node.config import OutboxConfig

N_SENSORS, WINDOW = 52, 20
GROUP = "plant"


# -- helpers -------------------------------------------------------------------------------


def _kind(broker: BrokerProcess) -> str:
    if isinstance(broker, EjabberdBroker):
        return "ejabberd"
    if isinstance(broker, RabbitBroker):
        return "rabbitmq"
    return "mosquitto"


def _cfg(broker: BrokerProcess, **opts: Any) -> dict[str, Any]:
    """Broker options as a plant would set them: the broker's MQTT version, quick reconnects."""
    login = broker.client_options() if isinstance(broker, ErlangBroker) else {}
    return {
        "protocol": broker.protocol,
        "keepalive_s": 5,
        "reconnect_max_s": 1.0,
        **login,
        **opts,
    }


def _fleet(broker: BrokerProcess, **opts: Any) -> BrokerConfig:
    return BrokerConfig(url=broker.url, **_cfg(broker, **opts))


def _until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    detail: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what} {detail()}".rstrip())
        time.sleep(0.05)


def _pending_zero(node: Any) -> bool:
    return node.outbox.stats().pending == 0


class Results:
    """Collects the results a FleetWatcher passes on, by message id (duplicates dropped)."""

    def __init__(self) -> None:
        self.windows: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, kind: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if kind == "results":
                prior = self.windows.setdefault(body["id"], body["window"]["seq"])
                assert prior == body["window"]["seq"], "one id, two windows"

    def seqs(self) -> list[int]:
        with self._lock:
            return sorted(self.windows.values())

    def missing(self, n: int) -> str:
        """The windows below ``n`` not received, for a failure message."""
        lost = sorted(set(range(n)) - set(self.seqs()))
        return f"(missing {len(lost)}: {lost[:20]}{' ...' if len(lost) > 20 else ''})"


# -- results -------------------------------------------------------------------------------


def test_results_stream_to_the_fleet_watcher_none_lost(
    compat_broker: BrokerProcess, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    got = Results()
    with FleetWatcher(_fleet(compat_broker), GROUP, on_message=got, sparkplug=False):
        node = make_node(
            compat_broker, sensor_bundles["v1"], node_id="stream1", broker_opts=_cfg(compat_broker)
        )
        for t, row in enumerate(sensor_rows(200 + WINDOW - 1)):
            node.submit_sensors({"t": t, "values": row.tolist()})
        _until(lambda: len(got.windows) >= 200, 60, "200 results", lambda: got.missing(200))
        _until(lambda: _pending_zero(node), 15, "the outbox to drain")
    assert got.seqs() == list(range(200))
    assert node.stats.inferences == 200


def test_broker_restart_mid_stream_loses_no_result(
    compat_broker: BrokerProcess, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """The broker restarts while 300 windows stream: every result reaches the watcher (by id).

    The node's outbox re-sends what the broker acknowledged in the last
    ``replay_s`` after it reconnects. mosquitto (persistence) and RabbitMQ
    (durable queues) keep the watcher's session across the restart; ejabberd
    keeps sessions in memory, so there the replay reaches the watcher only if
    it has subscribed again first (measured with equal reconnect delays: 2 of
    300 lost in 1 of 4 runs, the node's replay racing the watcher's new
    subscription): there the node waits 8 s before reconnecting, the watcher
    0.25 s at most.
    """
    node_opts = _cfg(compat_broker)
    watcher_opts: dict[str, Any] = {}
    if _kind(compat_broker) == "ejabberd":
        node_opts |= {"reconnect_min_s": 8.0, "reconnect_max_s": 8.0}
        watcher_opts = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.25}
    got = Results()
    watcher = FleetWatcher(
        _fleet(compat_broker, **watcher_opts),
        GROUP,
        on_message=got,
        sparkplug=False,
        client_id=f"compat-restart-{uuid.uuid4().hex[:6]}",  # stable: its session is kept
    ).start()
    try:
        node = make_node(
            compat_broker,
            sensor_bundles["v1"],
            node_id="restart1",
            broker_opts=node_opts,
            outbox=OutboxConfig(replay_s=10),
        )
        rows = sensor_rows(300 + WINDOW - 1, seed=1)
        feeder = feed_in_background(node, rows, pause_s=0.005)
        _until(lambda: len(got.windows) >= 60, 30, "the first results")
        compat_broker.restart()
        feeder.join()
        if _kind(compat_broker) == "ejabberd":
            _until(lambda: node.link.connected, 20, "the node to reconnect")
            assert watcher.link.stats.connects >= 2, "the watcher reconnects first"
        _until(
            lambda: len(got.windows) >= 300,
            60,
            "all 300 results after the restart",
            lambda: got.missing(300),
        )
        _until(lambda: _pending_zero(node), 15, "the outbox to drain")
    finally:
        watcher.stop()
    assert got.seqs() == list(range(300))
    assert node.link.stats.disconnects >= 1, "the broker must restart mid-stream"


# -- status and watch ----------------------------------------------------------------------


def test_status_of_a_quiet_node_that_was_online_before_the_watcher(
    compat_broker: BrokerProcess, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """``edge-fleet status``: a node born before the watcher, publishing nothing, is online.

    Its birth is a retained status message. RabbitMQ sends retained messages
    only to exact-topic subscriptions: there the watcher asks the group for
    telemetry, learns the node from the answer and reads that node's status
    topic exactly.
    """
    opts = _cfg(compat_broker)
    make_node(compat_broker, sensor_bundles["v1"], node_id="status1", broker_opts=opts)
    with FleetWatcher(_fleet(compat_broker), GROUP, sparkplug=False) as watcher:

        def online() -> bool:
            return any(v.node == "status1" and v.state == "online" for v in watcher.snapshot())

        _until(online, 10, "the node's status at a watcher started after its birth")
        (view,) = [v for v in watcher.snapshot() if v.node == "status1"]
    assert (view.state, view.version) == ("online", "1.0.0")


def test_shared_subscription_watch_works_or_is_refused_with_the_reason(
    compat_broker: BrokerProcess,
    make_node: Callable[..., Any],
    sensor_bundles: dict[str, Path],
) -> None:
    """``watch --share``: two consumers split the results, or the broker's refusal is named."""
    if _kind(compat_broker) != "mosquitto":
        with pytest.raises(EdgeSDKError, match=r"shared subscriptions"):
            FleetWatcher(_fleet(compat_broker), GROUP, share="compat", sparkplug=False).start()
        return
    a, b = Results(), Results()
    with (
        FleetWatcher(_fleet(compat_broker), GROUP, share="compat", on_message=a, sparkplug=False),
        FleetWatcher(_fleet(compat_broker), GROUP, share="compat", on_message=b, sparkplug=False),
    ):
        node = make_node(
            compat_broker, sensor_bundles["v1"], node_id="share1", broker_opts=_cfg(compat_broker)
        )
        for t, row in enumerate(sensor_rows(40 + WINDOW - 1, seed=2)):
            node.submit_sensors({"t": t, "values": row.tolist()})
        _until(lambda: len(a.windows) + len(b.windows) >= 40, 30, "40 shared results")
    assert sorted(a.seqs() + b.seqs()) == list(range(40))
    assert a.windows and b.windows  # split between the two consumers


def test_a_group_name_with_a_dot_works_or_is_refused_with_the_reason(
    compat_broker: BrokerProcess, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """``plant.a``: one topic level, or (RabbitMQ: ``.`` becomes ``/``) refused, naming the fix."""
    group = "plant.a"
    if _kind(compat_broker) == "rabbitmq":
        refused = r"'plant\.a' contains '\.'.*'plant-a'"
        with pytest.raises(EdgeSDKError, match=refused):
            FleetWatcher(_fleet(compat_broker), group, sparkplug=False).start()
        with pytest.raises(EdgeSDKError, match=refused):
            make_node(
                compat_broker,
                sensor_bundles["v1"],
                node_id="dot1",
                group=group,
                broker_opts=_cfg(compat_broker),
            )
        return
    got = Results()
    with FleetWatcher(_fleet(compat_broker), group, on_message=got, sparkplug=False):
        node = make_node(
            compat_broker,
            sensor_bundles["v1"],
            node_id="dot1",
            group=group,
            broker_opts=_cfg(compat_broker),
        )
        for t, row in enumerate(sensor_rows(WINDOW + 1, seed=6)):
            node.submit_sensors({"t": t, "values": row.tolist()})
        _until(lambda: len(got.windows) >= 2, 20, "2 results of group plant.a")
    assert got.seqs() == [0, 1]


def test_anonymous_login_works_or_is_refused_naming_the_username(
    compat_broker: BrokerProcess,
) -> None:
    """No credentials: mosquitto and RabbitMQ (as ``guest``) accept; ejabberd says why not."""
    anonymous = BrokerConfig(url=compat_broker.url, protocol=compat_broker.protocol)
    if _kind(compat_broker) == "ejabberd":
        with pytest.raises(EdgeSDKError, match=r"not authorised.*--username"):
            FleetWatcher(anonymous, GROUP, sparkplug=False).start(timeout_s=10)
        return
    with FleetWatcher(anonymous, GROUP, sparkplug=False) as watcher:
        assert watcher.link.connected


# -- protocol ------------------------------------------------------------------------------


def test_protocol_auto_settles_on_what_the_broker_speaks(
    compat_broker: BrokerProcess,
    make_node: Callable[..., Any],
    sensor_bundles: dict[str, Path],
) -> None:
    """``protocol: auto``: MQTT 5, or 3.1.1 where the broker closes the socket on MQTT 5."""
    node = make_node(
        compat_broker,
        sensor_bundles["v1"],
        node_id="auto1",
        broker_opts=_cfg(compat_broker, protocol="auto"),
    )
    assert node.link.stats.protocol == compat_broker.protocol


# -- request/response ----------------------------------------------------------------------


def test_request_response(
    compat_broker: BrokerProcess, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """A request on ``.../infer`` is answered on the requester's reply topic.

    MQTT 5 brokers carry Response Topic and Correlation Data as properties;
    on MQTT 3.1.1 they travel in the payload (``reply_to``, ``correlation``).
    """
    import json

    make_node(compat_broker, sensor_bundles["v1"], node_id="req1", broker_opts=_cfg(compat_broker))
    replies: list[tuple[str, dict[str, Any], Any]] = []
    link = MqttLink(
        _fleet(compat_broker),
        f"compat-req-{uuid.uuid4().hex[:6]}",
        on_message=lambda t, p, props: replies.append((t, json.loads(p), props)),
        subscriptions=[("cloud/replies/#", 1)],
    )
    connect(link, 15)
    try:
        x = sensor_rows(N_SENSORS, seed=4)[:, :WINDOW][None]
        body: dict[str, Any] = {"id": "r1", "inputs": {"x": x.tolist()}}
        props = None
        if compat_broker.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = "cloud/replies/r1"
            props.CorrelationData = b"c-1"
        else:
            body |= {"reply_to": "cloud/replies/r1", "correlation": "c-1"}
        payload = json.dumps(body).encode()
        info = link.publish_info(f"edge/{GROUP}/req1/infer", payload, 1, False, props)
        assert info is not None, "not connected"
        info.wait_for_publish(10)
        _until(lambda: bool(replies), 20, "the reply")
    finally:
        link.stop(flush_s=0)
    topic, reply, reply_props = replies[0]
    assert topic == "cloud/replies/r1"
    assert np.asarray(reply["outputs"]["out"]).shape == (1, 22)
    if compat_broker.protocol == "5":
        assert reply_props.CorrelationData == b"c-1" and reply["request_id"] == "r1"
    else:
        assert reply["correlation"] == "c-1"


# -- OTA -----------------------------------------------------------------------------------


def test_group_wide_deploy_reaches_a_running_node_and_one_started_after_the_offer(
    compat_broker: BrokerProcess,
    make_node: Callable[..., Any],
    sensor_bundles: dict[str, Path],
    fleet_keys: dict[str, Path],
) -> None:
    group = "ota"
    early = make_node(
        compat_broker,
        sensor_bundles["v1"],
        node_id="early",
        group=group,
        broker_opts=_cfg(compat_broker),
    )
    outcome: dict[str, NodeProgress] = {}
    offered = threading.Event()

    def on_progress(p: NodeProgress) -> None:
        offered.set()

    def run() -> None:
        outcome.update(
            deploy(
                _fleet(compat_broker),
                group,
                sensor_bundles["v2"],
                key=fleet_keys["key"],
                timeout_s=90,
                wait_for={"early", "late"},
                on_progress=on_progress,
            )
        )

    deployer = threading.Thread(target=run)
    deployer.start()
    try:
        assert offered.wait(30), "no node answered the offer"
        late = make_node(
            compat_broker,
            sensor_bundles["v1"],
            node_id="late",
            group=group,
            broker_opts=_cfg(compat_broker),
        )
    finally:
        deployer.join(100)
    assert {n: p.step for n, p in outcome.items()} == {"early": "swapped", "late": "swapped"}
    for node in (early, late):
        assert node.model.runtime.manifest.model.version == "1.1.0"


# -- Sparkplug B ---------------------------------------------------------------------------


def test_sparkplug_births_and_rebirth_or_refused_with_the_setting(
    compat_broker: BrokerProcess,
    make_node: Callable[..., Any],
    sensor_bundles: dict[str, Path],
) -> None:
    """Births reach the fleet and an NCMD Rebirth makes new ones; or the node refuses to start.

    RabbitMQ rewrites ``.`` in topics (``spBv1.0`` would arrive as ``spBv1/0``)
    unless ``mqtt.sparkplug = true``: the node must say so at start instead of
    publishing topics no Sparkplug host recognises.
    """
    opts = _cfg(compat_broker)
    if _kind(compat_broker) == "rabbitmq":
        with pytest.raises(EdgeSDKError, match=r"rewrites '\.'.*mqtt\.sparkplug = true"):
            make_node(
                compat_broker,
                sensor_bundles["v1"],
                node_id="sp1",
                scheme="sparkplug",
                broker_opts=opts,
            )
        return
    _sparkplug_births_and_rebirth(compat_broker, make_node, sensor_bundles)


def test_sparkplug_on_rabbitmq_with_mqtt_sparkplug_true(
    rabbitmq_path: str,
    tmp_path: Path,
    make_node: Callable[..., Any],
    sensor_bundles: dict[str, Path],
) -> None:
    """The setting the refusal names: with ``mqtt.sparkplug = true`` RabbitMQ keeps ``spBv1.0``."""
    with RabbitBroker(tmp_path / "rabbitmq-sparkplug", sparkplug=True).start() as broker:
        _sparkplug_births_and_rebirth(broker, make_node, sensor_bundles)


def _sparkplug_births_and_rebirth(
    broker: BrokerProcess, make_node: Callable[..., Any], sensor_bundles: dict[str, Path]
) -> None:
    """A Sparkplug node's births reach a FleetWatcher, and an NCMD Rebirth makes new ones."""
    got = Results()
    with FleetWatcher(_fleet(broker), GROUP, on_message=got, sparkplug=True) as watcher:
        node = make_node(
            broker,
            sensor_bundles["v1"],
            node_id="sp1",
            scheme="sparkplug",
            broker_opts=_cfg(broker),
            outbox=OutboxConfig(replay_s=0),
        )
        _until(lambda: got.kinds.get("sparkplug/DBIRTH", 0) >= 1, 15, "the births")
        for t, row in enumerate(sensor_rows(WINDOW + 2, seed=3)):
            node.submit_sensors({"t": t, "values": row.tolist()})
        _until(lambda: got.kinds.get("sparkplug/DDATA", 0) >= 3, 15, "three DDATA results")
        (view,) = [v for v in watcher.snapshot() if v.node == "sp1"]
        assert (view.state, view.version) == ("online", "1.0.0")

        link = connect(MqttLink(_fleet(broker), f"compat-ncmd-{uuid.uuid4().hex[:6]}"), 15)
        try:
            ncmd = sparkplug_topic(GROUP, MessageType.NCMD, "sp1")
            assert link.publish_wait(ncmd, sparkplug_command("rebirth"))
        finally:
            link.stop(flush_s=0)
        # a rebirth is NBIRTH then DBIRTH: wait for the second DBIRTH
        _until(lambda: got.kinds.get("sparkplug/DBIRTH", 0) >= 2, 15, "the rebirth")
    assert got.kinds["sparkplug/NBIRTH"] >= 2 and got.kinds["sparkplug/DBIRTH"] >= 2
