"""Unstructured magnitude pruning: permanent zeros in every Linear weight."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, SAGEConv

from edge_sdk.errors import ExportError
from edge_sdk.exporters.prune import PruneSpec, prune

F, C, N = 8, 3, 30


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gat = GATConv(F, 8, heads=2)
        self.sage = SAGEConv(16, 16)
        self.gat2 = GATv2Conv(16, 4, share_weights=True)
        self.head = nn.Linear(4, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.sage(self.gat(x, edge_index).relu(), edge_index).relu()
        return self.head(self.gat2(h, edge_index))


LINEARS = ["gat.lin", "sage.lin_l", "sage.lin_r", "gat2.lin_l", "head"]


@pytest.fixture
def graph(make_graph) -> dict[str, Tensor]:
    return make_graph(N, F, 90)


def _weights(model: nn.Module) -> dict[str, Tensor]:
    modules = dict(model.named_modules())
    return {p: modules[p].weight for p in LINEARS}


def test_global_zeroes_the_smallest_weights_permanently(graph: dict[str, Tensor]) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    before = copy.deepcopy(model.state_dict())
    pruned, report = prune(model, PruneSpec.parse("unstructured:0.6"), graph)

    assert [entry["layer"] for entry in report.layers] == LINEARS  # shared lin_l/lin_r once
    weights = torch.cat([w.flatten() for w in _weights(pruned).values()])
    assert report.sparsity == pytest.approx(0.6, abs=1 / weights.numel())
    assert float((weights == 0).float().mean()) == pytest.approx(report.sparsity)
    originals = torch.cat([w.flatten() for w in _weights(model).values()]).abs()
    assert originals[weights == 0].max() <= originals[weights != 0].min()  # by magnitude
    assert report.params_after == report.params_before - int((weights == 0).sum())
    assert any("ONNX" in note for note in report.notes)

    state = pruned.state_dict()
    assert not [k for k in state if k.endswith(("weight_orig", "weight_mask"))]
    fresh = Net()
    fresh.load_state_dict(state)  # strict: the plain model takes it
    assert torch.equal(state["gat.att_src"], before["gat.att_src"])  # attention stays dense
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # input intact
    assert torch.isfinite(pruned(**graph)).all()


def test_layer_scope_prunes_each_layer_by_the_amount(graph: dict[str, Tensor]) -> None:
    pruned, report = prune(Net().eval(), PruneSpec.parse("unstructured:0.3:layer"), graph)
    assert report.scope == "layer"
    for entry, weight in zip(report.layers, _weights(pruned).values(), strict=True):
        assert entry["sparsity"] == pytest.approx(0.3, abs=1 / weight.numel())
        assert entry["params"] == weight.numel()


def test_model_without_linear_layers_is_refused(graph: dict[str, Tensor]) -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(F))

        def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
            return x * self.w

    with pytest.raises(ExportError, match="no Linear layer"):
        prune(Scale(), PruneSpec("unstructured", 0.5), graph)
