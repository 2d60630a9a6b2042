"""Cloud-side view of the fleet: every node's status, results, alerts and telemetry.

:class:`FleetWatcher` subscribes to ``edge/{group}/+/...``, drops the
duplicates that QoS 1 and the node's replay after a lost link can produce
(by message ``id``), and keeps one :class:`NodeView` per node. With
``share="name"`` it uses an MQTT 5 shared subscription
(``$share/name/edge/...``) so several consumers split the results between them;
the retained ``status`` topic is always subscribed normally (brokers do not send
retained messages to shared subscriptions).

Nodes that speak Sparkplug B (``edge-node run --scheme sparkplug``) are followed
under ``spBv1.0/{group}/...`` too: births and deaths set their state (a stale
NDEATH, whose bdSeq is not the current birth's, is ignored), DDATA results and
alerts and NDATA telemetry fill the same table. Their messages reach
``on_message`` as ``sparkplug/{NBIRTH|DDATA|...}`` with the decoded metrics.
With ``share``, only DATA messages are shared: every consumer needs the births.

At start the watcher probes the broker (:mod:`edge_sdk.mqtt.capabilities`)
and adapts or refuses:

* a broker that sends retained messages only to exact-topic subscriptions
  (RabbitMQ 3.10) never delivers the retained ``status`` on
  ``edge/{group}/+/status``: the watcher then learns nodes from what they
  publish live (status, results, alerts, errors, telemetry, OTA status) and
  subscribes to each node's exact status topic, whose retained status the
  broker does deliver; with a named group it also asks the group's nodes for
  their telemetry (the group-wide ``telemetry`` command), so that a node that
  is quiet while the watcher looks is listed too;
* ``share`` on a broker without shared subscriptions, ``sparkplug=True`` or a
  group containing ``.`` on a broker that rewrites ``.`` in topics: refused
  (:class:`~edge_sdk.errors.ConfigError` naming the limitation and the fix);
  with ``sparkplug=None`` (the default) the watcher just does not follow
  Sparkplug there, and says so in its log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, EdgeSDKError
from ..mqtt.capabilities import BrokerCapabilities, BrokerProbe
from ..mqtt.config import BrokerConfig
from ..mqtt.link import MqttLink
from ..mqtt.sparkplug import NAMESPACE as SPARKPLUG
from ..mqtt.sparkplug.host import HostView
from ..mqtt.topics import GROUP_WIDE, ROOT, Inbound, JsonScheme, Outbound, dumps, loads
from .connect import connect

#: Topics a watcher follows, besides the retained status.
STREAMS = (
    Outbound.RESULTS,
    Outbound.ALERTS,
    Outbound.ERRORS,
    Outbound.TELEMETRY,
    Outbound.OTA_STATUS,
)

log = logging.getLogger(__name__)


class Deduplicator:
    """Remembers the last ``capacity`` message ids; :meth:`seen` is True for a repeat."""

    def __init__(self, capacity: int = 200_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self.duplicates = 0

    def seen(self, msg_id: str) -> bool:
        if msg_id in self._ids:
            self.duplicates += 1
            return True
        self._ids[msg_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return False


@dataclass
class NodeView:
    """The latest known state of one node."""

    group: str
    node: str
    state: str = "unknown"
    model: str = ""
    version: str = ""
    backend: str = ""
    results: int = 0
    alerts: int = 0
    errors: int = 0
    last_class: str = ""
    alert_state: str = ""
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    outbox_pending: int | None = None
    update: str = ""
    last_seen: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FleetWatcher:
    """Follow a group (``"+"`` for all groups) and keep a table of its nodes.

    Args:
        broker: Broker connection.
        group: Group name, or ``"+"`` for every group.
        share: MQTT 5 shared-subscription name for horizontally scaled consumers.
        on_message: Called (network thread) with ``(kind, body)`` for each new,
            de-duplicated message.
        streams: Which outgoing node topics to follow.
        client_id: MQTT client id; a stable id with a persistent session makes
            the broker queue messages for this watcher while it is away.
        sparkplug: Also follow Sparkplug B nodes of the group: None where the
            broker keeps the ``spBv1.0`` namespace intact, True always (a broker
            that rewrites it is refused), False never.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        group: str = "+",
        share: str | None = None,
        on_message: Callable[[str, dict[str, Any]], None] | None = None,
        streams: tuple[Outbound, ...] = STREAMS,
        client_id: str | None = None,
        sparkplug: bool | None = None,
    ) -> None:
        self.nodes: dict[tuple[str, str], NodeView] = {}
        self.sparkplug = HostView()
        self.dedup = Deduplicator()
        self.counts: dict[str, int] = {}
        self._on_message = on_message
        self._lock = threading.Lock()
        self._group, self._share, self._sparkplug = group, share, sparkplug
        self._followed = {kind.value for kind in streams} | {Outbound.STATUS.value}
        self._exact_status: set[tuple[str, str]] | None = None  # set: learning nodes
        prefix = f"$share/{share}/" if share else ""
        subs = [(f"{prefix}{ROOT}/{group}/+/{kind.value}", 1) for kind in streams]
        subs.append((f"{ROOT}/{group}/+/{Outbound.STATUS.value}", 1))
        follow_sparkplug = sparkplug is not False  # None: unless the probe finds it rewritten
        if follow_sparkplug and share:
            subs += [(f"{prefix}{SPARKPLUG}/{group}/{k}/#", 0) for k in ("NDATA", "DDATA")]
            subs += [
                (f"{SPARKPLUG}/{group}/{k}/#", 0) for k in ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH")
            ]
        elif follow_sparkplug:
            subs.append((f"{SPARKPLUG}/{group}/#", 0))
        self.probe = BrokerProbe(sparkplug=sparkplug is not False, check=self._refusal)
        self.link = MqttLink(
            broker,
            client_id=client_id or f"edge-fleet-watch-{uuid.uuid4().hex[:8]}",
            on_message=self._receive,
            subscriptions=subs,
            probe=self.probe,
        )

    @property
    def capabilities(self) -> BrokerCapabilities | None:
        """What the broker does (known once :meth:`start` returned)."""
        return self.probe.capabilities

    def start(self, timeout_s: float = 10.0) -> FleetWatcher:
        """Connect, subscribe, probe the broker and adapt to it (module notes).

        Raises:
            ConfigError: The broker is not reachable within ``timeout_s``, refused
                the client, or refused a subscription (e.g. ``share`` on a broker
                without shared subscriptions), naming the broker's reason; or the
                broker lacks what this watcher needs (named, with the fix).
        """
        try:
            connect(self.link, timeout_s)
        except ConfigError:
            if self.probe.refused is None:
                raise
            url = self.link.broker.url
            raise ConfigError(
                f"cannot watch through the broker at {url}: {self.probe.refused}"
            ) from None
        caps = self.probe.capabilities
        if caps is not None:
            self._adapt(caps)
        return self

    def _refusal(self, caps: BrokerCapabilities) -> str | None:
        """Why this watcher cannot work on a broker that does what ``caps`` say."""
        why = [caps.shared_refusal() if self._share else None]
        why.append(caps.sparkplug_refusal() if self._sparkplug else None)
        if self._group != "+":
            why.append(caps.name_refusal("group", self._group))
        return "; ".join(w for w in why if w) or None

    def _adapt(self, caps: BrokerCapabilities) -> None:
        if self._sparkplug is None and (why := caps.sparkplug_refusal()):
            log.info("not following Sparkplug B nodes: %s", why)  # not asked for: no warning
        if caps.retain_on_wildcards is not False:
            return
        log.info(
            "this broker sends retained messages only to exact topics: learning nodes from "
            "what they publish and reading each node's retained status on its own topic"
        )
        with self._lock:
            self._exact_status = set()
            known = list(self.nodes)
        for kind in STREAMS:
            if kind.value not in self._followed:  # heard only to learn the nodes
                self.link.subscribe(f"{ROOT}/{self._group}/+/{kind.value}", 1)
        for group, node in known:
            self._learn(group, node)
        self._ask_group()

    def _ask_group(self) -> None:
        """Ask the group's nodes to publish telemetry now, so that quiet nodes are learnt too.

        Without it a node that publishes nothing while the watcher looks
        (``edge-fleet status`` waits a second) stays unseen. The request is the
        group-wide ``telemetry`` command, read-only on the node. The watcher's
        subscriptions were sent before it on the same connection, so the
        answers are not missed. With group ``+`` there is no topic to ask every
        group at once: only nodes that publish are learnt, and the log says so.
        """
        if self._group == "+":
            log.warning(
                "this broker sends no retained status to wildcard subscriptions: only nodes "
                "that publish while watching are listed; name the group (--group) to ask them"
            )
            return
        topic = f"{ROOT}/{self._group}/{GROUP_WIDE}/{Inbound.CMD.value}"
        if not self.link.publish_now(topic, dumps({"cmd": "telemetry"})):
            log.warning("could not ask the nodes of %s for their telemetry", self._group)

    def _learn(self, group: str, node: str) -> None:
        """Subscribe to a node's exact status topic, once (no retained on wildcards)."""
        with self._lock:
            if self._exact_status is None or (group, node) in self._exact_status:
                return
            self._exact_status.add((group, node))
        self.link.subscribe(f"{ROOT}/{group}/{node}/{Outbound.STATUS.value}", 1)

    def stop(self) -> None:
        self.link.stop(flush_s=0)

    def __enter__(self) -> FleetWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[NodeView]:
        """Copy of the node table, sorted by group and node."""
        with self._lock:
            return [NodeView(**v.as_dict()) for _, v in sorted(self.nodes.items())]

    def _receive(self, topic: str, payload: bytes, properties: Any) -> None:
        if topic.startswith(SPARKPLUG + "/"):
            self._receive_sparkplug(topic, payload)
            return
        parsed = JsonScheme.parse(topic)
        if parsed is None or not payload:
            return
        group, node, kind = parsed
        if self._exact_status is not None:
            self._learn(group, node)
        if kind not in self._followed:
            return
        try:
            body = loads(payload, max_bytes=4 << 20)
        except EdgeSDKError:
            return
        msg_id = body.get("id")
        with self._lock:
            if isinstance(msg_id, str) and self.dedup.seen(msg_id):
                return
            self.counts[kind] = self.counts.get(kind, 0) + 1
            view = self.nodes.setdefault((group, node), NodeView(group, node))
            view.last_seen = time.time()
            _update(view, kind, body)
        if self._on_message is not None:
            self._on_message(kind, body)

    def _receive_sparkplug(self, topic: str, payload: bytes) -> None:
        body = self.sparkplug.message(topic, payload)
        if body is None:
            return
        kind = f"sparkplug/{body['type']}"
        with self._lock:
            msg_id = body.get("id")
            if isinstance(msg_id, str) and self.dedup.seen(f"{body['group']}/{msg_id}"):
                return  # a result replayed after a lost link
            self.counts[kind] = self.counts.get(kind, 0) + 1
            view = self.nodes.setdefault(
                (body["group"], body["node"]), NodeView(body["group"], body["node"])
            )
            view.last_seen = time.time()
            _update_sparkplug(view, body)
        if self._on_message is not None:
            self._on_message(kind, body)


def _update_sparkplug(view: NodeView, body: dict[str, Any]) -> None:
    kind, m = body["type"], body.get("metrics") or {}
    if "error" in body:
        view.errors += 1
    elif kind == "NBIRTH":
        view.state = "online"
        view.model = str(m.get("Node Info/Model Name") or view.model)
        view.version = str(m.get("Node Info/Model Version") or view.version)
        view.backend = str(m.get("Node Info/Backend") or view.backend)
    elif kind == "NDEATH":
        view.state = "offline"
    elif kind == "DDATA":
        if "Result/Id" in m:
            view.results += 1
            view.last_class = str(m.get("Result/Label", m.get("Result/Class", "")))
        if "Alert/State" in m:
            view.alerts += m["Alert/State"] == "raised"
            view.alert_state = (
                f"{m['Alert/State']}: {m.get('Alert/Label', m.get('Alert/Class', ''))}"
            )
    elif kind == "NDATA":
        view.latency_p50_ms = m.get("Telemetry/Latency p50 ms", view.latency_p50_ms)
        view.latency_p99_ms = m.get("Telemetry/Latency p99 ms", view.latency_p99_ms)
        view.outbox_pending = m.get("Telemetry/Outbox Pending", view.outbox_pending)


def _update(view: NodeView, kind: str, body: dict[str, Any]) -> None:
    if kind == Outbound.STATUS.value:
        view.state = str(body.get("state", view.state))
        model = body.get("model") or {}
        view.model = str(model.get("name", view.model))
        view.version = str(model.get("version", view.version))
        view.backend = str(body.get("backend") or view.backend)
    elif kind == Outbound.RESULTS.value:
        view.results += 1
        view.last_class = str(body.get("label", body.get("class", "")))
    elif kind == Outbound.ALERTS.value:
        view.alerts += body.get("state") == "raised"
        view.alert_state = f"{body.get('state')}: {body.get('label', body.get('class', ''))}"
    elif kind == Outbound.ERRORS.value:
        view.errors += 1
    elif kind == Outbound.TELEMETRY.value:
        lat = body.get("latency_ms") or {}
        view.latency_p50_ms = lat.get("p50")
        view.latency_p99_ms = lat.get("p99")
        view.outbox_pending = (body.get("outbox") or {}).get("pending")
        view.backend = str(body.get("backend") or view.backend)
    elif kind == Outbound.OTA_STATUS.value:
        view.update = f"{body.get('step')} {body.get('version', '')}".strip()
        if body.get("step") == "refused":
            view.update += f" ({body.get('at')})"
