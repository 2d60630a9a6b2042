"""PNA (``PNAConv`` and the ``PNA`` model class) over neighbour tables, exact against PyG.

The lowering (``exporters/lowering/table_pna.py``) runs on test_table_lowering.py's
awkward graphs (duplicate edges, self loops, an isolated node, no edges, a hub whose
in-degree spills over three rows) with the tables as constants of two stacked graphs,
as inputs, and padded to a bucket, for several option sets (every aggregator and
scaler, towers with and without ``divide_input``, deeper pre/post MLPs, ``edge_dim``,
``train_norm``). The tiny ``PNA`` model runs through :class:`edge_sdk.Runtime` on ONNX
Runtime, OpenVINO and LiteRT (FP32 and INT8) in both forms as rows of the support matrix
(``test_support_matrix.py``, whose bundles are shared); here they are checked to read
tables with no scatter, and the static form's ``auto`` to take tables (no dense PNA).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from table_bundles import ENGINES, Bundles
from test_table_lowering import (
    D_EDGE,
    F_IN,
    GRAPHS,
    MODES,
    Case,
    One,
    empty_graph,
    hub_graph,
    random_graph,
)
from torch import nn
from torch_geometric.nn import PNAConv
from torch_geometric.nn.models import PNA

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters.lowering.tabulate import tabulate

TOL = 1e-5
#: In-degree histogram of a "training set" (degrees 0..5): avg_deg_lin 2.0.
DEG = torch.tensor([1, 3, 4, 2, 1, 1])
ALL_AGGRS = ["mean", "min", "max", "std", "var", "sum"]
ALL_SCALERS = ["identity", "amplification", "attenuation", "linear", "inverse_linear"]


def pna(**kw: Any) -> nn.Module:
    opts: dict[str, Any] = {"aggregators": ALL_AGGRS, "scalers": ALL_SCALERS, "deg": DEG}
    return PNAConv(F_IN, 4, **(opts | kw))


A = "edge_attr"
CASES: dict[str, Case] = {
    "all": Case(pna),
    "towers-divide": Case(lambda: pna(towers=2, divide_input=True)),
    "towers-deep": Case(lambda: pna(towers=2, pre_layers=2, post_layers=2, act="tanh")),
    "edge-dim": Case(lambda: pna(edge_dim=D_EDGE, towers=2), A),
    "edge-dim-deep": Case(lambda: pna(edge_dim=D_EDGE, pre_layers=2), A),
    "train-norm": Case(lambda: pna(train_norm=True)),
    "model-subset": Case(
        lambda: pna(
            aggregators=["mean", "min", "max", "std"],
            scalers=["identity", "amplification", "attenuation"],
        )
    ),
    "one-aggr": Case(lambda: pna(aggregators=["max"], scalers=["linear"])),
}


def build(case: Case, seed: int = 0) -> nn.Module:
    """The layer in a one-layer model, with non-zero biases (and learnt average degrees)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = One(case.build(), case.edge_arg).eval()
        for name, p in model.named_parameters():
            if p.dim() == 1 and not name.endswith(("avg_deg_lin", "avg_deg_log")):
                p.data.uniform_(-0.5, 0.5)
            elif name.endswith("avg_deg_lin"):  # train_norm: "learnt" values
                p.data.fill_(1.7)
            elif name.endswith("avg_deg_log"):
                p.data.fill_(0.9)
    return model


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", list(CASES))
def test_lowered_pna_matches_pyg(name: str, mode: str) -> None:
    case = CASES[name]
    model = build(case)
    low, variants = tabulate(model)
    assert variants == ["raw"]
    errs = {g: MODES[mode](model, low, variants, case, *make()) for g, make in GRAPHS.items()}
    assert max(errs.values()) <= TOL, f"{name} ({mode}): max abs error per graph {errs}"


def test_the_graphs_have_the_edge_cases() -> None:
    """Duplicate edges, an isolated node, no edges, a hub over several rows of width 4."""
    _, ei = hub_graph()
    assert len({tuple(e) for e in ei.T}) < ei.shape[1]
    assert 8 not in ei and (ei[1] == 0).sum() == 11
    assert empty_graph()[1].shape[1] == 0 and random_graph()[1].shape[1] == 30


class Partial(PNAConv):
    """A user's subclass: it may change the message, so it is not lowered as PNAConv."""


@pytest.mark.parametrize(
    ("conv", "what"),
    [
        (Partial(F_IN, 4, ["mean"], ["identity"], DEG), "no lowering exists"),
        (pna(flow="target_to_source"), "flow='target_to_source'"),
    ],
)
def test_unsupported_pna_is_refused_by_name(conv: nn.Module, what: str) -> None:
    with pytest.raises(UnsupportedModelError) as err:
        tabulate(One(conv, None))
    assert "'conv'" in str(err.value) and what in str(err.value)


# --- the PNA model class, exported and run through the Runtime --------------------------

F, C = 5, 3
MAX_DEGREE = 8
STATIC_N = 12


def pna_model() -> nn.Module:
    """The issue's tiny PNA: 2 layers of 8 channels, four aggregators, three scalers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PNA(
            F,
            8,
            2,
            C,
            aggregators=["mean", "min", "max", "std"],
            scalers=["identity", "amplification", "attenuation"],
            deg=DEG,
        ).eval()


def request(rng: np.random.Generator, n: int, e: int) -> dict[str, np.ndarray]:
    """``n`` nodes, ``e`` edges (duplicates), in-degrees cut to :data:`MAX_DEGREE`."""
    ei = rng.integers(0, n, (2, e)).astype(np.int64)
    if e > 6:
        ei[:, :3] = ei[:, 3:6]
    return {"x": rng.uniform(-1, 1, (n, F)).astype(np.float32), "edge_index": capped(ei)}


def capped(ei: np.ndarray) -> np.ndarray:
    """``ei`` without each node's incoming edges past the :data:`MAX_DEGREE`-th."""
    order = np.argsort(ei[1], kind="stable")
    rank = np.empty(ei.shape[1], np.int64)
    rank[order] = np.arange(ei.shape[1]) - np.searchsorted(ei[1][order], ei[1][order])
    return ei[:, rank < MAX_DEGREE]


def static_sample(seed: int, b: int) -> dict[str, np.ndarray]:
    """``b`` graphs on the fixed topology (duplicate edges, a self loop, node 9 isolated)."""
    ei = np.random.default_rng(7).integers(0, STATIC_N, (2, 36)).astype(np.int64)
    ei[:, :3] = ei[:, 3:6]
    ei[:, 6] = 2
    ei[ei == 9] = 10
    x = np.random.default_rng(seed).uniform(-1, 1, (b, STATIC_N, F)).astype(np.float32)
    return {"x": x, "edge_index": ei}


@pytest.mark.requires_backend("onnxruntime")
@pytest.mark.requires_backend("openvino")
@pytest.mark.requires_backend("ai_edge_litert")
@pytest.mark.timeout(900)  # the first to ask exports the bundle (shared with the matrix)
@pytest.mark.parametrize("form", ["dynamic", "static"])
def test_pna_bundles_take_tables_without_scatter(table_bundles: Bundles, form: str) -> None:
    """The support matrix's PNA bundles (``table_bundles.py``: the same four aggregators
    and three scalers; each engine x precision is a matrix cell) read neighbour tables,
    and no artifact holds a scatter."""
    built = table_bundles.get("PNA", form)
    assert built.error is None, built.error
    m = built.manifest
    assert m.graph.aggregation == "tables"
    if form == "dynamic":
        assert [i.name for i in m.inputs][:2] == ["x", "raw.index0"]  # tables, not edge_index
    assert {(str(a.target), str(a.precision)) for a in m.artifacts} >= {
        (engine, precision) for engine in ENGINES for precision in ("fp32", "int8")
    }
    for a in m.artifacts:
        assert not [op for op in a.ops if "Scatter" in op], a.name


def test_pna_static_auto_takes_tables_untimed() -> None:
    """PNA has no dense [N, N] lowering: the static form's auto takes tables and says why."""
    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.prepare import prepare

    prepared = prepare(pna_model(), [sample_from_arrays(static_sample(1, 2))], "static")
    assert prepared.aggregation == "tables", prepared.aggregation_reason
    assert "no dense lowering" in prepared.aggregation_reason
    assert "PNAConv" in prepared.aggregation_reason


def test_pna_dense_static_lowering_is_refused_by_name() -> None:
    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.prepare import prepare

    sample = sample_from_arrays(static_sample(1, 2))
    with pytest.raises(UnsupportedModelError, match=r"'convs\.0' \(PNAConv\).*dense"):
        prepare(pna_model(), [sample], "static", aggregation="dense")


def test_pna_with_edge_attr_jk_and_norm_takes_tables_in_the_dynamic_form() -> None:
    """``edge_dim``, towers, every aggregator, ``jk='cat'`` and batch norm: the wrapper over
    input tables (edge_attr by edge id) matches PyG on a graph with duplicates and a hub."""
    from edge_sdk.exporters import sample_from_arrays
    from edge_sdk.exporters.prepare import prepare
    from edge_sdk.exporters.table_wrapper import table_feeds

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        opts = {"aggregators": ALL_AGGRS, "scalers": ALL_SCALERS, "deg": DEG, "edge_dim": 2}
        model = PNA(F, 8, 2, C, towers=2, jk="cat", norm="batch", **opts).eval()
    rng = np.random.default_rng(0)
    g = request(rng, 14, 40)
    g["edge_index"] = np.concatenate(
        [np.array([[1, 1, 2, 3, 4], [0, 0, 0, 0, 0]]), g["edge_index"]], 1
    )
    g["edge_attr"] = rng.standard_normal((g["edge_index"].shape[1], 2)).astype(np.float32)
    prepared = prepare(model, [sample_from_arrays(g)], "dynamic")
    assert prepared.aggregation == "tables" and prepared.tables is not None
    assert "edge_attr" in prepared.model_names and "raw.edge0" in prepared.model_names
    feeds = table_feeds(g, prepared.tables)
    with torch.no_grad():
        got = prepared.export_module(*(torch.from_numpy(feeds[k]) for k in prepared.model_names))
        want = model(
            *(torch.from_numpy(g[k]) for k in ("x", "edge_index")),
            edge_attr=torch.from_numpy(g["edge_attr"]),
        )
    assert float(want.abs().max()) > 0.05
    assert float((got[0] - want).abs().max()) <= TOL
