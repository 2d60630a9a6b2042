"""Structured pruning: tensors shrink, the right channels go, dependent layers follow."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    MLP,
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GraphConv,
    SAGEConv,
)

from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.prune import PruneSpec, count_params, prune

F, C, N = 12, 3, 40
HALF = PruneSpec("structured", 0.5)


@pytest.fixture
def graph(make_graph) -> dict[str, Tensor]:
    return make_graph(N, F, 160)


class TwoGCN(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.c1 = GCNConv(F, hidden)
        self.c2 = GCNConv(hidden, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


class Chain(nn.Module):
    """Every supported layer kind on a hidden dimension, with BatchNorm in between."""

    def __init__(self) -> None:
        super().__init__()
        self.lin0 = nn.Linear(F, 16)
        self.gcn = GCNConv(16, 16)
        self.bn = nn.BatchNorm1d(16)
        self.gat = GATConv(16, 4, heads=4)
        self.sage = SAGEConv(16, 16)
        self.gc = GraphConv(16, 16)
        self.gat2 = GATv2Conv(16, 8, heads=2, concat=False, residual=True)
        self.head = nn.Linear(8, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.lin0(x).relu()
        h = self.bn(self.gcn(h, edge_index)).relu()
        h = nn.functional.elu(self.gat(h, edge_index))
        h = self.gc(self.sage(h, edge_index).relu(), edge_index).relu()
        return self.head(self.gat2(h, edge_index).relu())


class Gin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        inner = nn.Sequential(nn.Linear(F, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
        self.g1 = GINConv(inner)
        self.g2 = GINConv(MLP([16, 32, C]))  # PyG BatchNorm between its Linears

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.g2(self.g1(x, edge_index).relu(), edge_index)


def _zero(layer: nn.Module, drop: Tensor) -> None:
    """Make channels ``drop`` of ``layer``'s output exactly zero (test's own surgery)."""
    if isinstance(layer, GATConv | GATv2Conv):
        rows = (torch.arange(layer.heads).unsqueeze(1) * layer.out_channels + drop).flatten()
        for name in ("lin", "lin_l", "lin_r"):
            lin = getattr(layer, name, None)
            if lin is None:
                continue
            lin.weight[rows] = 0
            if lin.bias is not None:
                lin.bias[rows] = 0
        flat = rows if layer.concat else drop
        layer.bias[flat] = 0
        if layer.res is not None:
            layer.res.weight[flat] = 0
        return
    for name in ("lin", "lin_l", "lin_r", "lin_rel", "lin_root"):
        if isinstance(getattr(layer, name, None), nn.Module):
            _zero(getattr(layer, name), drop)
    for name in ("weight", "bias"):  # Linear rows and biases, BatchNorm scale and shift
        t = getattr(layer, name, None)
        if isinstance(t, Tensor) and not isinstance(layer, GCNConv | SAGEConv | GraphConv):
            t[drop] = 0
    if isinstance(layer, GCNConv):
        layer.bias[drop] = 0


def _zero_half(model: nn.Module, groups: list[tuple[int, list[str]]]) -> None:
    g = torch.Generator().manual_seed(1)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for units, paths in groups:
            drop = torch.randperm(units, generator=g)[: units // 2]
            for path in paths:
                _zero(modules[path], drop)


CASES = {
    "gcn": (TwoGCN, [(64, ["c1"])]),
    "chain": (
        Chain,
        [
            (16, ["lin0"]),
            (16, ["gcn", "bn"]),
            (4, ["gat"]),
            (16, ["sage"]),
            (16, ["gc"]),
            (8, ["gat2"]),
        ],
    ),
    "gin": (
        Gin,
        [
            (32, ["g1.nn.0", "g1.nn.1"]),
            (16, ["g1.nn.3"]),
            (32, ["g2.nn.lins.0", "g2.nn.norms.0.module"]),
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_removes_exactly_the_zero_channels(case: str, graph: dict[str, Tensor]) -> None:
    factory, groups = CASES[case]
    torch.manual_seed(0)
    model = factory()
    model.train()(**graph)  # give BatchNorm running statistics of its own
    model.eval()
    _zero_half(model, groups)
    original = copy.deepcopy(model.state_dict())
    pruned, report = prune(model, HALF, graph)

    assert [entry["layer"] for entry in report.layers] == [p[0] for _, p in groups]
    for entry, (units, _) in zip(report.layers, groups, strict=True):
        assert entry["channels_after"] * 2 == entry["channels_before"]
        assert entry.get("per_head_before", units) == units
    assert report.skipped == []
    assert report.params_after == count_params(pruned) < 0.6 * report.params_before
    with torch.no_grad():
        want, got = model(**graph), pruned(**graph)
    assert got.shape == want.shape and torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())  # input intact


def test_gcn_param_count_and_attributes_halve(graph: dict[str, Tensor]) -> None:
    pruned, report = prune(TwoGCN().eval(), HALF, graph)
    assert report.params_before == F * 64 + 64 + 64 * C + C
    assert report.params_after == F * 32 + 32 + 32 * C + C
    assert (pruned.c1.in_channels, pruned.c1.out_channels, pruned.c2.in_channels) == (F, 32, 32)
    assert repr(pruned.c1) == f"GCNConv({F}, 32)"


def test_onnx_initializers_shrink(graph: dict[str, Tensor], tmp_path) -> None:
    pruned, _ = prune(TwoGCN().eval(), HALF, graph)
    sample = sample_from_arrays({k: v.numpy() for k, v in graph.items()})
    export_model(pruned, sample, tmp_path / "b", ExportConfig(form="dynamic", simplify=False))
    shapes = {
        i.name: list(i.dims) for i in onnx.load(tmp_path / "b" / "model.onnx").graph.initializer
    }
    assert shapes["model.c1.lin.weight"] == [32, F]
    assert shapes["model.c2.lin.weight"] == [C, 32]
