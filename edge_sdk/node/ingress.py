"""The node's ingress: MQTT messages (paho's network thread) and local input into one queue.

Nothing here blocks on the model: sensors, events, ``infer`` requests and
commands are queued for the worker (local events through
:meth:`Ingress.submit_events`), which acknowledges them (MQTT PUBACK) once its
batch is committed; OTA messages go to the update agent and the wire scheme's own
topics (Sparkplug STATE, NCMD, source DDATA) are translated by the scheme,
both acknowledged at once (see docs/node.md).
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InvalidInputError
from ..mqtt.link import Delivery
from ..mqtt.topics import Inbound, dumps

if TYPE_CHECKING:
    from ..mqtt.link import MqttLink
    from ..mqtt.topics import JsonScheme
    from .config import NodeConfig
    from .ota import UpdateAgent
    from .schemes import NodeScheme
    from .telemetry import NodeStats

#: ``reply(index, outcome)``: an event's decision, or its error (see :attr:`Message.reply`).
Reply = Callable[[int, dict[str, Any]], None]

#: Local events queued per message by :meth:`Ingress.submit_events` (a long list
#: in one message would exceed ``max_payload_bytes``).
LOCAL_EVENTS_PER_MESSAGE = 256


@dataclass(frozen=True)
class Message:
    """One queued input for the worker."""

    kind: Inbound
    payload: bytes
    properties: Any
    received: float
    #: MQTT input: acknowledged by the worker once the batch is committed.
    delivery: Delivery | None = None
    #: Local events waited for (HTTP): ``reply(i, outcome)`` per event ``i`` of the
    #: message, with its decision or ``{"id", "error": {"field", "message"}}``.
    reply: Reply | None = None


class IngressHost(Protocol):
    """What the ingress needs from the node it receives for (the node implements it)."""

    config: NodeConfig
    scheme: JsonScheme
    wire: NodeScheme
    link: MqttLink | None
    updates: UpdateAgent | None
    stats: NodeStats

    def window_sensors(self) -> Collection[str] | None: ...

    def ack(self, *deliveries: Delivery | None) -> None: ...

    def report_error(self, field_name: str, message: str, kind: Inbound | None = None) -> None: ...


class Ingress:
    """Sorts what arrives and queues it for the worker.

    Args:
        node: The node it receives for (config, scheme, link, updates, stats).
    """

    def __init__(self, node: IngressHost) -> None:
        self.node = node
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=node.config.queue_size)

    def on_message(
        self, topic: str, payload: bytes, properties: Any, delivery: Delivery | None = None
    ) -> None:
        """paho's network thread. Sensors, infer and cmd are acknowledged by the worker
        once their batch is committed; everything else at once (see docs/node.md)."""
        node = self.node
        kind = None
        if not self._own_topic(topic, payload):
            kind = node.scheme.classify(topic)
        if kind in (Inbound.OTA_OFFER, Inbound.OTA_CHUNK):
            if node.updates is not None:
                node.updates.submit(kind, payload)
        elif kind is not None:
            self.enqueue(kind, payload, properties, delivery)
            return
        node.ack(delivery)

    def enqueue(
        self,
        kind: Inbound,
        payload: bytes,
        properties: Any,
        delivery: Delivery | None = None,
        reply: Reply | None = None,
    ) -> bool:
        """Queue one input; when the queue stays full for a second, answer it as dropped.

        Returns:
            False: dropped (reported on ``errors``, acknowledged; ``reply`` is not called).
        """
        try:
            self.queue.put(
                Message(kind, payload, properties, time.monotonic(), delivery, reply), timeout=1.0
            )
            return True
        except queue.Full:
            node = self.node
            node.stats.overloaded += 1
            node.report_error("queue", self._overloaded(), kind=kind)
            node.ack(delivery)  # refused with an error, like any bad message
            return False

    def _overloaded(self) -> str:
        return f"node overloaded: {self.node.config.queue_size} messages waiting; message dropped"

    def submit_events(self, events: Any, accepted: bool, reply: Reply | None = None) -> None:
        """Queue local events (one, or a list) as one ``events`` message.

        An event holding a value JSON cannot carry (NaN, infinity) costs itself:
        it is answered on ``errors`` as ``events[i].<field>``, the others are queued.
        ``reply(i, outcome)`` is called once per event ``i`` of ``events`` (its
        decision or error) from the worker thread, if given; for the events of a
        message dropped because the queue stayed full, from this thread, at once.

        Raises:
            InvalidInputError: The model takes no events (not ``accepted``), or
                ``events`` is neither an event nor a list of events.
        """
        if not accepted:
            raise InvalidInputError(
                "events", "this model does not score events (its bundle has no event graph)"
            )
        items = [events] if isinstance(events, Mapping) else events
        if not isinstance(items, list):
            raise InvalidInputError(
                "events", f"expected an event or a list of events, got {type(events).__name__}"
            )
        kept: list[tuple[int, Any]] = []
        for i, ev in enumerate(items):
            bad = _non_finite(ev) if isinstance(ev, Mapping) else None
            if bad is None:
                kept.append((i, ev))  # not an object: the worker answers it, naming events[i]
                continue
            why = "must be a finite number, not NaN/infinity"
            self.node.report_error(f"events[{i}].{bad}", why, Inbound.EVENTS)
            if reply is not None:
                reply(i, {"id": ev.get("id"), "error": {"field": bad, "message": why}})
        for i in range(0, len(kept), LOCAL_EVENTS_PER_MESSAGE):  # within max_payload_bytes
            chunk = kept[i : i + LOCAL_EVENTS_PER_MESSAGE]
            where = [k for k, _ in chunk]  # a chunk's event j is events[where[j]]
            payload = dumps({"events": [e for _, e in chunk]})
            limit = self.node.config.max_payload_bytes
            if reply is not None and len(payload) > limit:  # the worker would refuse it whole
                why = f"{len(payload)} bytes of events in one message; max_payload_bytes={limit}"
                _refuse(reply, items, where, "payload", why)
                continue
            back = None if reply is None else _renumbered(reply, where)
            if not self.enqueue(Inbound.EVENTS, payload, None, None, back) and reply is not None:
                # answered now: a caller waiting for them need not time out
                _refuse(reply, items, where, "queue", self._overloaded())

    def _own_topic(self, topic: str, payload: bytes) -> bool:
        """A message on the wire scheme's own topics (Sparkplug), handled here (True)."""
        node = self.node
        try:
            got = node.wire.receive(topic, payload, node.window_sensors())
        except InvalidInputError as exc:
            node.report_error(exc.field, str(exc))
            return True
        if got is None:
            return False
        for kind, body in got.items:
            self.enqueue(kind, body, None)
        if got.birth and node.link is not None:
            node.link.birth()
        return True


def _non_finite(event: Mapping[str, Any]) -> str | None:
    """The first field of ``event`` holding NaN or infinity (None: none does)."""
    for key, value in event.items():
        if isinstance(value, float) and not math.isfinite(value):
            return str(key)
    return None


def _refuse(reply: Reply, items: list[Any], where: list[int], field: str, why: str) -> None:
    """Answer events ``items[k]`` for each ``k`` in ``where`` with one error."""
    for k in where:
        eid = items[k].get("id") if isinstance(items[k], Mapping) else None
        reply(k, {"id": eid, "error": {"field": field, "message": why}})


def _renumbered(reply: Reply, where: list[int]) -> Reply:
    return lambda j, outcome: reply(where[j], outcome)


def take_batch(
    messages: queue.Queue[Message], max_batch: int, max_delay_ms: float, timeout: float
) -> list[Message]:
    """The worker's next batch: [] if nothing came within ``timeout`` s.

    After the first message, waits up to ``max_delay_ms`` from its arrival for
    ``max_batch`` messages, then takes what is queued (at most ``4 * max_batch``:
    a message may carry many events or rows).
    """
    try:
        batch = [messages.get(timeout=timeout)]
    except queue.Empty:
        return []
    if max_delay_ms > 0:
        deadline = batch[0].received + max_delay_ms / 1e3
        while len(batch) < max_batch and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(messages.get(timeout=left))
            except queue.Empty:
                break
    try:
        while len(batch) < max_batch * 4:
            batch.append(messages.get_nowait())
    except queue.Empty:
        pass
    return batch
