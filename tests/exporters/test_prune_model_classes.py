"""Structured pruning of PyG's model classes: cuts go through jumping knowledge and norms.

Each case prunes half of every hidden dimension of a ``BasicGNN`` and checks
the new widths (convs, ``lin`` after a ``cat`` jumping knowledge, GAT's
per-head channels), and that the pruned model equals an independently zeroed
copy of the original: the removed channels (found by their distinct biases)
get zero input columns in every consumer, at their offset in the concatenation
(and zero projection rows in a GAT layer, whose attention reads them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import onnx
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GCNConv, JumpingKnowledge, SAGEConv
from torch_geometric.nn.models import GAT, GCN, GIN, GraphSAGE

from edge_sdk.errors import ExportError, UnsupportedModelError
from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays
from edge_sdk.exporters.prune import PruneSpec, prune

F, H, L, C, N = 16, 64, 3, 7, 30
HALF = PruneSpec("structured", 0.5)
#: Producer path -> its consumers: (path, first input column of its channels).
Flow = dict[str, list[tuple[str, int]]]


def _chain(prefix: str = "convs.{}", last: int = L - 1) -> Flow:
    return {prefix.format(i): [(prefix.format(i + 1), 0)] for i in range(last)}


def _cat(inner: str = "convs.{}", out: str = "convs.{}") -> Flow:
    """Layer i feeds layer i+1 and ``lin`` at offset ``i * H`` (``jk='cat'``)."""
    flow = {out.format(i): [(inner.format(i + 1), 0), ("lin", i * H)] for i in range(L)}
    flow[out.format(L - 1)].pop(0)
    return flow


GIN_INNER = {f"convs.{i}.nn.lins.0": [(f"convs.{i}.nn.lins.1", 0)] for i in range(L)}
CASES: dict[str, tuple[Callable[[], nn.Module], Flow]] = {
    "GCN": (lambda: GCN(F, H, L, C), _chain()),
    "GCN-jk-cat": (lambda: GCN(F, H, L, C, jk="cat"), _cat()),
    "GCN-jk-max": (lambda: GCN(F, H, L, C, jk="max"), {}),  # tied: checked on its own
    "GraphSAGE-jk-cat": (lambda: GraphSAGE(F, H, L, C, jk="cat"), _cat()),
    "GIN-jk-cat": (
        lambda: GIN(F, H, L, C, jk="cat"),
        GIN_INNER | _cat("convs.{}.nn.lins.0", "convs.{}.nn.lins.1"),
    ),
    "GAT-heads-8": (lambda: GAT(F, H, L, C, heads=8), _chain()),
    "GraphSAGE-batch-norm": (lambda: GraphSAGE(F, H, L, C, norm="batch_norm"), _chain()),
    "GraphSAGE-graph-norm-jk-cat": (
        lambda: GraphSAGE(F, H, L, C, norm="graph_norm", jk="cat"),
        _cat(),
    ),
}


@pytest.fixture(scope="module")
def graph() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(N, F, generator=g),
        "edge_index": torch.randint(0, N, (2, 120), generator=g),
    }


def _model(name: str) -> nn.Module:
    """The case's model with distinct biases (they identify the kept channels) and norms."""
    torch.manual_seed(0)
    model = CASES[name][0]().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "bias", None), Tensor):
                module.bias.normal_()
            if isinstance(module, nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def pruned(graph: dict[str, Tensor]) -> dict[str, tuple[nn.Module, nn.Module, dict]]:
    out = {}
    for name in CASES:
        model = _model(name)
        small, report = prune(model, HALF, graph)
        out[name] = (model, small, report.to_dict())
    return out


def _bias(m: nn.Module) -> Tensor:
    lin = m.lin_l if isinstance(m, SAGEConv) else m
    assert isinstance(lin.bias, Tensor)
    return lin.bias.detach()


def _input_weights(m: nn.Module) -> list[Tensor]:
    if isinstance(m, GCNConv | GATConv):
        return [m.lin.weight]
    if isinstance(m, SAGEConv):
        return [m.lin_l.weight, m.lin_r.weight]
    return [m.weight]


def _dropped(before: Tensor, after: Tensor) -> Tensor:
    kept = [int((before == v).nonzero()) for v in after]
    return torch.tensor(sorted(set(range(len(before))) - set(kept)))


def _zeroed(model: nn.Module, small: nn.Module, flow: Flow) -> nn.Module:
    """``model`` with its removed channels' input columns zeroed in every consumer."""
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for producer, consumers in flow.items():
            drop = _dropped(
                _bias(model.get_submodule(producer)), _bias(small.get_submodule(producer))
            )
            assert len(drop) == len(_bias(model.get_submodule(producer))) // 2, producer
            attention = zeroed.get_submodule(producer)
            if isinstance(attention, GATConv):  # its scores read its own channels too
                attention.lin.weight[drop] = 0.0
            for consumer, offset in consumers:
                for weight in _input_weights(zeroed.get_submodule(consumer)):
                    weight[:, offset + drop] = 0.0
    return zeroed


@pytest.mark.parametrize("name", [n for n, (_, flow) in CASES.items() if flow])
def test_pruned_equals_zeroed_copy(name: str, pruned: dict, graph: dict[str, Tensor]) -> None:
    model, small, report = pruned[name]
    flow = CASES[name][1]
    assert sorted(e["layer"] for e in report["layers"]) == sorted(flow)
    assert report["skipped"] == []
    with torch.no_grad():
        want = _zeroed(model, small, flow)(**graph)
        got = small(**graph)
        assert got.shape == (N, C)
        assert float((got - want).abs().max()) <= 1e-5
        assert float((got - model(**graph)).abs().max()) > 1e-3  # the cut is not a no-op


def test_tied_max_layers_keep_the_same_channels(pruned: dict, graph: dict[str, Tensor]) -> None:
    model, small, report = pruned["GCN-jk-max"]
    (entry,) = report["layers"]
    assert entry["tied"] == ["convs.0", "convs.1", "convs.2"]
    assert (entry["channels_before"], entry["channels_after"]) == (H, H // 2)
    drops = [_dropped(_bias(model.convs[i]), _bias(small.convs[i])) for i in range(L)]
    assert all(torch.equal(d, drops[0]) for d in drops)
    flow = {f"convs.{i}": [(f"convs.{i + 1}", 0)] for i in range(L - 1)}
    flow["convs.2"] = [("lin", 0)]
    zeroed = _zeroed(model, small, flow)
    with torch.no_grad():
        assert float((small(**graph) - zeroed(**graph)).abs().max()) <= 1e-5
    assert small.lin.weight.shape == (C, H // 2)


@pytest.mark.parametrize("name", ["GCN-jk-cat", "GraphSAGE-jk-cat", "GIN-jk-cat"])
def test_jk_cat_lin_shrinks_per_layer(name: str, pruned: dict) -> None:
    _, small, _ = pruned[name]
    assert small.lin.weight.shape == (C, L * H // 2)
    assert small.lin.in_features == L * H // 2
    for conv in small.convs:
        widths = (
            [lin.out_channels for lin in conv.nn.lins]
            if name.startswith("GIN")
            else [conv.out_channels]
        )
        assert widths == [H // 2] * len(widths)


def test_widths_of_the_seed_gcn_and_gat(pruned: dict) -> None:
    gcn = pruned["GCN"][1]
    assert [(c.in_channels, c.out_channels) for c in gcn.convs] == [(F, 32), (32, 32), (32, C)]
    gat, report = pruned["GAT-heads-8"][1], pruned["GAT-heads-8"][2]
    assert [(c.heads, c.out_channels, c.concat) for c in gat.convs] == [
        (8, 4, True), (8, 4, True), (8, C, False),
    ]  # fmt: skip
    assert gat.convs[1].lin.weight.shape == (32, 32) and gat.convs[2].lin.weight.shape == (
        8 * C,
        32,
    )
    assert [(e["heads"], e["per_head_before"], e["per_head_after"]) for e in report["layers"]] == [
        (8, 8, 4), (8, 8, 4),
    ]  # fmt: skip


def test_batch_norm_between_conv_and_act_is_sliced(pruned: dict) -> None:
    model, small, _ = pruned["GraphSAGE-batch-norm"]
    for i in range(L - 1):
        bn = small.norms[i].module
        assert bn.num_features == H // 2 and bn.running_mean.shape == (H // 2,)
        kept = [int((model.norms[i].module.bias == v).nonzero()) for v in bn.bias]
        assert torch.equal(bn.running_var, model.norms[i].module.running_var[kept])


def test_jk_lstm_is_refused_by_name(graph: dict[str, Tensor]) -> None:
    with pytest.raises(UnsupportedModelError, match=r"layer jk \(JumpingKnowledge\)"):
        prune(GCN(F, 8, L, C, jk="lstm").eval(), HALF, graph)


class FunctionalJk(nn.Module):
    """``.relu()`` is invisible to hooks: the pruner cannot tell whose output jk takes."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = GCNConv(F, 8), GCNConv(8, 8)
        self.jk, self.lin = JumpingKnowledge("cat"), nn.Linear(16, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h1 = self.c1(x, edge_index).relu()
        return self.lin(self.jk([h1, self.c2(h1, edge_index).relu()]))


def test_untraceable_jk_input_is_left_whole(graph: dict[str, Tensor]) -> None:
    with pytest.raises(ExportError, match=r"c1: the sliced model fails"):
        prune(FunctionalJk().eval(), HALF, graph)


def test_pruned_jk_cat_model_exports_with_parity(
    pruned: dict, graph: dict[str, Tensor], tmp_path
) -> None:
    sample = sample_from_arrays({k: v.numpy() for k, v in graph.items()})
    small = pruned["GCN-jk-cat"][1]
    result = export_model(
        small, sample, tmp_path / "b", ExportConfig(form="dynamic", simplify=False)
    )
    onnx_model = onnx.load(result.bundle_dir / "model.onnx")
    shapes = {i.name: list(i.dims) for i in onnx_model.graph.initializer}
    assert [C, L * H // 2] in shapes.values()  # lin after the concatenation
    assert [r.artifact for r in result.manifest.parity if r.passed] == ["onnx-fp32"]
