"""Shared helpers for the dense static-topology lowering of PyG conv layers.

Every lowered layer receives node features in the flattened disjoint-union form
``[B * N, F]`` and works internally on ``[B, N, F]``. The batch dimension is only
ever expressed as ``-1`` in reshapes so it stays symbolic under ``torch.export``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter
from torch_geometric.nn import aggr as pyg_aggr
from torch_geometric.nn.conv import MessagePassing

from ...errors import UnsupportedModelError

# Exact types only: a subclass may override how messages are reduced.
_AGGR_NAMES: dict[type, str] = {
    pyg_aggr.SumAggregation: "sum",
    pyg_aggr.MeanAggregation: "mean",
    pyg_aggr.MaxAggregation: "max",
    pyg_aggr.MinAggregation: "min",
}
NEIGHBOUR_AGGRS = ("sum", "mean", "max", "min")


def unsupported(path: str, conv: nn.Module, option: str, value: object, supported: str) -> None:
    """Raise the error used for every conv option that has no dense lowering.

    Args:
        path: Dotted path of the layer inside the model (``""`` for the root).
        conv: The offending layer.
        option: Name of the constructor option that cannot be lowered.
        value: The value that option holds.
        supported: Human-readable description of what is supported instead.

    Raises:
        UnsupportedModelError: Always.
    """
    where = path or "<root>"
    raise UnsupportedModelError(
        f"Cannot lower layer '{where}' ({type(conv).__name__}) to a dense static-topology "
        f"layer: option {option}={value!r} is not supported; supported: {supported}."
    )


def check_lowerable(path: str, conv: MessagePassing) -> tuple[torch.dtype, torch.device]:
    """Reject layers whose weights are not materialised yet and find their dtype/device.

    Args:
        path: Dotted path of the layer inside the model.
        conv: The PyG layer about to be lowered.

    Returns:
        The floating dtype and device the folded constants must use.

    Raises:
        UnsupportedModelError: If the layer still has lazily initialised parameters.
    """
    tensors = list(conv.parameters()) + list(conv.buffers())
    if any(isinstance(t, UninitializedParameter) for t in tensors):
        unsupported(
            path,
            conv,
            "in_channels",
            -1,
            "materialised weights (run one forward "
            "pass before lowering a lazily initialised layer)",
        )
    floats = [t for t in tensors if t.is_floating_point()]
    if not floats:
        return torch.get_default_dtype(), torch.device("cpu")
    return floats[0].dtype, floats[0].device


def aggr_name(path: str, conv: MessagePassing, allowed: tuple[str, ...]) -> str:
    """Resolve a layer's neighbourhood aggregation to one of ``allowed``.

    Args:
        path: Dotted path of the layer inside the model.
        conv: The PyG layer.
        allowed: Aggregations the caller can lower.

    Returns:
        The canonical aggregation name (``"add"`` is reported as ``"sum"``).

    Raises:
        UnsupportedModelError: For list/learnable aggregations or ones not in ``allowed``.
    """
    name = _AGGR_NAMES.get(type(conv.aggr_module))
    if name not in allowed:
        unsupported(path, conv, "aggr", conv.aggr, " / ".join(allowed))
    return name


def oriented(conv: MessagePassing, edge_index: Tensor) -> Tensor:
    """Return ``edge_index`` as ``[source, target]`` rows whatever the layer's ``flow``."""
    return edge_index.flip(0) if conv.flow == "target_to_source" else edge_index


def weight_matrix(
    edge_index: Tensor, num_nodes: int, weight: Tensor | None = None, reduce: str = "sum"
) -> Tensor:
    """Reduce per-edge weights into a dense ``[N, N]`` matrix ``W[target, source]``.

    With ``reduce="sum"`` duplicate edges accumulate, matching PyG's one message per edge.

    Args:
        edge_index: ``[2, E]`` source/target indices.
        num_nodes: Number of nodes ``N``.
        weight: Optional ``[E]`` weights; each edge counts as ``1`` when omitted.
        reduce: ``"sum"``, ``"amax"`` or ``"amin"`` over duplicate edges.

    Returns:
        The ``[N, N]`` float64 matrix (``0`` where no edge); callers cast it once final.
    """
    if weight is None:
        weight = torch.ones(edge_index.size(1), dtype=torch.float64)
    flat = edge_index[1].cpu() * num_nodes + edge_index[0].cpu()
    out = torch.zeros(num_nodes * num_nodes, dtype=torch.float64).scatter_reduce(
        0, flat, weight.detach().cpu().to(torch.float64), reduce, include_self=False
    )
    return out.view(num_nodes, num_nodes)


def to_batched(x: Tensor, num_nodes: int) -> Tensor:
    """Reshape flat ``[B * N, F]`` features to ``[B, N, F]`` keeping ``B`` symbolic."""
    return x.reshape(-1, num_nodes, x.shape[-1])


def to_flat(x: Tensor) -> Tensor:
    """Reshape ``[B, N, F]`` features back to the flat ``[B * N, F]`` form."""
    return x.reshape(-1, x.shape[-1])


class DenseAggregation(nn.Module):
    """Neighbourhood aggregation over a constant topology, mirroring PyG's scatter reductions.

    ``sum``/``mean`` fold into one ``[N, N]`` matrix so the forward is a single MatMul.
    ``max``/``min`` reduce over a masked ``[B, N, N, F]`` tensor; nodes without incoming
    edges get ``0`` like PyG's ``scatter_reduce(include_self=False)`` on a zero tensor.

    Args:
        edge_index: ``[2, E]`` source/target indices (already oriented).
        num_nodes: Number of nodes ``N``.
        edge_weight: Optional ``[E]`` per-edge message weights.
        aggr: One of ``NEIGHBOUR_AGGRS``.
        dtype: Dtype of the folded constants.
        device: Device of the folded constants.
    """

    def __init__(
        self,
        edge_index: Tensor,
        num_nodes: int,
        edge_weight: Tensor | None,
        aggr: str,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.aggr = aggr
        weight = weight_matrix(edge_index, num_nodes, edge_weight)
        count = weight_matrix(edge_index, num_nodes)
        if aggr in ("sum", "mean"):
            if aggr == "mean":
                # PyG divides by the number of incoming edges, not by the summed weights.
                weight = weight / count.sum(dim=1, keepdim=True).clamp(min=1)
            self.register_buffer("adj", weight.to(dtype=dtype, device=device))
            return
        # max/min over duplicate edges of w_e * x_j is reached at the largest or smallest
        # w_e, so two weight matrices keep it exact.
        self.weighted = edge_weight is not None
        mask = (count > 0).unsqueeze(-1)
        self.register_buffer("mask", mask.to(device))
        self.register_buffer("has_in", mask.any(dim=1).to(device))
        for name, reduce in (("w_hi", "amax"), ("w_lo", "amin")):
            w = weight_matrix(edge_index, num_nodes, edge_weight, reduce).unsqueeze(-1)
            self.register_buffer(name, w.to(device, dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Aggregate ``x`` of shape ``[B, N, F]`` over incoming edges; returns ``[B, N, F]``."""
        if self.aggr in ("sum", "mean"):
            return torch.matmul(self.adj, x)
        src = x.unsqueeze(1)  # [B, 1(target), N(source), F]
        pick = torch.maximum if self.aggr == "max" else torch.minimum
        msg = pick(src * self.w_hi, src * self.w_lo) if self.weighted else src
        fill = float("-inf") if self.aggr == "max" else float("inf")
        msg = torch.where(self.mask, msg, fill)
        out = msg.amax(dim=2) if self.aggr == "max" else msg.amin(dim=2)
        return torch.where(self.has_in, out, 0.0)


def attention_buffers(
    edge_index: Tensor,
    num_nodes: int,
    add_self_loops: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Fold a topology into the constants the dense edge softmax needs.

    Args:
        edge_index: ``[2, E]`` source/target indices (already oriented).
        num_nodes: Number of nodes ``N``.
        add_self_loops: Mirror GAT's ``remove_self_loops`` + one ``add_self_loops`` per node.
        device: Device of the constants.
        dtype: Dtype of the log-multiplicity matrix.

    Returns:
        ``mask`` (bool ``[N, N]``, edge ``j -> i`` present) and ``log_count``
        (``log`` of the edge multiplicity, ``0`` where absent).
    """
    count = weight_matrix(edge_index, num_nodes)
    if add_self_loops:
        count.fill_diagonal_(1.0)
    mask = count > 0
    log_count = torch.where(mask, count.clamp(min=1).log(), 0.0)
    return mask.to(device), log_count.to(dtype=dtype, device=device)


def masked_softmax(logits: Tensor, mask: Tensor, log_count: Tensor) -> Tensor:
    """Softmax over sources (last dim) as PyG's per-edge softmax would compute it.

    PyG normalises over edges, so an edge present ``c`` times contributes ``c * exp(e)``;
    adding ``log(c)`` reproduces that. Absent edges get the most negative finite value
    (``-inf`` would turn rows without any incoming edge into NaN) and are zeroed after,
    so such rows aggregate to ``0`` exactly like PyG.

    Args:
        logits: ``[..., N(target), N(source)]`` attention scores.
        mask: Bool ``[N, N]`` edge mask.
        log_count: ``[N, N]`` log edge multiplicities.

    Returns:
        Attention weights with the shape of ``logits``.
    """
    logits = torch.where(mask, logits + log_count, torch.finfo(logits.dtype).min)
    return torch.where(mask, torch.softmax(logits, dim=-1), 0.0)
