"""Dense graph readouts for the static form.

In the static form every graph of a request has the same N nodes, laid out
one after another, so PyG's ``global_{add,mean,max}_pool(h, batch)`` is a
reduction over a ``[B, N, H]`` view. PyG computes it with a scatter, which
exports as ``ScatterElements`` with a reduction: LiteRT's converter refuses
it and TensorRT sends it to a plugin without INT8. While the static wrapper
runs, :func:`dense_readout` answers those calls for *its* batch vector with
``reshape + sum/mean/amax``; any other scatter goes to PyG unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor

_REDUCE = {
    "sum": lambda r: r.sum(1),
    "add": lambda r: r.sum(1),
    "mean": lambda r: r.mean(1),
    "max": lambda r: r.amax(1),
    "min": lambda r: r.amin(1),
}


@contextmanager
def dense_readout(batch: Tensor, num_nodes: int) -> Iterator[None]:
    """Within the block, pool over ``batch`` (``N`` consecutive nodes per graph) densely.

    Args:
        batch: The batch vector the static wrapper built (matched by identity).
        num_nodes: N, the nodes of every graph.
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
            return _REDUCE[reduce](src.reshape(-1, num_nodes, src.shape[-1]))
        return original(src, index, dim, dim_size, reduce)

    glob.scatter = scatter
    try:
        yield
    finally:
        glob.scatter = original
