"""Which layers the exporter supports, checked before any tracing.

The model is walked module by module (``named_modules``), so what counts is
what a model is made of, not its class name: PyG's model classes
(``BasicGNN``: ``GCN``, ``GraphSAGE``, ``GIN``, ``GAT``, ``PNA``, ``EdgeCNN``)
and a user's subclass of them are containers whose convs, norms, activations
and jumping-knowledge are checked like any other layer. Layers from torch and
torch_geometric must be on the lists below; classes the user wrote are
traced as they are (their own parameters and tensor code). Options that can
never export (``jk='lstm'``, learnable or order-dependent aggregations) are
refused here by name; whether a layer lowers in a given graph form and
engine is decided later, by its lowering.
"""

from __future__ import annotations

import torch
import torch_geometric.nn as pyg_nn
from torch_geometric.nn import aggr as pyg_aggr
from torch_geometric.nn import norm as pyg_norm
from torch_geometric.nn.aggr.fused import FusedAggregation
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.models import JumpingKnowledge
from torch_geometric.nn.models.basic_gnn import BasicGNN
from torch_geometric.utils._trim_to_layer import TrimToLayer

from edge_sdk.errors import UnsupportedModelError

#: PyG message-passing layers (lowered per graph form).
GRAPH_LAYERS: tuple[type[torch.nn.Module], ...] = (
    pyg_nn.GCNConv,
    pyg_nn.GATConv,
    pyg_nn.GATv2Conv,
    pyg_nn.SAGEConv,
    pyg_nn.GINConv,
    pyg_nn.GINEConv,
    pyg_nn.GraphConv,
    pyg_nn.PNAConv,
    pyg_nn.EdgeConv,
)

_NN = torch.nn
#: Element-wise activations (what ``act=`` of PyG's model classes resolves to).
ACTIVATIONS: tuple[type[torch.nn.Module], ...] = (
    _NN.ReLU,
    _NN.ReLU6,
    _NN.LeakyReLU,
    _NN.ELU,
    _NN.SELU,
    _NN.CELU,
    _NN.GELU,
    _NN.SiLU,
    _NN.Mish,
    _NN.PReLU,
    _NN.Sigmoid,
    _NN.Tanh,
    _NN.Softplus,
    _NN.Hardtanh,
    _NN.Hardswish,
)

#: Norms over one graph's nodes (a per-graph statistic: lowered per graph form).
GRAPH_NORMS: tuple[type[torch.nn.Module], ...] = (pyg_norm.GraphNorm, pyg_norm.InstanceNorm)

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
    *GRAPH_NORMS,
    *ACTIVATIONS,
    _NN.Softmax,
    _NN.LogSoftmax,
    _NN.Identity,
)

#: Aggregations of the neighbourhood (or of a readout) that lower: sum/mean/max/min,
#: a ``MultiAggregation`` of them, and PNA's std/var and degree scalers.
AGGREGATIONS: tuple[type[torch.nn.Module], ...] = (
    pyg_aggr.SumAggregation,
    pyg_aggr.MeanAggregation,
    pyg_aggr.MaxAggregation,
    pyg_aggr.MinAggregation,
    pyg_aggr.MultiAggregation,
    FusedAggregation,  # MultiAggregation's internal fast path of the above
    pyg_aggr.StdAggregation,
    pyg_aggr.VarAggregation,
    pyg_aggr.DegreeScalerAggregation,
)

#: PyG model classes (a user's subclass too) and containers: their children are checked.
MODEL_CLASSES: tuple[type[torch.nn.Module], ...] = (BasicGNN, pyg_nn.MLP)

#: Containers and PyG internals that hold the layers above.
CONTAINERS: tuple[type[torch.nn.Module], ...] = (
    _NN.Sequential,
    _NN.ModuleList,
    _NN.ModuleDict,
    pyg_nn.Sequential,
    *MODEL_CLASSES,
    JumpingKnowledge,
    TrimToLayer,  # a no-op unless the forward is given per-hop sampled sizes
    *AGGREGATIONS,
)

SUPPORTED = GRAPH_LAYERS + NODE_LAYERS + CONTAINERS

#: The ``jk`` modes of PyG's model classes that export.
JK_MODES = ("last", "cat", "max")


def supported_names() -> list[str]:
    """Human-readable names of the supported layers and model classes."""
    models = ["GCN", "GraphSAGE", "GIN", "GAT", "PNA", "EdgeCNN", "MLP"]
    return sorted({c.__name__ for c in GRAPH_LAYERS + NODE_LAYERS} | set(models))


def _is_library_class(cls: type) -> bool:
    mod = cls.__module__
    return mod.startswith(("torch.", "torch_geometric.")) or mod == "torch"


def _refusal(path: str, module: torch.nn.Module) -> str | None:
    """Why a library module that is on the lists still cannot export, or ``None``."""
    where = path or "(model)"
    if isinstance(module, JumpingKnowledge) and module.mode not in JK_MODES:
        return (
            f"layer {where}: jumping knowledge mode {module.mode!r} (jk={module.mode!r}) is "
            f"not supported: its LSTM attention over the layers' outputs has no lowering; "
            f"use jk='cat' or jk='max' (supported: {', '.join(JK_MODES)})"
        )
    if isinstance(module, pyg_nn.LayerNorm) and module.mode not in ("graph", "node"):
        return f"layer {where}: LayerNorm mode {module.mode!r} is not supported (graph, node)"
    if isinstance(module, pyg_aggr.Aggregation) and not isinstance(module, AGGREGATIONS):
        return (
            f"layer {where}: aggregation {type(module).__name__} is not supported (learnable or "
            f"order-dependent: it has no scatter-free lowering); supported: sum, mean, max, "
            f"min and MultiAggregation of those (std/var and degree scalers inside PNAConv)"
        )
    if isinstance(module, pyg_aggr.MultiAggregation) and module.mode == "attn":
        return (
            f"layer {where}: MultiAggregation mode 'attn' is not supported (multi-head "
            f"attention across the aggregations has no lowering); use mode 'cat', 'proj', "
            f"'sum', 'mean', 'max' or 'min'"
        )
    return None


def check_supported(model: torch.nn.Module) -> list[str]:
    """Check every submodule; return the graph layers found (by class name).

    Raises:
        UnsupportedModelError: A torch/PyG layer not on the list, or an option of
            one that never exports, naming its path in the model and what is supported.
    """
    found: list[str] = []
    inside_supported: set[str] = set()
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in inside_supported):
            continue  # children of a supported layer are its own business
        cls = type(module)
        reason = _refusal(path, module)
        if reason:
            raise UnsupportedModelError(reason)
        if isinstance(module, GRAPH_LAYERS):
            found.append(cls.__name__)
            continue  # its inner MLPs and aggregation are checked too (by the walk)
        if isinstance(module, MessagePassing) and not _is_library_class(cls):
            # The user's own layer (its own message): a graph layer, traced as written;
            # its form and aggregation are decided by whether a lowering takes it.
            found.append(cls.__name__)
            continue
        if isinstance(module, NODE_LAYERS):
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
