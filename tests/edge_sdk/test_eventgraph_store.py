"""The event-graph store: as-of subgraphs, memory bounds, features, explanations' occlusion."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from edge_sdk.errors import InvalidInputError
from edge_sdk.eventgraph import EventGraphSpec, EventGraphStore, Subgraph

ROLES = {"src": "account", "dst": "account", "merchant": "merchant", "device": "device", "ip": "ip"}


def make_spec(**kw: Any) -> EventGraphSpec:
    return EventGraphSpec(
        roles=ROLES, numeric=["amount"], categorical={"channel": ["web", "app", "pos"]}, **kw
    )


def ev(i: int, t: float, src: str = "a1", **kw: Any) -> dict[str, Any]:
    """One event in the wire form (a merchant payment unless ``dst`` is given)."""
    e: dict[str, Any] = {
        "id": f"e{i}",
        "t": t,
        "src": src,
        "dst": None,
        "merchant": "m1",
        "device": "d1",
        "ip": "i1",
        "amount": 10.0,
        "channel": "web",
    }
    e.update(kw)
    return e


def random_stream(n: int, seed: int = 0, pool: int = 50) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out, t = [], 0.0
    for i in range(n):
        t += rng.expovariate(1 / 30.0)
        transfer = rng.random() < 0.3
        out.append(
            ev(
                i,
                t,
                src=f"a{rng.randrange(pool)}",
                dst=f"a{rng.randrange(pool)}" if transfer else None,
                merchant=None if transfer else f"m{rng.randrange(pool // 5)}",
                device=f"d{rng.randrange(pool)}",
                ip=f"i{rng.randrange(pool // 2)}",
                amount=rng.expovariate(1 / 50.0),
                channel=rng.choice(["web", "app", "pos"]),
            )
        )
    return out


def col(spec: EventGraphSpec, name: str) -> int:
    return spec.node_feature_names().index(name)


def copy(sg: Subgraph) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
    return (
        sg.x.copy(),
        sg.edge_index.copy(),
        sg.edge_attr.copy(),
        list(sg.node_keys),
        list(sg.edge_events),
    )


def same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    pairs = zip(a, b, strict=True)
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in pairs)


@pytest.fixture(scope="module")
def streamed() -> tuple[EventGraphSpec, list[Subgraph]]:
    spec = make_spec(fanout=4)
    store = EventGraphStore(spec)
    return spec, [store.score_request(e) for e in random_stream(1500)]


def test_every_subgraph_is_well_formed(streamed: tuple[EventGraphSpec, list[Subgraph]]) -> None:
    spec, sgs = streamed
    assert spec.num_node_features == len(spec.node_feature_names())
    for i, sg in enumerate(sgs):
        n, e = sg.num_nodes, sg.num_edges
        assert sg.node_keys[0] == f"event:e{i}"
        assert len(set(sg.node_keys)) == n
        assert sg.x.dtype == np.float32 and sg.x.shape == (n, spec.num_node_features)
        assert sg.edge_index.dtype == np.int64 and sg.edge_index.shape == (2, e)
        assert sg.edge_attr.dtype == np.float32 and sg.edge_attr.shape == (e, 6)
        assert np.isfinite(sg.x).all() and np.isfinite(sg.edge_attr).all()
        assert sg.edge_index.min() >= 0 and sg.edge_index.max() < n
        assert n <= spec.max_nodes and e <= spec.max_edges and e % 2 == 0
        fwd, back = sg.edge_index[:, : e // 2], sg.edge_index[:, e // 2 :]
        assert np.array_equal(fwd, back[::-1])  # both directions of every link
        assert np.bincount(sg.edge_index[1], minlength=n).max() <= spec.max_in_degree
        assert len(sg.edge_events) == len(sg.edge_roles) == e
        # node types: exactly one type bit per node; node 0 is an event
        types = sg.x[:, : len(spec.node_types)]
        assert np.array_equal(types.sum(1), np.ones(n, np.float32)) and types[0, 0] == 1
        assert sg.tabular.shape == (spec.num_tabular_features,)


def test_later_events_do_not_change_a_built_subgraph() -> None:
    store = EventGraphStore(make_spec())
    stream = random_stream(300)
    for e in stream[:200]:
        store.ingest(e)
    sg = store.request(stream[200])
    before = copy(sg)
    assert same(copy(store.request(stream[200])), before)  # a request mutates nothing
    assert store.num_ingested == 200
    for e in stream[200:]:
        store.score_request(e)
    assert same(copy(sg), before)


def test_a_request_sees_only_events_before_it() -> None:
    store = EventGraphStore(make_spec())
    store.ingest(ev(1, 100.0))
    assert "event:e1" not in store.request(ev(2, 100.0)).node_keys  # same time: not before
    assert "event:e1" in store.request(ev(2, 100.5)).node_keys
    store.ingest(ev(2, 100.5))
    # a request for an earlier time (within the tolerance) excludes the later event
    sg = store.request(ev(3, 100.2))
    assert "event:e1" in sg.node_keys and "event:e2" not in sg.node_keys


def test_time_must_not_go_backwards_beyond_the_tolerance() -> None:
    store = EventGraphStore(make_spec(time_tolerance_s=1.0))
    store.ingest(ev(1, 100.0))
    with pytest.raises(InvalidInputError) as err:
        store.ingest(ev(2, 98.5))
    assert err.value.field == "t"
    with pytest.raises(InvalidInputError):
        store.request(ev(2, 98.5))
    store.ingest(ev(3, 99.5))  # late within the tolerance: stored at the latest time
    assert store.latest_t == 100.0 and store.num_ingested == 2


def test_fanout_keeps_the_most_recent_events_per_entity() -> None:
    store = EventGraphStore(make_spec(fanout=16))
    for i in range(40):  # one device shared by 40 accounts; everything else distinct
        store.ingest(ev(i, float(i), src=f"a{i}", merchant=f"m{i}", ip=f"i{i}", device="dX"))
    sg = store.request(ev(99, 100.0, src="new", merchant="mnew", ip="inew", device="dX"))
    assert sorted(sg.neighbour_events()) == sorted(f"e{i}" for i in range(24, 40))
    assert sg.num_nodes == 1 + 4 + 16 and sg.num_edges == 2 * (4 + 16)  # no payee


def test_memory_stays_bounded_over_a_long_stream() -> None:
    spec = make_spec(fanout=4, horizon_s=300.0, max_history=8)
    store = EventGraphStore(spec)
    rng = random.Random(1)
    sizes = []
    for i in range(20_000):  # one event per second; new accounts and devices keep appearing
        t = float(i)
        store.ingest(
            ev(i, t, src=f"a{i // 3}", device=f"d{i // 7}", merchant=f"m{rng.randrange(5)}")
        )
        if i % 1000 == 999:
            sizes.append(store.num_entities)
            assert store.max_history_length() <= spec.max_history
    # only the entities active in the last 300 s stay: a plateau, not growth
    assert max(sizes) <= 300 // 3 + 300 // 7 + 5 + 1 + 3
    assert sizes[-1] == sizes[5]
    assert store.history_length("merchant:m0") == spec.max_history


def test_entity_statistics_as_of_the_request() -> None:
    spec = make_spec()
    store = EventGraphStore(spec)
    store.ingest(ev(1, 0.0, src="a1", device="dS", amount=5.0))
    store.ingest(ev(2, 1000.0, src="a2", device="dS", amount=7.0))
    store.ingest(ev(3, 80_000.0, src="a3", device="dS", amount=11.0))
    store.ingest(ev(4, 88_000.0, src="a3", device="dS", amount=13.0))
    sg = store.request(ev(5, 90_000.0, src="a4", device="dS"))
    dev = sg.x[sg.node_keys.index("device:dS")]

    def stat(name: str) -> float:
        return float(dev[col(spec, f"entity_{name}")])

    assert stat("seen") == 1.0
    assert stat("log1p_age_s") == pytest.approx(math.log1p(90_000.0))
    assert stat("log1p_since_last_s") == pytest.approx(math.log1p(2_000.0))
    assert stat("log1p_events_1h") == pytest.approx(math.log1p(1))
    assert stat("log1p_events_24h") == pytest.approx(math.log1p(2))  # 80,000 and 88,000
    assert stat("log1p_events_remembered") == pytest.approx(math.log1p(4))
    assert stat("log1p_distinct_actors_24h") == pytest.approx(math.log1p(1))
    assert stat("log1p_distinct_actors_remembered") == pytest.approx(math.log1p(3))
    assert stat("log1p_sum_first_numeric_24h") == pytest.approx(math.log1p(24.0))
    new_account = sg.x[sg.node_keys.index("account:a4")]
    assert not new_account[len(spec.node_types) :].any()  # unseen: all statistics 0
    assert new_account[col(spec, "type=account")] == 1.0


def test_event_attributes_and_context() -> None:
    spec = make_spec()
    store = EventGraphStore(spec)
    store.ingest(ev(1, 1000.0, src="a1", device="d1", ip="i1", merchant="m1"))
    x0 = store.request(ev(2, 6 * 3600.0, src="a1", device="d2", ip="i1", amount=99.0)).x[0]

    def f(name: str) -> float:
        return float(x0[col(spec, name)])

    assert f("log1p_amount") == pytest.approx(math.log1p(99.0))
    assert (f("channel=web"), f("channel=app"), f("channel=pos")) == (1.0, 0.0, 0.0)
    assert f("hour_sin") == pytest.approx(1.0) and f("hour_cos") == pytest.approx(0.0, abs=1e-6)
    assert f("src_seen") == 1.0
    assert f("log1p_src_age_s") == pytest.approx(math.log1p(6 * 3600.0 - 1000.0))
    assert f("log1p_src_since_prev_s") == pytest.approx(math.log1p(6 * 3600.0 - 1000.0))
    assert (f("has_device"), f("new_device_for_src")) == (1.0, 1.0)  # d2 is new for a1
    assert (f("has_ip"), f("new_ip_for_src")) == (1.0, 0.0)  # i1 is not
    assert (f("has_dst"), f("new_dst_for_src")) == (0.0, 0.0)  # no payee
    assert not x0[col(spec, "entity_seen") :].any()  # an event row has no entity statistics
    # the row is frozen at ingest: as a neighbour of a much later event it is unchanged
    store.ingest(ev(2, 6 * 3600.0, src="a1", device="d2", ip="i1", amount=99.0))
    later = store.request(ev(3, 9 * 3600.0, src="a9", device="d2"))
    assert np.array_equal(later.x[later.node_keys.index("event:e2")], x0)


def test_edge_attributes_name_the_role_and_the_age() -> None:
    spec = make_spec()
    store = EventGraphStore(spec)
    store.ingest(ev(1, 100.0, src="a1", dst="a2", merchant=None, channel="app"))
    sg = store.request(ev(2, 400.0, src="a2", merchant="m9"))
    roles = list(ROLES)
    for k in range(sg.num_edges):
        attr = sg.edge_attr[k]
        assert attr[: len(roles)].tolist() == [float(r == sg.edge_roles[k]) for r in roles]
        age = 0.0 if sg.edge_events[k] == "e2" else math.log1p(300.0)
        assert attr[-1] == pytest.approx(age)
    # a2 was the payee of e1: that edge says dst, the scored event's edge says src
    a2 = sg.node_keys.index("account:a2")
    e1 = sg.node_keys.index("event:e1")
    pairs = {(int(s), int(d)): r for (s, d), r in zip(sg.edge_index.T, sg.edge_roles, strict=True)}
    assert pairs[(e1, a2)] == "dst" and pairs[(0, a2)] == "src"


def test_an_entity_in_two_roles_is_one_node() -> None:
    store = EventGraphStore(make_spec())
    sg = store.request(ev(1, 10.0, src="a1", dst="a1", merchant=None))
    assert sg.node_keys.count("account:a1") == 1 and sg.num_edges == 2 * 3


def test_tabular_is_the_event_row_and_each_roles_statistics() -> None:
    spec = make_spec()
    store = EventGraphStore(spec)
    stream = random_stream(400, seed=3)
    for e in stream[:399]:
        store.ingest(e)
    e = stream[399]
    sg = store.request(e)
    tab = store.tabular(e)
    assert tab.dtype == np.float32 and tab.shape == (spec.num_tabular_features,)
    assert np.array_equal(tab, sg.tabular)
    nt, ne, ns = len(spec.node_types), len(spec.event_feature_names()), 9
    assert np.array_equal(tab[:ne], sg.x[0, nt : nt + ne])
    for r, role in enumerate(ROLES):
        block = tab[ne + r * ns : ne + (r + 1) * ns]
        if e[role] is None:
            assert not block.any()
        else:
            key = f"{ROLES[role]}:{e[role]}"
            assert np.array_equal(block, sg.x[sg.node_keys.index(key), nt + ne :])


def test_center_stats_put_the_tabular_roles_on_node_0_only() -> None:
    plain, center = make_spec(), make_spec(center_stats=True)
    f, extra = plain.num_node_features, len(ROLES) * 9
    assert center.num_node_features == len(center.node_feature_names()) == f + extra
    assert center.node_feature_names()[:f] == plain.node_feature_names()
    assert center.node_feature_names()[f] == "center_src_seen"
    a, b = EventGraphStore(plain), EventGraphStore(center)
    ne = len(plain.event_feature_names())
    for i, e in enumerate(random_stream(300, seed=5)):
        if i % 2:  # an ingest-only event's frozen row must equal a scored one's
            a.ingest(e)
            b.ingest(e)
            continue
        g, h = a.score_request(e), b.score_request(e)
        assert np.array_equal(h.x[:, :f], g.x) and np.array_equal(h.edge_index, g.edge_index)
        assert np.array_equal(h.x[0, f:], g.tabular[ne:])  # the baseline's per-role statistics
        assert not h.x[1:, f:].any()  # hop 1 and earlier events: zeros
        assert np.array_equal(h.tabular, g.tabular)
    assert h.x[0, f:].any()


def test_same_stream_same_subgraphs() -> None:
    stream = random_stream(500, seed=7)
    a, b = EventGraphStore(make_spec()), EventGraphStore(make_spec())
    for e in stream:
        assert same(copy(a.score_request(e)), copy(b.score_request(e)))


def test_one_hop_is_the_event_and_its_entities() -> None:
    store = EventGraphStore(make_spec(hops=1))
    for e in random_stream(50):
        sg = store.score_request(e)
        assert all(not k.startswith("event:") for k in sg.node_keys[1:])


def test_without_event_removes_one_neighbour(
    streamed: tuple[EventGraphSpec, list[Subgraph]],
) -> None:
    sg = max(streamed[1], key=lambda s: s.num_nodes)
    victim = sg.neighbour_events()[0]
    node = sg.node_keys.index(f"event:{victim}")
    out = sg.without_event(victim)
    assert out.num_nodes == sg.num_nodes - 1
    assert out.num_edges == sg.num_edges - sg.edge_events.count(victim)  # both directions
    assert victim not in out.edge_events and f"event:{victim}" not in out.node_keys
    assert out.edge_index.max() < out.num_nodes
    assert np.array_equal(out.x, np.delete(sg.x, node, axis=0))
    kept = [k for k in range(sg.num_edges) if sg.edge_events[k] != victim]
    assert np.array_equal(out.edge_attr, sg.edge_attr[kept])
    old = np.array([k for k in range(sg.num_nodes) if k != node])
    assert np.array_equal(old[out.edge_index], sg.edge_index[:, kept])  # same links
    with pytest.raises(InvalidInputError):
        sg.without_event(sg.event_id)
    with pytest.raises(InvalidInputError):
        sg.without_event("nope")


def test_inputs_by_name(streamed: tuple[EventGraphSpec, list[Subgraph]]) -> None:
    sg = streamed[1][-1]
    got = sg.inputs(["x", "edge_index"])
    assert list(got) == ["x", "edge_index"] and got["x"] is sg.x
    assert set(sg.inputs()) == {"x", "edge_index", "edge_attr"}
    with pytest.raises(InvalidInputError) as err:
        sg.inputs(["x", "y"])
    assert err.value.field == "y"


def test_novelty_and_age_follow_what_is_remembered() -> None:
    spec = make_spec(fanout=2, max_history=4, horizon_s=1000.0)
    store = EventGraphStore(spec)
    new_device = col(spec, "new_device_for_src")
    store.ingest(ev(0, 0.0, src="a1", device="dOld"))
    assert store.request(ev(1, 1.0, src="a1", device="dOld")).x[0, new_device] == 0.0
    for i in range(1, 5):  # four events on another device push dOld out of a1's history
        store.ingest(ev(i, float(i), src="a1", device="dNew"))
    assert store.history_length("account:a1") == 4
    assert store.request(ev(9, 9.0, src="a1", device="dOld")).x[0, new_device] == 1.0
    # idle beyond the horizon: forgotten, then new again (seen 0, age 0)
    store.ingest(ev(10, 2000.0, src="a2", device="d2"))
    assert store.history_length("account:a1") == 0 and store.num_entities == 4  # a2 m1 d2 i1
    x0 = store.request(ev(11, 2001.0, src="a1", device="dNew")).x[0]
    assert x0[col(spec, "src_seen")] == 0.0 and x0[col(spec, "log1p_src_age_s")] == 0.0
    assert x0[new_device] == 1.0
