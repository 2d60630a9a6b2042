"""The node times the engines the export chose for an event-graph model and keeps the fastest.

One tiny seeded GATv2 exported FP32 for ``intel-core-cpu`` (OpenVINO first, ONNX
Runtime its fallback), shared by the module. The choice itself is timed, so the
rule is tested with each engine's cost fixed; the timing is tested on the real
engines (positive, finite, every synthetic graph accepted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_events import SPEC_FIELDS, make_events, tiny_fraud_model

from edge_sdk import Runtime
from edge_sdk.node import NodeConfig, engine_race

pytestmark = [
    pytest.mark.requires_backend("onnxruntime"),
    pytest.mark.requires_backend("openvino"),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def two_engine_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_sdk.eventgraph import EventGraphSpec, EventGraphStore
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    spec = EventGraphSpec(**SPEC_FIELDS)
    store = EventGraphStore(spec)
    graphs = [store.score_request(e) for e in make_events(60)]
    sample = sample_from_arrays(max(graphs, key=lambda g: g.num_nodes).inputs())
    cfg = ExportConfig(
        name="tiny-fraud-2",
        form="dynamic",
        aggregation="scatter",
        output_names=["logits"],
        event_graph=spec,
        profiles=["intel-core-cpu"],
    )
    out = tmp_path_factory.mktemp("race") / "fraud.bundle"
    export_model(tiny_fraud_model(spec), sample, out, cfg)
    return out


def _cfg(bundle: Path, **kw: Any) -> NodeConfig:
    return NodeConfig(node_id="race", group="plant", bundle=bundle, threads=1, **kw)


def test_the_clearly_faster_engine_is_kept_and_the_choice_explained(two_engine_bundle, monkeypatch):
    for slow, expect in (("openvino", "onnxruntime"), ("onnxruntime", "openvino")):
        costs = {slow: 1.0, expect: 1.0 / (engine_race.MARGIN * 1.5)}
        cost = lambda rt, g, b, costs=costs: costs[rt.backend.name]  # noqa: E731
        monkeypatch.setattr(engine_race, "cost_ms", cost)
        rt = engine_race.load_runtime(_cfg(two_engine_bundle), two_engine_bundle)
        first = Runtime.load(two_engine_bundle, threads=1).backend.name
        assert rt.backend.name == (expect if first == slow else first)
        assert any(
            "timed at load" in w and w.endswith(rt.backend.name + " fp32")
            for w in rt.describe()["why"]
        )
    # Within the margin the export's first choice stays.
    monkeypatch.setattr(engine_race, "cost_ms", lambda rt, g, b: 1.0)
    rt = engine_race.load_runtime(_cfg(two_engine_bundle), two_engine_bundle)
    assert rt.backend.name == Runtime.load(two_engine_bundle, threads=1).backend.name


def test_a_configured_backend_is_obeyed_untimed(two_engine_bundle, monkeypatch):
    def never(*_: Any) -> float:
        raise AssertionError("timed although the config names a backend")

    monkeypatch.setattr(engine_race, "cost_ms", never)
    for backend in ("openvino", "onnxruntime"):
        rt = engine_race.load_runtime(_cfg(two_engine_bundle, backend=backend), two_engine_bundle)
        assert rt.backend.name == backend


def test_engine_timing_runs_the_real_engines_on_varied_subgraphs(two_engine_bundle):
    rt = Runtime.load(two_engine_bundle, threads=1)
    graphs = engine_race.synthetic_graphs(rt.manifest, 12)
    sizes = {g["x"].shape[0] for g in graphs}
    assert len(sizes) > 3  # varied shapes, as real requests
    for g in graphs:
        assert g["x"].shape[1] == rt.manifest.graph.num_features
        assert g["edge_attr"].shape == (g["edge_index"].shape[1], rt.manifest.graph.edge_dim)
        assert (g["edge_index"][0] != g["edge_index"][1]).all()
    merged = rt.infer_batch(graphs)
    assert [o["logits"].shape[0] for o in merged] == [g["x"].shape[0] for g in graphs]
    ms = engine_race.cost_ms(rt, graphs, max_batch=4)
    assert np.isfinite(ms) and ms > 0
