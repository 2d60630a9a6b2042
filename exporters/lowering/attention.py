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
        dtype: Dtype of the constants.

    Returns:
        ``count`` (``[N, N]`` multiplicity of edge ``j -> i``, 0 where absent) and
        ``edge`` (``[N, N]``, 1.0 where an edge exists, else 0.0).
    """
    count = weight_matrix(edge_index, num_nodes)
    if add_self_loops:
        count.fill_diagonal_(1.0)
    edge = (count > 0).to(dtype)
    return count.to(dtype=dtype, device=device), edge.to(device)


def masked_softmax(logits: Tensor, count: Tensor, edge: Tensor) -> Tensor:
    """Softmax over sources (last dim) as PyG's per-edge softmax would compute it.

    PyG normalises over edges, so an edge present ``c`` times contributes
    ``c * exp(e)``: the exponentials are weighted by the multiplicity matrix,
    which is 0 for absent edges, so no mask, ``Where`` or ``-inf``/``finfo.min``
    constant is needed. Those broke converters: LiteRT's INT8 ``SELECT_V2`` fed
    -3.4e38 aborted at load, and a huge constant ruins any int8 scale.

    The shift ``m`` is the row's largest edge logit, or 0 when that is smaller
    (``max(logits * edge)``): exact for edges (softmax is shift-invariant; it
    differs from PyG only if every edge logit of a row is below -87, where
    float32 ``exp`` underflows), and non-edge terms are clamped at ``exp(0)``
    before being multiplied by 0, so they cannot overflow into NaN. A row
    without incoming edges sums to 0 and aggregates to 0, as in PyG.

    Args:
        logits: ``[..., N(target), N(source)]`` attention scores.
        count: ``[N, N]`` edge multiplicities.
        edge: ``[N, N]`` 1.0 where an edge exists.

    Returns:
        Attention weights with the shape of ``logits``.
    """
    shift = (logits * edge).amax(dim=-1, keepdim=True)
    weights = torch.exp((logits - shift).clamp(max=0.0)) * count
    total = weights.sum(dim=-1, keepdim=True)
    return weights / total.clamp(min=torch.finfo(logits.dtype).tiny)


class StaticAttentionConv(StaticConv):
    """Base of the GAT-family lowerings: folds the edge mask and aggregates attended messages.

    Subclasses store their projections and then ``res`` and ``bias`` (PyG's registration
    order, so state dicts list the same keys in the same order) and implement
    ``_dense`` by scoring every edge and passing the logits to :meth:`_attend`.
    ``dropout`` is inert because the lowered model is for inference.

    Raises:
        UnsupportedModelError: For ``edge_dim`` or a non-sum ``aggr``.
    """

    count: Tensor
    edge: Tensor
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
        count, edge = attention_buffers(
            ctx.edge_index, self.num_nodes, conv.add_self_loops, ctx.device, ctx.dtype
        )
        self.register_buffer("count", count)
        self.register_buffer("edge", edge)

    def _attend(self, logits: Tensor, x_src: Tensor, xb: Tensor) -> Tensor:
        """Weight source features by the edge softmax of ``logits``.

        Args:
            logits: ``[B * H, N_dst, N_src]`` attention scores (heads folded into the batch).
            x_src: ``[B, N, H * C]`` projected source (message) features.
            xb: ``[B, N, F_in]`` layer input, for the residual.

        Returns:
            ``[B, N, H * C]`` (``concat``) or ``[B, N, C]``.
        """
        n, h, c = self.num_nodes, self.heads, self.channels
        alpha = masked_softmax(logits, self.count, self.edge)
        # [B, N, H * C] -> [B * H, N, C] through 3-D views only (see StaticGATConv._dense).
        msg = x_src.transpose(1, 2).reshape(-1, c, n).transpose(1, 2)
        out = torch.matmul(alpha, msg)  # [B * H, N, C]
        if self.concat:
            out = out.transpose(1, 2).reshape(-1, h * c, n).transpose(1, 2)  # [B, N, H * C]
        else:
            out = out.reshape(-1, h, n * c).mean(dim=1).reshape(-1, n, c)
        if self.res is not None:
            out = out + self.res(xb)
        if self.bias is not None:
            out = out + self.bias
        return out
