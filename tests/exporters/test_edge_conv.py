"""``EdgeConv`` / PyG's ``EdgeCNN`` over neighbour tables, exact against PyG.

The lowering runs on test_table_lowering.py's awkward graphs (duplicate edges, self
loops, isolated nodes, no edges, a hub spilling over several rows) with the tables as
constants of two stacked graphs (static form), as ``request_tables`` inputs (dynamic
form) and padded to a bucket's fixed capacities. A tiny ``EdgeCNN`` runs through the
``Runtime`` on ONNX Runtime, OpenVINO and LiteRT (FP32 and INT8) in both forms as rows
of the support matrix (``test_support_matrix.py``, whose bundles are shared); here its
dynamic bundle is checked to read tables, and the static form to take tables, not dense.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from table_bundles import Bundles
from test_table_lowering import GRAPHS, MODES, Case, One, build, hub_graph
from torch import nn
from torch_geometric.nn import MLP, EdgeCNN, EdgeConv

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters.aggregation import StaticLowering
from edge_sdk.exporters.lowering.tabulate import tabulate

TOL = 1e-5
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


# --- the support matrix's EdgeCNN in the dynamic form --------------------------------------


@pytest.mark.requires_backend("onnxruntime")
@pytest.mark.requires_backend("openvino")
@pytest.mark.requires_backend("ai_edge_litert")
@pytest.mark.timeout(900)  # the first to ask exports the bundle (shared with the matrix)
def test_edgecnn_takes_tables_without_scatter_or_4d(table_bundles: Bundles) -> None:
    """The matrix's ``EdgeCNN(F, H, 2, C, jk='cat')`` bundle (each engine x precision is a
    support-matrix cell, run on unseen graphs there) reads tables: no scatter, <= 3-D."""
    built = table_bundles.get("EdgeCNN", "dynamic")
    assert built.error is None, built.error
    spec = built.manifest.graph
    assert spec.aggregation == "tables" and spec.tables is not None
    assert "edge_index" not in [i.name for i in built.manifest.inputs]
    for a in built.manifest.artifacts:
        assert not [op for op in a.ops if "Scatter" in op], a.name
    onnx = pytest.importorskip("onnx")
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(built.bundle / "model.onnx"))).graph
    ranks = [len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output]]
    assert max(ranks) <= 3  # the messages run on [R * K, 2F], not [R, K, 2F] batches
