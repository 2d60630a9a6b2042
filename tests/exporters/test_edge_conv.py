"""``EdgeConv`` / PyG's ``EdgeCNN`` over neighbour tables, exact against PyG.

The lowering runs on test_table_lowering.py's awkward graphs (duplicate edges, self
loops, isolated nodes, no edges, a hub spilling over several rows) with the tables as
constants of two stacked graphs (static form), as ``request_tables`` inputs (dynamic
form) and padded to a bucket's fixed capacities. A tiny ``EdgeCNN`` is then exported
in the dynamic form and run through the ``Runtime`` on ONNX Runtime, OpenVINO and
LiteRT (FP32 and INT8); the static form takes it through tables, not dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from table_bundles import (
    BUCKETS,
    MAX_DEGREE,
    F,
    _profiles,
    dynamic_samples,
    edge_cases,
    pyg_reference,
)
from test_table_lowering import GRAPHS, MODES, Case, One, build, hub_graph
from torch import nn
from torch_geometric.nn import MLP, EdgeCNN, EdgeConv

from edge_sdk import Runtime
from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters.aggregation import StaticLowering
from edge_sdk.exporters.lowering.tabulate import tabulate

TOL = 1e-5
ATOL = 1e-4
F_IN = 6  # test_table_lowering's feature width


def seq(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2 * i, 8), nn.ReLU(), nn.Linear(8, o))


def pyg_mlp(i: int, o: int, **kw: object) -> nn.Module:
    """PyG's MLP as EdgeCNN builds it, running statistics made non-trivial."""
    m = MLP([2 * i, 8, o], dropout=0.3, **kw)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m


CASES: dict[str, Case] = {
    **{f"edge-{a}": Case(lambda a=a: EdgeConv(seq(F_IN, 4), aggr=a)) for a in ("max", "mean")},
    **{f"edge-{a}": Case(lambda a=a: EdgeConv(seq(F_IN, 4), aggr=a)) for a in ("add", "min")},
    "edge-mlp-batch-norm": Case(lambda: EdgeConv(pyg_mlp(F_IN, 4, norm="batch_norm"))),
    "edge-mlp-layer-norm-node": Case(
        lambda: EdgeConv(pyg_mlp(F_IN, 4, norm="layer_norm", norm_kwargs={"mode": "node"}))
    ),
    "edgecnn-jk-cat": Case(lambda: EdgeCNN(F_IN, 8, 2, 3, jk="cat", norm="batch_norm")),
    "edgecnn-jk-max-mean": Case(lambda: EdgeCNN(F_IN, 8, 2, 3, jk="max", aggr="mean")),
}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(CASES))
def test_lowered_edge_conv_matches_pyg(name: str, mode: str) -> None:
    case = CASES[name]
    model = build(case)
    low, variants = tabulate(model)
    assert variants == ["raw"]
    err = max(MODES[mode](model, low, variants, case, *g()) for g in GRAPHS.values())
    assert err <= TOL, f"{name} ({mode}): max abs error {err:.3g}"


@pytest.mark.parametrize(
    ("conv", "option"),
    [
        (EdgeConv(seq(F_IN, 4), aggr="mul"), "aggr='mul'"),
        (EdgeConv(pyg_mlp(F_IN, 4, norm="layer_norm")), "LayerNorm(mode='graph') at nn.norms.0"),
        (EdgeConv(pyg_mlp(F_IN, 4, norm="graph_norm")), "GraphNorm at nn.norms.0"),
        (EdgeConv(pyg_mlp(F_IN, 4, norm="instance_norm")), "InstanceNorm"),
        (EdgeConv(seq(F_IN, 4), flow="target_to_source"), "flow='target_to_source'"),
    ],
)
def test_unsupported_edge_conv_options_are_named(conv: nn.Module, option: str) -> None:
    with pytest.raises(UnsupportedModelError) as err:
        tabulate(One(conv, None))
    assert "'conv' (EdgeConv)" in str(err.value) and option in str(err.value)


# --- the static form: tables (auto), dense refused by name -------------------------------


def static_lowering(model: nn.Module) -> StaticLowering:
    n, ei = hub_graph()
    return StaticLowering(model, torch.from_numpy(ei), n, ["x", "edge_index"], [True])


def test_static_form_takes_tables_and_dense_is_refused_by_name() -> None:
    low = static_lowering(build(CASES["edgecnn-jk-cat"]))
    x = np.zeros((1, 9, F_IN), np.float32)
    choice = low.choose("auto", 256, x)
    assert choice.aggregation == "tables" and "EdgeConv" in choice.reason
    assert low.choose("tables", 256, x).aggregation == "tables"
    with pytest.raises(UnsupportedModelError, match=r"'conv\.convs\.0' \(EdgeConv\).*dense"):
        low.choose("dense", 256, x)


# --- a tiny EdgeCNN in the dynamic form, through the Runtime on every engine -------------

ENGINES = ("onnxruntime", "openvino", "litert")
#: INT8 on unseen graphs (as test_support_matrix.py's bound): the gate holds on the
#: export's own cases; a broken conversion moves the output by ~1.
INT8_UNSEEN_BOUND = 0.25


def edgecnn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return EdgeCNN(F, 8, 2, 3, jk="cat").eval()


@dataclass
class Exported:
    model: nn.Module
    bundle: Path
    manifest: Any


def export_edgecnn(root: Path) -> Exported:
    """The dynamic form for ORT, OpenVINO and LiteRT, FP32 and INT8, one padding bucket.

    Samples (parity, calibration): four random graphs and the three edge cases.
    """
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
    from edge_sdk.io_contract import Bucket

    model = edgecnn()
    graphs = dynamic_samples("E")
    graphs = graphs[:4] + graphs[-3:]
    samples = [sample_from_arrays(g, name=f"s{i}") for i, g in enumerate(graphs)]
    cfg = ExportConfig(
        name="EdgeCNN-dynamic",
        form="dynamic",
        buckets=[Bucket(**BUCKETS[0])],
        max_degree=MAX_DEGREE,
        aggregation="tables",
        int8=True,
        calibration=16,
        profiles=_profiles(root),
    )
    res = export_model(model, samples, root / "bundle", cfg)
    return Exported(model, res.bundle_dir, res.manifest)


def engine_errors(exported: Exported, engine: str, precision: str) -> dict[str, float]:
    """Through the Runtime on unseen graphs: ``err`` (max abs) and ``rel`` against eager
    PyG; INT8 also ``gate_rel`` on the export's own cases and the ``gate``."""
    from edge_sdk.bundle import Bundle
    from edge_sdk.parity import ParityCase, load_verification, relative_error

    graphs = edge_cases("E", 101)  # unseen: an edge four times, an isolated node, no edges
    with Runtime.load(exported.bundle, backend=engine, precision=precision) as rt:
        got = [rt.infer(g)["out"] for g in graphs]
        cases = load_verification(Bundle.open(exported.bundle))
        gated = [rt.infer(c.feeds) for c in cases]
    want = [pyg_reference(exported.model, "E", "dynamic", g) for g in graphs]
    err = max(float(np.abs(a - b).max(initial=0.0)) for a, b in zip(got, want, strict=True))
    rel = relative_error(
        [{"out": a} for a in got], [ParityCase({}, {"out": b}) for b in want], ["out"]
    )
    return {
        "err": err,
        "rel": rel,
        "gate_rel": relative_error(gated, cases, ["out"]),
        "gate": exported.manifest.verification.max_rel_error,
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    pytest.importorskip("onnx2tf", reason="LiteRT conversion needs onnx2tf (the [tflite] extra)")
    return export_edgecnn(tmp_path_factory.mktemp("edgecnn"))


def test_edgecnn_takes_tables_without_scatter_or_4d(exported: Exported) -> None:
    spec = exported.manifest.graph
    assert spec.aggregation == "tables" and spec.tables is not None
    assert "edge_index" not in [i.name for i in exported.manifest.inputs]
    for a in exported.manifest.artifacts:
        assert not [op for op in a.ops if "Scatter" in op], a.name
    onnx = pytest.importorskip("onnx")
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(exported.bundle / "model.onnx"))).graph
    ranks = [len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output]]
    assert max(ranks) <= 3  # the messages run on [R * K, 2F], not [R, K, 2F] batches


@pytest.mark.requires_backend("onnxruntime")
@pytest.mark.requires_backend("openvino")
@pytest.mark.requires_backend("ai_edge_litert")
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("engine", ENGINES)
def test_edgecnn_dynamic_runs_on_every_engine(
    exported: Exported, engine: str, precision: str
) -> None:
    e = engine_errors(exported, engine, precision)
    if precision == "fp32":
        assert e["err"] <= ATOL, f"{engine}: max abs err {e['err']:.3g}"
        return
    gate, gate_rel = e["gate"], e["gate_rel"]
    assert gate_rel <= gate, f"{engine} int8: export's cases rel err {gate_rel:.3g} > gate {gate:g}"
    assert e["rel"] <= INT8_UNSEEN_BOUND, f"{engine} int8: unseen graphs rel err {e['rel']:.3g}"
