"""What the link's pump needs of a durable store of outgoing messages.

The node's :class:`edge_sdk.node.outbox.Outbox` is one; the link depends on
these protocols only, so the MQTT layer never imports the node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


class Row(Protocol):
    """One stored message, as the store hands it to the pump."""

    @property
    def seq(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...


class RowStore(Protocol):
    """A store the pump drains in ``seq`` order (see :mod:`edge_sdk.node.outbox`)."""

    def pending(self, after: int = 0, limit: int = 256) -> Sequence[Row]: ...
    def ack(self, seqs: Iterable[int]) -> int: ...
    def requeue_recent(self, within_s: float | None = None) -> int: ...
    def purge(self) -> int: ...


class PumpSettings(Protocol):
    """Flow control and replay of the pump (the node's ``outbox:`` config)."""

    @property
    def inflight(self) -> int: ...
    @property
    def replay_s(self) -> float: ...


@dataclass(frozen=True)
class DefaultPump:
    """The pump settings when none are given (those of the node's default config)."""

    inflight: int = 64
    replay_s: float = 30.0
