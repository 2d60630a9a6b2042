"""Shared helpers for the dense static-topology lowering of PyG conv layers.

Every lowered layer receives node features in the flattened disjoint-union form
``[B * N, F]`` and works internally on ``[B, N, F]``. The batch dimension is only
ever expressed as ``-1`` in reshapes so it stays symbolic under ``torch.export``.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

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
#: ``MultiAggregation`` modes that lower (:class:`.aggregations.Combine`); ``attn`` does not.
COMBINE_MODES = ("cat", "proj", "sum", "mean", "max", "min", "logsumexp", "std", "var")


def unsupported(path: str, conv: nn.Module, option: str, value: object, supported: str) -> None:
    """Raise the error used for every conv option that has no lowering (dense or tables).

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
        f"Cannot lower layer '{where}' ({type(conv).__name__}): option "
        f"{option}={value!r} is not supported; supported: {supported}."
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
    if name is None or name not in allowed:
        unsupported(path, conv, "aggr", conv.aggr, " / ".join(allowed))
    assert name is not None  # unsupported() raises
    return name


def aggr_names(path: str, conv: MessagePassing, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A layer's neighbourhood aggregations: one name, or those of its ``MultiAggregation``.

    Args:
        path: Dotted path of the layer inside the model.
        conv: The PyG layer.
        allowed: Aggregations the caller can lower (each of a ``MultiAggregation`` too).

    Returns:
        The canonical names in the layer's order (``aggr=['mean', 'max']``:
        ``("mean", "max")``); :class:`.aggregations.Combine` joins their results.

    Raises:
        UnsupportedModelError: An aggregation not in ``allowed`` (named, inside a
            ``MultiAggregation`` too), or a ``MultiAggregation`` combine mode
            outside :data:`COMBINE_MODES` (``attn``).
    """
    module = conv.aggr_module
    if not isinstance(module, pyg_aggr.MultiAggregation):
        return (aggr_name(path, conv, allowed),)
    names: list[str] = []
    for inner in module.aggrs:
        name = _AGGR_NAMES.get(type(inner))
        if name is None or name not in allowed:
            unsupported(
                path,
                conv,
                "aggr",
                conv.aggr,
                f"{' / '.join(allowed)} or a MultiAggregation of those "
                f"({type(inner).__name__} has no lowering)",
            )
        assert name is not None  # unsupported() raises
        names.append(name)
    if len(names) > 1 and module.mode not in COMBINE_MODES:
        unsupported(
            path,
            conv,
            "aggr_kwargs['mode']",
            module.mode,
            f"MultiAggregation modes {', '.join(COMBINE_MODES)} ('attn' runs multi-head "
            f"attention across the aggregations, which has no lowering)",
        )
    return tuple(names)


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


class LowerContext(NamedTuple):
    """What :meth:`StaticConv._lower` needs besides the layer itself.

    Attributes:
        edge_index: ``[2, E]`` topology of one graph, already oriented ``[source, target]``.
        edge_weight: Optional ``[E]`` edge weights, as given to :func:`densify`.
        path: Dotted path of the layer, for error messages.
        dtype: Dtype the folded constants must use.
        device: Device the folded constants must live on.
    """

    edge_index: Tensor
    edge_weight: Tensor | None
    path: str
    dtype: torch.dtype
    device: torch.device


class StaticConv(nn.Module, abc.ABC):
    """Base of every dense lowered layer: a PyG conv with one graph's topology folded in.

    One constructor for all lowerings lets :func:`densify` build any of them alike;
    subclasses fold their layer in :meth:`_lower` and compute in :meth:`_dense`.

    Args:
        conv: The PyG layer to lower; its weights are reused, not copied.
        edge_index: ``[2, E]`` topology of one graph.
        num_nodes: Number of nodes ``N`` of one graph.
        edge_weight: Optional ``[E]`` edge weights; ignored by layers whose PyG
            counterpart takes none.
        path: Dotted path of the layer, for error messages.

    Raises:
        UnsupportedModelError: For lazily initialised weights or an option the layer
            cannot lower (see each subclass).
    """

    def __init__(
        self,
        conv: MessagePassing,
        edge_index: Tensor,
        num_nodes: int,
        edge_weight: Tensor | None = None,
        path: str = "",
    ) -> None:
        super().__init__()
        self.num_nodes = num_nodes
        dtype, device = check_lowerable(path, conv)
        ctx = LowerContext(oriented(conv, edge_index), edge_weight, path, dtype, device)
        self._lower(conv, ctx)

    # `conv` is Any so each subclass can narrow it to the PyG class it lowers.
    @abc.abstractmethod
    def _lower(self, conv: Any, ctx: LowerContext) -> None:
        """Check ``conv``'s options and store its weights and folded topology."""

    @abc.abstractmethod
    def _dense(self, xb: Tensor, x_flat: Tensor) -> Tensor:
        """Compute the layer on ``xb`` ``[B, N, F_in]``; ``x_flat`` is the same data flat.

        Returns ``[B, N, F_out]``, or ``[B * N, F_out]`` for a layer that has to finish
        on the flat form.
        """

    def forward(
        self, x: Tensor, edge_index: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        """Apply the layer.

        Args:
            x: Flat node features ``[B * N, F_in]``.
            edge_index: Ignored; the topology is the folded constant.
            *args: Ignored (e.g. the ``edge_weight`` the original layer took).
            **kwargs: Ignored.

        Returns:
            Flat node features ``[B * N, F_out]``.
        """
        out = self._dense(to_batched(x, self.num_nodes), x)
        # Flattening an already flat result would add a no-op Reshape to the export.
        return out if out.dim() == 2 else to_flat(out)


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
        # Buffers, declared for type checkers (register_buffer hides them).
        self.adj: Tensor
        self.mask: Tensor
        self.has_in: Tensor
        self.w_hi: Tensor
        self.w_lo: Tensor
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
