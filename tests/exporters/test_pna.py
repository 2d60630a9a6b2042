"""PNA (``PNAConv`` and the ``PNA`` model class) over neighbour tables, exact against PyG.

The lowering (``exporters/lowering/table_pna.py``) runs on test_table_lowering.py's
awkward graphs (duplicate edges, self loops, an isolated node, no edges, a hub whose
in-degree spills over three rows) with the tables as constants of two stacked graphs,
as inputs, and padded to a bucket, for several option sets (every aggregator and
scaler, towers with and without ``divide_input``, deeper pre/post MLPs, ``edge_dim``,
``train_norm``). Then a tiny ``PNA`` model is exported in the dynamic form through
:class:`edge_sdk.Runtime` on ONNX Runtime, OpenVINO and LiteRT (FP32 and INT8), and in
the static form, where ``--aggregation auto`` takes tables (there is no dense PNA).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
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
