"""The outbox pump's store traffic: PUBACKs written in groups, one query per stored row.

* Against a real mosquitto: rows stored one at a time (each with a ``wake``, as the
  node's worker does) are all delivered, in order, while the pump writes their
  PUBACKs in groups and queries the store about once per row, not three times.
* Without a broker, on the real pump and outbox: a row whose PUBACK came but was
  not written yet when the link was lost is replayed with the recent rows (the
  grouping never shortens the replay).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from paho.mqtt.client import MQTTMessageInfo

from edge_sdk.mqtt.config import BrokerConfig
from edge_sdk.mqtt.delivery import LinkStats
from edge_sdk.mqtt.link import MqttLink
from edge_sdk.mqtt.pump import Pump
from edge_sdk.mqtt.rows import DefaultPump, Row
from edge_sdk.node.outbox import Outbox, Outgoing, Stored

ROWS = 200


class CountingOutbox(Outbox):
    """The real outbox, counting the pump's queries and PUBACK transactions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.queries = 0
        self.ack_calls = 0
        self.acked_rows = 0

    def pending(self, after: int = 0, limit: int = 256) -> list[Stored]:
        self.queries += 1
        return super().pending(after, limit)

    def ack(self, seqs: Iterable[int]) -> int:
        self.ack_calls += 1
        n = super().ack(seqs)
        self.acked_rows += n
        return n


def test_rows_stored_one_by_one_are_delivered_with_grouped_acks(
    broker, tmp_path, mqtt_client_factory
):
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("plant/#", qos=1)
    outbox = CountingOutbox(tmp_path / "outbox.sqlite")
    link = MqttLink(BrokerConfig(url=broker.url), client_id="pump-node", outbox=outbox)
    try:
        link.start()
        assert link.wait_connected(10)
        t0 = time.monotonic()
        for k in range(ROWS):
            outbox.put(Outgoing(f"plant/n1/{k % 3}", f"row {k}".encode()))
            link.wake()
        msgs = cloud.wait_for(ROWS, timeout=30)
        deadline = time.monotonic() + 10
        while outbox.stats().pending and time.monotonic() < deadline:
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        assert outbox.stats().pending == 0
        assert link.stats.acked == ROWS == outbox.acked_rows
    finally:
        link.stop()
        outbox.close()
    got = [int(m.payload.split()[1]) for m in msgs]
    assert sorted(got) == list(range(ROWS))
    for root in range(3):  # each topic keeps its order
        mine = [k for k in got if k % 3 == root]
        assert mine == sorted(mine)
    # Grouped: a PUBACK waits up to 50 ms for the next ones (the rows went out in far
    # less than 50 ms each), so far fewer transactions than rows.
    assert outbox.ack_calls <= ROWS // 4, (outbox.ack_calls, elapsed)
    # One query per stored row at most, plus the pump's periodic 0.1 s tick.
    assert outbox.queries <= ROWS + elapsed / 0.1 + 10, (outbox.queries, elapsed)


def test_a_puback_not_written_yet_is_replayed_after_a_lost_link(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.put_many([Outgoing(f"plant/n1/{k}", f"row {k}".encode()) for k in range(3)])
    handles: dict[int, MQTTMessageInfo] = {}

    def send(row: Row) -> MQTTMessageInfo:
        handles[row.seq] = MQTTMessageInfo(row.seq)
        return handles[row.seq]

    stats = LinkStats()
    pump = Pump(outbox, DefaultPump(), stats, lambda: True, send, threading.Condition())
    try:
        assert pump._pass() is False  # all three published; nothing more stored
        assert stats.published == 3 and outbox.stats().pending == 3
        handles[1]._set_as_published()  # its PUBACK came: delivered, not written yet
        pump.flush_acks()  # written: delivered in the store
        handles[2]._set_as_published()  # its PUBACK came, then the link is lost
        pump.lost(clean=False)
        with pump.cond:
            pump.reconnected()
        # Rows 1 and 2 were delivered (the broker may have lost them: replayed);
        # row 3 was never acknowledged: still in flight, paho re-sends it.
        assert stats.acked == 2
        assert stats.replayed == 2
        assert [r.seq for r in outbox.pending()] == [1, 2, 3]
        assert set(pump.inflight) == {3}
        assert pump._pass() is False  # the replayed rows go again; row 3 is not doubled
        assert stats.published == 5
        assert set(pump.inflight) == {1, 2, 3}
    finally:
        outbox.close()
