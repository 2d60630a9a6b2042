"""Exactness and exportability tests for the dense static-topology lowering."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    ChebConv,
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GraphConv,
    SAGEConv,
)

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters import lowering

N, B, F_IN, TOL = 7, 3, 5, 1e-5
# Node 6 is isolated, node 5 only sends; 0->1 and 2->3 are duplicated with different
# weights; 1 and 4 have self loops (4 has two).
EDGE_INDEX = torch.tensor(
    [
        [0, 0, 1, 2, 2, 3, 4, 0, 5, 5, 1, 3, 2, 4, 4, 1, 3, 0, 2, 5],
        [1, 1, 2, 3, 3, 0, 0, 4, 0, 2, 1, 1, 4, 4, 4, 0, 2, 3, 0, 3],
    ]
)
POS_WEIGHT = torch.rand(EDGE_INDEX.size(1), generator=torch.Generator().manual_seed(1)) + 0.1
SIGNED_WEIGHT = torch.randn(EDGE_INDEX.size(1), generator=torch.Generator().manual_seed(2))


def _union(edge_index: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor | None]:
    ei = torch.cat([edge_index + g * N for g in range(B)], dim=1)
    return ei, None if weight is None else weight.repeat(B)


def _randomise(model: nn.Module) -> nn.Module:
    """Make biases, attention vectors and BatchNorm statistics non-trivial."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _gin(**kw: object) -> GINConv:
    mlp = nn.Sequential(nn.Linear(F_IN, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    return GINConv(mlp, **kw)


# (id, layer factory, edge weight passed to both PyG and densify)
CASES: list[tuple[str, Callable[[], nn.Module], Tensor | None]] = [
    ("gcn", lambda: GCNConv(F_IN, 4), None),
    ("gcn-weighted", lambda: GCNConv(F_IN, 4), POS_WEIGHT),
    ("gcn-improved", lambda: GCNConv(F_IN, 4, improved=True), None),
    ("gcn-improved-weighted", lambda: GCNConv(F_IN, 4, improved=True), POS_WEIGHT),
    ("gcn-no-loops", lambda: GCNConv(F_IN, 4, add_self_loops=False), POS_WEIGHT),
    ("gcn-no-norm", lambda: GCNConv(F_IN, 4, normalize=False), SIGNED_WEIGHT),
    ("gcn-no-bias", lambda: GCNConv(F_IN, 4, bias=False), None),
    ("gcn-flow-t2s", lambda: GCNConv(F_IN, 4, flow="target_to_source"), POS_WEIGHT),
    ("gcn-no-norm-max", lambda: GCNConv(F_IN, 4, normalize=False, aggr="max"), SIGNED_WEIGHT),
    ("sage-mean", lambda: SAGEConv(F_IN, 4), None),
    ("sage-sum", lambda: SAGEConv(F_IN, 4, aggr="sum"), None),
    ("sage-add", lambda: SAGEConv(F_IN, 4, aggr="add"), None),
    ("sage-max", lambda: SAGEConv(F_IN, 4, aggr="max"), None),
    ("sage-min", lambda: SAGEConv(F_IN, 4, aggr="min"), None),
    ("sage-project", lambda: SAGEConv(F_IN, 4, aggr="max", project=True), None),
    ("sage-normalize", lambda: SAGEConv(F_IN, 4, normalize=True), None),
    ("sage-no-root", lambda: SAGEConv(F_IN, 4, root_weight=False, bias=False), None),
    ("graph-add", lambda: GraphConv(F_IN, 4), SIGNED_WEIGHT),
    ("graph-add-unweighted", lambda: GraphConv(F_IN, 4), None),
    ("graph-mean", lambda: GraphConv(F_IN, 4, aggr="mean"), SIGNED_WEIGHT),
    ("graph-max", lambda: GraphConv(F_IN, 4, aggr="max"), SIGNED_WEIGHT),
    ("graph-max-unweighted", lambda: GraphConv(F_IN, 4, aggr="max"), None),
    ("gin", lambda: _gin(), None),
    ("gin-eps", lambda: _gin(eps=0.3), None),
    ("gin-train-eps", lambda: _gin(train_eps=True), None),
    ("gat", lambda: GATConv(F_IN, 4), None),
    ("gat-heads", lambda: GATConv(F_IN, 4, heads=3, negative_slope=0.1), None),
    ("gat-mean-heads", lambda: GATConv(F_IN, 4, heads=3, concat=False), None),
    ("gat-no-loops", lambda: GATConv(F_IN, 4, heads=2, add_self_loops=False), None),
    ("gat-no-bias", lambda: GATConv(F_IN, 4, heads=2, bias=False), None),
    ("gat-residual", lambda: GATConv(F_IN, 4, heads=2, residual=True), None),
    ("gat-bipartite-weights", lambda: GATConv((F_IN, F_IN), 4, heads=2), None),
    ("gatv2", lambda: GATv2Conv(F_IN, 4), None),
    ("gatv2-heads", lambda: GATv2Conv(F_IN, 4, heads=3, negative_slope=0.1), None),
    ("gatv2-mean-heads", lambda: GATv2Conv(F_IN, 4, heads=3, concat=False), None),
    ("gatv2-shared", lambda: GATv2Conv(F_IN, 4, heads=2, share_weights=True), None),
    ("gatv2-no-loops", lambda: GATv2Conv(F_IN, 4, heads=2, add_self_loops=False), None),
    ("gatv2-no-bias", lambda: GATv2Conv(F_IN, 4, heads=2, bias=False), None),
    ("gatv2-residual", lambda: GATv2Conv(F_IN, 4, heads=2, residual=True), None),
]


def _max_diff(model: nn.Module, weight: Tensor | None) -> float:
    x = torch.randn(B * N, F_IN, generator=torch.Generator().manual_seed(4))
    ei_b, w_b = _union(EDGE_INDEX, weight)
    with torch.no_grad():
        ref = model(x, ei_b) if w_b is None else model(x, ei_b, w_b)
        dense = lowering.densify(model, EDGE_INDEX, N, weight)
        out = dense(x, ei_b)
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    return (out - ref).abs().max().item()


@pytest.mark.parametrize(("factory", "weight"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_matches_pyg(factory: Callable[[], nn.Module], weight: Tensor | None) -> None:
    torch.manual_seed(0)
    assert _max_diff(_randomise(factory()), weight) <= TOL


class Net(nn.Module):
    """Two-layer model with convs nested in a ModuleList, as user models do."""

    def __init__(self, conv2: nn.Module) -> None:
        super().__init__()
        self.convs = nn.ModuleList([GCNConv(F_IN, 8), conv2])

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.convs[1](self.convs[0](x, edge_index).relu(), edge_index)


def test_nested_model_and_original_untouched() -> None:
    torch.manual_seed(0)
    model = _randomise(Net(GATConv(8, 4, heads=2)))
    model.train()
    assert _max_diff(model.eval(), None) <= TOL
    dense = lowering.densify(model.train(), EDGE_INDEX, N)
    assert not dense.training
    assert isinstance(model.convs[1], GATConv)  # original not mutated
    assert [type(c) for c in dense.convs] == [lowering.StaticGCNConv, lowering.StaticGATConv]


@pytest.mark.parametrize(
    ("conv", "option"),
    [
        (GATConv(F_IN, 4, edge_dim=2), "edge_dim"),
        (GATv2Conv(F_IN, 4, edge_dim=2), "edge_dim"),
        (SAGEConv(F_IN, 4, aggr="lstm"), "aggr"),
        (GINConv(nn.Linear(F_IN, 4), aggr=["sum", "softmax"]), "aggr"),
        (GATConv(F_IN, 4, aggr="mean"), "aggr"),
        (GCNConv(-1, 4), "in_channels"),
    ],
)
def test_unsupported_option_raises(conv: nn.Module, option: str) -> None:
    model = nn.Sequential()
    model.add_module("body", nn.Sequential())
    model.body.add_module("conv", conv)
    with pytest.raises(UnsupportedModelError, match=rf"'body\.conv'.*{option}=.*supported"):
        lowering.densify(model, EDGE_INDEX, N)


def test_unsupported_layer_type_raises() -> None:
    with pytest.raises(UnsupportedModelError, match=r"ChebConv.*supported: GCNConv"):
        lowering.densify(ChebConv(F_IN, 4, K=2), EDGE_INDEX, N)


FORBIDDEN_OPS = {"ScatterElements", "ScatterND", "Scatter", "NonZero", "Unique", "Loop"}


@pytest.mark.parametrize("conv2", ["gcn", "gat"])
def test_onnx_export_dynamic_batch(conv2: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    second = GCNConv(8, 8) if conv2 == "gcn" else GATConv(8, 4, heads=2)
    dense = lowering.densify(_randomise(Net(second)), EDGE_INDEX, N)

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = dense

        def forward(self, xb: Tensor) -> Tensor:
            return self.m(xb.reshape(-1, F_IN), EDGE_INDEX).reshape(-1, N, 8)

    wrapper = Wrapper().eval()
    example = torch.randn(2, N, F_IN)
    ep = torch.export.export(
        wrapper, (example,), strict=False, dynamic_shapes=({0: torch.export.Dim("B")},)
    )
    path = tmp_path / f"{conv2}.onnx"
    torch.onnx.export(ep, f=str(path), dynamo=True, opset_version=18)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & FORBIDDEN_OPS, ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        xb = torch.randn(batch, N, F_IN)
        (got,) = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})
        with torch.no_grad():
            want = wrapper(xb)
        assert got.shape == tuple(want.shape)
        assert (torch.from_numpy(got) - want).abs().max().item() <= TOL
