"""Adapt a user's model to the exported signature of each graph form.

* dynamic: ``(x, edge_index[, edge_attr][, batch]) -> outputs``; the user's
  forward is called by parameter name, whatever order it declares.
* static: ``(x [B, N, F]) -> outputs``; the fixed topology is a constant. The
  user's forward sees the ordinary flat disjoint union ``[B*N, F]`` (so
  BatchNorm, pooling and friends behave exactly as in training); conv layers
  are densified (folded ``[N, N]`` adjacency), lowered to neighbour tables
  (constants the wrapper makes current around the forward), or run on the
  constant, offset edge_index (gather/scatter).
* learned / plain static: the model already takes ``x [B, N, F]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import Tensor, nn

from edge_sdk.errors import ExportError, UnsupportedModelError

from .lowering.graph_norms import DenseStats, use_stats
from .lowering.readout import dense_readout
from .lowering.tables import TableSource, use_tables

DYNAMIC_INPUTS = ("x", "edge_index", "edge_attr", "batch")


def model_inputs(model: nn.Module, available: Sequence[str], static: bool = False) -> list[str]:
    """Which of ``x/edge_index/edge_attr/batch`` to feed, checked against forward.

    Args:
        model: The model.
        available: The inputs the samples give.
        static: For the static form, whose only input is ``x [B, N, F]``.

    Raises:
        UnsupportedModelError: ``static`` and forward needs ``edge_attr``.
        ExportError: forward needs a parameter the SDK cannot provide.
    """
    params = inspect.signature(model.forward).parameters
    names: list[str] = []
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if static and name == "edge_attr" and p.default is inspect.Parameter.empty:
            raise UnsupportedModelError(
                "static form has no edge input: model.forward needs 'edge_attr', but a "
                "static-form model takes only x [B, N, F]; export with --form dynamic, "
                "where edge_attr [E, D] is a request input"
            )
        if name in DYNAMIC_INPUTS:
            # A required `batch` is built for one graph when the samples have none; an
            # optional one (PyG's model classes: batch=None) is fed only when given.
            required = p.default is inspect.Parameter.empty
            if name in available or (name == "batch" and required):
                names.append(name)
            elif required:
                raise ExportError(f"model.forward needs {name!r} but the sample data has none")
        elif p.default is inspect.Parameter.empty:
            raise ExportError(
                f"model.forward has a required parameter {name!r}; supported inputs are "
                f"{list(DYNAMIC_INPUTS)} (others must have defaults)"
            )
    if "x" not in names:
        raise ExportError("model.forward must take node features as a parameter named 'x'")
    return names


def as_tuple(out: object) -> tuple[Tensor, ...]:
    """Normalise a model's output to a tuple of tensors.

    Raises:
        ExportError: The output holds something that is not a tensor.
    """
    if isinstance(out, Tensor):
        return (out,)
    if isinstance(out, dict):
        out = tuple(out.values())
    if isinstance(out, list | tuple) and all(isinstance(o, Tensor) for o in out):
        return tuple(out)
    raise ExportError(
        f"model output must be a tensor or a tuple of tensors, got {type(out).__name__}"
    )


class DynamicWrapper(nn.Module):
    """Calls ``model`` by keyword with the dynamic-form inputs it takes."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor | None = None,
        edge_attr: Tensor | None = None,
        batch: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        given = {"x": x, "edge_index": edge_index, "edge_attr": edge_attr, "batch": batch}
        return as_tuple(self.model(**{k: given[k] for k in self.names}))


class StaticWrapper(nn.Module):
    """Runs a PyG model on ``x [B, N, F]`` with its topology built in.

    Args:
        model: The (possibly densified) model, called on the flat union.
        edge_index: The fixed ``[2, E]`` topology.
        num_nodes: N.
        names: Forward parameters to feed (subset of x/edge_index/batch).
        node_level: Outputs have one row per node (reshaped to ``[B, N, C]``);
            otherwise one row per graph (``[B, C]``).
        dense_readout: Pool ``global_*_pool`` readouts as dense reductions
            (see :mod:`.lowering.readout`) instead of scatters, and give lowered
            graph-level norms (:mod:`.lowering.graph_norms`) the ``B`` graphs of ``N`` nodes.
        tables: The fixed graph's neighbour tables, current while the model runs
            (layers lowered by :func:`.lowering.tabulate.tabulate` read them).
    """

    def __init__(
        self,
        model: nn.Module,
        edge_index: Tensor,
        num_nodes: int,
        names: Sequence[str],
        node_level: Sequence[bool],
        dense_readout: bool = False,
        tables: TableSource | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.dense_readout = dense_readout
        self.tables = tables
        self.edge_index: Tensor
        self.register_buffer("edge_index", edge_index.long(), persistent=False)
        self.num_nodes = num_nodes
        self.names = tuple(names)
        self.node_level = tuple(node_level)

    def flat_inputs(self, x: Tensor) -> dict[str, Tensor]:
        """The disjoint-union inputs the user's forward expects."""
        n = self.num_nodes
        b = x.shape[0]
        graphs = torch.arange(b, device=x.device)
        feeds: dict[str, Tensor] = {"x": x.reshape(-1, x.shape[-1])}
        if "edge_index" in self.names:
            offsets = (graphs * n).view(1, -1, 1)
            feeds["edge_index"] = (self.edge_index.unsqueeze(1) + offsets).reshape(2, -1)
        if "batch" in self.names:
            feeds["batch"] = graphs.repeat_interleave(n)
        return feeds

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        feeds = self.flat_inputs(x)
        with ExitStack() as scope:
            if self.tables is not None:
                scope.enter_context(use_tables(self.tables))
            if self.dense_readout and "batch" in feeds:
                scope.enter_context(dense_readout(feeds["batch"], self.num_nodes))
            if self.dense_readout:
                scope.enter_context(use_stats(DenseStats(self.num_nodes, feeds.get("batch"))))
            outs = as_tuple(self.model(**feeds))
        if len(outs) != len(self.node_level):
            raise ExportError(
                f"model returned {len(outs)} outputs, expected {len(self.node_level)}"
            )
        return tuple(
            o.reshape(x.shape[0], self.num_nodes, *o.shape[1:]) if node else o
            for o, node in zip(outs, self.node_level, strict=True)
        )


class StackedWrapper(nn.Module):
    """Plain static / learned-topology models: ``model(x)`` as it is."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return as_tuple(self.model(x))
