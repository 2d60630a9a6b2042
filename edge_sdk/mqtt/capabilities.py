"""What the broker does, learnt at connect: CONNACK properties and a self-addressed probe.

Brokers differ in ways that break features silently. RabbitMQ 3.10's MQTT
plugin sends retained messages only to exact-topic subscriptions (a fleet
watcher subscribed to ``edge/g/+/status`` never sees a node's retained status)
and rewrites ``.`` in topic names to ``/`` (Sparkplug's ``spBv1.0/...`` arrives
as ``spBv1/0/...``); ejabberd refuses shared subscriptions. A link made with
``probe=BrokerProbe(...)`` learns this once, on its first connect, before it
reports itself connected (so nothing is published on a broker that would
mangle it), and its ``check`` may refuse the broker with a reason:

1. **CONNACK properties** (MQTT 5 only): Retain Available, Wildcard
   Subscription Available, Shared Subscription Available, Maximum QoS, Topic
   Alias Maximum, Receive Maximum, Maximum Packet Size. Absent means
   "available" (the MQTT 5 defaults).
2. **A self-addressed probe** on the link's own connection, under
   ``edge/_probe/<nonce>/`` (``_probe`` can never be a group: names start
   with a letter or digit; no ``$``, which brokers reserve). First, live
   messages on a SUBSCRIBE of three filters:

   * ``.../w/l.x`` through ``.../w/#``: does the topic arrive with its ``.``?
     (``topic_dots_preserved``; ``#``, not ``+``: a broker that treats ``.``
     as a separator would not match ``l.x`` with ``+``);
   * ``.../s/l`` through ``$share/<nonce>/.../s/#``: refused in the SUBACK, or
     granted but never delivered (RabbitMQ takes ``$share/...`` as a plain
     topic), is "no shared subscriptions". Not sent where the CONNACK already
     says none (ejabberd answers such a SUBSCRIBE with a DISCONNECT);
   * with ``sparkplug=True``, ``spBv1.0/edge-probe-<nonce>`` (two levels: no
     Sparkplug host reads it as a node's message): does the Sparkplug
     namespace keep its dot? RabbitMQ keeps it with ``mqtt.sparkplug = true``
     even though it rewrites other dots.

   Then, only if the live message came back (so these topics are allowed: a
   retained publish that an ACL denies makes mosquitto 2.0 drop the client
   at its next SUBSCRIBE), a retained message to ``.../r/r.x``, a SUBSCRIBE to
   ``.../r/#`` and a live marker after it: the broker sends retained messages
   on subscribe, so a marker that arrives first (plus
   :data:`RETAINED_GRACE_S`) means no retained messages on wildcards
   (``retain_on_wildcards``). The retained message is cleared (an empty
   retained publish) and the filters unsubscribed at the end.

Every probe message is QoS 0 (nothing for paho to resend on a later
connection). The probe takes a few milliseconds on a local broker and at most
``timeout_s`` (2 s): what did not answer by then stays ``None`` ("unknown"),
and nothing is refused on an unknown. No retained message is sent where
Retain Available is 0 (such a broker would disconnect the client).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paho.mqtt.client import Client

__all__ = [
    "RETAINED_GRACE_S",
    "BrokerCapabilities",
    "BrokerProbe",
    "CapabilityProbe",
    "from_connack",
]

log = logging.getLogger(__name__)

#: Seconds to keep waiting for the retained probe once the live one arrived.
RETAINED_GRACE_S = 0.25
#: Where the probe's topics live (``_probe`` is not a valid group name).
PROBE_ROOT = "edge/_probe"
_SPARKPLUG_PROBE = "spBv1.0/edge-probe-"


@dataclass(frozen=True)
class BrokerCapabilities:
    """What a broker does (``None``: unknown, the probe did not answer in time).

    Attributes:
        protocol: MQTT version the link speaks to it (``"5"`` or ``"3.1.1"``).
        probed: The self-addressed probe answered (False: CONNACK only).
        retain_available: Retained messages accepted (CONNACK; 3.1.1: None).
        retain_on_wildcards: A retained message reaches a wildcard subscription.
        wildcard_subscriptions: Wildcard filters accepted.
        shared_subscriptions: ``$share/...`` subscriptions split messages.
        topic_dots_preserved: A ``.`` in a topic name arrives unchanged.
        sparkplug_namespace_preserved: ``spBv1.0/...`` arrives unchanged
            (None when not probed).
        max_qos: Highest QoS the broker accepts (CONNACK; None: 2 or unknown).
        topic_alias_maximum: Topic aliases the broker accepts from the client.
        receive_maximum: QoS 1/2 publishes the broker takes in flight at once.
        maximum_packet_size: Largest packet the broker accepts (None: no limit
            announced).
    """

    protocol: str
    probed: bool = False
    retain_available: bool | None = None
    retain_on_wildcards: bool | None = None
    wildcard_subscriptions: bool | None = None
    shared_subscriptions: bool | None = None
    topic_dots_preserved: bool | None = None
    sparkplug_namespace_preserved: bool | None = None
    max_qos: int | None = None
    topic_alias_maximum: int | None = None
    receive_maximum: int | None = None
    maximum_packet_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for a log or a status: what works, what does not, what is unknown."""

        def yes(value: bool | None) -> str:
            return "unknown" if value is None else ("yes" if value else "no")

        parts = [
            f"MQTT {self.protocol}",
            f"retained on wildcards: {yes(self.retain_on_wildcards)}",
            f"shared subscriptions: {yes(self.shared_subscriptions)}",
            "'.' in topics: "
            + (
                "unknown"
                if self.topic_dots_preserved is None
                else ("kept" if self.topic_dots_preserved else "rewritten to '/'")
            ),
        ]
        if self.sparkplug_namespace_preserved is not None:
            parts.append(f"spBv1.0 kept: {yes(self.sparkplug_namespace_preserved)}")
        if self.max_qos is not None:
            parts.append(f"max QoS {self.max_qos}")
        if not self.probed:
            parts.append("(probe unanswered)")
        return "; ".join(parts)

    def sparkplug_refusal(self) -> str | None:
        """Why Sparkplug B cannot run on this broker (None: it can, or unknown)."""
        kept = self.sparkplug_namespace_preserved
        if kept is None:
            kept = self.topic_dots_preserved
        if kept is not False:
            return None
        return (
            "this broker rewrites '.' in topic names to '/', so Sparkplug's spBv1.0/... "
            "topics arrive as spBv1/0/... (no Sparkplug host or node would recognise them). "
            "Use the JSON scheme (--scheme json), or on RabbitMQ set "
            "'mqtt.sparkplug = true' in rabbitmq.conf (keeps the dot of spBvN.N)"
        )

    def name_refusal(self, kind: str, name: str) -> str | None:
        """Why a group or node ``name`` containing ``.`` cannot be used (None: it can)."""
        if "." not in name or self.topic_dots_preserved is not False:
            return None
        return (
            f"{kind} {name!r} contains '.', which this broker rewrites to '/' in topic "
            f"names ({name!r} would become {name.replace('.', '/')!r}, two topic levels). "
            f"Rename the {kind} without '.' (e.g. {name.replace('.', '-')!r})"
        )

    def shared_refusal(self) -> str | None:
        """Why ``$share/...`` subscriptions do not work here (None: they do, or unknown)."""
        if self.shared_subscriptions is not False:
            return None
        return (
            "this broker does not support shared subscriptions ($share/...); "
            "run one watcher without --share, or use a broker that supports them "
            "(mosquitto 2, EMQX, HiveMQ)"
        )


def from_connack(protocol: str, props: Any) -> BrokerCapabilities:
    """What the CONNACK says (MQTT 5 properties; 3.1.1 CONNACKs carry none)."""
    if protocol == "3.1.1" or props is None:
        return BrokerCapabilities(protocol=protocol)

    def flag(name: str) -> bool:
        return bool(getattr(props, name, 1))

    def number(name: str) -> int | None:
        value = getattr(props, name, None)
        return int(value) if value is not None else None

    return BrokerCapabilities(
        protocol=protocol,
        retain_available=flag("RetainAvailable"),
        wildcard_subscriptions=flag("WildcardSubscriptionAvailable"),
        shared_subscriptions=None if flag("SharedSubscriptionAvailable") else False,
        max_qos=number("MaximumQoS"),
        topic_alias_maximum=number("TopicAliasMaximum") or 0,
        receive_maximum=number("ReceiveMaximum"),
        maximum_packet_size=number("MaximumPacketSize"),
    )


class CapabilityProbe:
    """One self-addressed probe on a connected client (see the module notes).

    The link routes the probe's messages (:meth:`owns`, :meth:`message`) and
    SUBACKs (:meth:`suback`) to it from paho's network thread, and calls
    :meth:`run` on a thread of its own.

    Args:
        base: What the CONNACK said.
        sparkplug: Also probe the Sparkplug namespace.
        timeout_s: Upper bound of :meth:`run`.
    """

    def __init__(
        self, base: BrokerCapabilities, sparkplug: bool = False, timeout_s: float = 2.0
    ) -> None:
        self.base = base
        self.nonce = uuid.uuid4().hex[:12]
        self.prefix = f"{PROBE_ROOT}/{self.nonce}"
        self._sparkplug = sparkplug
        self._timeout_s = timeout_s
        self._cond = threading.Condition()
        self._got: set[bytes] = set()
        self._live_at: float | None = None  # when the live message arrived
        self._marker_at: float | None = None  # when the retained phase's live marker arrived
        self._dots: bool | None = None
        self._sparkplug_kept: bool | None = None
        self._subacks: dict[int, list[bool]] = {}  # mid -> granted (SUBACKs may come early)
        self._granted: list[bool] = []
        self._shared_at: int | None = None  # index of the $share filter in the SUBSCRIBE

    def owns(self, topic: str) -> bool:
        """True for the probe's own messages (whatever the broker did to the topic)."""
        return self.nonce in topic

    def message(self, topic: str, payload: bytes) -> None:
        """One of the probe's messages arrived (paho's network thread)."""
        with self._cond:
            self._got.add(payload)
            if payload == b"live":
                self._dots = topic == f"{self.prefix}/w/l.x"
                self._live_at = time.monotonic()
            elif payload == b"sparkplug":
                self._sparkplug_kept = topic.startswith(_SPARKPLUG_PROBE)
            elif payload == b"marker":
                self._marker_at = time.monotonic()
            self._cond.notify_all()

    def suback(self, mid: int, reasons: Any) -> None:
        """A SUBACK that is not the link's own (it may come before ``subscribe()`` returns)."""
        with self._cond:
            if len(self._subacks) < 16:
                self._subacks[mid] = [not getattr(r, "is_failure", False) for r in reasons]
                self._cond.notify_all()

    def run(self, client: Client) -> BrokerCapabilities:
        """Probe through ``client`` (connected); returns within about ``timeout_s``.

        Live messages first (QoS 0: nothing for paho to resend after a lost
        connection); the retained message only once they arrived, so a broker
        whose ACL denies these topics never gets a retained publish (mosquitto
        2.0 drops a client that subscribes after a denied retained publish).
        """
        deadline = time.monotonic() + self._timeout_s
        filters = [f"{self.prefix}/w/#"]
        if self.base.shared_subscriptions is not False:  # ejabberd disconnects on $share
            self._shared_at = len(filters)
            filters.append(f"$share/{self.nonce}/{self.prefix}/s/#")
        if self._sparkplug:
            filters.append(_SPARKPLUG_PROBE + self.nonce)
        retained = f"{self.prefix}/r/r.x"
        sent_retained = False
        try:
            self._granted = self._subscribe(client, filters, deadline)
            client.publish(f"{self.prefix}/w/l.x", b"live")
            if self._shared_at is not None:
                client.publish(f"{self.prefix}/s/l", b"shared")
            if self._sparkplug:
                client.publish(_SPARKPLUG_PROBE + self.nonce, b"sparkplug")
            self._wait(self._live_done, deadline)
            if b"live" in self._got and self.base.retain_available is not False:
                client.publish(retained, b"retained", retain=True)
                sent_retained = True
                self._subscribe(client, [f"{self.prefix}/r/#"], deadline)
                client.publish(f"{self.prefix}/r/marker", b"marker")
                self._wait(self._retained_done, deadline)
        except (RuntimeError, ValueError) as exc:  # not connected any more
            log.debug("broker probe cut short: %s", exc)
        finally:
            if sent_retained:
                client.publish(retained, b"", retain=True)
            client.unsubscribe([*filters, f"{self.prefix}/r/#"])
        return self._result(sent_retained)

    def _subscribe(self, client: Client, filters: list[str], deadline: float) -> list[bool]:
        rc, mid = client.subscribe([(f, 0) for f in filters])
        if mid is None:
            raise RuntimeError(f"probe SUBSCRIBE not sent ({rc})")
        with self._cond:
            self._cond.wait_for(lambda: mid in self._subacks, max(0.0, deadline - time.monotonic()))
            return self._subacks.get(mid, [])

    def _wait(self, done: Callable[[], bool], deadline: float) -> None:
        with self._cond:
            while not done() and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def _live_done(self) -> bool:
        shared = b"shared" in self._got or self._shared_at is None or self._shared_refused()
        sparkplug = not self._sparkplug or b"sparkplug" in self._got
        if self._live_at is None:
            return False
        # A $share granted but dead (RabbitMQ) never delivers: the live message sets the pace.
        return (shared and sparkplug) or time.monotonic() - self._live_at >= RETAINED_GRACE_S

    def _retained_done(self) -> bool:
        """The retained message came, or the marker after it did and the grace passed."""
        if b"retained" in self._got:
            return True
        return self._marker_at is not None and (
            time.monotonic() - self._marker_at >= RETAINED_GRACE_S
        )

    def _shared_refused(self) -> bool:
        at = self._shared_at
        return at is not None and len(self._granted) > at and not self._granted[at]

    def _result(self, sent_retained: bool) -> BrokerCapabilities:
        with self._cond:
            live = b"live" in self._got
            base = self.base
            shared = base.shared_subscriptions
            if shared is None and self._shared_refused():
                shared = False
            elif shared is None and live:
                shared = b"shared" in self._got
            retain_on_wildcards: bool | None = False if base.retain_available is False else None
            if sent_retained and (b"retained" in self._got or self._marker_at is not None):
                retain_on_wildcards = b"retained" in self._got
            return dataclasses.replace(
                base,
                probed=live,
                wildcard_subscriptions=(
                    self._granted[0] if self._granted else base.wildcard_subscriptions
                ),
                retain_on_wildcards=retain_on_wildcards,
                shared_subscriptions=shared,
                topic_dots_preserved=self._dots,
                sparkplug_namespace_preserved=self._sparkplug_kept if live else None,
            )


class BrokerProbe:
    """A link's probe: run once, on the first connect, before the link reports itself ready.

    Args:
        sparkplug: Also probe the Sparkplug namespace (a Sparkplug node or host).
        check: Given the capabilities, returns why the caller cannot run on
            this broker (the link then disconnects for good, with that reason as
            its ``connect_error``), or None.
        timeout_s: Upper bound of the probe.
    """

    def __init__(
        self,
        sparkplug: bool = False,
        check: Callable[[BrokerCapabilities], str | None] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.sparkplug = sparkplug
        self.capabilities: BrokerCapabilities | None = None
        #: Why the caller refused the broker (its ``check``), once probed.
        self.refused: str | None = None
        self._check = check
        self._timeout_s = timeout_s
        self._current: CapabilityProbe | None = None
        self._done = threading.Event()

    def wait(self, timeout: float) -> BrokerCapabilities | None:
        """Block until the first probe finished or ``timeout`` passes; its result.

        When it returns the capabilities, the link is ready or :attr:`refused` is set.
        """
        self._done.wait(timeout)
        return self.capabilities

    def refusal(self, caps: BrokerCapabilities) -> str | None:
        """Why the caller refuses ``caps`` (its ``check``), else None."""
        return self._check(caps) if self._check is not None else None

    def start(
        self, client: Client, protocol: str, props: Any, done: Callable[[str | None], None]
    ) -> None:
        """Probe through ``client`` (just connected) on a thread; ``done(refusal)`` after.

        Once the capabilities are known, ``done`` runs at once (no new probe).
        One probe per link: if the connection died during it (mosquitto 2.0
        drops a client that publishes where its ACL denies), the next
        connection does not try again; the CONNACK's word is all it learns.
        """
        base = from_connack(protocol, props)
        where = f"{client.host}:{client.port}"
        if self.capabilities is None and self._current is not None:
            self._current = None  # the first probe's connection died: its result is void
            log.warning(
                "the connection dropped during the broker probe; not probing again "
                "(an ACL must allow %s/# for it)",
                PROBE_ROOT,
            )
            self._finish(base, done, where)
            return
        if self.capabilities is not None:
            done(self.refusal(self.capabilities))
            return
        probe = CapabilityProbe(base, self.sparkplug, self._timeout_s)
        self._current = probe

        def work() -> None:
            caps = probe.run(client)
            if probe is self._current:  # else a later connection decided without it
                self._finish(caps, done, where)

        threading.Thread(target=work, daemon=True, name="mqtt-probe").start()

    def _finish(
        self, caps: BrokerCapabilities, done: Callable[[str | None], None], where: str
    ) -> None:
        self.capabilities = caps
        self.refused = self.refusal(caps)
        log.info("broker at %s: %s", where, caps.describe())
        done(self.refused)
        self._done.set()

    def message(self, topic: str, payload: bytes) -> bool:
        """Route one incoming message; True when it was the probe's (paho's thread)."""
        probe = self._current
        if probe is None or not probe.owns(topic):
            return False
        probe.message(topic, payload)
        return True

    def suback(self, mid: int, reasons: Any) -> None:
        """Route a SUBACK that is not the link's own."""
        probe = self._current
        if probe is not None:
            probe.suback(mid, reasons)
