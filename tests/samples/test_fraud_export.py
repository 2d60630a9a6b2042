"""The fraud sample's INT8 bundle (``samples/fraud/export.py``) on a tiny SYNTHETIC stream.

One module-scoped run: a small stream (fan-out 4, so subgraphs stay small and each
LiteRT bucket converts quickly), the demo's GATv2+GINE of width 8 trained for two epochs, then one
export for ``intel-core-cpu``, ``raspberry-pi-5`` and ``jetson-orin-nano`` with batches
of 4 (two LiteRT buckets: one subgraph, four merged). Real engines throughout
(ONNX Runtime, OpenVINO, LiteRT); TensorRT is not installed here, so the Jetson gets the
build plan that is built and checked on the device.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sample_scripts import fraud_module

from edge_sdk import Bundle, Runtime

pytestmark = [
    pytest.mark.requires_backend("onnxruntime"),
    pytest.mark.requires_backend("openvino"),
    pytest.mark.requires_backend("ai_edge_litert"),
    pytest.mark.requires_backend("onnx2tf"),
    # The shared setup (stream, training, one export with two LiteRT buckets) is in the
    # first test: about a minute alone on 2 cores, several under load.
    pytest.mark.timeout(600),
]

PROFILES = ("intel-core-cpu", "raspberry-pi-5", "jetson-orin-nano")
BATCH = 4
#: LiteRT INT8 vs FP32 PyTorch, fraud probability of node 0 (max abs): INT8 moved a
#: probability by at most 0.0014 on this tiny model (measured); a broken conversion or
#: a wrong bucket is off by tenths.
PROB_ATOL = 0.02
#: Every INT8 engine on the whole test period (measured max 0.0025 on this run).
INT8_ATOL = 0.01
#: Decisions at the threshold that must agree (a score near the threshold may flip).
AGREEMENT = 0.97


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    generate = fraud_module("generate")
    train = fraud_module("train")
    spec_mod = fraud_module("spec")
    export = fraud_module("export")
    spec = spec_mod.fraud_spec(fanout=4)
    tx = generate.generate(seed=3, accounts=300, days=8.0)
    req = train.build_requests(tx, spec, train_sample=0.25, seed=0)
    trained = train.train_gnn("gatv2_gine", req, seed=0, epochs=2, hidden=8, heads=2, patience=2)
    out = tmp_path_factory.mktemp("fraud-export") / "fraud.bundle"
    # One LiteRT bucket (the batched one; singles are padded into it): each bucket is one
    # onnx2tf conversion, the longest step here. The two measured buckets of the default
    # are checked without an export (test_buckets_and_degree_limit_come_from_the_data).
    train_subs = req.select(req.train)
    bucket = export.size_buckets(train_subs, batch=BATCH)[-1]
    bundle = export.export_bundle(
        trained.model,
        req,
        out,
        spec=spec,
        profiles=PROFILES,
        threshold=trained.threshold,
        batch=BATCH,
        buckets=[bucket],
        singles=16,
        merged=2,
    )
    test = req.select(req.test)
    return {
        "scores": export.evaluate_engines(bundle, test),
        "export": export,
        "bundle": bundle,
        "model": trained.model,
        "threshold": trained.threshold,
        "req": req,
        "bucket": bucket,
        "test": test,
        "y": req.y[req.test],
        "log": json.loads(export.sidecar(bundle).read_text()),
    }


def test_manifest_has_the_three_profiles_and_what_each_runs(run: dict[str, Any]) -> None:
    m = Bundle.open(run["bundle"]).manifest
    assert m.profiles == list(PROFILES)
    assert m.graph.aggregation == "tables" and m.graph.tables is not None
    assert [i.name for i in m.inputs][:2] == ["x", "edge_attr"]  # tables, no edge_index
    first = {c.profile: c for c in reversed(m.targets)}  # each profile's first target
    assert (first["intel-core-cpu"].backend, first["intel-core-cpu"].artifact) == (
        "openvino",
        "openvino-int8",
    )
    assert first["raspberry-pi-5"].artifact == "litert-int8"
    jetson = first["jetson-orin-nano"]
    assert jetson.artifact == "tensorrt-int8" and "checked on the device" in jetson.reason
    # The event-graph spec travels with the model, with the threshold fitted on validation.
    assert m.event_graph is not None and m.event_graph.fanout == 4
    assert m.event_graph.threshold == pytest.approx(run["threshold"])
    assert m.graph.buckets == [run["bucket"]]
    assert m.graph.tables.max_degree == run["log"]["max_degree"] >= 4 + 1 + 1  # fanout+1, loop
    log = run["log"]
    # An attention GNN: the INT8 routes that fail the gate for it are not built, and the
    # manifest says so (the profile written beside the bundle keeps the shipped name).
    assert log["int8_routes"] == run["export"]._int8_routes().ATTENTION_INT8
    lite = first["raspberry-pi-5"].build["int8_flavour"]
    assert lite["chosen"].startswith("dynamic_range_quant")
    assert lite["tried"]["integer_quant"].startswith("skipped")
    ov = first["intel-core-cpu"].build
    assert ov["int8_source"] == "qdq" and ov["failed"]["nncf"].startswith("skipped")
    assert set(log["profiles"]) == set(PROFILES)
    assert set(log["engines_s"]) == {"openvino", "litert", "tensorrt"}
    assert all(v >= 0 for v in log["engines_s"].values()) and log["seconds"] > 0
    assert "SYNTHETIC" in log["note"]


def test_buckets_and_degree_limit_come_from_the_data(run: dict[str, Any]) -> None:
    export = run["export"]
    subs = run["req"].select(run["req"].train)
    single, batched = export.size_buckets(subs, batch=BATCH)
    nodes = [s.x.shape[0] for s in subs]
    edges = [s.edge_index.shape[1] for s in subs]
    assert max(nodes) <= single.max_nodes < max(nodes) + 8
    assert max(edges) <= single.max_edges < max(edges) + 8
    assert batched.max_graphs == BATCH and single.max_nodes < batched.max_nodes
    assert batched.max_nodes <= BATCH * single.max_nodes + 64
    spec = run["req"].spec
    assert export.degree_limit(subs, spec) == 8  # max(R, 1 + fanout) = 5, + self loop
    merged = export.merge([export.as_arrays(s) for s in subs[:3]])
    assert merged["x"].shape[0] == sum(nodes[:3]) and merged["edge_index"].max() < sum(nodes[:3])


def test_pi5_runs_litert_int8_on_varying_sizes_close_to_pytorch(run: dict[str, Any]) -> None:
    export = run["export"]
    subs = run["test"][:40]
    par = export.litert_parity(
        run["bundle"], subs, model=run["model"], threshold=run["threshold"], batches=(3, BATCH)
    )
    assert par["backend"] == "litert" and par["precision"] == "int8"
    assert par["artifact"] == "litert-int8" and par["reference"] == "pytorch-fp32"
    # Every request went to the LiteRT interpreter: one call per single subgraph, one per
    # merged group of 3 or 4 (not one per subgraph: #19's packing fix), all in the bucket.
    assert par["backend_calls"] == len(subs) + len(subs) // 3 + len(subs) // BATCH
    assert par["buckets_hit"] == [0]
    sizes = {n for g in par["groups"].values() for n in g["nodes"]}
    seen = set(run["log"]["samples"]["nodes"])
    assert len(sizes) >= 3 and sizes - seen, (sizes, seen)  # sizes the export never saw
    assert par["max_abs_err"] <= PROB_ATOL, par
    assert par["agreement"] >= AGREEMENT, par
    with Runtime.load(run["bundle"], profile="raspberry-pi-5") as rt:
        assert rt.describe()["backend"] == "litert"


def test_every_engine_scores_every_transaction(run: dict[str, Any]) -> None:
    export = run["export"]
    test, scores = run["test"], run["scores"]
    assert set(scores) == {name for name, _, _ in export.ENGINES}, scores.skipped
    ref = export.torch_scores(run["model"], test)
    for name, _backend, precision in export.ENGINES:
        s = scores[name]
        assert s.shape == (len(test),) and np.isfinite(s).all()
        assert scores.described[name]["precision"] == precision
        assert scores.described[name]["backend"] == _backend
        tol = 1e-4 if precision == "fp32" else PROB_ATOL
        assert np.abs(s - ref).max() <= tol, name


def test_int8_engines_score_like_fp32(run: dict[str, Any]) -> None:
    """INT8 against FP32 PyTorch on the whole test period, by probability and decision.

    The tiny run's model is barely trained: its scores crowd near 0.5, so INT8 noise of
    a few thousandths reorders them and moves PR-AUC by up to 0.05 (measured: OpenVINO
    0.167 vs 0.116 with a max probability error of 0.0025). The issue's 0.01 PR-AUC bound
    is checked on the demo's trained model (``fraud.py``'s results); here each INT8 engine
    must stay within :data:`INT8_ATOL` of every FP32 probability and agree on decisions.
    """
    export = run["export"]
    ref = export.torch_scores(run["model"], run["test"])
    want = ref >= run["threshold"]
    for name, _backend, precision in export.ENGINES:
        if precision != "int8":
            continue
        got = run["scores"][name]
        assert np.abs(got - ref).max() <= INT8_ATOL, name
        assert ((got >= run["threshold"]) == want).mean() >= AGREEMENT, name
