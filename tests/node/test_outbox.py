"""The durable outbox: order, acks and replay, seq life, crash durability, size bound, safety."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_sdk.errors import ConfigError
from edge_sdk.node.outbox import (
    Outbox,
    OutboxStats,
    Outgoing,
    Priority,
    Stored,
    SyncPolicy,
)

T, R, C = Priority.TELEMETRY, Priority.RESULT, Priority.CONTROL
REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """Wall clock under the test's control."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def open_outbox(db: Path, clock: FakeClock) -> Iterator[Callable[..., Outbox]]:
    """Return ``open(**kwargs) -> Outbox`` on ``db`` with the fake clock; all closed at the end."""
    opened: list[Outbox] = []

    def make(**kwargs: object) -> Outbox:
        kwargs.setdefault("clock", clock)
        ob = Outbox(db, **kwargs)  # type: ignore[arg-type]
        opened.append(ob)
        return ob

    yield make
    for ob in opened:
        ob.close()


def row(prio: Priority = R, n: int = 9, topic: str = "t") -> Outgoing:
    """A message of ``len(topic) + n`` bytes (10 by default)."""
    return Outgoing(topic, b"x" * n, priority=prio)


def seqs_of(rows: list[Stored]) -> list[int]:
    return [r.seq for r in rows]


def db_state(path: Path) -> dict[str, object]:
    """What the file says, read through a separate connection."""
    con = sqlite3.connect(path)
    try:
        pending = con.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(topic AS BLOB)) + length(payload)), 0)"
            " FROM outbox WHERE acked IS NULL"
        ).fetchone()
        kept = con.execute("SELECT COUNT(*) FROM outbox WHERE acked IS NOT NULL").fetchone()[0]
        total = con.execute(
            "SELECT COALESCE(SUM(length(CAST(topic AS BLOB)) + length(payload)), 0) FROM outbox"
        ).fetchone()[0]
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        seqs = [s for (s,) in con.execute("SELECT seq FROM outbox ORDER BY seq")]
    finally:
        con.close()
    return {
        "pending": pending[0],
        "pending_bytes": pending[1],
        "kept": kept,
        "total_bytes": total,
        "meta": meta,
        "seqs": seqs,
    }


# -- order, payloads, seqs ------------------------------------------------------------------


def test_put_pending_round_trip(open_outbox: Callable[..., Outbox], clock: FakeClock) -> None:
    ob = open_outbox()
    a = ob.put(Outgoing("plant/n1/results", b"\x00\x01bin", qos=1, priority=R))
    clock.t = 1001.5
    b = ob.put(Outgoing("plant/n1/status", b"online", qos=0, retain=True, priority=C))
    c = ob.put(Outgoing("plant/n1/telemetry", b"{}", qos=2, priority=T))
    assert (a, b, c) == (1, 2, 3)
    assert ob.pending() == [
        Stored(1, "plant/n1/results", b"\x00\x01bin", 1, False, R, 1000.0),
        Stored(2, "plant/n1/status", b"online", 0, True, C, 1001.5),
        Stored(3, "plant/n1/telemetry", b"{}", 2, False, T, 1001.5),
    ]
    assert type(ob.pending()[0].priority) is Priority


def test_callable_payload_gets_its_seq_and_put_many_is_consecutive(
    open_outbox: Callable[..., Outbox],
) -> None:
    ob = open_outbox()
    assert ob.put(row()) == 1
    seqs = ob.put_many([Outgoing("t", lambda s: f'{{"id": {s}}}'.encode()) for _ in range(5)])
    assert seqs == [2, 3, 4, 5, 6]
    assert ob.put(Outgoing("t", bytearray(b"ba"))) == 7  # type: ignore[arg-type]
    rows = ob.pending()
    assert [r.payload for r in rows[1:6]] == [f'{{"id": {s}}}'.encode() for s in range(2, 7)]
    assert rows[6].payload == b"ba" and type(rows[6].payload) is bytes
    assert ob.put_many([]) == []


def test_put_many_is_one_transaction(open_outbox: Callable[..., Outbox], db: Path) -> None:
    ob = open_outbox()

    def boom(seq: int) -> bytes:
        raise RuntimeError("serialiser failed")

    items = [row(), row(), Outgoing("t", boom), row()]
    with pytest.raises(RuntimeError, match="serialiser failed"):
        ob.put_many(items)
    with pytest.raises(TypeError, match="must return bytes"):
        ob.put_many([row(), Outgoing("t", lambda s: "text")])  # type: ignore[arg-type,return-value]
    assert ob.pending() == []
    assert ob.stats().total_bytes == 0
    assert db_state(db)["seqs"] == []
    assert ob.put(row()) == 1  # the failed batches consumed no seq


def test_state_is_committed_with_the_messages_or_not_at_all(
    open_outbox: Callable[..., Outbox], db: Path
) -> None:
    ob = open_outbox()
    assert ob.state("windows") is None
    assert ob.put_many([row()], state={"windows": b"v1"}) == [1]
    assert ob.put_many([], state={"windows": b"v2"}) == []  # state alone, no seq used

    def boom(seq: int) -> bytes:
        raise RuntimeError("serialiser failed")

    with pytest.raises(RuntimeError):
        ob.put_many([row(), Outgoing("t", boom)], state={"windows": b"v3"})
    assert ob.state("windows") == b"v2"  # rolled back with the messages
    ob.close()
    reopened = open_outbox()
    assert reopened.state("windows") == b"v2"
    assert reopened.put(row()) == 2
    assert db_state(db)["meta"]["next_seq"] == 3


def test_an_outbox_made_before_the_state_table_gains_it(
    open_outbox: Callable[..., Outbox], db: Path
) -> None:
    first = open_outbox()
    first.put(row())
    first.close()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE state")  # as an outbox written by an earlier release
    con.commit()
    con.close()
    ob = open_outbox()
    assert ob.state("windows") is None
    assert ob.put_many([row()], state={"windows": b"w"}) == [2]
    assert ob.state("windows") == b"w" and seqs_of(ob.pending()) == [1, 2]


def test_pending_paging(open_outbox: Callable[..., Outbox]) -> None:
    ob = open_outbox()
    ob.put_many([row() for _ in range(10)])
    assert seqs_of(ob.pending(after=3, limit=4)) == [4, 5, 6, 7]
    assert seqs_of(ob.pending(after=8)) == [9, 10]
    assert ob.pending(after=10) == []
    with pytest.raises(ValueError, match="limit"):
        ob.pending(limit=0)


# -- ack, replay, purge ------------------------------------------------------------------------


def test_ack_marks_delivered_and_keeps_rows(open_outbox: Callable[..., Outbox], db: Path) -> None:
    ob = open_outbox()
    ob.put_many([row(n=9 + i) for i in range(6)])  # sizes 10..15
    assert ob.ack([2, 4, 4, 99, -1]) == 2  # duplicates once, unknown ignored
    assert ob.ack([2]) == 0
    assert ob.ack(iter([])) == 0
    assert seqs_of(ob.pending()) == [1, 3, 5, 6]
    s = ob.stats()
    assert (s.pending, s.pending_bytes, s.kept, s.total_bytes) == (4, 10 + 12 + 14 + 15, 2, 75)
    on_disk = db_state(db)
    assert (on_disk["pending"], on_disk["kept"], on_disk["total_bytes"]) == (4, 2, 75)


def test_requeue_recent_brings_back_only_recent_acks_in_seq_order(
    open_outbox: Callable[..., Outbox], clock: FakeClock
) -> None:
    ob = open_outbox(replay_s=30.0)
    ob.put_many([row() for _ in range(6)])
    clock.t = 1000.0
    ob.ack([1, 4])
    clock.t = 1020.0
    ob.ack([5, 2])
    clock.t = 1025.0
    ob.ack([3])
    clock.t = 1040.0
    assert ob.requeue_recent(within_s=25.0) == 3  # acked at >= 1015: 2, 3, 5
    assert seqs_of(ob.pending()) == [2, 3, 5, 6]
    assert ob.requeue_recent() == 0  # default window 30 s: 1 and 4 were acked at 1000
    clock.t = 1029.0
    assert ob.requeue_recent() == 2
    assert seqs_of(ob.pending()) == [1, 2, 3, 4, 5, 6]
    s = ob.stats()
    assert (s.pending, s.kept, s.pending_bytes) == (6, 0, 60)
    with pytest.raises(ValueError, match="within_s"):
        ob.requeue_recent(-1.0)


def test_purge_deletes_only_old_acked_rows(
    open_outbox: Callable[..., Outbox], clock: FakeClock, db: Path
) -> None:
    ob = open_outbox(replay_s=10.0)
    ob.put_many([row() for _ in range(4)])
    clock.t = 1000.0
    ob.ack([1, 2])
    clock.t = 1008.0
    ob.ack([3])
    clock.t = 1012.0
    assert ob.purge() == 2
    assert db_state(db)["seqs"] == [3, 4]
    assert ob.purge() == 0
    s = ob.stats()
    assert (s.pending, s.kept, s.total_bytes) == (1, 1, 20)
    clock.t = 1019.0
    assert ob.purge() == 1
    assert db_state(db)["seqs"] == [4]
    assert seqs_of(ob.pending()) == [4]


def test_seq_never_reused_after_deletes_and_restart(
    open_outbox: Callable[..., Outbox], clock: FakeClock, db: Path
) -> None:
    ob = open_outbox(replay_s=1.0)
    assert ob.put_many([row() for _ in range(5)]) == [1, 2, 3, 4, 5]
    assert ob.ack(range(1, 6)) == 5
    clock.t += 2
    assert ob.purge() == 5
    assert db_state(db)["seqs"] == []
    ob.close()
    ob = open_outbox(replay_s=1.0)
    assert ob.put(row()) == 6
    ob.close()
    with sqlite3.connect(db) as con:  # even if the rows of higher seqs were deleted by hand
        con.execute("DELETE FROM outbox")
    con.close()
    assert open_outbox().put(row()) == 7


_CHILD = """
import os, signal, sys
from edge_sdk.node.outbox import Outbox, Outgoing, Priority
ob = Outbox(sys.argv[1], sync=sys.argv[2])
n = 0
while n < 500:
    k = min(1 + n % 9, 500 - n)
    ob.put_many([Outgoing("plant/r", ("row-%d" % (n + i)).encode()) for i in range(k)])
    n += k
print("stored", n, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_rows_survive_sigkill_of_the_process(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db), "normal"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "stored 500"
    wal = Path(f"{db}-wal")
    assert wal.exists() and wal.stat().st_size > 0  # killed before any clean checkpoint
    with Outbox(db) as ob:
        rows = ob.pending(limit=1000)
        assert seqs_of(rows) == list(range(1, 501))
        assert [r.payload for r in rows] == [f"row-{i}".encode() for i in range(500)]
        assert ob.stats().pending == 500
        assert ob.put(row()) == 501


# -- size bound ------------------------------------------------------------------------------


def test_telemetry_dropped_before_results_oldest_first(open_outbox: Callable[..., Outbox]) -> None:
    ob = open_outbox(max_bytes=100)
    ob.put_many([row(T if i % 2 else R) for i in range(1, 11)])  # odd seqs T, even R
    assert ob.stats().total_bytes == 100
    assert ob.put(row(R)) == 11
    assert seqs_of(ob.pending()) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # oldest telemetry went
    ob.put_many([row(R) for _ in range(4)])
    assert seqs_of(ob.pending()) == [2, 4, 6, 8, 10, 11, 12, 13, 14, 15]
    ob.put(row(R))  # no telemetry left: the oldest result of the same priority goes
    assert seqs_of(ob.pending()) == [4, 6, 8, 10, 11, 12, 13, 14, 15, 16]
    s = ob.stats()
    assert s.dropped_by_priority == {"telemetry": 5, "result": 1, "control": 0}
    assert (s.dropped, s.total_bytes, s.pending) == (6, 100, 10)


def test_kept_rows_are_deleted_before_any_pending_row(
    open_outbox: Callable[..., Outbox], clock: FakeClock
) -> None:
    ob = open_outbox(max_bytes=100, replay_s=600.0)
    ob.put_many([row(T) for _ in range(5)])
    clock.t = 1001.0
    ob.ack([3])
    clock.t = 1002.0
    ob.ack([1])
    clock.t = 1003.0
    ob.ack([2])
    ob.put_many([row(R) for _ in range(5)])  # 100 bytes: full
    ob.put(row(T))
    assert ob.requeue_recent(within_s=1e6) == 2  # 3 (oldest ack) was deleted; 1 and 2 remain
    assert seqs_of(ob.pending()) == [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    ob.ack([1, 2])
    ob.put_many([row(C), row(C)])
    assert seqs_of(ob.pending()) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert ob.stats().dropped == 0  # deleting delivered rows is not a drop
    ob.put(row(R))
    assert seqs_of(ob.pending())[0] == 5  # now pending telemetry goes
    assert ob.stats().dropped_by_priority == {"telemetry": 1, "result": 0, "control": 0}


def test_more_important_rows_are_never_dropped_for_less_important_ones(
    open_outbox: Callable[..., Outbox],
) -> None:
    ob = open_outbox(max_bytes=100)
    ob.put_many([row(C) for _ in range(10)])
    assert ob.put(row(T)) == 11  # dropped itself
    assert ob.put(row(R)) == 12  # dropped itself
    assert seqs_of(ob.pending()) == list(range(1, 11))
    assert ob.stats().dropped_by_priority == {"telemetry": 1, "result": 1, "control": 0}
    ob.put(row(C))  # control may replace the oldest control
    assert seqs_of(ob.pending()) == [*range(2, 11), 13]
    assert ob.stats().dropped_by_priority == {"telemetry": 1, "result": 1, "control": 1}


def test_nothing_is_deleted_when_dropping_cannot_make_room(
    open_outbox: Callable[..., Outbox],
) -> None:
    ob = open_outbox(max_bytes=100)
    ob.put_many([row(T), row(T)] + [row(C) for _ in range(8)])
    ob.put(row(T, n=29))  # needs 30 bytes, only 20 of telemetry could go
    assert seqs_of(ob.pending()) == list(range(1, 11))
    assert ob.stats().dropped_by_priority == {"telemetry": 1, "result": 0, "control": 0}
    ob.put(row(R, n=19))  # 20 bytes: both telemetry rows go
    assert seqs_of(ob.pending()) == [*range(3, 11), 12]
    assert ob.stats().dropped_by_priority == {"telemetry": 3, "result": 0, "control": 0}


def test_oversized_item_is_dropped_and_counted(
    open_outbox: Callable[..., Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    ob = open_outbox(max_bytes=100)
    ob.put_many([row(T) for _ in range(3)])
    with caplog.at_level(logging.WARNING, logger="edge_sdk.node.outbox"):
        assert ob.put(row(C, n=100)) == 4  # 101 bytes > max_bytes; no exception
    assert seqs_of(ob.pending()) == [1, 2, 3]  # and nothing was evicted for it
    s = ob.stats()
    assert s.dropped_by_priority == {"telemetry": 0, "result": 0, "control": 1}
    assert s.total_bytes == 30
    assert "larger than max_bytes" in caplog.text
    assert ob.put(row(C, n=99)) == 5  # exactly max_bytes fits, evicting everything else
    assert seqs_of(ob.pending()) == [5]


def test_drop_counters_persist_across_reopen(open_outbox: Callable[..., Outbox]) -> None:
    ob = open_outbox(max_bytes=50)
    ob.put_many([row(T) for _ in range(5)] + [row(R) for _ in range(5)] + [row(C, n=60)])
    before = ob.stats()
    assert before.dropped_by_priority == {"telemetry": 5, "result": 0, "control": 1}
    ob.close()
    ob = open_outbox(max_bytes=50)
    assert ob.stats() == before
    ob.put(row(T))  # dropped: only results are stored
    assert ob.stats().dropped_by_priority == {"telemetry": 6, "result": 0, "control": 1}
    assert ob.stats().dropped == 7


def test_reopen_with_smaller_bound_trims_in_drop_order(
    open_outbox: Callable[..., Outbox], db: Path
) -> None:
    ob = open_outbox(max_bytes=1000)
    ob.put_many([row(C), row(T), row(R), row(T), row(C), row(R)])
    ob.ack([5])
    ob.close()
    ob = open_outbox(max_bytes=30)
    assert seqs_of(ob.pending()) == [1, 3, 6]  # kept 5, then telemetry 2 and 4 went
    s = ob.stats()
    assert (s.total_bytes, s.kept, s.dropped_by_priority["telemetry"]) == (30, 0, 2)
    assert db_state(db)["total_bytes"] == 30


def test_total_bytes_never_exceeds_bound_and_matches_the_file(
    open_outbox: Callable[..., Outbox], clock: FakeClock, db: Path
) -> None:
    rng = random.Random(7)
    max_bytes = 500
    ob = open_outbox(max_bytes=max_bytes, replay_s=5.0)
    drops = 0
    for step in range(300):
        clock.t += rng.random()
        op = rng.random()
        if op < 0.6:
            items = [
                Outgoing(
                    f"t/{rng.randrange(10)}",
                    b"p" * rng.randrange(0, 80),
                    priority=rng.choice(list(Priority)),
                )
                for _ in range(rng.randrange(1, 8))
            ]
            ob.put_many(items)
        elif op < 0.85:
            pend = seqs_of(ob.pending(limit=1000))
            ob.ack(rng.sample(pend, k=len(pend) // 2))
        elif op < 0.95:
            ob.purge()
        else:
            ob.requeue_recent(rng.random() * 5)
        s = ob.stats()
        assert s.total_bytes <= max_bytes, step
        assert s.dropped >= drops
        drops = s.dropped
        if step % 25 == 0 or step == 299:
            f = db_state(db)
            assert (s.pending, s.pending_bytes, s.kept, s.total_bytes) == (
                f["pending"],
                f["pending_bytes"],
                f["kept"],
                f["total_bytes"],
            ), step
            meta = f["meta"]
            assert isinstance(meta, dict)
            assert {k: meta[f"dropped.{k}"] for k in s.dropped_by_priority} == s.dropped_by_priority
    assert drops > 0  # the bound was exercised


def test_one_warning_per_burst_of_drops(
    open_outbox: Callable[..., Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    ob = open_outbox(max_bytes=100)
    ob.put_many([row(T) for _ in range(10)])
    with caplog.at_level(logging.INFO, logger="edge_sdk.node.outbox"):
        for _ in range(20):
            ob.put(row(T))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "full" in warnings[0].getMessage()
        ob.ack(seqs_of(ob.pending()))
        ob.put(row(T))  # evicts a delivered row: no drop, the burst ends
        assert "20 message(s) were dropped" in caplog.text
        ob.put_many([row(T) for _ in range(9)])
        ob.put(row(T))  # a new burst
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
    assert ob.stats().dropped == 21


# -- refusing what is not an outbox, arguments -------------------------------------------------


def test_garbage_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    data = b"not a database at all\n" * 300
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        Outbox(path)
    assert str(path) in str(err.value) and "Move the file away" in str(err.value)
    assert path.read_bytes() == data
    assert not Path(f"{path}-wal").exists()


def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users (name) VALUES ('ada')")
    con.commit()
    con.close()
    data = path.read_bytes()
    with pytest.raises(ConfigError, match=r"not an edge-node outbox .*tables: users"):
        Outbox(path)
    assert path.read_bytes() == data
    # an empty file, on the other hand, is a valid empty database
    empty = tmp_path / "empty.db"
    empty.touch()
    with Outbox(empty) as ob:
        assert ob.put(row()) == 1


def test_unknown_schema_version_is_refused(open_outbox: Callable[..., Outbox], db: Path) -> None:
    open_outbox().close()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    con.close()
    data = db.read_bytes()
    with pytest.raises(ConfigError, match="schema version 99"):
        Outbox(db)
    assert db.read_bytes() == data


def test_second_owner_is_refused(open_outbox: Callable[..., Outbox], db: Path) -> None:
    ob = open_outbox()
    with pytest.raises(ConfigError, match="already open"):
        Outbox(db)
    ob.close()
    with Outbox(db) as again:
        assert again.put(row()) == 1


def test_creates_parent_directory_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "edge" / "outbox.db"
    with Outbox(path, sync="full") as ob:
        ob.put(row())
        assert ob._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


@pytest.mark.parametrize(
    ("sync", "level"), [("full", 2), ("NORMAL", 1), (SyncPolicy.NORMAL, 1), (SyncPolicy.OFF, 0)]
)
def test_sync_policy_sets_synchronous(db: Path, sync: SyncPolicy | str, level: int) -> None:
    with Outbox(db, sync=sync) as ob:
        assert ob._conn.execute("PRAGMA synchronous").fetchone()[0] == level


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_bytes": -5}, "max_bytes"),
        ({"sync": "fast"}, "sync must be one of full, normal, off"),
        ({"replay_s": -1.0}, "replay_s"),
        ({"replay_s": float("nan")}, "replay_s"),
    ],
)
def test_invalid_outbox_arguments(db: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Outbox(db, **kwargs)  # type: ignore[arg-type]
    assert not db.exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"qos": 3}, ValueError, "qos must be 0, 1 or 2"),
        ({"qos": -1}, ValueError, "qos"),
        ({"topic": ""}, ValueError, "non-empty"),
        ({"topic": "a/+/b"}, ValueError, "wildcard"),
        ({"topic": "a/#"}, ValueError, "wildcard"),
        ({"priority": 7}, ValueError, "priority"),
        ({"payload": "text"}, TypeError, "encode"),
    ],
)
def test_invalid_messages(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {"topic": "t", "payload": b"x", **kwargs}
    with pytest.raises(error, match=match):
        Outgoing(**args)  # type: ignore[arg-type]


def test_priority_given_as_int_is_normalised() -> None:
    assert Outgoing("t", b"", priority=2).priority is Priority.CONTROL  # type: ignore[arg-type]


def test_close_is_idempotent_and_final(db: Path) -> None:
    with Outbox(db) as ob:
        ob.put(row())
    ob.close()
    with pytest.raises(RuntimeError, match="closed"):
        ob.put(row())
    with pytest.raises(RuntimeError, match="closed"):
        ob.stats()


def test_stats_shape(open_outbox: Callable[..., Outbox]) -> None:
    ob = open_outbox(max_bytes=1234)
    assert ob.stats() == OutboxStats(
        pending=0,
        pending_bytes=0,
        kept=0,
        total_bytes=0,
        dropped=0,
        dropped_by_priority={"telemetry": 0, "result": 0, "control": 0},
        max_bytes=1234,
    )


# -- threads ---------------------------------------------------------------------------------


def test_concurrent_put_and_ack_lose_nothing(open_outbox: Callable[..., Outbox]) -> None:
    ob = open_outbox()
    total = 2000
    produced: list[int] = []
    seen: list[int] = []
    acked = 0
    errors: list[BaseException] = []
    done = threading.Event()

    def producer() -> None:
        rng = random.Random(1)
        try:
            while len(produced) < total:
                k = min(rng.randrange(1, 10), total - len(produced))
                if k == 1:
                    produced.append(ob.put(row()))
                else:
                    produced.extend(ob.put_many([row() for _ in range(k)]))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def consumer() -> None:
        nonlocal acked
        cursor = 0
        try:
            while acked < total and not done.is_set():
                rows = ob.pending(after=cursor, limit=64)
                if not rows:
                    time.sleep(0.001)
                    continue
                cursor = rows[-1].seq
                seen.extend(r.seq for r in rows)
                acked += ob.ack(r.seq for r in rows)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    threads[0].join(timeout=30)
    threads[1].join(timeout=30)
    done.set()
    assert not errors
    assert acked == total
    assert produced == list(range(1, total + 1))
    assert seen == produced  # each row read once, in order
    assert ob.ack(produced) == 0  # every seq was acked exactly once
    s = ob.stats()
    assert (s.pending, s.kept, s.dropped) == (0, total, 0)
