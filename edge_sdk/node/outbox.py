"""Durable on-disk outbox of the edge node (store-and-forward).

Every message the node publishes (results, alerts, status, OTA progress,
telemetry) is first committed to the outbox, a SQLite database in WAL mode,
and only then sent. The sender thread reads :meth:`Outbox.pending` rows in
``seq`` order, publishes them with QoS 1 and calls :meth:`Outbox.ack` when
the broker's PUBACK arrives, so nothing is lost while the network is down,
while the broker restarts or when the node process is killed.

Sequence numbers
    ``seq`` is strictly increasing over the outbox's whole life and never
    reused, even after every row was deleted and the node restarted: the
    counter lives in the ``meta`` table and is committed together with the
    rows. A payload may be a callable that receives its row's ``seq``, so the
    message can carry its own id; the cloud de-duplicates by that id.

Durability (fsync policy, :class:`SyncPolicy`)
    ``normal`` (default)
        WAL journal with ``PRAGMA synchronous=NORMAL``. A commit is written to
        the WAL file but not fsynced; the WAL is fsynced only when it is
        checkpointed into the database. Every ``put`` / ``put_many`` that
        returned survives a crash or SIGKILL of the node process (the data
        is in the kernel's page cache). A power loss or kernel crash may
        lose the commits made since the last checkpoint, never corrupt the
        database.
    ``full``
        WAL journal with ``PRAGMA synchronous=FULL``. The WAL is fsynced on
        every commit, that is once per ``put`` / ``put_many`` / ``ack`` call
        (never per row), so every call that returned also survives a power
        loss. It costs one fsync per call, slow on SD cards and eMMC: batch
        puts with :meth:`Outbox.put_many`.
    ``off``
        ``PRAGMA synchronous=OFF``: no fsync at all. A crash of the operating
        system may lose or corrupt the database. For tests and benchmarks
        only.

Replay window
    An acked row is not deleted at once: it is kept for ``replay_s`` seconds.
    A broker killed with SIGKILL loses the messages it received since its
    last snapshot (mosquitto writes its state every ``autosave_interval``)
    although it had already sent their PUBACK; after such a crash
    :meth:`Outbox.requeue_recent` makes the rows acked in the last
    ``replay_s`` seconds pending again, and the cloud drops the duplicates.
    :meth:`Outbox.purge`, called periodically by the sender, deletes acked
    rows older than that. Ack times come from the wall clock: after a step of
    the clock (a device without an RTC syncing NTP) the window is off by the
    step, which only decides how long delivered rows are kept.

Size bound and drop policy
    ``max_bytes`` bounds the sum of ``len(topic encoded as UTF-8) +
    len(payload)`` over all stored rows, pending and kept (acked). It is not
    the file size: SQLite adds per-row and per-page overhead, and freed pages
    are reused rather than returned to the file system. When storing an item
    would exceed the bound, room is made in this order:

    1. Kept (acked) rows are deleted, the oldest acknowledgement first. They
       were delivered already, so this is not counted as a drop.
    2. Pending rows are dropped, the lowest priority first and, within a
       priority, the oldest (smallest ``seq``) first: ``TELEMETRY``, then
       ``RESULT``, then ``CONTROL``, but never a row of a higher priority
       than the incoming item's own.
    3. If steps 1 and 2 together cannot make enough room, nothing is deleted
       and the incoming item itself is dropped instead.

    An item larger than ``max_bytes`` on its own is dropped. Dropping never
    raises (a node must not crash because its uplink is down): the dropped
    item still consumes the ``seq`` that ``put`` returns, but never appears
    in :meth:`Outbox.pending`. Every dropped row, stored or incoming, is
    counted per priority in persisted counters (:attr:`OutboxStats.dropped`,
    :attr:`OutboxStats.dropped_by_priority`). One warning is logged per burst
    of drops, at the first call that drops; the next call that stores
    without dropping ends the burst and logs (at INFO) how many rows it
    dropped. Reopening an outbox with a smaller ``max_bytes`` trims it at
    open in the same order, where any priority may be dropped.

Consumer state committed with the messages
    :meth:`Outbox.put_many` takes an optional ``state`` mapping of named
    blobs, written in the same transaction as the messages and read back with
    :meth:`Outbox.state`. The node keeps its sensor-window buffer there: a
    batch's results and the input samples it left buffered become durable
    together, and only then does the node acknowledge the batch's MQTT input
    (see :mod:`edge_sdk.mqtt.link`). The ``state`` table was added to schema
    version 1 without a version change: it is created on open when missing,
    and older releases ignore it.

Ownership and threads
    One process owns an outbox at a time: it holds an exclusive ``flock`` on
    ``<path>.lock`` (released by the kernel even on SIGKILL), and a second
    :class:`Outbox` on the same path, in this or another process, raises
    :class:`~edge_sdk.errors.ConfigError`. Within the process, an
    :class:`Outbox` is thread-safe: one SQLite connection guarded by a lock,
    so the inference thread puts while the sender thread reads and acks.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from ..errors import ConfigError
from ..mqtt.topics import check_topic

__all__ = ["Outbox", "OutboxStats", "Outgoing", "Priority", "Stored", "SyncPolicy"]

log = logging.getLogger(__name__)

#: Version of the on-disk schema; an outbox with another version is refused.
SCHEMA_VERSION: Final = 1
#: ``PRAGMA application_id`` of an outbox file ("EGOB": edge-graph outbox).
_APPLICATION_ID: Final = 0x45474F42
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: Most ``?`` parameters in one statement (old SQLite builds allow 999).
_CHUNK: Final = 500
#: The WAL file is truncated to this size after a checkpoint.
_WAL_SIZE_LIMIT: Final = 8 << 20

_SCHEMA: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID",
    # seq is the rowid; it is assigned from meta.next_seq, never by SQLite.
    # acked is NULL while the row is pending, else the time its PUBACK came.
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        created REAL NOT NULL,
        acked REAL,
        size INTEGER NOT NULL
    )""",
    # pending rows in seq order; kept rows by ack time (purge, requeue, eviction)
    "CREATE INDEX outbox_acked_seq ON outbox (acked, seq)",
    # drop order of pending rows
    "CREATE INDEX outbox_drop_order ON outbox (priority, seq) WHERE acked IS NULL",
)
#: Named blobs committed together with messages (``put_many(state=...)``).
_STATE_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
    " WITHOUT ROWID"
)


class SyncPolicy(StrEnum):
    """When SQLite fsyncs the outbox (see the module documentation)."""

    FULL = "full"
    """``synchronous=FULL``: fsync on every commit; survives a power loss."""
    NORMAL = "normal"
    """WAL + ``synchronous=NORMAL``: survives a process crash or SIGKILL; a power
    loss may lose the last commits."""
    OFF = "off"
    """No fsync at all: tests and benchmarks only."""


class Priority(IntEnum):
    """Priority of a message; when the outbox is full the lowest is dropped first."""

    TELEMETRY = 0
    """Periodic metrics: dropped first."""
    RESULT = 1
    """Inference results."""
    CONTROL = 2
    """Alerts, status, OTA progress: dropped last."""


@dataclass(frozen=True)
class Outgoing:
    """A message to store and publish.

    Attributes:
        topic: MQTT topic to publish to (checked by
            :func:`edge_sdk.mqtt.topics.check_topic`: no wildcards, NUL or
            control characters, not ``$...``, at most 65,535 bytes).
        payload: The bytes to publish, or a callable that receives the row's
            ``seq`` and returns them (so the payload can carry its own
            message id). The callable runs while the outbox is locked: keep it
            cheap (serialisation only).
        qos: MQTT QoS level, 0, 1 or 2.
        retain: MQTT retain flag.
        priority: Drop order when the outbox is full.

    Raises:
        ValueError: If the topic, QoS or priority is invalid.
        TypeError: If the payload is neither bytes nor callable.
    """

    topic: str
    payload: bytes | Callable[[int], bytes]
    qos: int = 1
    retain: bool = False
    priority: Priority = Priority.RESULT

    def __post_init__(self) -> None:
        # The node's one topic check (an InvalidInputError is a ValueError): a row the
        # broker would refuse is never stored, so it can never be retried for ever.
        check_topic(self.topic)
        if isinstance(self.qos, bool) or self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {self.qos!r}")
        if not callable(self.payload) and not isinstance(
            self.payload, bytes | bytearray | memoryview
        ):
            raise TypeError(
                f"payload for topic {self.topic!r} must be bytes or a callable returning "
                f"bytes, got {type(self.payload).__name__} (encode text first)"
            )
        try:
            priority = Priority(self.priority)
        except ValueError:
            names = ", ".join(f"{p.name}={p.value}" for p in Priority)
            raise ValueError(f"priority must be one of {names}, got {self.priority!r}") from None
        object.__setattr__(self, "priority", priority)


@dataclass(frozen=True)
class Stored:
    """A row of the outbox, as :meth:`Outbox.pending` returns it.

    Attributes:
        seq: Strictly increasing over the outbox's whole life, never reused.
        topic: MQTT topic.
        payload: The payload bytes (a callable payload already evaluated).
        qos: MQTT QoS level.
        retain: MQTT retain flag.
        priority: Drop order when the outbox is full.
        created: ``time.time()`` (the outbox's clock) when the row was put.
    """

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    priority: Priority
    created: float


@dataclass(frozen=True)
class OutboxStats:
    """Counters of an outbox.

    Attributes:
        pending: Rows not yet acked.
        pending_bytes: Bytes (topic + payload) of the pending rows.
        kept: Acked rows kept for replay.
        total_bytes: Bytes (topic + payload) of all stored rows; never more
            than ``max_bytes``.
        dropped: Rows dropped by the size bound over the outbox's whole life.
        dropped_by_priority: ``dropped`` split by priority name, e.g.
            ``{"telemetry": 3, "result": 0, "control": 0}``.
        max_bytes: The size bound.
    """

    pending: int
    pending_bytes: int
    kept: int
    total_bytes: int
    dropped: int
    dropped_by_priority: dict[str, int]
    max_bytes: int


@dataclass
class _Counters:
    """In-memory mirror of the table's sizes, rolled back with a failed transaction."""

    next_seq: int = 1
    pending_count: list[int] = field(default_factory=lambda: [0] * len(Priority))
    pending_bytes: list[int] = field(default_factory=lambda: [0] * len(Priority))
    kept_count: int = 0
    kept_bytes: int = 0
    dropped: list[int] = field(default_factory=lambda: [0] * len(Priority))

    def copy(self) -> _Counters:
        return _Counters(
            self.next_seq,
            list(self.pending_count),
            list(self.pending_bytes),
            self.kept_count,
            self.kept_bytes,
            list(self.dropped),
        )

    @property
    def total_bytes(self) -> int:
        return self.kept_bytes + sum(self.pending_bytes)


@dataclass
class _Drops:
    """Rows dropped by one call."""

    by_priority: list[int] = field(default_factory=lambda: [0] * len(Priority))
    oversized: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_priority)


_Row = tuple[int, str, bytes, int, int, int, float, int]


class Outbox:
    """Durable, size-bounded, thread-safe outbox (see the module documentation).

    Args:
        path: The SQLite file; created with its parent directory if absent.
        max_bytes: Bound on the topic + payload bytes of all stored rows.
        sync: The fsync policy, a :class:`SyncPolicy` or its value.
        replay_s: How long acked rows are kept for :meth:`requeue_recent`.
        clock: Source of wall-clock time (``time.time``); tests inject one.

    Raises:
        ConfigError: If an argument is invalid, the file is not an outbox (or
            has an unknown schema version), it cannot be created, or another
            :class:`Outbox` holds it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = 64 << 20,
        sync: SyncPolicy | str = SyncPolicy.NORMAL,
        replay_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError(f"outbox max_bytes must be a positive integer, got {max_bytes!r}")
        if not isinstance(replay_s, int | float) or not math.isfinite(replay_s) or replay_s < 0:
            raise ConfigError(
                f"outbox replay_s must be a finite number of seconds >= 0, got {replay_s!r}"
            )
        self._sync = _parse_sync(sync)
        self._path = Path(os.fspath(path))
        self._max_bytes = max_bytes
        self._replay_s = float(replay_s)
        self._clock = clock
        self._mutex = threading.Lock()
        self._counters = _Counters()
        self._burst_drops = 0
        self._closed = False

        _prepare_file(self._path)
        self._lock_file = _acquire_lock(self._path)
        try:
            try:
                self._conn = sqlite3.connect(
                    self._path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise ConfigError(f"{self._path}: cannot open the outbox: {exc}") from exc
            try:
                self._open_schema()
                self._load_counters()
                self._enforce_bound()
            except BaseException:
                self._conn.close()
                raise
        except BaseException:
            if self._lock_file is not None:
                self._lock_file.close()
            raise

    # -- public API ------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The outbox's SQLite file."""
        return self._path

    @property
    def max_bytes(self) -> int:
        """Bound on the topic + payload bytes of all stored rows."""
        return self._max_bytes

    @property
    def replay_s(self) -> float:
        """How long acked rows are kept for :meth:`requeue_recent`."""
        return self._replay_s

    def put(self, item: Outgoing) -> int:
        """Store one message (one transaction).

        Args:
            item: The message.

        Returns:
            Its ``seq``. If the size bound dropped the item, the seq is
            consumed anyway and never appears in :meth:`pending`.

        Raises:
            TypeError: If ``item`` is not an :class:`Outgoing` or a callable
                payload returns something other than bytes.
            sqlite3.Error: If the disk fails (full, read-only); nothing is stored.
        """
        return self.put_many((item,))[0]

    def put_many(
        self, items: Sequence[Outgoing], state: Mapping[str, bytes] | None = None
    ) -> list[int]:
        """Store messages in one transaction: all of them or, on error, none.

        Args:
            items: The messages, in publishing order.
            state: Named blobs to replace in the same transaction (see
                :meth:`state`); committed even when ``items`` is empty.

        Returns:
            Their ``seq`` numbers: consecutive, in the order of ``items``
            (including those of items the size bound dropped).

        Raises:
            TypeError: If an item is not an :class:`Outgoing` or a callable
                payload returns something other than bytes.
            sqlite3.Error: If the disk fails (full, read-only); nothing is stored.
        """
        items = tuple(items)
        for item in items:
            if not isinstance(item, Outgoing):
                raise TypeError(f"expected Outgoing items, got {type(item).__name__}")
        if not items and not state:
            return []
        now = self._clock()
        drops = _Drops()
        seqs: list[int] = []
        with self._mutex:
            self._check_open()
            c = self._counters
            with self._transaction():
                if state:
                    self._conn.executemany(
                        # An upsert rewrites the value in place; REPLACE (delete + insert)
                        # doubled the cost of a batch commit (measured: +50 us vs +5 us).
                        "INSERT INTO state (key, value) VALUES (?, ?)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [(str(k), bytes(v)) for k, v in state.items()],
                    )
                rows: list[_Row] = []
                for item in items:
                    seq = c.next_seq
                    c.next_seq += 1
                    seqs.append(seq)
                    payload = _payload_of(item, seq)
                    size = len(item.topic.encode("utf-8")) + len(payload)
                    prio = int(item.priority)
                    if size > self._max_bytes:
                        drops.oversized += 1
                        self._count_drop(drops, prio)
                    elif not self._make_room(size, prio, rows, drops):
                        self._count_drop(drops, prio)
                    else:
                        rows.append(
                            (seq, item.topic, payload, item.qos, int(item.retain), prio, now, size)
                        )
                        c.pending_count[prio] += 1
                        c.pending_bytes[prio] += size
                self._flush(rows)
                self._write_meta(next_seq=bool(items), dropped=drops.total > 0)
            if items:
                self._log_drops(drops)
        return seqs

    def state(self, key: str) -> bytes | None:
        """The blob last committed under ``key`` by :meth:`put_many` (None: never)."""
        with self._mutex:
            self._check_open()
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def pending(self, after: int = 0, limit: int = 256) -> list[Stored]:
        """Return unacked rows with ``seq > after``, in ascending ``seq`` order.

        Args:
            after: Only rows after this seq (the sender's cursor; reset it to 0
                after :meth:`requeue_recent`).
            limit: At most this many rows.

        Returns:
            The rows.

        Raises:
            ValueError: If ``limit`` is not positive.
        """
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit!r}")
        with self._mutex:
            self._check_open()
            rows = self._conn.execute(
                "SELECT seq, topic, payload, qos, retain, priority, created FROM outbox"
                " WHERE acked IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (int(after), int(limit)),
            ).fetchall()
        return [
            Stored(seq, topic, bytes(payload), qos, bool(retain), Priority(prio), created)
            for seq, topic, payload, qos, retain, prio, created in rows
        ]

    def ack(self, seqs: Iterable[int]) -> int:
        """Mark rows delivered; they are kept for replay until :meth:`purge`.

        Args:
            seqs: The delivered rows' seq numbers; unknown, dropped and
                already acked ones are ignored.

        Returns:
            How many rows changed from pending to acked.
        """
        wanted = sorted({int(s) for s in seqs})
        if not wanted:
            return 0
        now = self._clock()
        changed = 0
        with self._mutex:
            self._check_open()
            c = self._counters
            with self._transaction():
                for start in range(0, len(wanted), _CHUNK):
                    chunk = wanted[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    found = self._conn.execute(
                        f"SELECT seq, size, priority FROM outbox"
                        f" WHERE acked IS NULL AND seq IN ({marks})",
                        chunk,
                    ).fetchall()
                    if not found:
                        continue
                    marks = ",".join("?" * len(found))
                    self._conn.execute(
                        f"UPDATE outbox SET acked = ? WHERE seq IN ({marks})",
                        [now, *(seq for seq, _, _ in found)],
                    )
                    for _, size, prio in found:
                        c.pending_count[prio] -= 1
                        c.pending_bytes[prio] -= size
                        c.kept_count += 1
                        c.kept_bytes += size
                    changed += len(found)
        return changed

    def requeue_recent(self, within_s: float | None = None) -> int:
        """Make rows acked in the last ``within_s`` seconds pending again.

        Called after the broker lost messages it had acknowledged. The rows
        come back in their original seq order; the sender must restart its
        :meth:`pending` cursor from 0.

        Args:
            within_s: The window; defaults to ``replay_s``.

        Returns:
            How many rows became pending.

        Raises:
            ValueError: If ``within_s`` is negative.
        """
        window = self._replay_s if within_s is None else float(within_s)
        if not window >= 0:
            raise ValueError(f"within_s must be >= 0, got {within_s!r}")
        cutoff = self._clock() - window
        with self._mutex:
            self._check_open()
            c = self._counters
            with self._transaction():
                groups = self._conn.execute(
                    "SELECT priority, COUNT(*), SUM(size) FROM outbox"
                    " WHERE acked >= ? GROUP BY priority",
                    (cutoff,),
                ).fetchall()
                if not groups:
                    return 0
                self._conn.execute("UPDATE outbox SET acked = NULL WHERE acked >= ?", (cutoff,))
                for prio, count, size in groups:
                    c.pending_count[prio] += count
                    c.pending_bytes[prio] += size
                    c.kept_count -= count
                    c.kept_bytes -= size
        return sum(count for _, count, _ in groups)

    def purge(self) -> int:
        """Delete acked rows acked more than ``replay_s`` seconds ago.

        Returns:
            How many rows were deleted.
        """
        cutoff = self._clock() - self._replay_s
        with self._mutex:
            self._check_open()
            c = self._counters
            with self._transaction():
                count, size = self._conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE acked < ?",
                    (cutoff,),
                ).fetchone()
                if count:
                    self._conn.execute("DELETE FROM outbox WHERE acked < ?", (cutoff,))
                    c.kept_count -= count
                    c.kept_bytes -= size
        return int(count)

    def stats(self) -> OutboxStats:
        """Return the outbox's counters (from memory: cheap).

        Returns:
            The counters.
        """
        with self._mutex:
            self._check_open()
            c = self._counters
            return OutboxStats(
                pending=sum(c.pending_count),
                pending_bytes=sum(c.pending_bytes),
                kept=c.kept_count,
                total_bytes=c.total_bytes,
                dropped=sum(c.dropped),
                dropped_by_priority={p.name.lower(): c.dropped[p] for p in Priority},
                max_bytes=self._max_bytes,
            )

    def close(self) -> None:
        """Close the database and release the lock; closing twice is harmless."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            finally:
                if self._lock_file is not None:
                    self._lock_file.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"max_bytes={self._max_bytes}"
        return f"Outbox({str(self._path)!r}, {state}, sync={self._sync.value})"

    # -- opening ---------------------------------------------------------------------------

    def _not_an_outbox(self, why: str) -> ConfigError:
        return ConfigError(
            f"{self._path} is not an edge-node outbox ({why}); refusing to overwrite it. "
            "Move the file away (or configure another outbox path) and start the node again."
        )

    def _open_schema(self) -> None:
        conn = self._conn
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {
                name
                for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        except sqlite3.DatabaseError as exc:
            raise self._not_an_outbox(f"SQLite cannot read it: {exc}") from exc
        fresh = app_id == 0 and not tables
        if not fresh and (app_id != _APPLICATION_ID or not {"meta", "outbox"} <= tables):
            what = ", ".join(sorted(tables)) or "none"
            raise self._not_an_outbox(
                f"a SQLite database of another application; application_id={app_id:#x}, "
                f"tables: {what}"
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ConfigError(
                f"{self._path}: SQLite cannot use a write-ahead log there (journal mode "
                f"{mode!r}); put the outbox on a local file system"
            )
        conn.execute(f"PRAGMA synchronous = {self._sync.value.upper()}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        if fresh:
            with self._transaction():
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("next_seq", 1)]
                    + [(_drop_key(p), 0) for p in Priority],
                )
                conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{self._path}: outbox schema version {version!r} is not supported (this "
                f"edge-graph-sdk reads version {SCHEMA_VERSION}); it was written by another "
                "release. Upgrade the SDK, or move the file away to start an empty outbox."
            )
        conn.execute(_STATE_TABLE)  # added within version 1: outboxes made before lack it

    def _load_counters(self) -> None:
        conn = self._conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        (max_seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()
        c = self._counters
        c.next_seq = max(int(meta.get("next_seq", 1)), max_seq + 1)
        c.dropped = [int(meta.get(_drop_key(p), 0)) for p in Priority]
        for is_pending, prio, count, size in conn.execute(
            "SELECT acked IS NULL, priority, COUNT(*), SUM(size) FROM outbox GROUP BY 1, 2"
        ):
            if is_pending:
                c.pending_count[prio] += count
                c.pending_bytes[prio] += size
            else:
                c.kept_count += count
                c.kept_bytes += size

    def _enforce_bound(self) -> None:
        """Trim an outbox reopened with a smaller ``max_bytes``."""
        if self._counters.total_bytes <= self._max_bytes:
            return
        drops = _Drops()
        with self._transaction():
            self._make_room(0, Priority.CONTROL, [], drops)
            self._write_meta(next_seq=False, dropped=drops.total > 0)
        self._log_drops(drops)

    # -- internals -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the outbox {self._path} is closed")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; on error it rolls back, in memory too."""
        saved = self._counters.copy()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._counters = saved
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def _flush(self, rows: list[_Row]) -> None:
        if rows:
            self._conn.executemany(
                "INSERT INTO outbox (seq, topic, payload, qos, retain, priority, created, size)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            rows.clear()

    def _write_meta(self, *, next_seq: bool, dropped: bool) -> None:
        c = self._counters
        values: list[tuple[str, int]] = []
        if next_seq:
            values.append(("next_seq", c.next_seq))
        if dropped:
            values.extend((_drop_key(p), c.dropped[p]) for p in Priority)
        if values:
            self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values)

    def _count_drop(self, drops: _Drops, prio: int) -> None:
        drops.by_priority[prio] += 1
        self._counters.dropped[prio] += 1

    def _make_room(self, size: int, prio: int, rows: list[_Row], drops: _Drops) -> bool:
        """Free room for ``size`` more bytes by the drop policy.

        Args:
            size: Bytes about to be stored (at most ``max_bytes``).
            prio: Priority of the incoming item: no pending row above it is dropped.
            rows: Accepted rows not yet inserted (written first, so they can be dropped).
            drops: Per-call drop counts to update.

        Returns:
            False if the room cannot be made (nothing was deleted then).
        """
        c = self._counters
        need = c.total_bytes + size - self._max_bytes
        if need <= 0:
            return True
        if c.kept_bytes + sum(c.pending_bytes[: prio + 1]) < need:
            return False
        self._flush(rows)
        need -= self._evict(need, None, drops)
        if need > 0:
            self._evict(need, prio, drops)
        return True

    def _evict(self, need: int, max_prio: int | None, drops: _Drops) -> int:
        """Delete rows until ``need`` bytes are freed; return the bytes freed.

        ``max_prio`` None deletes kept rows, oldest ack first (not a drop);
        otherwise pending rows of priority <= max_prio, lowest priority then
        oldest first, counted as drops.
        """
        if max_prio is None:
            query = "SELECT seq, size, -1 FROM outbox WHERE acked IS NOT NULL"
            query += " ORDER BY acked, seq LIMIT ?"
            params: tuple[int, ...] = ()
        else:
            query = "SELECT seq, size, priority FROM outbox INDEXED BY outbox_drop_order"
            query += " WHERE acked IS NULL AND priority <= ?"
            query += " ORDER BY priority, seq LIMIT ?"
            params = (max_prio,)
        c = self._counters
        freed = 0
        batch = 16  # a full outbox usually frees one or two rows per put
        while freed < need:
            found = self._conn.execute(query, (*params, batch)).fetchall()
            if not found:
                break
            victims: list[tuple[int]] = []
            for seq, size, prio in found:
                victims.append((seq,))
                freed += size
                if prio < 0:
                    c.kept_count -= 1
                    c.kept_bytes -= size
                else:
                    c.pending_count[prio] -= 1
                    c.pending_bytes[prio] -= size
                    self._count_drop(drops, prio)
                if freed >= need:
                    break
            self._conn.executemany("DELETE FROM outbox WHERE seq = ?", victims)
            batch = _CHUNK
        return freed

    def _log_drops(self, drops: _Drops) -> None:
        if drops.total == 0:
            if self._burst_drops:
                log.info(
                    "outbox %s stores messages again; %d message(s) were dropped while it was full",
                    self._path,
                    self._burst_drops,
                )
                self._burst_drops = 0
            return
        if not self._burst_drops:
            counts = ", ".join(
                f"{n} {p.name.lower()}" for p, n in zip(Priority, drops.by_priority, strict=True)
            )
            oversized = (
                f" ({drops.oversized} larger than max_bytes on its own)" if drops.oversized else ""
            )
            log.warning(
                "outbox %s is full (max_bytes=%d): dropped %s message(s)%s; lowest priority and "
                "oldest first. Further drops are not logged until it stores messages again; "
                "see stats().dropped",
                self._path,
                self._max_bytes,
                counts,
                oversized,
            )
        self._burst_drops += drops.total


def _parse_sync(sync: SyncPolicy | str) -> SyncPolicy:
    try:
        return SyncPolicy(sync.lower() if isinstance(sync, str) else sync)
    except ValueError:
        choices = ", ".join(p.value for p in SyncPolicy)
        raise ConfigError(f"outbox sync must be one of {choices}, got {sync!r}") from None


def _drop_key(prio: Priority) -> str:
    return f"dropped.{prio.name.lower()}"


def _payload_of(item: Outgoing, seq: int) -> bytes:
    payload = item.payload(seq) if callable(item.payload) else item.payload
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise TypeError(
        f"the payload callable for topic {item.topic!r} must return bytes, "
        f"got {type(payload).__name__}"
    )


def _prepare_file(path: Path) -> None:
    """Create the parent directory; refuse a path that is clearly not an outbox."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; the outbox path must name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the outbox directory: {exc}") from exc
    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the outbox: {exc}") from exc
    if head and head != _SQLITE_MAGIC:  # an empty file is a valid empty database
        raise ConfigError(
            f"{path} is not an edge-node outbox (not a SQLite database); refusing to overwrite "
            "it. Move the file away (or configure another outbox path) and start the node again."
        )


def _acquire_lock(path: Path) -> IO[bytes] | None:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (None where flock is missing)."""
    if sys.platform == "win32":  # pragma: no cover - nodes run Linux
        return None
    import fcntl

    lock_path = path.with_name(path.name + ".lock")
    try:
        fh = lock_path.open("ab")
    except OSError as exc:
        raise ConfigError(f"{lock_path}: cannot create the outbox lock file: {exc}") from exc
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise ConfigError(
            f"{path}: the outbox is already open (in this or another process); one node owns "
            "an outbox: stop the other node, or configure another outbox path"
        ) from None
    except OSError as exc:  # a file system without flock (some network mounts)
        log.debug("cannot lock %s (%s); continuing without the single-owner check", lock_path, exc)
    return fh
