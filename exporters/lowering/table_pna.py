"""``PNAConv`` (Principal Neighbourhood Aggregation) lowered to neighbour tables.

PyG's ``PNAConv`` builds per tower a message ``pre_nn(cat[x_i, x_j(, enc(e_ji))])``
for every edge, aggregates it with several aggregators (mean, min, max, std, var,
sum), rescales each by degree scalers normalised by the training set's average
degree (``DegreeScalerAggregation``), and applies ``post_nn(cat[x_i, aggregates])``
per tower, then ``lin`` over the concatenated towers.

Here the message is computed on the ``[B * R, K, F]`` slots of the raw table. The
first layer of each ``pre_nn`` is a ``Linear`` over ``cat[x_i, x_j, e]``, so it is
split into per-node projections (``x W_i + b`` gathered at each row's target,
``x W_j`` gathered at each slot's source, ``enc(e) W_e`` at each slot's edge id)
that are added per slot: exact, and no ``[R, K, 2F]`` concatenation. Padding slots
copy a real slot of their row (source and edge id) and ``x_i`` is the row's own
node, so a padding slot's message equals a real one's after any MLP and ``max``/
``min`` need no mask; sums are masked. Tensors stay at most 3-D; only ``Gather``,
``MatMul``, elementwise ops, reductions and ``Concat`` appear.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn import PNAConv
from torch_geometric.nn import aggr as pyg_aggr

from edge_sdk.neighbour_tables import RAW

from .common import unsupported
from .table_convs import TableConv
from .tables import Table, current_table

#: Aggregator modules inside ``DegreeScalerAggregation`` (exact types) -> name.
PNA_AGGRS: dict[type, str] = {
    pyg_aggr.SumAggregation: "sum",
    pyg_aggr.MeanAggregation: "mean",
    pyg_aggr.MinAggregation: "min",
    pyg_aggr.MaxAggregation: "max",
    pyg_aggr.StdAggregation: "std",
    pyg_aggr.VarAggregation: "var",
}
#: The scalers PyG 2.8's ``DegreeScalerAggregation`` knows.
PNA_SCALERS = ("identity", "amplification", "attenuation", "linear", "inverse_linear")
#: ``StdAggregation``'s floor: ``sqrt(max(var, 1e-5))``, 0 where that is the floor.
STD_EPS = 1e-5


class TablePNAConv(TableConv):
    """``PNAConv``: towers, pre/post MLPs, aggregators, degree scalers, ``edge_dim``.

    The degree of the scalers is the number of incoming edges (duplicates counted,
    as PyG's ``degree(index)``); ``attenuation`` and ``inverse_linear`` clamp it to
    1 as PyG does. ``train_norm``'s learnt average degrees are read from the layer.

    Raises:
        UnsupportedModelError: An aggregation other than PyG's ``DegreeScalerAggregation``
            over ``MultiAggregation(mode='cat')`` of sum/mean/min/max/std/var, an unknown
            scaler, or ``flow='target_to_source'`` (named with the layer path).
    """

    edge_arg = "edge_attr"

    def _lower(self, conv: PNAConv) -> None:
        scaled = conv.aggr_module
        if type(scaled) is not pyg_aggr.DegreeScalerAggregation:
            unsupported(
                self.path, conv, "aggr", type(scaled).__name__, "PyG's DegreeScalerAggregation"
            )
        inner = scaled.aggr
        parts = [inner]
        if type(inner) is pyg_aggr.MultiAggregation:
            if inner.mode != "cat":
                unsupported(self.path, conv, "aggregators mode", inner.mode, "'cat'")
            parts = list(inner.aggrs)
        names = [PNA_AGGRS.get(type(a)) for a in parts]
        if None in names:
            given = [type(a).__name__ for a in parts]
            unsupported(self.path, conv, "aggregators", given, ", ".join(PNA_AGGRS.values()))
        scalers = [scaled.scaler] if isinstance(scaled.scaler, str) else list(scaled.scaler)
        if any(s not in PNA_SCALERS for s in scalers):
            unsupported(self.path, conv, "scalers", scalers, ", ".join(PNA_SCALERS))
        self.aggrs = [n for n in names if n is not None]
        self.scalers = scalers
        self.scaled = scaled  # its avg_deg_lin / avg_deg_log (learnt with train_norm)
        self.towers, self.width, self.divide = conv.towers, conv.F_in, conv.divide_input
        self.edge_encoder = conv.edge_encoder if conv.edge_dim is not None else None
        self.pre_nns, self.post_nns, self.lin = conv.pre_nns, conv.post_nns, conv.lin

    def _table_forward(self, x: Tensor, edge: Tensor | None) -> Tensor:
        table = current_table(RAW, x)
        f = self.width
        inputs = [x[:, t * f : (t + 1) * f] if self.divide else x for t in range(self.towers)]
        msgs = self._messages(table, inputs, edge)
        deg = table.degree()
        aggregated = self._aggregate(table, msgs, deg)
        scaled = [a if s is None else a * s for s in self._scales(deg) for a in aggregated]
        outs = []
        for t, post in enumerate(self.post_nns):
            cols = [a if self.towers == 1 else a[:, t * f : (t + 1) * f] for a in scaled]
            outs.append(post(torch.cat([inputs[t], *cols], dim=-1)))
        return self.lin(torch.cat(outs, dim=-1) if self.towers > 1 else outs[0])

    def _messages(self, table: Table, inputs: list[Tensor], edge: Tensor | None) -> list[Tensor]:
        """Per class ``[B * R_c, K_c, T * F]``: each tower's ``pre_nn`` message, side by side."""
        f = self.width
        firsts: list[Any] = [pre[0] for pre in self.pre_nns]
        pairs = list(zip(inputs, firsts, strict=True))
        to_i = _cat([F.linear(h, lin.weight[:, :f], lin.bias) for h, lin in pairs])
        to_j = _cat([F.linear(h, lin.weight[:, f : 2 * f]) for h, lin in pairs])
        from_edge: list[Tensor] | None = None
        if self.edge_encoder is not None:
            if edge is None:
                raise self.refuse("PNAConv with edge_dim needs edge_attr; pass it as in PyG")
            enc = self.edge_encoder(edge if edge.dim() == 2 else edge.unsqueeze(-1))
            per_edge = _cat([F.linear(enc, lin.weight[:, 2 * f :]) for lin in firsts])
            from_edge = table.edge_slots(per_edge)
        elif edge is not None:
            raise self.refuse("edge_attr given to a PNAConv built without edge_dim (PyG fails too)")
        out = []
        for c in range(len(table.mask)):
            h = table.slots(to_j, c) + table.rows(to_i, c).unsqueeze(1)
            if from_edge is not None:
                h = h + from_edge[c]
            out.append(self._rest_of_pre(h))
        return out

    def _rest_of_pre(self, h: Tensor) -> Tensor:
        """The ``pre_nn`` layers after the first (none with the default ``pre_layers=1``)."""
        if all(len(pre) == 1 for pre in self.pre_nns):
            return h
        f = self.width
        parts = [pre[1:](h[..., t * f : (t + 1) * f]) for t, pre in enumerate(self.pre_nns)]
        return _cat(parts)

    def _aggregate(self, table: Table, msgs: list[Tensor], deg: Tensor) -> list[Tensor]:
        """Each aggregator's ``[B * N, T * F]``, in the layer's order (nodes without edges: 0)."""
        done: dict[str, Tensor] = {}
        count = deg.clamp(min=1.0)
        if set(self.aggrs) & {"sum", "mean", "var", "std"}:
            done["sum"] = table.reduce_slots(msgs, "sum")
            done["mean"] = done["sum"] / count
        if set(self.aggrs) & {"var", "std"}:
            mean2 = table.reduce_slots([m * m for m in msgs], "sum") / count
            done["var"] = mean2 - done["mean"] * done["mean"]
            # PyG zeroes sqrt(max(var, eps)) where it is sqrt(eps): the same as var <= eps,
            # tested on var (a comparison is exact on every engine; LiteRT's sqrt(eps) is
            # not PyTorch's to the last bit, and it left sqrt(eps) on constant messages).
            var = done["var"]
            done["std"] = var.clamp(min=STD_EPS).sqrt() * (var > STD_EPS).to(var.dtype)
        for how in ("max", "min"):
            if how in self.aggrs:
                done[how] = table.reduce_slots(msgs, how)
        return [done[a] for a in self.aggrs]

    def _scales(self, deg: Tensor) -> list[Tensor | None]:
        """Each scaler's ``[B * N, 1]`` factor (``None``: identity), as PyG computes it."""
        lin, log = self.scaled.avg_deg_lin, self.scaled.avg_deg_log
        out: list[Tensor | None] = []
        for scaler in self.scalers:
            if scaler == "identity":
                out.append(None)
            elif scaler == "amplification":
                out.append(torch.log(deg + 1) / log)
            elif scaler == "attenuation":
                out.append(log / torch.log(deg.clamp(min=1) + 1))
            elif scaler == "linear":
                out.append(deg / lin)
            else:  # inverse_linear
                out.append(lin / deg.clamp(min=1))
        return out


def _cat(parts: list[Tensor]) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


#: PyG layer -> its table lowering (joined into :data:`.tabulate.TABLE_CONVS`).
PNA_CONVS: dict[type, type[TableConv]] = {PNAConv: TablePNAConv}

__all__ = ["PNA_AGGRS", "PNA_CONVS", "PNA_SCALERS", "TablePNAConv"]
