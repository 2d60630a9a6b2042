"""Dense edge softmax shared by the GAT-family lowerings.

``GATConv`` and ``GATv2Conv`` differ only in how they score an edge; masking, the
softmax over incoming edges, the weighted sum of source features, head merging,
residual and bias follow the same PyG code in both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .common import LowerContext, StaticConv, aggr_name, unsupported, weight_matrix


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


class StaticAttentionConv(StaticConv):
    """Base of the GAT-family lowerings: folds the edge mask and aggregates attended messages.

    Subclasses store their projections and then ``res`` and ``bias`` (PyG's registration
    order, so state dicts list the same keys in the same order) and implement
    ``_dense`` by scoring every edge and passing the logits to :meth:`_attend`.
    ``dropout`` is inert because the lowered model is for inference.

    Raises:
        UnsupportedModelError: For ``edge_dim`` or a non-sum ``aggr``.
    """

    mask: Tensor
    log_count: Tensor
    res: nn.Module | None
    bias: Tensor | None

    def _lower(self, conv: Any, ctx: LowerContext) -> None:
        if conv.edge_dim is not None:
            unsupported(
                ctx.path,
                conv,
                "edge_dim",
                conv.edge_dim,
                "edge_dim=None (edge features "
                "are per-edge inputs and cannot be folded into a constant topology)",
            )
        aggr_name(ctx.path, conv, ("sum",))
        self.heads, self.channels = conv.heads, conv.out_channels
        self.concat, self.negative_slope = conv.concat, conv.negative_slope
        mask, log_count = attention_buffers(
            ctx.edge_index, self.num_nodes, conv.add_self_loops, ctx.device, ctx.dtype
        )
        self.register_buffer("mask", mask)
        self.register_buffer("log_count", log_count)

    def _attend(self, logits: Tensor, x_src: Tensor, xb: Tensor) -> Tensor:
        """Weight source features by the edge softmax of ``logits``.

        Args:
            logits: ``[B, H, N_dst, N_src]`` attention scores.
            x_src: ``[B, N, H, C]`` projected source (message) features.
            xb: ``[B, N, F_in]`` layer input, for the residual.

        Returns:
            ``[B, N, H * C]`` (``concat``) or ``[B, N, C]``.
        """
        alpha = masked_softmax(logits, self.mask, self.log_count)
        out = torch.matmul(alpha, x_src.transpose(1, 2)).transpose(1, 2)  # [B, N, H, C]
        if self.concat:
            out = out.reshape(-1, self.num_nodes, self.heads * self.channels)
        else:
            out = out.mean(dim=2)
        if self.res is not None:
            out = out + self.res(xb)
        if self.bias is not None:
            out = out + self.bias
        return out
