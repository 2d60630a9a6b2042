"""Several members of a broker cluster: which one the link talks to, and moving on.

A :class:`~edge_sdk.mqtt.config.BrokerConfig` with ``failover_urls`` names the
members of one broker cluster. :class:`Members` keeps the one the link uses now
and, when the connection to it is lost or cannot be made, points paho's own
reconnect loop at the next one: paho 2.x's ``connect_async(host, port, ...)``
may be called again from ``on_disconnect`` or ``on_connect_fail`` (it only sets
the address and the connect options; the loop thread's next ``reconnect()``
uses them). So the members are tried round and round with paho's back-off
(``reconnect_min_s`` doubling up to ``reconnect_max_s``, reset by a successful
CONNACK), and the link stays on the member that works: it does not go back to
the first one when that one returns.

The outbox guarantees do not depend on which member is on the other end: rows
leave the store only on a PUBACK (from whichever member sent it); paho re-sends
its unacknowledged publishes on the next connection, to the new member; and
after a connection that did not end cleanly the pump replays the rows acked in
the last ``replay_s`` seconds (a member that died may have acknowledged rows it
had not routed). Receivers drop the duplicates by message id.

With one URL nothing here acts: paho reconnects to it as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .config import BrokerConfig
from .delivery import LinkStats

__all__ = ["Members"]

log = logging.getLogger(__name__)


class Members:
    """The members of the broker (cluster) a link connects to, and which one is current.

    Args:
        broker: The link's broker config (``url`` first, then ``failover_urls``).
        stats: The link's counters: ``member`` (current URL) and ``failovers``.
        reconnect: Calls paho's ``connect_async`` with :attr:`current` (the link's).
        stopping: Set while the link stops: no move then.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        stats: LinkStats,
        reconnect: Callable[[], None],
        stopping: threading.Event,
    ) -> None:
        self.urls = broker.urls
        self._addresses = broker.members
        self._index = 0
        self._stats = stats
        self._reconnect = reconnect
        self._stopping = stopping
        stats.member = self.urls[0]

    @property
    def current(self) -> tuple[str, int]:
        """``(host, port)`` of the member to connect to now."""
        return self._addresses[self._index]

    def lost(self, reason: Any = None) -> None:
        """The connection ended (paho's ``on_disconnect``): go on with the next member."""
        self._move(f"lost the connection ({reason})" if reason is not None else "lost")

    def wrap_connect_fail(
        self, on_connect_fail: Callable[[Any, Any], None]
    ) -> Callable[[Any, Any], None]:
        """paho's ``on_connect_fail``: ``on_connect_fail`` first, then the next member."""

        def failed(client: Any, userdata: Any) -> None:
            on_connect_fail(client, userdata)  # inside paho's ``except OSError``: it reads it
            self._move("cannot connect")

        return failed

    def _move(self, why: str) -> None:
        if len(self._addresses) < 2 or self._stopping.is_set():
            return
        old = self.urls[self._index]
        self._index = (self._index + 1) % len(self._addresses)
        self._stats.member = self.urls[self._index]
        self._stats.failovers += 1
        log.warning(
            "broker member %s: %s; switching to %s (member %d of %d)",
            old,
            why,
            self._stats.member,
            self._index + 1,
            len(self._addresses),
        )
        self._reconnect()
