"""The link's small value types: a received message to acknowledge, and the link's counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One received message, to acknowledge with :meth:`MqttLink.ack` once it is safe.

    Attributes:
        mid: The MQTT packet id.
        qos: The QoS it arrived with (0 needs no acknowledgement).
        dup: The broker's DUP flag: it may have been delivered before.
        connection: Which connection of the link received it.
    """

    mid: int
    qos: int
    dup: bool
    connection: int


@dataclass
class LinkStats:
    """Counters of the link (read by telemetry)."""

    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    published: int = 0
    acked: int = 0
    replayed: int = 0
    rejected: int = 0
    inflight: int = 0
    protocol: str = ""
    refused_topics: int = 0  # outbox rows dropped: their topic is not publishable
    received: int = 0
    acks_sent: int = 0
    acks_stale: int = 0
    member: str = ""  # the broker URL (cluster member) the link uses now
    failovers: int = 0  # moves to another member (edge_sdk.mqtt.failover)
