"""Structured pruning leaves whole, or refuses, what it cannot cut consistently."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, SAGEConv, TransformerConv

from edge_sdk.errors import ExportError, UnsupportedModelError
from edge_sdk.exporters.prune import PruneSpec, prune

F, C, N = 12, 3, 40
HALF = PruneSpec("structured", 0.5)


@pytest.fixture
def graph(make_graph) -> dict[str, Tensor]:
    return make_graph(N, F, 160)


class Normed(nn.Module):
    def __init__(self, mix: bool = False) -> None:
        super().__init__()
        self.c1, self.norm = GCNConv(F, 16), nn.LayerNorm(16)
        self.c2, self.c3 = GCNConv(16, 16), GCNConv(16, C)
        self.mix = mix

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.c1(x, edge_index)
        h = h.flip(-1) if self.mix else self.norm(h)  # flip: invisible to hooks
        return self.c3(self.c2(h, edge_index).relu(), edge_index)


@pytest.mark.parametrize(
    ("mix", "reason"), [(False, "norm (LayerNorm)"), (True, "differs from zeroing")]
)
def test_channel_mixing_between_layers_is_skipped(
    mix: bool, reason: str, graph: dict[str, Tensor]
) -> None:
    pruned, report = prune(Normed(mix).eval(), HALF, graph)
    assert [s["layer"] for s in report.skipped] == ["c1"]
    assert reason in report.skipped[0]["reason"]
    assert [e["layer"] for e in report.layers] == ["c2"]
    assert pruned.c1.out_channels == 16 and pruned.c2.out_channels == 8
    assert "skipped" in report.notes[0]


class Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = GCNConv(F, 16), SAGEConv(16, 16)
        self.head = nn.Linear(32, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.c2(self.c1(x, edge_index).relu(), edge_index)
        return self.head(torch.cat([h.mean(0), h.amax(0)]))


def test_width_change_in_between_is_skipped(graph: dict[str, Tensor]) -> None:
    pruned, report = prune(Pooled().eval(), HALF, graph)
    assert [e["layer"] for e in report.layers] == ["c1"]
    assert report.skipped[0]["layer"] == "c2" and "takes 32 features" in report.skipped[0]["reason"]
    assert pruned.head.in_features == 32


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = GCNConv(F, 16), GCNConv(16, 16), GCNConv(16, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.c1(x, edge_index).relu()
        h = self.c2(self.c2(h, edge_index).relu(), edge_index).relu()
        return self.c3(h, edge_index)


def test_shared_layer_nothing_prunable_raises(graph: dict[str, Tensor]) -> None:
    with pytest.raises(ExportError, match=r"no hidden dimension.*c2 is called more than once"):
        prune(Shared().eval(), HALF, graph)


class Two(nn.Module):
    def __init__(self, second: nn.Module) -> None:
        super().__init__()
        self.c1, self.c2 = GCNConv(F, 16), second

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


@pytest.mark.parametrize(
    ("second", "match"),
    [
        (TransformerConv(16, C), r"c2 \(TransformerConv\) follows c1 and is not supported"),
        (SAGEConv(16, C, project=True), r"c2 \(SAGEConv\) has project=True"),
        (SAGEConv(16, C, aggr=["mean", "max"]), r"c2 \(SAGEConv\) uses the aggregation Multi"),
    ],
    ids=["transformer", "sage-project", "sage-multi-aggr"],
)
def test_unsupported_layer_on_hidden_dim_is_named(
    second: nn.Module, match: str, graph: dict[str, Tensor]
) -> None:
    with pytest.raises(UnsupportedModelError, match=match):
        prune(Two(second).eval(), HALF, graph)
