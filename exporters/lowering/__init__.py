"""Dense static-topology lowering of PyTorch Geometric conv layers.

For a graph whose topology is fixed at build time, :func:`densify` folds the (normalised)
adjacency into each supported conv layer as constant ``[N, N]`` buffers, so an exported
model contains only MatMul/Softmax/Where-style ops: no scatter, no ``NonZero`` and no
data-dependent shapes. Lowered layers take flat disjoint-union features ``[B * N, F]``
and ignore the ``edge_index`` they are called with.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, GINConv, GraphConv, SAGEConv
from torch_geometric.nn.conv import MessagePassing

from ...errors import UnsupportedModelError
from .gat import StaticGATConv
from .gatv2 import StaticGATv2Conv
from .gcn import StaticGCNConv
from .gin import StaticGINConv
from .graph_conv import StaticGraphConv
from .graph_norms import lower_norms
from .jumping import lower_jumping_knowledge
from .sage import StaticSAGEConv

__all__ = [
    "SUPPORTED_CONVS",
    "StaticGATConv",
    "StaticGATv2Conv",
    "StaticGCNConv",
    "StaticGINConv",
    "StaticGraphConv",
    "StaticSAGEConv",
    "densify",
]

# Exact classes only: a subclass may change the message or aggregation we mirror.
SUPPORTED_CONVS: dict[type, type] = {
    GCNConv: StaticGCNConv,
    SAGEConv: StaticSAGEConv,
    GraphConv: StaticGraphConv,
    GINConv: StaticGINConv,
    GATConv: StaticGATConv,
    GATv2Conv: StaticGATv2Conv,
}


def _check_graph(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None) -> None:
    if edge_index.dim() != 2 or edge_index.size(0) != 2 or edge_index.is_floating_point():
        raise ValueError(
            f"edge_index must be an integer [2, E] tensor, got "
            f"{edge_index.dtype} {tuple(edge_index.shape)}"
        )
    if num_nodes <= 0:
        raise ValueError(f"num_nodes must be positive, got {num_nodes}")
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge_index holds node ids outside [0, {num_nodes})")
    if edge_weight is not None and edge_weight.shape != (edge_index.size(1),):
        raise ValueError(
            f"edge_weight must have shape [{edge_index.size(1)}], got {tuple(edge_weight.shape)}"
        )


def densify(
    model: nn.Module, edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None
) -> nn.Module:
    """Lower every supported PyG conv in ``model`` to its dense static-topology form.

    Args:
        model: Model containing PyG conv layers; it is not modified.
        edge_index: ``[2, E]`` topology of ONE graph (node ids in ``[0, num_nodes)``).
        num_nodes: Number of nodes ``N`` of that graph.
        edge_weight: Optional ``[E]`` edge weights, folded into the layers that take edge
            weights (``GCNConv``, ``GraphConv``); the other layers have none in PyG.

    Returns:
        A deep copy of ``model`` in eval mode in which every supported conv is replaced by
        its dense equivalent holding the folded ``[N, N]`` constants as buffers, and
        graph-level norms by :class:`.graph_norms.LoweredNorm` (run it inside
        :func:`.graph_norms.use_stats`). The copy expects flat node features
        ``[B * N, F]`` for ``B`` stacked graphs.

    Raises:
        UnsupportedModelError: If a conv option cannot be lowered (e.g. ``GATConv`` with
            ``edge_dim``, ``SAGEConv`` with ``aggr='lstm'``) or the model contains a
            message-passing layer without a dense lowering; the message names the layer
            path, the option and what is supported.
        ValueError: If ``edge_index``/``edge_weight``/``num_nodes`` are malformed.
    """
    _check_graph(edge_index, num_nodes, edge_weight)
    lowered = copy.deepcopy(model).eval()
    supported = ", ".join(cls.__name__ for cls in SUPPORTED_CONVS)
    for path, module in list(lowered.named_modules()):
        if not isinstance(module, MessagePassing):
            continue
        dense_cls = SUPPORTED_CONVS.get(type(module))
        if dense_cls is None:
            where = path or "<root>"
            raise UnsupportedModelError(
                f"Cannot lower layer '{where}' ({type(module).__name__}): no dense "
                f"static-topology lowering exists for this layer type; supported: {supported}."
            )
        with torch.no_grad():
            dense = dense_cls(module, edge_index, num_nodes, edge_weight, path=path).eval()
        if not path:
            return dense
        parent_path, _, name = path.rpartition(".")
        setattr(lowered.get_submodule(parent_path), name, dense)
    lower_norms(lowered)
    lower_jumping_knowledge(lowered)
    share_constants(lowered)
    return lowered


def share_constants(model: nn.Module) -> int:
    """Make layers that folded the same topology constant share one tensor.

    Two GCN layers over one graph fold the same normalised ``[N, N]``
    adjacency; as separate buffers the ONNX file stores it twice (Cora: 29 MB
    each). Shared, the exporter writes one initializer.

    Returns:
        How many buffers now point at an earlier identical one.
    """
    seen: list[Tensor] = []
    shared = 0
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is None or buf.dim() < 2:
                continue
            same = next(
                (
                    t
                    for t in seen
                    if t is not buf
                    and t.shape == buf.shape
                    and t.dtype == buf.dtype
                    and torch.equal(t, buf)
                ),
                None,
            )
            if same is None:
                seen.append(buf)
            else:
                setattr(module, name, same)
                shared += 1
    return shared
