"""Aggregations: ``MultiAggregation`` lowered exactly, the rest refused by name.

``aggr=['mean', 'max']`` and its ``aggr_kwargs`` combine modes in ``SAGEConv``,
``GraphConv``, ``GINConv`` and ``GINEConv`` are compared with eager PyG on the
awkward graphs of ``test_table_lowering.py`` (duplicate edges, self loops, isolated
nodes, a hub spilling over rows, no edges), over neighbour tables (static,
dynamic, a padded bucket) and dense ``[N, N]`` folding. A ``GraphSAGE(aggr=['mean',
'max'])`` in the dynamic form (the support matrix's session bundle, ``table_bundles``)
runs through the ``Runtime`` on ONNX Runtime and LiteRT. Learnable and
order-dependent aggregations are refused by name (the support walk, the lowerings,
the CLI), and a user's own ``MessagePassing`` keeps PyG's scatter where an engine
runs it and is refused, naming the layer, where none can (LiteRT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import edge_export
from table_bundles import Bundles, C, F, H, build_model
from test_table_lowering import (
    D_EDGE,
    F_IN,
    GRAPHS,
    MODES,
    TOL,
    A,
    Case,
    One,
    W,
    build,
    features,
    mlp,
    pyg,
)
from torch import Tensor, nn
from torch_geometric.nn import GINConv, GINEConv, GraphConv, MessagePassing, SAGEConv
from torch_geometric.nn.aggr import MultiAggregation

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters import sample_from_arrays
from edge_sdk.exporters.lowering import densify
from edge_sdk.exporters.lowering.tabulate import tabulate
from edge_sdk.exporters.prepare import prepare
from edge_sdk.exporters.support import check_supported


def proj(width: int = F_IN) -> dict[str, object]:
    """``aggr_kwargs`` of a ``proj`` combine back to ``width`` features."""
    return {"mode": "proj", "mode_kwargs": {"in_channels": F_IN, "out_channels": width}}


THREE = ["mean", "max", "min"]
MULTI: dict[str, Case] = {
    "sage-cat": Case(lambda: SAGEConv(F_IN, 4, aggr=["mean", "max"])),
    "sage-cat3-project": Case(lambda: SAGEConv(F_IN, 4, aggr=["sum", "min", "max"], project=True)),
    "sage-one-of-list": Case(lambda: SAGEConv(F_IN, 4, aggr=["max"])),
    "sage-module-proj": Case(
        lambda: SAGEConv(
            F_IN,
            4,
            aggr=MultiAggregation(["mean", "max"], **proj(3)),  # type: ignore[arg-type]
        )
    ),
    **{
        f"sage-{mode}": Case(lambda m=mode: SAGEConv(F_IN, 4, aggr=THREE, aggr_kwargs={"mode": m}))
        for mode in ("sum", "mean", "max", "min", "logsumexp", "std", "var")
    },
    "graph-proj-weight": Case(
        lambda: GraphConv(F_IN, 4, aggr=["sum", "max"], aggr_kwargs=proj()), W
    ),
    "graph-max-weight": Case(
        lambda: GraphConv(F_IN, 4, aggr=["mean", "min"], aggr_kwargs={"mode": "max"}), W
    ),
    "gin-mean": Case(
        lambda: GINConv(mlp(F_IN, 4), aggr=["sum", "max"], aggr_kwargs={"mode": "mean"})
    ),
    "gine-sum": Case(
        lambda: GINEConv(
            mlp(F_IN, 4), edge_dim=D_EDGE, aggr=["mean", "max"], aggr_kwargs={"mode": "sum"}
        ),
        A,
    ),
}
DENSE = [name for name in MULTI if not name.startswith("gine")]  # GINEConv: tables only


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(MULTI))
def test_multi_aggregation_over_tables_matches_pyg(name: str, mode: str) -> None:
    case = MULTI[name]
    model = build(case)
    low, variants = tabulate(model)
    err = max(MODES[mode](model, low, variants, case, *g()) for g in GRAPHS.values())
    assert err <= TOL, f"{name} ({mode}): max abs error {err:.3g}"


@pytest.mark.parametrize("name", DENSE)
def test_multi_aggregation_dense_matches_pyg(name: str) -> None:
    """Two stacked graphs through the dense lowering (edge weights folded for GraphConv)."""
    case = MULTI[name]
    model = build(case)
    for make in GRAPHS.values():
        n, ei = make()
        parts = [features(case, n, ei.shape[1], seed) for seed in (1, 2)]
        weight = parts[0][1]  # one fixed graph: the same weights for both
        dense = densify(model, torch.from_numpy(ei), n, edge_weight=weight)
        with torch.no_grad():
            out = dense(torch.cat([x for x, _ in parts]), None)
        for g, (x, _) in enumerate(parts):
            err = (out[g * n : (g + 1) * n] - pyg(model, x, ei, weight)).abs().max().item()
            assert err <= TOL, f"{name} (dense, {make.__name__}): max abs error {err:.3g}"


def test_sage_cat_widens_lin_l_as_pyg_does() -> None:
    conv = SAGEConv(F_IN, 4, aggr=["mean", "max", "min"])
    low, _ = tabulate(One(conv, None))
    assert low.conv.lin_l.in_channels == 3 * F_IN  # the lowering reuses PyG's lin_l


# --- refusals, by name -------------------------------------------------------------


class Wrap(nn.Module):
    """A model whose layer sits at ``body.conv`` (the path the messages must name)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.body = nn.ModuleDict({"conv": conv})

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.body["conv"](x, edge_index)


@pytest.mark.parametrize(
    ("aggr", "kwargs", "named"),
    [
        ("softmax", {}, "SoftmaxAggregation"),
        ("powermean", {}, "PowerMeanAggregation"),
        ("lstm", {}, "LSTMAggregation"),
        ("sort", {"aggr_kwargs": {"k": 2}}, "SortAggregation"),
        (["mean", "softmax"], {}, "SoftmaxAggregation"),
        (["max", "powermean"], {"aggr_kwargs": {"mode": "sum"}}, "PowerMeanAggregation"),
    ],
)
def test_learnable_and_order_dependent_aggregations_are_refused_by_name(
    aggr: object, kwargs: dict[str, object], named: str
) -> None:
    model = Wrap(SAGEConv(F_IN, 4, aggr=aggr, **kwargs))  # type: ignore[arg-type]
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(model)
    msg = str(err.value)
    assert msg.startswith("layer body.conv.aggr_module") and f"aggregation {named}" in msg
    assert "supported: sum, mean, max, min and MultiAggregation" in msg


def test_attn_combine_mode_is_refused_by_name() -> None:
    kwargs = {"mode": "attn", "mode_kwargs": {"in_channels": F_IN, "out_channels": F_IN}}
    model = Wrap(SAGEConv(F_IN, 4, aggr=["mean", "max"], aggr_kwargs=kwargs))
    with pytest.raises(
        UnsupportedModelError,
        match=r"layer body\.conv\.aggr_module: "
        r"MultiAggregation mode 'attn' is not supported",
    ):
        check_supported(model)
    # The lowerings refuse it too (a model that skipped the walk), naming layer and mode.
    with pytest.raises(UnsupportedModelError, match=r"'body\.conv' \(SAGEConv\).*'attn'"):
        tabulate(model)


def test_lowerings_name_the_inner_aggregation_they_cannot_lower() -> None:
    """std/var pass the walk (PNA's); inside a SAGEConv list no lowering takes them."""
    model = Wrap(SAGEConv(F_IN, 4, aggr=["mean", "std"]))
    for lower in (tabulate, lambda m: densify(m, torch.zeros(2, 0, dtype=torch.long), 3)):
        with pytest.raises(UnsupportedModelError) as err:
            lower(model)
        assert "'body.conv' (SAGEConv)" in str(err.value)
        assert "StdAggregation has no lowering" in str(err.value)


MODEL_SRC = """
import torch
from torch_geometric.nn import SAGEConv

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = SAGEConv(5, 3, aggr=["mean", "softmax"])
    def forward(self, x, edge_index):
        return self.conv(x, edge_index)

def net():
    return Net()
"""


def test_cli_refuses_a_softmax_aggregation_by_name(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(MODEL_SRC)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, edge_index=rng.integers(0, 12, (2, 30)))
    proc = edge_export(
        "export",
        "--model",
        f"{tmp_path}/models.py:net",
        "-s",
        str(tmp_path / "s.npz"),
        "-o",
        str(tmp_path / "out"),
        check=3,
    )
    assert "layer conv.aggr_module.aggrs.1" in proc.stderr
    assert "aggregation SoftmaxAggregation is not supported" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


# --- GraphSAGE(aggr=['mean', 'max']) through the Runtime: ONNX Runtime and LiteRT ----------


def graph(rng: np.random.Generator, n: int, e: int) -> dict[str, np.ndarray]:
    """``n`` nodes, ``e`` edges: the first three repeated, the last node isolated."""
    ei = rng.integers(0, max(1, n - 1), (2, e)).astype(np.int64)
    if e > 6:
        ei[:, :3] = ei[:, 3:6]
    return {"x": rng.uniform(-1, 1, (n, F)).astype(np.float32), "edge_index": ei}


@pytest.mark.requires_backend("onnxruntime")
@pytest.mark.requires_backend("ai_edge_litert")
@pytest.mark.timeout(900)  # the first test to ask for the shared bundle exports it
@pytest.mark.parametrize("backend", ["onnxruntime", "litert"])
def test_graphsage_multi_aggregation_runs_on_ort_and_litert(
    table_bundles: Bundles, backend: str
) -> None:
    """The support matrix's ``SAGE-multi`` bundle (dynamic form over neighbour tables,
    exported once per session) on graphs it never saw: no edges, duplicates, isolated."""
    from edge_sdk import Runtime

    built = table_bundles.get("SAGE-multi", "dynamic")
    if built.error is not None:
        raise built.error
    assert built.bundle is not None
    model = build_model("SAGE-multi")
    assert model.convs[0].aggr == ["mean", "max"]
    rng = np.random.default_rng(5)
    with Runtime.load(built.bundle, backend=backend, precision="fp32") as rt:
        assert rt.manifest.graph.aggregation == "tables"
        assert all(not [op for op in a.ops if "Scatter" in op] for a in rt.manifest.artifacts)
        for n, e in [(1, 0), (7, 0), (20, 50), (32, 90)]:
            req = graph(rng, n, e)
            with torch.no_grad():
                want = model(torch.from_numpy(req["x"]), torch.from_numpy(req["edge_index"]))
            got = rt.infer(req)["out"]
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4, err_msg=f"{n} nodes")
    assert float(want.abs().max()) > 1e-2  # not trivially zero


# --- the user's own MessagePassing: scatter where it runs, refused by name where not --------


class MaxDiff(MessagePassing):
    """An EdgeConv-like layer of the user's: ``max_j lin(x_j) - lin(x_i)``."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__(aggr="max")
        self.lin = nn.Linear(i, o)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.propagate(edge_index, x=self.lin(x))

    def message(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        return x_j - x_i


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = SAGEConv(F, H), MaxDiff(H, C)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.c2(self.c1(x, edge_index).relu(), edge_index)


def test_custom_message_passing_is_a_graph_layer_of_the_walk() -> None:
    assert check_supported(Custom()) == ["SAGEConv", "MaxDiff"]


def test_custom_message_passing_keeps_scatter_with_the_reason() -> None:
    """Both forms keep PyG's own scatter (ONNX Runtime / OpenVINO run it); the reason
    names the layer. Asked for tables (or dense), the export is refused naming it."""
    rng = np.random.default_rng(1)
    dynamic = sample_from_arrays(graph(rng, 12, 30))
    static_graph = graph(rng, 12, 30)
    static_graph["x"] = rng.uniform(-1, 1, (2, 12, F)).astype(np.float32)
    static = sample_from_arrays(static_graph)
    for sample in (dynamic, static):
        prepared = prepare(Custom().eval(), [sample], "auto")
        assert prepared.aggregation == "scatter"
        assert "'c2' (MaxDiff)" in prepared.aggregation_reason
        assert prepared.graph_layers == ["SAGEConv", "MaxDiff"]
        for asked in ("tables", "dense") if sample is static else ("tables",):
            with pytest.raises(UnsupportedModelError, match=rf"'{asked}'.*'c2' \(MaxDiff\)"):
                prepare(Custom().eval(), [sample], "auto", aggregation=asked)


def test_litert_refusal_names_the_layer_that_keeps_scatter() -> None:
    """Not the usual advice (tables, the static or dense form): none of them lowers it."""
    from types import SimpleNamespace

    from edge_sdk.exporters.targets.to_litert import layer_refusal

    reason = "scatter: Cannot lower layer 'c2' (MaxDiff) to neighbour tables: no lowering"
    job = SimpleNamespace(graph=SimpleNamespace(aggregation="scatter", aggregation_reason=reason))
    msg = layer_refusal(job, ["ScatterElements(reduction=max)"])  # type: ignore[arg-type]
    assert msg is not None and "ScatterElements(reduction=max)" in msg and reason in msg
    asked = SimpleNamespace(aggregation="scatter", aggregation_reason="asked for (--aggregation)")
    assert layer_refusal(SimpleNamespace(graph=asked), []) is None  # type: ignore[arg-type]
