"""The event-graph spec: its checks, its derived layout, event validation, the manifest field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from edge_sdk.errors import InvalidInputError, ManifestError
from edge_sdk.eventgraph import ENTITY_STATS, EventGraphSpec, EventGraphStore
from edge_sdk.manifest import SCHEMA_VERSION, parse_manifest

ROLES = {"src": "account", "dst": "account", "merchant": "merchant", "device": "device", "ip": "ip"}
SPEC = EventGraphSpec(
    roles=ROLES, numeric=["amount"], categorical={"channel": ["web", "app", "pos", "transfer"]}
)
GOOD = {
    "id": "tx1",
    "t": 10.0,
    "src": "a1",
    "dst": "a2",
    "merchant": None,
    "device": "d1",
    "ip": "i1",
    "amount": 5.0,
    "channel": "transfer",
}


def test_layout_is_derived_from_the_spec() -> None:
    assert SPEC.node_types == ["event", "account", "merchant", "device", "ip"]
    events = 1 + 4 + 2 + 3 + 2 * 4  # amount, channel, hour, actor context, per other role
    assert len(SPEC.event_feature_names()) == events
    assert SPEC.num_node_features == 5 + events + len(ENTITY_STATS)
    assert SPEC.num_edge_features == len(SPEC.edge_feature_names()) == 5 + 1
    assert SPEC.num_tabular_features == len(SPEC.tabular_feature_names()) == events + 5 * 9
    assert (SPEC.max_nodes, SPEC.max_edges, SPEC.max_in_degree) == (86, 170, 17)
    names = SPEC.node_feature_names()
    assert len(names) == len(set(names))
    center = SPEC.model_validate(SPEC.model_dump() | {"center_stats": True})
    assert center.num_node_features == SPEC.num_node_features + 5 * len(ENTITY_STATS)
    assert center.num_tabular_features == SPEC.num_tabular_features  # the baseline's row is as is


@pytest.mark.parametrize(
    "kw",
    [
        {"roles": {}},
        {"roles": {"src": "event"}},
        {"roles": {"src": "a:b"}},
        {"roles": {"src": "account"}, "numeric": ["src"]},
        {"roles": {"t": "account"}},
        {"roles": {"src": "account"}, "categorical": {"c": []}},
        {"roles": {"src": "account"}, "categorical": {"c": ["x", "x"]}},
        {"roles": {"src": "account"}, "fanout": 0},
        {"roles": {"src": "account"}, "fanout": 32, "max_history": 16},
        {"roles": {"src": "account"}, "hops": 3},
        {"roles": {"src": "account"}, "horizon_s": 0},
        {"roles": {"src": "account"}, "threshold": 1.5},
        {"roles": {"src": "account"}, "threshold": float("nan")},
    ],
)
def test_inconsistent_specs_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EventGraphSpec(**kw)


def test_spec_is_frozen_and_the_threshold_set_by_copy() -> None:
    with pytest.raises(ValidationError):
        SPEC.fanout = 3  # type: ignore[misc]
    assert SPEC.model_copy(update={"threshold": 0.7}).threshold == 0.7


LONG = "x" * 129


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": LONG}, "id"),
        ({"id": 1.5}, "id"),
        ({"id": True}, "id"),
        ({"t": None}, "t"),
        ({"t": float("nan")}, "t"),
        ({"t": float("inf")}, "t"),
        ({"t": "10"}, "t"),
        ({"t": True}, "t"),
        ({"src": None}, "src"),
        ({"src": ""}, "src"),
        ({"src": 17}, "src"),
        ({"src": LONG}, "src"),
        ({"dst": ["a2"]}, "dst"),
        ({"device": {"id": "d1"}}, "device"),
        ({"amount": float("nan")}, "amount"),
        ({"amount": float("-inf")}, "amount"),
        ({"amount": -1.0}, "amount"),
        ({"amount": "5"}, "amount"),
        ({"amount": None}, "amount"),
        ({"channel": "fax"}, "channel"),
        ({"channel": 3}, "channel"),
        ({"channel": "w" * 100_000}, "channel"),
    ],
)
def test_bad_events_name_the_field(edit: dict[str, Any], field: str) -> None:
    store = EventGraphStore(SPEC)
    bad = {**GOOD, **edit}
    for call in (store.request, store.ingest, store.score_request, store.tabular):
        with pytest.raises(InvalidInputError) as err:
            call(bad)
        assert err.value.field == field
        assert len(str(err.value)) < 300  # a huge payload is not echoed back
    assert store.num_ingested == 0 and store.num_entities == 0


@pytest.mark.parametrize("missing", ["id", "t", "src", "amount", "channel"])
def test_a_missing_required_field_is_named(missing: str) -> None:
    bad = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(InvalidInputError) as err:
        EventGraphStore(SPEC).request(bad)
    assert err.value.field == missing


def test_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidInputError) as err:
        EventGraphStore(SPEC).request([GOOD])  # type: ignore[arg-type]
    assert err.value.field == "event"


def test_optional_roles_may_be_absent_and_numbers_may_be_ints() -> None:
    store = EventGraphStore(SPEC)
    event = {k: v for k, v in GOOD.items() if k not in ("dst", "merchant", "ip")}
    sg = store.score_request({**event, "id": 7, "t": 10, "amount": 0})
    assert sg.node_keys == ["event:7", "account:a1", "device:d1"]


def test_export_config_passes_the_spec_to_the_model_options() -> None:
    from edge_sdk.export_config import ExportConfig

    spec = SPEC.model_copy(update={"threshold": 0.42})
    cfg = ExportConfig(name="tiny", form="dynamic", event_graph=spec)
    assert cfg.model.event_graph is spec and cfg.event_graph is spec
    assert ExportConfig().model.event_graph is None


def _manifest_doc() -> dict[str, Any]:
    """A minimal valid manifest of a dynamic-form model over the spec's subgraphs."""
    f, a = SPEC.num_node_features, SPEC.num_edge_features
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": "scorer", "version": "1.0.0"},
        "graph": {"form": "dynamic", "num_features": f, "edge_dim": a},
        "inputs": [
            {"name": "x", "dtype": "float32", "shape": ["N", f]},
            {"name": "edge_index", "dtype": "int64", "shape": [2, "E"]},
            {"name": "edge_attr", "dtype": "float32", "shape": ["E", a]},
        ],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", 2]}],
        "artifacts": [
            {
                "name": "fp32",
                "path": "model.onnx",
                "target": "onnxruntime",
                "precision": "fp32",
                "size_bytes": 1,
                "sha256": "0" * 64,
            }
        ],
    }


def test_the_spec_round_trips_through_the_manifest() -> None:
    doc = _manifest_doc()
    assert parse_manifest(json.dumps(doc)).event_graph is None  # optional
    spec = SPEC.model_copy(update={"threshold": 0.42, "fanout": 8})
    manifest = parse_manifest(json.dumps({**doc, "event_graph": spec.model_dump(mode="json")}))
    assert manifest.event_graph == spec
    assert manifest.event_graph.max_nodes == 1 + 5 + 5 * 8
    again = parse_manifest(manifest.to_json())
    # Roles keep their order through the manifest's sorted keys (the actor first).
    assert again == manifest and list(again.event_graph.roles) == list(ROLES)
    assert json.loads(again.to_json())["event_graph"]["roles"] == [[k, v] for k, v in ROLES.items()]


def test_a_bad_spec_in_a_manifest_is_a_manifest_error() -> None:
    bad = {**_manifest_doc(), "event_graph": {"roles": {"src": "account"}, "fanout": 0}}
    with pytest.raises(ManifestError, match="fanout"):
        parse_manifest(json.dumps(bad))


def test_role_and_categorical_order_survive_the_sorted_manifest_json() -> None:
    # the manifest's JSON sorts object keys; the actor must stay first and the
    # one-hot columns in the spec's order, or a node would build other features
    spec = EventGraphSpec(
        roles={"src": "account", "dst": "account", "ip": "ip", "device": "device"},
        categorical={"z": ["b", "a"], "channel": ["web", "app"]},
    )
    doc = {**_manifest_doc(), "event_graph": spec.model_dump(mode="json")}
    again = parse_manifest(parse_manifest(json.dumps(doc, sort_keys=True)).to_json()).event_graph
    assert again is not None
    assert list(again.roles) == ["src", "dst", "ip", "device"]
    assert list(again.categorical) == ["z", "channel"] and again.categorical["z"] == ["b", "a"]
    assert again.node_feature_names() == spec.node_feature_names()
