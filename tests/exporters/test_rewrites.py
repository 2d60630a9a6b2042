"""Project-then-aggregate rewrite: exact, applied only where it narrows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch_geometric.nn import GraphConv, SAGEConv

from edge_sdk import Runtime
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.rewrites import (
    ProjectFirstGraphConv,
    ProjectFirstSAGE,
    project_first,
)


class Net(nn.Module):
    def __init__(self, conv1: nn.Module, conv2: nn.Module) -> None:
        super().__init__()
        self.convs = nn.ModuleList([conv1, conv2])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.convs[1](self.convs[0](x, edge_index).relu(), edge_index)


def graph(seed: int, n: int = 30, e: int = 90, f: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    ei = rng.integers(0, n - 3, (2, e))  # the last 3 nodes are isolated
    ei[:, :5] = ei[:, 5:10]  # duplicate edges
    return torch.from_numpy(rng.normal(size=(n, f)).astype(np.float32)), torch.from_numpy(ei)


@pytest.mark.parametrize(
    "conv1",
    [
        lambda: SAGEConv(40, 8),
        lambda: SAGEConv(40, 8, aggr="sum"),
        lambda: SAGEConv(40, 8, normalize=True, root_weight=False),
        lambda: SAGEConv(40, 8, bias=False),
        lambda: GraphConv(40, 8),
        lambda: GraphConv(40, 8, aggr="mean"),
    ],
)
def test_rewrite_is_exact(conv1) -> None:
    torch.manual_seed(0)
    model = Net(conv1(), SAGEConv(8, 3, aggr="max")).eval()  # max is not linear: kept
    rewritten, paths = project_first(model)
    assert paths == ["convs.0"]
    assert isinstance(rewritten.convs[0], ProjectFirstSAGE | ProjectFirstGraphConv)
    assert type(model.convs[0]) in (SAGEConv, GraphConv)  # the original is untouched
    for seed in range(3):
        x, ei = graph(seed)
        with torch.no_grad():
            torch.testing.assert_close(rewritten(x, ei), model(x, ei), atol=1e-5, rtol=1e-5)


def test_only_narrowing_linear_aggregations_are_rewritten() -> None:
    model = Net(SAGEConv(40, 64), SAGEConv(64, 3, aggr="max"))
    assert project_first(model) == (model, [])
    assert project_first(Net(SAGEConv(40, 8, project=True), SAGEConv(8, 8)))[1] == []


def test_export_records_rewrite_and_matches_pytorch(tmp_path) -> None:
    torch.manual_seed(1)
    model = Net(SAGEConv(40, 8), GraphConv(8, 3)).eval()
    x, ei = graph(7)
    # Project-first is the scatter form's rewrite (tables lower each layer themselves).
    sample = sample_from_arrays({"x": x.numpy(), "edge_index": ei.numpy()})
    res = export_model(model, sample, tmp_path / "b", ExportConfig(aggregation="scatter"))
    assert res.manifest.export["rewrites"] == [
        "convs.0: project before aggregating",
        "convs.1: project before aggregating",
    ]
    x2, ei2 = graph(8, n=50, e=200)
    with torch.no_grad():
        want = model(x2, ei2).numpy()
    got = Runtime.load(res.bundle_dir).infer({"x": x2.numpy(), "edge_index": ei2.numpy()})
    np.testing.assert_allclose(got["out"], want, atol=1e-5)
