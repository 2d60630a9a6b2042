"""Graph-level norms lowered to per-graph reductions: no scatter in any graph form.

PyG's ``GraphNorm``, ``InstanceNorm`` and ``LayerNorm(mode='graph')`` normalise each
graph of ``batch`` with statistics over its own nodes; PyG computes them with a
scatter and gathers them back with ``index_select(batch)``, and finds the number of
graphs with ``int(batch.max())``. That exports as ``ScatterElements`` (refused by
LiteRT, no INT8) and a data-dependent shape. :func:`lower_norms` swaps these
modules (exact classes: a subclass may compute something else) for
:class:`LoweredNorm`, which asks the forward's :class:`GraphStats` for means:

* static form (:class:`DenseStats`): the ``B`` stacked graphs of ``N`` nodes are a
  ``[B, N, F]`` view, a graph's mean is a reduction over its ``N`` rows;
* dynamic form over neighbour tables (:class:`TableStats`): the readout table
  (graphs as rows, their nodes as slots) sums each graph, a ``pool.graph`` input
  (each node's graph id, built by the runtime) gathers the means back to nodes.

Called without a batch vector, a norm treats the whole request as one graph, as
in PyG (padding nodes of a bucket excluded, by the readout table). PyG's
``BatchNorm`` and ``LayerNorm(mode='node')`` are per-node in eval mode and export
as they are.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from torch import Tensor, nn
from torch_geometric.nn import norm as pyg_norm

from edge_sdk.errors import ExportError
from edge_sdk.neighbour_tables import POOL

from .tables import current_table


def is_graph_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a PyG norm that takes ``batch`` and :func:`lower_norms` lowers.

    ``InstanceNorm(track_running_stats=True)`` is one too: in eval mode it is per node,
    but PyG still counts the graphs of ``batch`` (a data-dependent shape).
    """
    kind = type(module)
    if kind is pyg_norm.LayerNorm:
        return getattr(module, "mode", None) == "graph"
    return kind in (pyg_norm.GraphNorm, pyg_norm.InstanceNorm)


def uses_graph_stats(module: nn.Module) -> bool:
    """Whether ``module`` (eval mode) normalises with statistics over a graph's nodes."""
    running = isinstance(module, pyg_norm.InstanceNorm) and module.track_running_stats
    return is_graph_norm(module) and not running


class GraphStats(abc.ABC):
    """The graphs of the current forward, for the norms' statistics.

    Args:
        batch: The batch vector the wrapper handed the user's forward (matched by
            identity), or ``None`` when the forward takes none.
    """

    def __init__(self, batch: Tensor | None) -> None:
        self.batch = batch

    @abc.abstractmethod
    def mean(self, v: Tensor, per_graph: bool) -> Tensor:
        """Mean of ``v [M, F]`` over the nodes of each graph (``per_graph``: ``[M, F]``, each
        node its graph's) or over every real node of the request (``[1, F]``)."""


class DenseStats(GraphStats):
    """Static form: ``B`` stacked graphs of ``num_nodes`` nodes each, in order."""

    def __init__(self, num_nodes: int, batch: Tensor | None) -> None:
        super().__init__(batch)
        self.num_nodes = num_nodes

    def mean(self, v: Tensor, per_graph: bool) -> Tensor:
        if not per_graph:
            return v.mean(dim=0, keepdim=True)
        stacked = v.reshape(-1, self.num_nodes, v.shape[-1])
        return stacked.mean(dim=1, keepdim=True).expand_as(stacked).reshape(v.shape)


class TableStats(GraphStats):
    """Dynamic form over tables: the readout table sums, ``graph_ids`` gathers back.

    Args:
        graph_ids: ``[M]`` graph of each node (the ``pool.graph`` input; a bucket's
            padding nodes point at any graph, their rows are cut off).
        batch: As in :class:`GraphStats`.
    """

    def __init__(self, graph_ids: Tensor, batch: Tensor | None) -> None:
        super().__init__(batch)
        self.graph_ids = graph_ids
        self.sizes: Tensor | None = None  # [G, 1] nodes per graph: computed once per forward

    def mean(self, v: Tensor, per_graph: bool) -> Tensor:
        table = current_table(POOL, v)
        if self.sizes is None:
            self.sizes = table.degree()
        total = table.reduce(v, "sum")
        if per_graph:
            return (total / self.sizes.clamp(min=1.0)).index_select(0, self.graph_ids.long())
        whole = self.sizes.sum(dim=0, keepdim=True).clamp(min=1.0)
        return total.sum(dim=0, keepdim=True) / whole


_CURRENT: ContextVar[GraphStats | None] = ContextVar("edge_sdk_graph_stats", default=None)


@contextmanager
def use_stats(stats: GraphStats) -> Iterator[None]:
    """Make ``stats`` the graphs of lowered norms called inside the block."""
    token = _CURRENT.set(stats)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class LoweredNorm(nn.Module):
    """A PyG graph-level norm (eval mode) over the current :class:`GraphStats`.

    Args:
        norm: The PyG module (its parameters are used as they are).
        path: Its dotted path, for errors.
    """

    def __init__(self, norm: nn.Module, path: str) -> None:
        super().__init__()
        self.norm = norm
        self.path = path

    def forward(
        self, x: Tensor, batch: Tensor | None = None, batch_size: int | None = None
    ) -> Tensor:
        norm = self.norm
        if isinstance(norm, pyg_norm.InstanceNorm) and norm.track_running_stats:
            # Eval mode: the running statistics, per node.
            mean, var = cast(Tensor, norm.running_mean), cast(Tensor, norm.running_var)
            return affine(norm, (x - mean) / (var + norm.eps).sqrt())
        stats = _CURRENT.get()
        name = f"layer '{self.path}' ({type(norm).__name__})"
        if stats is None:
            raise ExportError(f"{name}: a lowered graph norm ran outside the export wrapper")
        if batch is not None and batch is not stats.batch:
            raise ExportError(
                f"{name} got a batch vector the exporter did not build (only the model's own "
                "`batch` input can be passed to a graph-level norm)"
            )
        per_graph = batch is not None
        if isinstance(norm, pyg_norm.GraphNorm):
            out = x - stats.mean(x, per_graph) * norm.mean_scale
            var = stats.mean(out * out, per_graph)
            return norm.weight * out / (var + norm.eps).sqrt() + norm.bias
        if isinstance(norm, pyg_norm.InstanceNorm):
            out = x - stats.mean(x, per_graph)
            out = out / (stats.mean(out * out, per_graph) + norm.eps).sqrt()
        else:  # LayerNorm(mode='graph'): over the graph's nodes and features
            out = x - stats.mean(x, per_graph).mean(dim=-1, keepdim=True)
            var = stats.mean(out * out, per_graph).mean(dim=-1, keepdim=True)
            # PyG adds eps inside the root with a batch vector, outside without one.
            eps = cast(float, norm.eps)
            out = out / (var + eps).sqrt() if per_graph else out / (var.sqrt() + eps)
        return affine(norm, out)


def affine(norm: nn.Module, out: Tensor) -> Tensor:
    """``out * weight + bias`` where ``norm`` has them (``affine=True``)."""
    weight, bias = norm.weight, norm.bias
    if isinstance(weight, Tensor) and isinstance(bias, Tensor):
        return out * weight + bias
    return out


def lower_norms(model: nn.Module) -> list[str]:
    """Swap the graph-level norms of ``model`` (in place) for :class:`LoweredNorm`.

    Returns:
        Their paths. The model must then run inside :func:`use_stats`.
    """
    paths = []
    for path, module in list(model.named_modules()):
        if not path or not is_graph_norm(module):
            continue
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, LoweredNorm(module, path))
        paths.append(path)
    return paths


def has_lowered_norms(model: nn.Module) -> bool:
    """Whether ``model`` holds a :class:`LoweredNorm` that needs :class:`GraphStats`."""
    return any(isinstance(m, LoweredNorm) and uses_graph_stats(m.norm) for m in model.modules())


@contextmanager
def norms_without_batch(model: nn.Module) -> Iterator[list[str]]:
    """Within the block, list the graph-level norms of ``model`` called without a batch vector.

    Their statistics span the whole request (every graph of it), so merging or
    padding requests would change the answers.
    """
    seen: list[str] = []

    def watch(path: str) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            batch = args[1] if len(args) > 1 else kwargs.get("batch")
            if batch is None and path not in seen:
                seen.append(path)

        return hook

    handles = [
        m.register_forward_pre_hook(watch(p), with_kwargs=True)
        for p, m in model.named_modules()
        if uses_graph_stats(m)
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
