"""Neighbour-table lowering of every supported PyG layer, exact against PyG.

Each layer/option is lowered by :func:`tabulate` and run on awkward graphs
(duplicate edges, self loops, isolated nodes, no edges, a hub whose in-degree
spills over several rows of the widest class) with the tables as constants of
two stacked graphs (static form), as inputs built by ``request_tables``
(dynamic form), and as inputs padded to a bucket's fixed class capacities.
One ONNX export per layer family checks the lowered graph on ONNX Runtime.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GINEConv,
    GraphConv,
    SAGEConv,
)

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters.lowering.tables import InputTables, use_tables
from edge_sdk.exporters.lowering.tabulate import constant_tables, tabulate
from edge_sdk.neighbour_tables import TableLayout, bucket_capacity, request_tables, widths_up_to

TOL = 1e-5
MAX_WIDTH = 4  # small classes so the hub spills
WIDTHS = widths_up_to(MAX_WIDTH)
SPLITS = 4  # the hub needs 3 rows of width 4
F_IN, D_EDGE = 6, 3


def hub_graph() -> tuple[int, np.ndarray]:
    """9 nodes: node 0 gets 11 edges (4 duplicates, its own self loop), 1 -> 2 twice,
    self loops on 3 (twice) and 5, node 7 only sends, node 8 is isolated."""
    src = [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 0, 1, 1, 3, 3, 5, 7, 7, 2, 6]
    dst = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 3, 3, 5, 1, 5, 6, 4]
    return 9, np.array([src, dst], np.int64)


def random_graph() -> tuple[int, np.ndarray]:
    rng = np.random.default_rng(3)
    return 12, rng.integers(0, 12, (2, 30))


def empty_graph() -> tuple[int, np.ndarray]:
    return 4, np.zeros((2, 0), np.int64)


GRAPHS = {"hub": hub_graph, "random": random_graph, "empty": empty_graph}


@dataclass(frozen=True)
class Case:
    """One layer configuration: how to build it and which per-edge argument it takes."""

    build: Callable[[], nn.Module]
    edge_arg: str | None = None  # "edge_weight" / "edge_attr"
    edge_dim: int = D_EDGE  # 0: one value per edge, ``edge_attr [E]``
    att_scale: float = 1.0  # of attention vectors (large: logits far below 0)


def mlp(i: int, o: int) -> nn.Module:
    return nn.Sequential(nn.Linear(i, 8), nn.ReLU(), nn.Linear(8, o))


W, A = "edge_weight", "edge_attr"
CASES: dict[str, Case] = {
    "gcn": Case(lambda: GCNConv(F_IN, 4)),
    "gcn-improved": Case(lambda: GCNConv(F_IN, 4, improved=True)),
    "gcn-normalize-false": Case(lambda: GCNConv(F_IN, 4, normalize=False)),
    "gcn-no-self-loops": Case(lambda: GCNConv(F_IN, 4, add_self_loops=False)),
    "gcn-no-bias": Case(lambda: GCNConv(F_IN, 8, bias=False)),
    "gcn-weight-no-self-loops": Case(lambda: GCNConv(F_IN, 4, add_self_loops=False), W),
    "gcn-weight-normalize-false": Case(lambda: GCNConv(F_IN, 4, normalize=False), W),
    "graph-sum": Case(lambda: GraphConv(F_IN, 4)),
    "graph-wide": Case(lambda: GraphConv(F_IN, 8, aggr="mean")),
    "graph-no-bias": Case(lambda: GraphConv(F_IN, 4, aggr="max", bias=False)),
    **{
        f"graph-{a}-weight": Case(lambda a=a: GraphConv(F_IN, 4, aggr=a), W)
        for a in ("sum", "mean", "max", "min")
    },
    "gin": Case(lambda: GINConv(mlp(F_IN, 4))),
    "gin-eps": Case(lambda: GINConv(mlp(F_IN, 4), eps=0.3)),
    "gin-train-eps": Case(lambda: GINConv(mlp(F_IN, 4), eps=-0.2, train_eps=True)),
    "gin-max": Case(lambda: GINConv(mlp(F_IN, 4), aggr="max")),
    "gine-edge-dim": Case(lambda: GINEConv(mlp(F_IN, 4), edge_dim=D_EDGE), A),
    "gine-same-dim": Case(lambda: GINEConv(mlp(F_IN, 4), train_eps=True, eps=0.1), A, F_IN),
    "gine-mean": Case(lambda: GINEConv(mlp(F_IN, 4), edge_dim=D_EDGE, aggr="mean"), A),
    **{
        f"sage-{a}": Case(lambda a=a: SAGEConv(F_IN, 4, aggr=a))
        for a in ("sum", "mean", "max", "min")
    },
    "sage-wide": Case(lambda: SAGEConv(F_IN, 8, aggr="sum")),
    "sage-no-root": Case(lambda: SAGEConv(F_IN, 4, root_weight=False)),
    "sage-normalize": Case(lambda: SAGEConv(F_IN, 4, normalize=True)),
    "sage-project": Case(lambda: SAGEConv(F_IN, 4, project=True, aggr="max")),
    "sage-project-mean": Case(lambda: SAGEConv(F_IN, 4, project=True)),
    "sage-no-bias": Case(lambda: SAGEConv(F_IN, 4, bias=False)),
    **{
        f"{name}-{opt}": Case(
            lambda cls=cls, kw=kw: cls(F_IN, 4, **kw), A if "edge_dim" in kw else None
        )
        for name, cls in (("gat", GATConv), ("gatv2", GATv2Conv))
        for opt, kw in {
            "default": {},
            "heads": {"heads": 3},
            "heads-mean": {"heads": 3, "concat": False},
            "slope": {"heads": 2, "negative_slope": 0.05},
            "no-self-loops": {"heads": 2, "add_self_loops": False},
            "no-bias": {"bias": False},
            "residual": {"heads": 2, "residual": True},
            "residual-mean": {"heads": 2, "concat": False, "residual": True},
            "edge-mean": {"heads": 2, "edge_dim": D_EDGE},
            "edge-fill": {"heads": 2, "edge_dim": D_EDGE, "fill_value": 0.5},
            "edge-no-self-loops": {"edge_dim": D_EDGE, "add_self_loops": False},
        }.items()
    },
    "gat-edge-1d": Case(lambda: GATConv(F_IN, 4, heads=2, edge_dim=1), A, 0),
    "gatv2-edge-1d": Case(lambda: GATv2Conv(F_IN, 4, edge_dim=1, fill_value=-1.0), A, 0),
    "gat-large-logits": Case(lambda: GATConv(F_IN, 4, heads=2), att_scale=3000.0),
    "gatv2-large-logits": Case(lambda: GATv2Conv(F_IN, 4, heads=2), att_scale=3000.0),
    "gat-bipartite-weights": Case(lambda: GATConv((F_IN, F_IN), 4, heads=2)),
    "gatv2-share-weights": Case(lambda: GATv2Conv(F_IN, 4, heads=2, share_weights=True)),
}


class One(nn.Module):
    """One conv called as a user's forward would: ``conv(x, edge_index[, edge])``."""

    def __init__(self, conv: nn.Module, edge_arg: str | None) -> None:
        super().__init__()
        self.conv, self.edge_arg = conv, edge_arg

    def forward(self, x: Tensor, edge_index: Tensor | None, edge: Tensor | None = None) -> Tensor:
        if self.edge_arg is None:
            return self.conv(x, edge_index)
        return self.conv(x, edge_index, **{self.edge_arg: edge})


def build(case: Case, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = One(case.build(), case.edge_arg).eval()
        for name, p in model.named_parameters():  # non-zero biases, eps, attention
            if p.dim() == 1 or p.shape[0] == 1:
                p.data.uniform_(-0.5, 0.5)
            if name.rpartition(".")[2].startswith("att"):
                p.data *= case.att_scale
    return model


def features(case: Case, n: int, e: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """Seeded node features and the case's per-edge values (positive weights)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F_IN, generator=g)
    if case.edge_arg == W:
        return x, torch.rand(e, generator=g) + 0.2
    if case.edge_arg == A:
        return x, torch.randn(e, *([case.edge_dim] if case.edge_dim else []), generator=g)
    return x, None


def pyg(model: nn.Module, x: Tensor, ei: np.ndarray, edge: Tensor | None) -> Tensor:
    with torch.no_grad():
        return model(x, torch.from_numpy(ei), edge)


def layout(variants: Sequence[str], caps: list[list[list[int]]] | None = None) -> TableLayout:
    return TableLayout(
        widths=WIDTHS,
        max_splits=SPLITS,
        variants=list(variants),
        edge_ids=True,
        capacities=caps or [],
    )


def input_tables(feeds: dict[str, np.ndarray], variants: Sequence[str]) -> InputTables:
    spec = {v: (len(WIDTHS), SPLITS, True) for v in variants}
    return InputTables({k: torch.from_numpy(a) for k, a in feeds.items()}, spec)


def run_static(model, low, variants, case, n, ei) -> float:
    """Two stacked graphs over constant tables, each compared with PyG."""
    e = ei.shape[1]
    parts = [features(case, n, e, seed) for seed in (1, 2)]
    x = torch.cat([p[0] for p in parts])
    edge = None if case.edge_arg is None else torch.cat([p[1] for p in parts])
    with torch.no_grad(), use_tables(constant_tables(ei, n, variants, max_width=MAX_WIDTH)):
        out = low(x, None, edge)
    return max(
        (out[g * n : (g + 1) * n] - pyg(model, xg, ei, eg)).abs().max().item()
        for g, (xg, eg) in enumerate(parts)
    )


def run_dynamic(model, low, variants, case, n, ei) -> float:
    """Tables built by ``request_tables`` as the dynamic form's inputs."""
    x, edge = features(case, n, ei.shape[1], 1)
    feeds = request_tables(ei, n, layout(variants))
    with torch.no_grad(), use_tables(input_tables(feeds, variants)):
        out = low(x, None, edge)
    return (out - pyg(model, x, ei, edge)).abs().max().item()


def run_bucket(model, low, variants, case, n, ei) -> float:
    """A request padded to a bucket: 3 zero nodes, 2 zero edge rows, fixed class capacities."""
    e = ei.shape[1]
    x, edge = features(case, n, e, 1)
    pad_n, pad_e = n + 3, e + 2
    x_pad = torch.cat([x, torch.zeros(3, F_IN)])
    edge_pad = None
    if edge is not None:
        edge_pad = torch.cat([edge, torch.zeros(2, *edge.shape[1:])])
    caps = [[bucket_capacity(WIDTHS, pad_n, pad_e + pad_n, SPLITS)] for _ in variants]
    feeds = request_tables(ei, pad_n, layout(variants, caps), bucket=0, num_edges=pad_e)
    with torch.no_grad(), use_tables(input_tables(feeds, variants)):
        out = low(x_pad, None, edge_pad)
    return (out[:n] - pyg(model, x, ei, edge)).abs().max().item()


MODES = {"static": run_static, "dynamic": run_dynamic, "bucket": run_bucket}


def case_error(name: str, mode: str) -> float:
    """Largest abs difference from PyG over :data:`GRAPHS` for one case and mode."""
    case = CASES[name]
    model = build(case)
    low, variants = tabulate(model)
    return max(MODES[mode](model, low, variants, case, *g()) for g in GRAPHS.values())


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(CASES))
def test_lowered_layer_matches_pyg(name: str, mode: str) -> None:
    err = case_error(name, mode)
    assert err <= TOL, f"{name} ({mode}): max abs error {err:.3g}"


def test_hub_spills_over_rows() -> None:
    """The hub graph exercises split rows (the point of the small widths)."""
    n, ei = hub_graph()
    feeds = request_tables(ei, n, layout(["raw", "loops"]))
    assert feeds["raw.order"].shape[1] == 3  # 11 edges over rows of 4
    assert feeds["loops.order_mask"][0].sum() == 3  # 10 edges and its loop


@pytest.mark.parametrize(
    ("conv", "option"),
    [
        (GATConv(F_IN, 4, edge_dim=D_EDGE, fill_value="max"), "fill_value='max'"),
        (GATv2Conv(F_IN, 4, edge_dim=D_EDGE, fill_value="add"), "fill_value='add'"),
        (SAGEConv(F_IN, 4, aggr="lstm"), "aggr='lstm'"),
        (GraphConv(F_IN, 4, aggr="mul"), "aggr='mul'"),
        (GCNConv(F_IN, 4, flow="target_to_source"), "flow='target_to_source'"),
    ],
)
def test_unsupported_options_are_named(conv: nn.Module, option: str) -> None:
    with pytest.raises(UnsupportedModelError) as err:
        tabulate(One(conv, None))
    assert "'conv'" in str(err.value) and option in str(err.value)


def test_gcn_edge_weight_with_added_loops_is_refused() -> None:
    case = Case(lambda: GCNConv(F_IN, 4), W)
    model = build(case)
    low, variants = tabulate(model)
    n, ei = hub_graph()
    x, w = features(case, n, ei.shape[1], 1)
    feeds = request_tables(ei, n, layout(variants))
    with (
        pytest.raises(UnsupportedModelError, match=r"'conv'.*edge_weight"),
        use_tables(input_tables(feeds, variants)),
    ):
        low(x, None, w)


def test_unknown_layer_is_refused_by_name() -> None:
    from torch_geometric.nn import ChebConv

    with pytest.raises(UnsupportedModelError, match="'conv' \\(ChebConv\\)"):
        tabulate(One(ChebConv(F_IN, 4, K=2), None))


# --- ONNX round trip: every family in one model, tables as model inputs -----------

FAMILIES = {
    "gcn": "gcn",
    "graph": "graph-mean-weight",
    "gin": "gin-train-eps",
    "gine": "gine-edge-dim",
    "sage": "sage-project-mean",
    "gat": "gat-edge-mean",
    "gatv2": "gatv2-edge-mean",
}


class Families(nn.Module):
    """One layer of each family side by side on the same graph (one export for all)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(
            {f: build(CASES[name], seed=k) for k, (f, name) in enumerate(FAMILIES.items())}
        )

    def forward(
        self, x: Tensor, edge_index: Tensor | None, weight: Tensor, attr: Tensor
    ) -> tuple[Tensor, ...]:
        given = {None: None, W: weight, A: attr}
        return tuple(one(x, edge_index, given[one.edge_arg]) for one in self.layers.values())


class TableInputs(nn.Module):
    """``(x, edge_weight, edge_attr, *tables)``: the dynamic form's positional inputs."""

    def __init__(self, low: nn.Module, variants: list[str]) -> None:
        super().__init__()
        self.low, self.variants = low, variants
        self.names = layout(variants).input_names()

    def forward(self, x: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        weight, attr, tabs = rest[0], rest[1], rest[2:]
        feeds = dict(zip(self.names, tabs, strict=True))
        spec = {v: (len(WIDTHS), SPLITS, True) for v in self.variants}
        with use_tables(InputTables(feeds, spec)):
            return self.low(x, None, weight, attr)


def dynamic_shapes(names: list[str]) -> tuple[object, ...]:
    """One ``Dim`` for the nodes, the edges, each variant's splits and each (variant, class)."""
    nodes, edges = torch.export.Dim("nodes"), torch.export.Dim("edges")
    dims: dict[str, torch.export.Dim] = {}
    tables: list[dict[int, torch.export.Dim]] = []
    for name in names:
        variant, field = name.split(".")
        if field.startswith("order"):
            key = f"{variant}_splits"
            tables.append({0: nodes, 1: dims.setdefault(key, torch.export.Dim(key))})
            continue
        key = f"{variant}_rows{re.sub(r'[a-z_]', '', field)}"  # index0, mask0, ... -> 0
        tables.append({0: dims.setdefault(key, torch.export.Dim(key))})
    return ({0: nodes}, ({0: edges}, {0: edges}, *tables))


def edge_inputs(n: int, e: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, F_IN, generator=g)
    return x, torch.rand(e, generator=g) + 0.2, torch.randn(e, D_EDGE, generator=g)


def test_onnx_round_trip_every_family(tmp_path) -> None:
    """Exported with tables as inputs, the lowered layers run on ONNX Runtime for graphs
    of other sizes (spilled rows, no edges) as PyG computes them; the graph holds no
    scatter and no tensor above 3-D."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = Families().eval()
    low, variants = tabulate(model)
    wrapper = TableInputs(low, variants).eval()
    # Example padded to a bucket so every class has >= 2 rows (no 0/1 specialisation).
    n, e = 20, 50
    ei = np.random.default_rng(0).integers(0, n, (2, e))
    caps = [[bucket_capacity(WIDTHS, n, e + n, SPLITS)] for _ in variants]
    feeds = request_tables(ei, n, layout(variants, caps), bucket=0)
    tabs = tuple(torch.from_numpy(feeds[k]) for k in wrapper.names)
    ep = torch.export.export(
        wrapper,
        (*edge_inputs(n, e, 0), *tabs),
        dynamic_shapes=dynamic_shapes(wrapper.names),
        strict=False,
    )
    path = tmp_path / "families.onnx"
    torch.onnx.export(ep, dynamo=True, opset_version=18).save(str(path))
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    assert not {node.op_type for node in graph.node} & {"ScatterElements", "ScatterND"}
    ranks = [len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.output]]
    assert max(ranks) <= 3
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    worst = dict.fromkeys(FAMILIES, 0.0)
    for make in GRAPHS.values():
        n, ei = make()
        x, w, a = edge_inputs(n, ei.shape[1], 1)
        f = request_tables(ei, n, layout(variants))
        arrays = [x.numpy(), w.numpy(), a.numpy()] + [f[k] for k in wrapper.names]
        outs = sess.run(None, dict(zip(inputs, arrays, strict=True)))
        with torch.no_grad():
            refs = model(x, torch.from_numpy(ei), w, a)
        for fam, out, ref in zip(FAMILIES, outs, refs, strict=True):
            worst[fam] = max(worst[fam], float(np.abs(out - ref.numpy()).max()))
    assert max(worst.values()) <= TOL, f"ONNX Runtime max abs error per family: {worst}"
