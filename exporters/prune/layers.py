"""Which tensors of each supported layer hold its output and input channels.

``output_side(m)`` lists what to cut when ``m`` produces a hidden dimension
(weight rows, biases, attention vectors); ``input_side(m)`` what to cut when it
consumes one (weight columns); ``norm_side(m)`` the per-channel tensors of a
channel-wise layer in between (BatchNorm, InstanceNorm, GraphNorm, PReLU).
"""

from __future__ import annotations

import torch_geometric.nn as pyg_nn
from torch import Tensor, nn
from torch_geometric.nn.aggr import MultiAggregation

from edge_sdk.errors import UnsupportedModelError

from .cuts import Cut, Side

LINEARS = (nn.Linear, pyg_nn.Linear)
ATTENTION = (pyg_nn.GATConv, pyg_nn.GATv2Conv)
#: Layers whose channels structured pruning can cut.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    *LINEARS,
    pyg_nn.GCNConv,
    pyg_nn.SAGEConv,
    pyg_nn.GraphConv,
    *ATTENTION,
)


def _linear_out(lin: nn.Module, heads: int = 1, score: bool = True) -> list[Cut]:
    cuts = [Cut(lin, "weight", 0, heads, score)]
    if getattr(lin, "bias", None) is not None:
        cuts.append(Cut(lin, "bias", 0, heads))
    return cuts


def weight_of(lin: nn.Module) -> Tensor:
    """``lin.weight`` as a tensor."""
    weight = lin.weight
    assert isinstance(weight, Tensor)
    return weight


def _out_attr(lin: nn.Module) -> str:
    return "out_features" if isinstance(lin, nn.Linear) else "out_channels"


def _in_attr(lin: nn.Module) -> str:
    return "in_features" if isinstance(lin, nn.Linear) else "in_channels"


def _lins(m: nn.Module, *names: str) -> list[nn.Module]:
    found: list[nn.Module] = []
    for name in names:
        lin = getattr(m, name, None)
        if isinstance(lin, nn.Module) and all(lin is not f for f in found):
            found.append(lin)
    return found


def _refuse(path: str, m: nn.Module, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"structured pruning: layer {path} ({type(m).__name__}) {why}; "
        "use unstructured pruning or change the layer"
    )


def _check(path: str, m: nn.Module) -> None:
    if isinstance(m, pyg_nn.SAGEConv):
        if m.project:
            raise _refuse(path, m, "has project=True (its input projection is not supported)")
        aggr = m.aggr_module
        if isinstance(aggr, MultiAggregation) or any(True for _ in aggr.parameters()):
            raise _refuse(path, m, f"uses the aggregation {type(aggr).__name__}")


def output_side(path: str, m: nn.Module) -> Side:
    """Tensors holding ``m``'s output channels.

    Raises:
        UnsupportedModelError: ``m`` is not a supported layer or uses an option
            that structured pruning cannot cut (named in the message).
    """
    _check(path, m)
    if isinstance(m, LINEARS):
        return Side(m.weight.shape[0], 1, _linear_out(m), [(m, _out_attr(m), 1)])
    if isinstance(m, ATTENTION):
        return _attention_out(m)
    if isinstance(m, pyg_nn.GCNConv):
        cuts = [*_linear_out(m.lin), *([Cut(m, "bias", 0)] if m.bias is not None else [])]
        return Side(m.out_channels, 1, cuts, [(m, "out_channels", 1), (m.lin, "out_channels", 1)])
    if isinstance(m, pyg_nn.SAGEConv | pyg_nn.GraphConv):
        lins = _lins(m, "lin_l", "lin_r", "lin_rel", "lin_root")
        cuts = [c for lin in lins for c in _linear_out(lin)]
        attrs = [(m, "out_channels", 1), *((lin, "out_channels", 1) for lin in lins)]
        return Side(m.out_channels, 1, cuts, attrs)
    raise _refuse(path, m, "is not supported")


def _attention_out(m: pyg_nn.GATConv | pyg_nn.GATv2Conv) -> Side:
    heads, per_head = int(m.heads), int(m.out_channels)
    layout = heads if m.concat else 1
    cuts: list[Cut] = []
    attrs: list[tuple[nn.Module, str, int]] = [(m, "out_channels", 1)]
    for lin in _lins(m, "lin", "lin_src", "lin_dst", "lin_l", "lin_r"):
        cuts += _linear_out(lin, heads)
        attrs.append((lin, "out_channels", heads))
    for name in ("att", "att_src", "att_dst", "att_edge"):
        if getattr(m, name, None) is not None:
            cuts.append(Cut(m, name, 2))  # [1, H, C]
    if m.lin_edge is not None:  # edge features enter the attention per channel
        cuts += _linear_out(m.lin_edge, heads, score=False)
        attrs.append((m.lin_edge, "out_channels", heads))
    if m.res is not None:
        cuts += _linear_out(m.res, layout)
        attrs.append((m.res, "out_channels", layout))
    if m.bias is not None:
        cuts.append(Cut(m, "bias", 0, layout))
    return Side(per_head, layout, cuts, attrs)


def input_side(path: str, m: nn.Module) -> Side:
    """Tensors holding ``m``'s input channels (weight columns).

    Raises:
        UnsupportedModelError: As :func:`output_side`.
    """
    _check(path, m)
    if isinstance(m, LINEARS):
        lins: list[nn.Module] = [m]
    elif isinstance(m, pyg_nn.GCNConv):
        lins = [m.lin]
    elif isinstance(m, WEIGHT_LAYERS):
        names = ("lin", "lin_src", "lin_dst", "lin_l", "lin_r", "lin_rel", "lin_root", "res")
        lins = _lins(m, *names)
    else:
        raise _refuse(path, m, "is not supported")
    width = int(weight_of(lins[0]).shape[1])
    cuts = [Cut(lin, "weight", 1) for lin in lins]
    attrs = [(lin, _in_attr(lin), 1) for lin in lins]
    if m not in lins:
        attrs.append((m, "in_channels", 1))
    return Side(width, 1, cuts, attrs)


def norm_side(m: nn.Module) -> Side | None:
    """Per-channel tensors of a channel-wise layer; ``None`` when it has none."""
    if isinstance(m, pyg_nn.BatchNorm):
        side = norm_side(m.module)
        assert side is not None
        side.attrs.append((m, "in_channels", 1))
        return side
    if isinstance(m, nn.BatchNorm1d | nn.InstanceNorm1d | pyg_nn.InstanceNorm):
        names = ("weight", "bias", "running_mean", "running_var")
        cuts = [Cut(m, n, 0) for n in names if getattr(m, n, None) is not None]
        return Side(m.num_features, 1, cuts, [(m, "num_features", 1)]) if cuts else None
    if isinstance(m, pyg_nn.GraphNorm):
        cuts = [Cut(m, n, 0) for n in ("weight", "bias", "mean_scale")]
        return Side(m.in_channels, 1, cuts, [(m, "in_channels", 1)])
    if isinstance(m, nn.PReLU) and m.num_parameters > 1:
        return Side(m.num_parameters, 1, [Cut(m, "weight", 0)], [(m, "num_parameters", 1)])
    return None
