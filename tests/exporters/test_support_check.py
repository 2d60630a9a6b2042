"""The support walk (``exporters/support.py``) over PyG's model classes and their options.

What a model is made of decides, not its class name: PyG's ``BasicGNN`` classes,
a user's subclass of them and ``MLP`` pass with every option that lowers (``act``
by name, ``norm`` by name, ``jk`` last/cat/max, dropout, ``edge_dim``), and report
their message-passing layers; options that never export are refused naming the
layer path and what is supported. Fast: nothing is traced or exported here.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch_geometric.nn import MLP, PNA, EdgeCNN, GraphSAGE
from torch_geometric.nn.models import GAT, GCN, GIN

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.exporters.support import JK_MODES, check_supported, supported_names

F, H, C = 5, 8, 3
DEG = torch.tensor([1, 4, 6, 4, 2, 1])  # PNA's in-degree histogram
PNA_KW = {
    "aggregators": ["mean", "min", "max", "std"],
    "scalers": ["identity", "amplification", "attenuation"],
    "deg": DEG,
}

#: Model class, its constructor options, and the graph layers the walk must find.
MODELS: dict[str, tuple[type[nn.Module], dict[str, object], list[str]]] = {
    "gcn": (GCN, {"num_layers": 3}, ["GCNConv"] * 3),
    "gcn-jk-cat": (GCN, {"num_layers": 2, "jk": "cat", "dropout": 0.5}, ["GCNConv"] * 2),
    "sage": (GraphSAGE, {"num_layers": 2, "jk": "max"}, ["SAGEConv"] * 2),
    "sage-multi-aggr": (GraphSAGE, {"num_layers": 2, "aggr": ["mean", "max"]}, ["SAGEConv"] * 2),
    "gin": (GIN, {"num_layers": 2, "jk": "cat"}, ["GINConv"] * 2),
    "gat": (GAT, {"num_layers": 2, "heads": 2}, ["GATConv"] * 2),
    "gatv2": (GAT, {"num_layers": 2, "v2": True, "heads": 2, "edge_dim": 2}, ["GATv2Conv"] * 2),
    "pna": (PNA, {"num_layers": 2, **PNA_KW}, ["PNAConv"] * 2),
    "edgecnn": (EdgeCNN, {"num_layers": 2, "jk": "last"}, ["EdgeConv"] * 2),
}


def make(name: str, **extra: object) -> nn.Module:
    cls, options, _ = MODELS[name]
    return cls(F, H, out_channels=C, **{**options, **extra})


@pytest.mark.parametrize("name", list(MODELS))
def test_model_classes_pass_and_report_their_layers(name: str) -> None:
    assert check_supported(make(name)) == MODELS[name][2]


@pytest.mark.parametrize("act", ["relu", "elu", "leaky_relu", "gelu", "tanh", "sigmoid", "silu"])
@pytest.mark.parametrize("name", ["gcn", "gat", "pna"])
def test_activations_by_name(name: str, act: str) -> None:
    assert check_supported(make(name, act=act, dropout=0.3)) == MODELS[name][2]


@pytest.mark.parametrize(
    ("norm", "kwargs"),
    [
        ("batch_norm", None),
        ("layer_norm", None),
        ("layer_norm", {"mode": "node"}),
        ("graph_norm", None),
        ("instance_norm", None),
    ],
)
@pytest.mark.parametrize("name", ["gcn", "sage", "gin"])
def test_norms_by_name(name: str, norm: str, kwargs: dict[str, object] | None) -> None:
    assert check_supported(make(name, norm=norm, norm_kwargs=kwargs)) == MODELS[name][2]


@pytest.mark.parametrize("jk", JK_MODES)
def test_jumping_knowledge_modes(jk: str) -> None:
    assert check_supported(make("gin", jk=jk)) == ["GINConv"] * 2


def test_mlp_with_options() -> None:
    mlp = MLP([F, H, H, C], act="elu", norm="batch_norm", dropout=[0.1, 0.2, 0.0])
    assert check_supported(mlp) == []
    assert check_supported(MLP([F, H, C], norm="layer_norm", plain_last=False)) == []


class MyGCN(GCN):
    """A user's subclass: its own forward around PyG's (a residual head)."""

    def __init__(self) -> None:
        super().__init__(F, H, 3, C, jk="cat")
        self.skip = nn.Linear(F, C)

    def forward(self, x: Tensor, edge_index: Tensor, *args: object, **kwargs: object) -> Tensor:
        return super().forward(x, edge_index) + self.skip(x)


def test_a_subclass_is_walked_like_its_class() -> None:
    assert check_supported(MyGCN()) == check_supported(GCN(F, H, 3, C, jk="cat"))


class Head(nn.Module):
    """PyG classes nested in the user's own module."""

    def __init__(self) -> None:
        super().__init__()
        self.gnn = GraphSAGE(F, H, 2, jk="cat")
        self.head = MLP([H, H, C], norm=None)


def test_model_classes_nested_in_a_user_module() -> None:
    assert check_supported(Head()) == ["SAGEConv"] * 2


def test_jk_lstm_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(GraphSAGE(F, H, 2, jk="lstm"))
    msg = str(err.value)
    assert msg.startswith("layer jk: jumping knowledge mode 'lstm' (jk='lstm')")
    assert "supported: last, cat, max" in msg


def test_jk_lstm_inside_a_user_module_names_its_path() -> None:
    model = Head()
    model.gnn = GIN(F, H, 2, jk="lstm")
    with pytest.raises(UnsupportedModelError, match=r"^layer gnn\.jk: .*'lstm'"):
        check_supported(model)


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: GCN(F, H, 2, C, norm="pairnorm"), "layer norms.0 is torch_geometric.nn.norm"),
        (lambda: GraphSAGE(F, H, 2, C, aggr="lstm"), "aggregation LSTMAggregation"),
        (lambda: GraphSAGE(F, H, 2, C, aggr="softmax"), "aggregation SoftmaxAggregation"),
        (lambda: GIN(F, H, 2, C, act="rrelu"), "layer act is torch.nn.modules.activation.RReLU"),
    ],
)
def test_options_that_never_export_are_refused_by_name(build, named: str) -> None:
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(build())
    assert named in str(err.value)


def test_supported_names_lists_layers_and_model_classes() -> None:
    names = supported_names()
    assert names == sorted(set(names))
    assert {"GCN", "GraphSAGE", "GIN", "GAT", "PNA", "EdgeCNN", "MLP"} <= set(names)
    convs = {"GCNConv", "SAGEConv", "GINConv", "GINEConv", "GraphConv", "GATConv", "GATv2Conv"}
    assert convs | {"PNAConv", "EdgeConv"} <= set(names)
    assert {"ReLU", "ELU", "LeakyReLU", "GELU", "Tanh", "Linear", "Dropout"} <= set(names)
    assert {"BatchNorm", "LayerNorm", "GraphNorm", "InstanceNorm"} <= set(names)
    assert not {"JumpingKnowledge", "LSTMAggregation", "PairNorm"} & set(names)
    # ... and every refusal of an unlisted layer lists them.
    with pytest.raises(UnsupportedModelError) as err:
        check_supported(nn.Sequential(nn.RNN(F, H)))
    assert f"supported layers: {', '.join(names)}" in str(err.value)
