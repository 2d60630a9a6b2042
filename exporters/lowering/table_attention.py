"""The GAT family lowered to neighbour tables: attention as a softmax over each row's slots.

``GATConv`` and ``GATv2Conv`` differ only in how they score an edge; self
loops (the ``loops`` table), edge features (with PyG's ``fill_value`` for the
loops it adds), the softmax over incoming edges (:meth:`.Table.softmax`,
exact for spilled rows), head merging, residual and bias are shared.

Per-head sums are ``MatMul``\\ s with a ``[H * C, H]`` matrix holding the
attention vector, so tensors stay at most 3-D and padding slots are masked
by multiplication, never by ``-inf``.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv

from edge_sdk.neighbour_tables import LOOPS, RAW

from .common import aggr_name, unsupported
from .table_convs import TableConv
from .tables import Table, current_table


def head_matrix(att: Tensor) -> Tensor:
    """``[1, H, C]`` attention vector as the ``[H * C, H]`` matrix of per-head dot products.

    ``x [.., H * C] @ head_matrix(att)`` is PyG's ``(x.view(-1, H, C) * att).sum(-1)``.
    """
    h, c = att.shape[1], att.shape[2]
    spread = torch.repeat_interleave(torch.eye(h, dtype=att.dtype, device=att.device), c, dim=0)
    return att.reshape(h * c, 1) * spread


class TableAttentionConv(TableConv):
    """Base of the GAT-family lowerings.

    Subclasses store their projections in :meth:`_lower` (after calling this one)
    and implement :meth:`_attend_inputs`: per class scores ``[B * R_c, K_c, H]``
    and messages ``[B * R_c, K_c, H * C]``. ``dropout`` is inert (inference).

    Raises:
        UnsupportedModelError: A non-sum ``aggr``, or a ``fill_value`` other than
            ``'mean'`` or a number where edge features meet added self loops.
    """

    edge_arg = "edge_attr"
    res: nn.Module | None
    bias: Tensor | None
    lin_edge: nn.Module | None

    def _lower(self, conv: Any) -> None:
        aggr_name(self.path, conv, ("sum",))
        self.heads, self.channels = conv.heads, conv.out_channels
        self.concat, self.negative_slope = conv.concat, conv.negative_slope
        self.variant = LOOPS if conv.add_self_loops else RAW
        fill = conv.fill_value
        self.fill: str | float = "mean"
        if conv.edge_dim is not None and conv.add_self_loops:
            if isinstance(fill, (int, float)) and not isinstance(fill, bool):
                self.fill = float(fill)
            elif fill != "mean":
                unsupported(
                    self.path,
                    conv,
                    "fill_value",
                    fill,
                    "'mean' or a number (edge_dim with "
                    "add_self_loops=True: the features of the self loops PyG adds)",
                )

    def _edge_slots(
        self, table: Table, x: Tensor, edge: Tensor | None, project: Any
    ) -> list[Tensor] | None:
        """Per-slot ``project(edge_attr)`` (``None`` without ``lin_edge`` or ``edge_attr``).

        ``project`` is linear without bias, so the ``'mean'`` fill of an added self
        loop (mean of the node's incoming edge features) is the mean of the
        projected features.
        """
        if self.lin_edge is None or edge is None:
            return None
        attr = edge if edge.dim() == 2 else edge.unsqueeze(-1)  # PyG takes [E] as [E, 1]
        e = project(attr)  # [B * E, F']
        if self.variant == RAW:
            return table.edge_slots(e)
        if self.fill == "mean":  # each node has one loop: the other slots are its edges
            zero = x.new_zeros(x.shape[0], e.shape[1])
            total = table.reduce_slots(table.edge_slots(e, zero), "sum")
            loops = total / (table.degree() - 1.0).clamp(min=1.0)
        else:
            fill = torch.full((1, attr.shape[1]), float(self.fill), dtype=e.dtype, device=e.device)
            loops = x.new_zeros(x.shape[0], 1) + project(fill)
        return table.edge_slots(e, loops)

    @abc.abstractmethod
    def _attend_inputs(
        self, table: Table, x: Tensor, edge: Tensor | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per class: the slots' attention logits and the messages they weigh."""

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        table = current_table(self.variant, x)
        logits, messages = self._attend_inputs(table, x, edge)
        out = table.softmax(logits, messages, self.heads)  # [B * N, H * C]
        if not self.concat and self.heads > 1:  # mean over heads as one MatMul
            c = self.channels
            eye = torch.eye(c, dtype=out.dtype, device=out.device)
            out = torch.matmul(out, eye.repeat(self.heads, 1) / self.heads)
        if self.res is not None:
            out = out + self.res(x)
        if self.bias is not None:
            out = out + self.bias
        return out


class TableGATConv(TableAttentionConv):
    """``GATConv``: ``e_ji = leaky_relu(a_src . W x_j + a_dst . W x_i [+ a_edge . W_e e_ji])``."""

    def _lower(self, conv: GATConv) -> None:
        super()._lower(conv)
        self.lin, self.lin_src, self.lin_dst = conv.lin, conv.lin_src, conv.lin_dst
        self.att_src, self.att_dst = conv.att_src, conv.att_dst
        self.lin_edge, self.att_edge = conv.lin_edge, conv.att_edge
        self.res, self.bias = conv.res, conv.bias

    def _attend_inputs(
        self, table: Table, x: Tensor, edge: Tensor | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        if self.lin is not None:
            x_src = x_dst = self.lin(x)  # [B * N, H * C]
        else:
            x_src, x_dst = self.lin_src(x), self.lin_dst(x)
        a_src = x_src @ head_matrix(self.att_src)  # [B * N, H]
        a_dst = x_dst @ head_matrix(self.att_dst)
        edge_scores = None
        if self.lin_edge is not None:
            lin_edge, att = self.lin_edge, head_matrix(self.att_edge)
            edge_scores = self._edge_slots(table, x, edge, lambda e: lin_edge(e) @ att)
        logits, messages = [], []
        for c in range(len(table.mask)):
            s = table.slots(a_src, c) + table.rows(a_dst, c).unsqueeze(1)
            if edge_scores is not None:
                s = s + edge_scores[c]
            logits.append(F.leaky_relu(s, self.negative_slope))
            messages.append(table.slots(x_src, c))
        return logits, messages


class TableGATv2Conv(TableAttentionConv):
    """``GATv2Conv``: ``e_ji = a . leaky_relu(W_l x_j + W_r x_i [+ W_e e_ji])``."""

    def _lower(self, conv: GATv2Conv) -> None:
        super()._lower(conv)
        self.lin_l, self.lin_r = conv.lin_l, conv.lin_r
        self.att = conv.att
        self.lin_edge = conv.lin_edge
        self.res, self.bias = conv.res, conv.bias

    def _attend_inputs(
        self, table: Table, x: Tensor, edge: Tensor | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        x_l = self.lin_l(x)  # [B * N, H * C], the messages
        x_r = x_l if self.lin_r is self.lin_l else self.lin_r(x)
        edge_feats = None
        if self.lin_edge is not None:
            edge_feats = self._edge_slots(table, x, edge, self.lin_edge)
        att = head_matrix(self.att)
        logits, messages = [], []
        for c in range(len(table.mask)):
            msg = table.slots(x_l, c)  # [R, K, H * C]
            s = msg + table.rows(x_r, c).unsqueeze(1)
            if edge_feats is not None:
                s = s + edge_feats[c]
            logits.append(F.leaky_relu(s, self.negative_slope) @ att)  # [R, K, H]
            messages.append(msg)
        return logits, messages


#: The GAT family's table lowerings (see :data:`.table_convs.MESSAGE_CONVS`).
ATTENTION_CONVS: dict[type, type[TableConv]] = {
    GATConv: TableGATConv,
    GATv2Conv: TableGATv2Conv,
}

__all__ = ["ATTENTION_CONVS", "TableGATConv", "TableGATv2Conv", "head_matrix"]
