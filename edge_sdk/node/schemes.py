"""The node's topic schemes: what its link calls, and how the node's messages map to topics.

Two strategies with one surface, picked once when the node is made:

* :class:`JsonNodeScheme` (``scheme: json``): ``edge/{group}/{node}/...``
  topics, QoS 1, persistent sessions, the retained ``status`` with a ``lost``
  will and an ``offline`` goodbye;
* :class:`~edge_sdk.node.sparkplug.SparkplugSession` (``scheme: sparkplug``):
  results, alerts and telemetry as Sparkplug B DDATA/NDATA, NCMD as commands,
  the rest on the JSON topics.

Each is a :class:`~edge_sdk.mqtt.scheme.Scheme` for the link (will, render,
births, goodbye) and gives the node :meth:`~JsonNodeScheme.subscriptions`,
:meth:`~JsonNodeScheme.row` (an outgoing message) and
:meth:`~JsonNodeScheme.receive` (its own incoming topics).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..mqtt.scheme import Message, PlainScheme, Scheme, Will
from ..mqtt.topics import Inbound, JsonScheme, Outbound
from .outbox import Outgoing, Priority


@dataclass
class Received:
    """What a scheme made of one of its own incoming messages.

    Attributes:
        items: Messages for the node's worker, as ``(kind, JSON payload)``.
        birth: Births are due now (the primary host came back).
    """

    items: list[tuple[Inbound, bytes]] = field(default_factory=list)
    birth: bool = False


class NodeScheme(Scheme, Protocol):
    """A scheme as the node uses it (beyond what the link calls)."""

    def subscriptions(self) -> list[tuple[str, int]]:
        """Every topic filter the node subscribes to."""
        ...

    def row(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing:
        """The outbox row of one message the node produced."""
        ...

    def receive(
        self, topic: str, payload: bytes, sensors: Collection[str] | None
    ) -> Received | None:
        """One of this scheme's own incoming messages (None: a JSON topic of the node).

        Args:
            sensors: The sensors of the running model's windows (None: it takes none).

        Raises:
            InvalidInputError: A malformed message of the scheme's own.
        """
        ...


class JsonNodeScheme(PlainScheme):
    """The JSON topics of one node (``edge/{group}/{node}/{kind}``).

    Args:
        topics: The node's topic names and envelopes.
        status: The ``status`` payload of a state (``lost``, ``online``, ``offline``).
    """

    def __init__(self, topics: JsonScheme, status: Callable[[str], bytes]) -> None:
        self.topics = topics
        self._status = status
        super().__init__(Will(topics.topic(Outbound.STATUS), status("lost")))

    def topic(self, kind: Outbound) -> str:
        return self.topics.topic(kind)

    def subscriptions(self) -> list[tuple[str, int]]:
        return self.topics.subscriptions()

    def row(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing:
        topics = self.topics
        return Outgoing(
            topics.topic(kind),
            lambda seq: topics.envelope(kind, body, seq),
            qos=1,
            priority=priority,
        )

    def receive(
        self, topic: str, payload: bytes, sensors: Collection[str] | None
    ) -> Received | None:
        return None

    def goodbye(self) -> list[Message]:
        """The retained ``offline`` status, last before an intentional disconnect."""
        topic = self.topics.topic(Outbound.STATUS)
        return [Message(topic, self._status("offline"), qos=1, retain=True)]
