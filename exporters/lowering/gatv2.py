"""Dense static-topology lowering of :class:`torch_geometric.nn.GATv2Conv`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

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


class StaticGATv2Conv(nn.Module):
    """``GATv2Conv`` computing its edge softmax densely over a constant ``[N, N]`` mask.

    GATv2 scores ``att . leaky_relu(W_r x_i + W_l x_j)`` cannot be split per node, so
    the forward materialises a ``[B, N, N, H, C]`` tensor; fine for sensor-sized graphs.
    Supports ``heads``, ``concat``, ``negative_slope``, ``add_self_loops``, ``bias``,
    ``share_weights`` and ``residual``.

    Args:
        conv: The PyG layer to lower; its weights are reused.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Ignored; ``GATv2Conv`` takes edge features, not weights.
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazy weights, ``edge_dim`` or a non-sum ``aggr``.
    """

    def __init__(
        self,
        conv: GATv2Conv,
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
        self.share_weights = conv.share_weights
        self.lin_l, self.lin_r, self.att = conv.lin_l, conv.lin_r, conv.att
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
        x_l = self.lin_l(x).reshape(-1, n, h, c)  # source (message) side
        x_r = x_l if self.share_weights else self.lin_r(x).reshape(-1, n, h, c)
        pair = F.leaky_relu(x_r.unsqueeze(2) + x_l.unsqueeze(1), self.negative_slope)
        logits = (pair * self.att).sum(dim=-1).permute(0, 3, 1, 2)  # [B, H, N_dst, N_src]
        alpha = masked_softmax(logits, self.mask, self.log_count)
        out = torch.matmul(alpha, x_l.transpose(1, 2)).transpose(1, 2)  # [B, N, H, C]
        out = out.reshape(-1, n, h * c) if self.concat else out.mean(dim=2)
        if self.res is not None:
            out = out + self.res(x)
        if self.bias is not None:
            out = out + self.bias
        return to_flat(out)
