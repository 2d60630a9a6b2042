"""Which layers the exporter supports, checked before any tracing.

Layers from torch and torch_geometric must be on the list below; classes the
user wrote are traced as they are (their own parameters and tensor code).
"""

from __future__ import annotations

import torch
import torch_geometric.nn as pyg_nn

from edge_sdk.errors import UnsupportedModelError

#: PyG message-passing layers (lowered per graph form).
GRAPH_LAYERS: tuple[type[torch.nn.Module], ...] = (
    pyg_nn.GCNConv,
    pyg_nn.GATConv,
    pyg_nn.GATv2Conv,
    pyg_nn.SAGEConv,
    pyg_nn.GINConv,
    pyg_nn.GraphConv,
)

_NN = torch.nn
#: Node-wise and structural layers that export on every target.
NODE_LAYERS: tuple[type[torch.nn.Module], ...] = (
    _NN.Linear,
    pyg_nn.Linear,
    _NN.Conv1d,
    _NN.Conv2d,
    _NN.Flatten,
    _NN.Dropout,
    _NN.BatchNorm1d,
    _NN.LayerNorm,
    pyg_nn.BatchNorm,
    pyg_nn.LayerNorm,
    _NN.ReLU,
    _NN.ReLU6,
    _NN.LeakyReLU,
    _NN.ELU,
    _NN.GELU,
    _NN.SiLU,
    _NN.PReLU,
    _NN.Sigmoid,
    _NN.Tanh,
    _NN.Softmax,
    _NN.LogSoftmax,
    _NN.Identity,
)

#: Containers and PyG internals that hold the layers above.
CONTAINERS: tuple[type[torch.nn.Module], ...] = (
    _NN.Sequential,
    _NN.ModuleList,
    _NN.ModuleDict,
    pyg_nn.Sequential,
    pyg_nn.MLP,
    pyg_nn.aggr.Aggregation,
)

SUPPORTED = GRAPH_LAYERS + NODE_LAYERS + CONTAINERS


def supported_names() -> list[str]:
    """Human-readable names of the supported layers."""
    return sorted({c.__name__ for c in GRAPH_LAYERS + NODE_LAYERS})


def _is_library_class(cls: type) -> bool:
    mod = cls.__module__
    return mod.startswith(("torch.", "torch_geometric.")) or mod == "torch"


def check_supported(model: torch.nn.Module) -> list[str]:
    """Check every submodule; return the graph layers found (by class name).

    Raises:
        UnsupportedModelError: A torch/PyG layer not on the list, naming its
            path in the model and the supported layers.
    """
    found: list[str] = []
    inside_supported: set[str] = set()
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in inside_supported):
            continue  # children of a supported layer are its own business
        cls = type(module)
        if isinstance(module, GRAPH_LAYERS):
            found.append(cls.__name__)
        if isinstance(module, GRAPH_LAYERS + NODE_LAYERS):
            if not isinstance(module, pyg_nn.GINConv):  # GIN's inner nn is user-visible
                inside_supported.add(path)
            continue
        if isinstance(module, torch.fx.GraphModule):
            # A torch.export program: checked op by op by the ONNX converter.
            inside_supported.add(path)
            continue
        if isinstance(module, CONTAINERS) or not _is_library_class(cls):
            continue
        raise UnsupportedModelError(
            f"layer {path or '(model)'} is {cls.__module__}.{cls.__name__}, which the exporter "
            f"does not support; supported layers: {', '.join(supported_names())}"
        )
    return found
