"""``EdgeConv`` (DGCNN; the convs of PyG's ``EdgeCNN``) lowered to neighbour tables.

PyG computes one message per edge, ``nn(cat[x_i, x_j - x_i])``, and reduces them
(``max`` by default). Here each table slot is one message: ``x_j`` is the slot's
gathered source, ``x_i`` the row's target node, and ``nn`` runs on the slots of a
class flattened to ``[R * K, 2F]`` (a 2-D batch of rows, as PyG hands it the
edges, so ``BatchNorm1d`` and ``Linear`` see the channel axis they expect and no
tensor exceeds 3-D). A padding slot repeats a real source of its row, so its
message is that slot's message: ``max``/``min`` need no mask, ``sum``/``mean``
mask it (:meth:`.Table.reduce_slots`); a node without incoming edges gets 0.

The message is only exact when ``nn`` treats every row on its own: norms that
pool statistics over rows (graph-mode ``LayerNorm``, ``GraphNorm``,
``InstanceNorm``, batch-statistics ``BatchNorm``, ...) would see the padding
slots and are refused by name.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch_geometric.nn import EdgeConv
from torch_geometric.nn import norm as pyg_norm

from edge_sdk.neighbour_tables import RAW

from .common import NEIGHBOUR_AGGRS, aggr_name, unsupported
from .table_convs import TableConv
from .tables import current_table

#: PyG norms whose output row depends only on its own input row (in eval mode).
ROW_WISE_NORMS: tuple[type[nn.Module], ...] = (pyg_norm.BatchNorm, pyg_norm.LayerNorm)


def cross_row(module: nn.Module) -> str | None:
    """Why ``module`` mixes rows of its input (statistics over rows), or ``None``."""
    if isinstance(module, pyg_norm.LayerNorm) and module.mode != "node":
        return f"LayerNorm(mode={module.mode!r})"
    if isinstance(module, _BatchNorm) and not module.track_running_stats:
        return f"{type(module).__name__}(track_running_stats=False)"
    if isinstance(module, _InstanceNorm):
        return type(module).__name__
    pyg_norms = tuple(getattr(pyg_norm, name) for name in pyg_norm.__all__)
    if isinstance(module, pyg_norms) and not isinstance(module, ROW_WISE_NORMS):
        return type(module).__name__
    return None


class TableEdgeConv(TableConv):
    """``EdgeConv``: ``agg_j nn(cat[x_i, x_j - x_i])`` over the raw edges.

    Raises:
        UnsupportedModelError: An ``aggr`` other than sum/mean/max/min, or an ``nn``
            holding a norm that pools over rows (see the module docstring).
    """

    def _lower(self, conv: EdgeConv) -> None:
        self.aggr = aggr_name(self.path, conv, NEIGHBOUR_AGGRS)
        for name, module in conv.nn.named_modules():
            if why := cross_row(module):
                unsupported(
                    self.path,
                    conv,
                    "nn",
                    f"{why} at nn.{name}" if name else why,
                    "an nn that treats each message on its own (Linear, activations, "
                    "dropout, BatchNorm with running statistics, LayerNorm(mode='node'))",
                )
        self.nn = conv.nn

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        table = current_table(RAW, x)
        messages = []
        for c in range(len(table.mask)):
            x_j = table.slots(x, c)  # [R, K, F]
            x_i = table.rows(x, c).unsqueeze(1)  # [R, 1, F]
            pair = torch.cat([x_i.expand_as(x_j), x_j - x_i], dim=-1)  # [R, K, 2F]
            rows, width = pair.shape[0] * pair.shape[1], pair.shape[2]
            out = self.nn(pair.reshape(rows, width))  # explicit widths: R may be 0
            messages.append(out.reshape(pair.shape[0], pair.shape[1], out.shape[-1]))
        return table.reduce_slots(messages, self.aggr)


#: PyG layer -> its table lowering (exact class: a subclass may change the message).
EDGE_CONVS: dict[type, type[TableConv]] = {EdgeConv: TableEdgeConv}

__all__ = ["EDGE_CONVS", "ROW_WISE_NORMS", "TableEdgeConv", "cross_row"]
