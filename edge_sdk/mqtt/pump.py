"""The link's outbox pump: stored rows to the broker, in ``seq`` order, flow-controlled.

Delivery guarantees:

* Every message from the outbox is published at QoS 1 (or as the link's scheme
  renders it) in ``seq`` order, at most ``inflight`` at a time; its row is
  marked delivered only when the broker's PUBACK arrives. A broker that is
  down, slow or unreachable just pauses the pump: rows wait on disk.
* paho re-sends its unacknowledged publishes itself after a reconnect, so the
  pump never publishes a row that is still in flight.
* A broker that crashes loses whatever it acknowledged but had not saved yet
  (mosquitto snapshots every ``autosave_interval``). So after any connection
  that ended without a clean DISCONNECT, the rows delivered in the last
  ``replay_s`` seconds are published again. Receivers drop the duplicates by
  message ``id``: delivery is at-least-once, never at-most-once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from .rows import PumpSettings, Row, RowStore
from .topics import check_topic

if TYPE_CHECKING:
    from paho.mqtt.client import MQTTMessageInfo

    from .delivery import LinkStats

log = logging.getLogger(__name__)

_PURGE_EVERY_S = 5.0
_NO_CONN = 4  # paho's MQTT_ERR_NO_CONN


class Pump:
    """Drains a :class:`~edge_sdk.mqtt.rows.RowStore` through a link's client.

    Args:
        store: The durable rows.
        settings: In-flight window and replay period.
        stats: The link's counters (published, acked, replayed...).
        connected: True while the link is connected and subscribed.
        send: Publishes one row; returns paho's handle, or None to hold it
            back (and the later rows under the same first topic level).
        cond: The link's condition: notified on every PUBACK and connect.
    """

    def __init__(
        self,
        store: RowStore,
        settings: PumpSettings,
        stats: LinkStats,
        connected: Callable[[], bool],
        send: Callable[[Row], MQTTMessageInfo | None],
        cond: threading.Condition,
    ) -> None:
        self.store = store
        self.settings = settings
        self.stats = stats
        self._connected = connected
        self._send = send
        self.cond = cond
        self.inflight: dict[int, MQTTMessageInfo] = {}  # store seq -> paho publish handle
        self._cursor = 0
        self._held: set[str] = set()  # topic roots with a row held back in this pass
        self._rescan = False  # start the next pass from the first pending row
        self._replay_needed = False
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wake(self) -> None:
        """New rows are waiting (or a PUBACK came)."""
        with self.cond:
            self.cond.notify_all()

    def rescan(self) -> None:
        """Look at every pending row again (held rows may go now)."""
        with self.cond:
            self._rescan = True
            self.cond.notify_all()

    def lost(self, clean: bool) -> None:
        """The connection ended; unless cleanly, replay the recent rows at the next one."""
        if not clean:
            with self.cond:
                self._replay_needed = True

    def reconnected(self) -> None:
        """Connected and subscribed again: replay if needed, then start from the first row.

        Called with :attr:`cond` held by the link.
        """
        if self._replay_needed:
            n = self.store.requeue_recent(self.settings.replay_s)
            self.stats.replayed += n
            if n:
                log.info("re-sending %d recently delivered messages after a lost link", n)
        self._replay_needed = False
        self._rescan = True  # requeued and never-sent rows; in-flight ones are skipped

    def flush_acks(self) -> None:
        """Mark rows whose PUBACK arrived as delivered (one store transaction)."""
        with self.cond:
            done = [seq for seq, info in self.inflight.items() if info.is_published()]
            for seq in done:
                del self.inflight[seq]
            self.stats.inflight = len(self.inflight)
        if done:
            self.store.ack(done)
            self.stats.acked += len(done)

    def _run(self) -> None:
        last_purge = time.monotonic()
        while not self.stopping.is_set():
            with self.cond:
                self.cond.wait(timeout=0.1)
            self.flush_acks()
            if time.monotonic() - last_purge > _PURGE_EVERY_S:
                self.store.purge()
                last_purge = time.monotonic()
            while self._connected() and not self.stopping.is_set():
                if not self._pass():
                    break
                self.flush_acks()

    def _pass(self) -> bool:
        """Publish what the window allows; False when nothing (more) can go now."""
        with self.cond:
            if self._rescan:  # applied between passes, never under a batch in progress
                self._rescan = False
                self._cursor = 0
                self._held.clear()
            busy = set(self.inflight)
            cursor = self._cursor
        room = self.settings.inflight - len(busy)
        if room <= 0:
            return False
        rows = self.store.pending(after=cursor, limit=room + len(busy))
        rows = [r for r in rows if r.seq not in busy][:room]
        if not rows:
            return False
        for row in rows:
            if self._refused(row):
                continue
            root = row.topic.split("/", 1)[0]
            # Never call paho while holding cond (the link's on_publish takes it under
            # paho's lock). A row after a held one of the same root waits too: each root
            # keeps its order.
            info = None if root in self._held else self._send(row)
            if info is not None and info.rc == _NO_CONN:
                # The connection dropped between our check and the publish: paho keeps the
                # message and sends it on the next connection (to whichever broker member).
                # Left as it is, ``is_published()`` would raise for ever.
                info.rc = 0  # type: ignore[assignment]  # MQTT_ERR_SUCCESS
            with self.cond:
                self._cursor = max(self._cursor, row.seq)
                if info is None:
                    self._held.add(root)
                else:
                    self.inflight[row.seq] = info
            if info is not None:
                self.stats.published += 1
        return True

    def _refused(self, row: Row) -> bool:
        """Drop a stored row whose topic the broker would refuse (True), counted and logged.

        Sent, it would cost the connection, and paho would send it again on every
        reconnect. It is marked done in the store so the pump never retries it
        (a replay after a lost link may offer it once more: refused again).
        """
        try:
            check_topic(row.topic)
        except InvalidInputError as exc:
            self.store.ack([row.seq])
            self.stats.refused_topics += 1
            log.error("dropped outbox row %d, never publishable: %s", row.seq, exc)
            return True
        return False
