"""The in-memory event graph a node keeps: one request subgraph per incoming event.

As-of rule: the subgraph (and the tabular row) of an event at time ``t`` sees
only events ingested before it with a stored time ``< t``; building a request
never changes the store, and ingesting later events never changes a subgraph
already built (its arrays are copies). Memory is bounded: an entity remembers
at most ``max_history`` events, none older than ``horizon_s``, and an entity
idle for longer than ``horizon_s`` is dropped.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import OrderedDict
from operator import itemgetter
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .features import Encoder, Entity, ParsedEvent, entity_stats
from .spec import EventGraphSpec
from .subgraph import Subgraph

_log1p = math.log1p
_eid = itemgetter(0)  # of a remembered event record (id, stored time, frozen row, entity keys)
_time = itemgetter(1)


class EventGraphStore:
    """Ingests a time-ordered event stream and builds each event's k-hop subgraph.

    Args:
        spec: Which fields are entities, attributes and time (the bundle's
            ``manifest.event_graph``).

    Example:
        >>> store = EventGraphStore(spec)
        >>> sg = store.score_request(event)  # request() then ingest(): the stream path
        >>> runtime.infer(sg.inputs(["x", "edge_index"]))
    """

    def __init__(self, spec: EventGraphSpec) -> None:
        self.spec = spec
        self._enc = Encoder(spec)
        self._entities: OrderedDict[str, Entity] = OrderedDict()  # least recently active first
        self._latest = -math.inf
        self._ingested = 0
        self._next_uid = 0

    # ----- the public path -----

    def request(self, event: dict[str, Any]) -> Subgraph:
        """The subgraph of ``event`` as of its time; the event is not ingested.

        Raises:
            InvalidInputError: A missing or malformed field (named), or a time
                older than the latest ingested event beyond ``time_tolerance_s``.
        """
        ev = self._parse(event)
        return self._build(ev, self._event_block(ev))[0]

    def ingest(self, event: dict[str, Any]) -> None:
        """Remember ``event`` (its row frozen with the context as of its time).

        Raises:
            InvalidInputError: As :meth:`request`.
        """
        ev = self._parse(event)
        block = self._event_block(ev)
        enc = self._enc
        self._insert(ev, enc.pack_row(*enc.event_head, *block, *enc.stats_zeros, *enc.center_zeros))

    def score_request(self, event: dict[str, Any]) -> Subgraph:
        """:meth:`request` then :meth:`ingest`, sharing the work: the stream path."""
        ev = self._parse(event)
        sg, row = self._build(ev, self._event_block(ev))
        self._insert(ev, row)
        return sg

    def tabular(self, event: dict[str, Any]) -> np.ndarray:
        """The non-graph baseline's features of ``event`` (as :attr:`Subgraph.tabular`).

        The event block then each role's entity statistics (zeros for an
        absent role), float32 ``[spec.num_tabular_features]``, as of its time.
        """
        ev = self._parse(event)
        row = self._event_block(ev)
        for key in ev.keys:
            row += self._stats(key, ev.t)
        return np.array(row, dtype=np.float32)

    # ----- introspection (tests, metrics) -----

    @property
    def latest_t(self) -> float | None:
        """Stored time of the latest ingested event (None before the first)."""
        return None if self._ingested == 0 else self._latest

    @property
    def num_ingested(self) -> int:
        """Events ingested so far."""
        return self._ingested

    @property
    def num_entities(self) -> int:
        """Entities remembered now."""
        return len(self._entities)

    def history_length(self, entity: str) -> int:
        """Events remembered for ``entity`` (a node key, ``"device:d5"``); 0 if unknown."""
        ent = self._entities.get(entity)
        return 0 if ent is None else len(ent.times)

    def max_history_length(self) -> int:
        """The longest entity history remembered now (bounded by ``max_history``)."""
        return max((len(e.times) for e in self._entities.values()), default=0)

    # ----- internals -----

    def _parse(self, event: Any) -> ParsedEvent:
        ev = self._enc.parse(event)
        tol = self.spec.time_tolerance_s
        if ev.t < self._latest - tol:
            raise InvalidInputError(
                self.spec.time_field,
                f"{ev.t} is older than the latest ingested event ({self._latest}) by more than "
                f"time_tolerance_s={tol}: events must arrive in time order",
            )
        return ev

    def _stats(self, key: str | None, t: float) -> list[float]:
        ent = None if key is None else self._entities.get(key)
        return entity_stats(ent, t, self.spec.horizon_s)

    def _event_block(self, ev: ParsedEvent) -> list[float]:
        """The event's attributes plus its context as of its time (actor age, novelty)."""
        t, horizon = ev.t, self.spec.horizon_s
        actor = self._entities.get(ev.keys[0])  # type: ignore[arg-type]  # never None
        block = list(ev.attrs)
        if actor is None:
            block += (0.0, 0.0, 0.0)
            partners = None
        else:
            lo, hi = actor.window(t, horizon)
            if hi > lo:
                age = t - actor.first_seen
                block += (1.0, _log1p(age) if age > 0.0 else 0.0, _log1p(t - actor.times[hi - 1]))
            else:
                block += (0.0, 0.0, 0.0)
            partners = actor.partners
        for i in range(1, len(ev.keys)):
            key = ev.keys[i]
            if key is None:
                block += (0.0, 0.0)
                continue
            p = None if partners is None else partners.get((i, key))
            new = p is None or p[1] >= t or p[2] < t - horizon
            block += (1.0, 1.0 if new else 0.0)
        return block

    def _build(self, ev: ParsedEvent, block: list[float]) -> tuple[Subgraph, bytes]:
        """The subgraph of ``ev`` (and its frozen row): event, entities, their recent events."""
        enc, spec, t = self._enc, self.spec, ev.t
        row = enc.pack_row(*enc.event_head, *block, *enc.stats_zeros, *enc.center_zeros)
        rows, keys = [row], ["event:" + ev.id]
        tab = list(block)
        # one entry per event-entity link: event node, entity node, role, event time, event id
        lk_ev: list[int] = []
        lk_ent: list[int] = []
        lk_role: list[int] = []
        lk_t: list[float] = []
        lk_id: list[str] = []
        hop1: list[tuple[Entity, int, tuple[int, int]]] = []
        seen: set[str] = set()
        for i, key in enumerate(ev.keys):
            if key is None:
                tab += enc.stats_zeros
                continue
            ent = self._entities.get(key)
            bounds = None if ent is None else ent.window(t, spec.horizon_s)
            stats = entity_stats(ent, t, spec.horizon_s, bounds)
            tab += stats
            if key in seen:  # one node (and link) per entity, whatever roles it plays
                continue
            seen.add(key)
            n = len(rows)
            rows.append(enc.pack_row(*enc.entity_head[enc.role_type[i]], *stats, *enc.center_zeros))
            keys.append(key)
            lk_ev.append(0)
            lk_ent.append(n)
            lk_role.append(i)
            if ent is not None and bounds is not None and spec.hops >= 2:
                hop1.append((ent, n, bounds))
        if enc.center_width:  # node 0 also carries the tabular row's per-role statistics
            rows[0] = enc.pack_row(
                *enc.event_head, *block, *enc.stats_zeros, *tab[enc.event_width :]
            )
        lk_t += [t] * len(lk_ev)
        lk_id += [ev.id] * len(lk_ev)
        events: dict[str, int] = {}
        fanout = spec.fanout
        for ent, n, (lo, hi) in hop1:
            start = hi - fanout if hi - fanout > lo else lo
            if start >= hi:
                continue
            recs = ent.events[start:hi]
            lk_role += ent.roles[start:hi]
            lk_ent += [n] * len(recs)
            lk_t += map(_time, recs)
            lk_id += map(_eid, recs)
            for eid, _, erow, _ in recs:
                m = events.get(eid)
                if m is None:
                    m = events[eid] = len(rows)
                    rows.append(erow)
                    keys.append("event:" + eid)
                lk_ev.append(m)
        x = np.frombuffer(bytearray(b"".join(rows)), dtype=np.float32).reshape(len(rows), -1)
        half = enc.role_table[lk_role]  # role one-hot, last column the event's age
        age = t - np.array(lk_t)
        np.maximum(age, 0.0, out=age)
        half[:, -1] = np.log1p(age)
        roles = enc.roles
        names = [roles[r] for r in lk_role]
        sg = Subgraph(
            x=x,
            edge_index=np.array([lk_ev + lk_ent, lk_ent + lk_ev], dtype=np.int64),
            edge_attr=np.concatenate((half, half)),
            node_keys=keys,
            edge_events=lk_id + lk_id,
            edge_roles=names + names,
            tabular=np.array(tab, dtype=np.float32),
        )
        return sg, row

    def _insert(self, ev: ParsedEvent, row: bytes) -> None:
        """Append ``ev`` to each of its entities' histories; forget what fell out of memory."""
        spec = self.spec
        t = ev.t if ev.t > self._latest else self._latest  # a late event is stored at the latest
        self._latest = t
        self._ingested += 1
        record = (ev.id, t, row, ev.keys)
        actor_key = ev.keys[0]
        assert actor_key is not None  # parse refuses an event without its actor
        actor_uid = -1  # set by the first role, the actor
        entities = self._entities
        seen: set[str] = set()
        for i, key in enumerate(ev.keys):
            if key is None or key in seen:
                continue
            seen.add(key)
            ent = entities.get(key)
            if ent is None:
                ent = entities[key] = Entity(t, self._next_uid)
                self._next_uid += 1
            else:
                entities.move_to_end(key)
                self._evict(ent, t)
            if i == 0:
                actor_uid = ent.uid
            ent.times.append(t)
            ent.events.append(record)
            ent.roles.append(i)
            ent.actors.append(actor_uid)
            ent.cum.append(ent.running)
            ent.running += ev.first_numeric
            ent.last_t = t
        partners = entities[actor_key].partners
        for i in range(1, len(ev.keys)):
            key = ev.keys[i]
            if key is not None:
                p = partners.get((i, key))
                # tuples, not lists: untracked by the garbage collector (shorter pauses)
                partners[(i, key)] = (1, t, t) if p is None else (p[0] + 1, p[1], t)
        cutoff = t - spec.horizon_s
        while entities:
            first = next(iter(entities.values()))
            if first.last_t >= cutoff:
                break
            entities.popitem(last=False)

    def _evict(self, ent: Entity, t: float) -> None:
        """Drop ``ent``'s events older than the horizon, and beyond ``max_history - 1``."""
        times = ent.times
        k = bisect_left(times, t - self.spec.horizon_s)
        k = max(k, len(times) - (self.spec.max_history - 1))
        if k <= 0:
            return
        for j in range(k):
            if ent.roles[j] != 0:
                continue
            keys = ent.events[j][3]  # this entity's own (actor) event: its partners
            for i in range(1, len(keys)):
                key = keys[i]
                if key is None or (p := ent.partners.get((i, key))) is None:
                    continue
                if p[0] <= 1:
                    del ent.partners[(i, key)]
                else:
                    ent.partners[(i, key)] = (p[0] - 1, p[1], p[2])
        ent.drop_oldest(k)


__all__ = ["EventGraphStore"]
