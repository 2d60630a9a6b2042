"""Dense static-topology lowering of :class:`torch_geometric.nn.GATConv`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from .common import (
    aggr_name,
    attention_buffers,
    check_lowerable,
    masked_softmax,
    oriented,
    to_batched,
    to_flat,
    unsupported,
)


class StaticGATConv(nn.Module):
    """``GATConv`` computing its edge softmax densely over a constant ``[N, N]`` mask.

    Supports ``heads``, ``concat``, ``negative_slope``, ``add_self_loops``, ``bias``,
    ``residual`` and bipartite-style ``(in_src, in_dst)`` weights applied to one node set.
    ``dropout`` is inert because the lowered model is for inference.

    Args:
        conv: The PyG layer to lower; its weights are reused.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Ignored; ``GATConv`` takes edge features, not weights.
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazy weights, ``edge_dim`` or a non-sum ``aggr``.
    """

    def __init__(
        self,
        conv: GATConv,
        edge_index: Tensor,
        num_nodes: int,
        edge_weight: Tensor | None = None,
        path: str = "",
    ) -> None:
        super().__init__()
        del edge_weight
        dtype, device = check_lowerable(path, conv)
        if conv.edge_dim is not None:
            unsupported(
                path,
                conv,
                "edge_dim",
                conv.edge_dim,
                "edge_dim=None (edge features "
                "are per-edge inputs and cannot be folded into a constant topology)",
            )
        aggr_name(path, conv, ("sum",))
        self.num_nodes, self.heads, self.channels = num_nodes, conv.heads, conv.out_channels
        self.concat, self.negative_slope = conv.concat, conv.negative_slope
        self.lin, self.lin_src, self.lin_dst = conv.lin, conv.lin_src, conv.lin_dst
        self.att_src, self.att_dst = conv.att_src, conv.att_dst
        self.res, self.bias = conv.res, conv.bias
        mask, log_count = attention_buffers(
            oriented(conv, edge_index), num_nodes, conv.add_self_loops, device, dtype
        )
        self.register_buffer("mask", mask)
        self.register_buffer("log_count", log_count)

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: Flat node features ``[B * N, F_in]``.
            edge_index: Ignored; the topology is the folded constant.
            *args: Ignored.
            **kwargs: Ignored.

        Returns:
            Flat node features ``[B * N, H * C]`` (``concat``) or ``[B * N, C]``.
        """
        n, h, c = self.num_nodes, self.heads, self.channels
        x = to_batched(x, n)
        if self.lin is not None:
            x_src = x_dst = self.lin(x).reshape(-1, n, h, c)
        else:
            x_src = self.lin_src(x).reshape(-1, n, h, c)
            x_dst = self.lin_dst(x).reshape(-1, n, h, c)
        # Head-major layout makes both the softmax and the aggregation plain MatMul-friendly.
        a_src = (x_src * self.att_src).sum(dim=-1).transpose(1, 2)  # [B, H, N]
        a_dst = (x_dst * self.att_dst).sum(dim=-1).transpose(1, 2)
        logits = F.leaky_relu(a_dst.unsqueeze(-1) + a_src.unsqueeze(-2), self.negative_slope)
        alpha = masked_softmax(logits, self.mask, self.log_count)  # [B, H, N_dst, N_src]
        out = torch.matmul(alpha, x_src.transpose(1, 2)).transpose(1, 2)  # [B, N, H, C]
        out = out.reshape(-1, n, h * c) if self.concat else out.mean(dim=2)
        if self.res is not None:
            out = out + self.res(x)
        if self.bias is not None:
            out = out + self.bias
        return to_flat(out)
