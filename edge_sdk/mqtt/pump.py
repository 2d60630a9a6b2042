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
* PUBACKs are written to the store in groups (at most ``_ACK_EVERY_S`` late, or
  at once when half the in-flight window is taken): one SQLite
  transaction per group instead of per row. A row whose PUBACK is not written yet
  stays pending on disk, so a crash re-sends it (a duplicate, dropped by ``id``);
  before a replay the PUBACKs that came are written first, so the replay covers
  those rows too.
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
#: Longest a PUBACK waits to be written to the store (grouped with the next ones).
_ACK_EVERY_S = 0.05
_NO_CONN = 4  # paho's MQTT_ERR_NO_CONN
_AGAIN = -1  # paho's MQTT_ERR_AGAIN (not sent yet)


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
        self._kicked = False  # new rows were stored since the last pass began
        self._more = False  # the last pass may have left rows behind (window full)
        self._acks_due = 0.0  # monotonic time by which the PUBACKs that came are written
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
        """New rows are waiting: the next pass runs even if the pump is not waiting now."""
        with self.cond:
            self._kicked = True
            self.cond.notify_all()

    def puback(self) -> None:
        """A PUBACK came: wake the pump only when it must act on it now.

        The first one not written yet starts its group's clock (the pump then
        sleeps until it is due); the later ones of the group wake nobody, unless
        half the window is taken. One thread switch per group, not per row.
        """
        with self.cond:
            if not self._acks_due or 2 * len(self.inflight) >= self.settings.inflight:
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
            # Rows whose PUBACK came before the link was lost are delivered: written
            # now, they are among the recent rows replayed (else they would be skipped
            # as in flight and never replayed).
            done = self._take_done()
            if done:
                self.store.ack(done)
                self.stats.acked += len(done)
            n = self.store.requeue_recent(self.settings.replay_s)
            self.stats.replayed += n
            if n:
                log.info("re-sending %d recently delivered messages after a lost link", n)
        self._replay_needed = False
        self._rescan = True  # requeued and never-sent rows; in-flight ones are skipped

    def awaiting(self) -> int:
        """Rows published and not acknowledged by the broker yet."""
        with self.cond:
            return sum(1 for info in self.inflight.values() if _outcome(info) == 0)

    def flush_acks(self) -> None:
        """Mark rows whose PUBACK arrived as delivered (one store transaction)."""
        with self.cond:
            done = self._take_done()
        if done:
            self.store.ack(done)
            with self.cond:
                self.stats.acked += len(done)

    def _take_done(self) -> list[int]:
        """Take the rows whose PUBACK came out of the window (``cond`` held)."""
        done: list[int] = []
        for seq, info in list(self.inflight.items()):
            outcome = _outcome(info)
            if outcome:
                del self.inflight[seq]
            if outcome > 0:
                done.append(seq)
            elif outcome < 0:  # paho gave it up (a QoS 0 row when the link dropped): again
                self._rescan = True
        self.stats.inflight = len(self.inflight)
        self._acks_due = 0.0
        return done

    def _flush_due(self) -> float | None:
        """Write the PUBACKs now if due; else how long they may still wait (None: none came).

        Due ``_ACK_EVERY_S`` after the first unwritten one was seen, or at once when
        half the window is taken (the rows it frees let the next ones go).
        """
        with self.cond:
            now = time.monotonic()
            roomy = 2 * len(self.inflight) < self.settings.inflight
            if not self._acks_due:
                if not any(_outcome(info) for info in self.inflight.values()):
                    return None
                self._acks_due = now + _ACK_EVERY_S
            wait = self._acks_due - now
        if wait > 0 and roomy:
            return wait
        self.flush_acks()
        return None

    def _run(self) -> None:
        last_purge = time.monotonic()
        ack_wait: float | None = None
        last_query = 0.0
        while not self.stopping.is_set():
            with self.cond:
                # A PUBACK only wakes the pump to count its row delivered; the store is
                # queried again only when rows may be waiting: new ones were stored
                # (``wake``), a rescan, a pass that left rows behind, or the periodic
                # tick. One pending query per stored message instead of three.
                tick = 0.1 if ack_wait is None else min(0.1, ack_wait)
                if not self._kicked:
                    self.cond.wait(timeout=tick)
                query = self._kicked or self._rescan or self._more
                self._kicked = False
            if time.monotonic() - last_query >= 0.1:  # the tick: acks waiting or not
                query = True
            ack_wait = self._flush_due()
            if time.monotonic() - last_purge > _PURGE_EVERY_S:
                self.store.purge()
                last_purge = time.monotonic()
            while query and self._connected() and not self.stopping.is_set():
                last_query = time.monotonic()
                query = self._pass()
                ack_wait = self._flush_due()
        self.flush_acks()

    def _pass(self) -> bool:
        """Publish what the window allows; True when more rows may be waiting now."""
        with self.cond:
            if self._rescan:  # applied between passes, never under a batch in progress
                self._rescan = False
                self._cursor = 0
                self._held.clear()
            busy = set(self.inflight)
            cursor = self._cursor
            self._more = False
        room = self.settings.inflight - len(busy)
        if room <= 0:
            with self.cond:
                self._more = True  # the next PUBACK makes room: query then
            return False
        limit = room + len(busy)
        fetched = self.store.pending(after=cursor, limit=limit)
        rows = [r for r in fetched if r.seq not in busy][:room]
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
        # A short answer drained every pending row after the cursor: rows stored since
        # then set ``_kicked`` (``wake``), so no second query is needed to find them.
        return len(fetched) >= limit

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


def _outcome(info: MQTTMessageInfo) -> int:
    """1: the broker has it (PUBACK, or a QoS 0 row written); 0: waiting; -1: paho gave it up.

    ``is_published()`` raises for the last (a QoS 0 row still queued when the
    connection dropped is marked lost and published): it is stored again, not lost.
    """
    if info.rc not in (0, _AGAIN):
        return -1
    return 1 if info.is_published() else 0
