"""Dense graph readouts for the static form.

In the static form every graph of a request has the same N nodes, laid out
one after another, so PyG's ``global_{add,mean,max}_pool(h, batch)`` is a
reduction over a ``[B, N, H]`` view. PyG computes it with a scatter, which
exports as ``ScatterElements`` with a reduction: LiteRT's converter refuses
it and TensorRT sends it to a plugin without INT8. While the static wrapper
runs, :func:`dense_readout` answers those calls for *its* batch vector with
``reshape + sum/mean/amax``; any other scatter goes to PyG unchanged.
The dynamic form over neighbour tables answers them the same way with its
readout table (:func:`table_readout`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from edge_sdk.neighbour_tables import POOL

from .tables import current_table

_REDUCE = {
    "sum": lambda r: r.sum(1),
    "add": lambda r: r.sum(1),
    "mean": lambda r: r.mean(1),
    "max": lambda r: r.amax(1),
    "min": lambda r: r.amin(1),
}

#: PyG's reduce names -> :meth:`~.tables.Table.reduce`'s.
_TABLE_HOW = {"sum": "sum", "add": "sum", "mean": "mean", "max": "max", "min": "min"}


@contextmanager
def dense_readout(batch: Tensor, num_nodes: int) -> Iterator[None]:
    """Within the block, pool over ``batch`` (``N`` consecutive nodes per graph) densely.

    Args:
        batch: The batch vector the static wrapper built (matched by identity).
        num_nodes: N, the nodes of every graph.
    """

    def pool(src: Tensor, reduce: str) -> Tensor:
        return _REDUCE[reduce](src.reshape(-1, num_nodes, src.shape[-1]))

    with readout_by(batch, pool):
        yield


@contextmanager
def table_readout(batch: Tensor) -> Iterator[None]:
    """Within the block, pool over ``batch`` with the current ``pool`` neighbour table.

    The dynamic form over tables (:mod:`..table_wrapper`) feeds the readout table
    (graphs as rows, their nodes as slots) instead of a batch vector; ``batch`` is
    the stand-in the wrapper hands the user's forward (matched by identity).
    """

    def pool(src: Tensor, reduce: str) -> Tensor:
        return current_table(POOL, src).reduce(src, _TABLE_HOW[reduce])

    with readout_by(batch, pool):
        yield


@contextmanager
def readout_by(batch: Tensor, pool: Callable[[Tensor, str], Tensor]) -> Iterator[None]:
    """Within the block, answer PyG's ``global_*_pool(h, batch)`` scatter with ``pool``.

    Args:
        batch: The batch vector (matched by identity); other scatters go to PyG.
        pool: ``(h [N, F], reduce) -> [graphs, F]`` for ``reduce`` in ``sum``, ``add``,
            ``mean``, ``max``, ``min``.
    """
    from torch_geometric.nn.pool import glob

    original = glob.scatter

    def scatter(
        src: Tensor,
        index: Tensor,
        dim: int = 0,
        dim_size: int | None = None,
        reduce: str = "sum",
    ) -> Any:
        if index is batch and src.dim() == 2 and dim in (0, -2) and reduce in _REDUCE:
            return pool(src, reduce)
        return original(src, index, dim, dim_size, reduce)

    glob.scatter = scatter
    try:
        yield
    finally:
        glob.scatter = original
