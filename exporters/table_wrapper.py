"""The dynamic form over neighbour tables: tables are model inputs, built per request.

A dynamic-form model normally takes ``edge_index`` (and ``batch``) and
aggregates with ``ScatterElements``, which static-shape engines, LiteRT and
INT8 paths refuse. Here its PyG layers are lowered to neighbour tables
(:func:`.lowering.tabulate.tabulate`) and the exported model takes ``x``,
``edge_attr`` (when used) and the tables of :class:`~edge_sdk.neighbour_tables.TableLayout`
instead; the runtime builds them from each request's ``edge_index``/``batch``
(:func:`edge_sdk.neighbour_tables.request_tables`). The user's own forward still
runs (called by :class:`TableWrapper` with the lowered layers), with
``edge_index=None``, and ``global_*_pool(h, batch)`` answered by the readout
table (:func:`.lowering.readout.table_readout`).

:func:`lower_dynamic` decides whether a model takes this route: its layers must
have table lowerings and the lowered model must reproduce the PyTorch outputs on
the sample; otherwise the model keeps ``edge_index`` and scatter (ONNX Runtime
and OpenVINO only), with the reason recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.neighbour_tables import GRAPH_IDS, POOL, TableLayout, request_tables

from .lowering.graph_norms import TableStats, has_lowered_norms, use_stats
from .lowering.readout import table_readout
from .lowering.tables import InputTables, use_tables
from .lowering.tabulate import tabulate
from .wrappers import as_tuple


def model_input_names(names: Sequence[str], layout: TableLayout) -> list[str]:
    """Inputs of the exported model: ``x``, ``edge_attr`` if the model takes it, the tables."""
    return ["x"] + (["edge_attr"] if "edge_attr" in names else []) + layout.input_names()


def table_axes(names: Sequence[str], layout: TableLayout) -> dict[str, dict[int, str]]:
    """Dynamic axes of the table model: one dim per class, shared by its inputs.

    ``x`` and every node table's ``order`` share ``num_nodes``; the readout
    table's ``order`` has ``num_graphs`` rows (the graph-level outputs' dim);
    ``order``/``order_mask`` columns are per table (as many as a request needs);
    the nodes' graph ids (graph-level norms) have ``num_nodes`` rows.
    """
    axes: dict[str, dict[int, str]] = {"x": {0: "num_nodes"}}
    if "edge_attr" in names:
        axes["edge_attr"] = {0: "num_edges"}
    tables = [(v, len(layout.widths), layout.max_splits, "num_nodes") for v in layout.variants]
    if layout.pool_widths:
        tables.append((POOL, len(layout.pool_widths), layout.pool_splits, "num_graphs"))
    for prefix, classes, splits, rows in tables:
        for c in range(classes):
            for part in ("index", "mask", "target", "edge"):
                axes[f"{prefix}.{part}{c}"] = {0: f"{prefix}_rows{c}"}
        order = {0: rows, 1: f"{prefix}_splits"} if splits > 1 else {0: rows}
        axes[f"{prefix}.order"] = order
        axes[f"{prefix}.order_mask"] = order
    if layout.graph_ids:
        axes[GRAPH_IDS] = {0: "num_nodes"}
    return axes


class TableWrapper(nn.Module):
    """``(x[, edge_attr], *tables) -> outputs``: the lowered model over input tables.

    Inputs are positional, in :func:`model_input_names` order (their names hold
    dots, so they cannot be keywords).

    Args:
        model: The model with its layers lowered (:func:`.lowering.tabulate.tabulate`).
        names: The user's forward parameters (subset of x/edge_index/edge_attr/batch).
        layout: The tables the model takes.
    """

    positional_inputs = True

    def __init__(self, model: nn.Module, names: Sequence[str], layout: TableLayout) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.layout = layout
        self.input_names = model_input_names(names, layout)
        self.sources = {
            v: (len(layout.widths), layout.max_splits, layout.edge_ids) for v in layout.variants
        }
        if layout.pool_widths:
            self.sources[POOL] = (len(layout.pool_widths), layout.pool_splits, False)

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        feeds = dict(zip(self.input_names, inputs, strict=True))
        x = feeds.pop("x")
        graph_ids = feeds.pop(GRAPH_IDS, None)
        # Stands for `batch` in the user's forward: global_*_pool(h, batch) pools with
        # the readout table (matched by identity); nothing else may read it.
        batch = x.new_zeros(x.shape[0], dtype=torch.long) if self.layout.pool_widths else None
        given = {"x": x, "edge_index": None, "edge_attr": feeds.pop("edge_attr", None)}
        given["batch"] = batch
        with ExitStack() as scope:
            scope.enter_context(use_tables(InputTables(feeds, self.sources)))
            if batch is not None:
                scope.enter_context(table_readout(batch))
            if graph_ids is not None:  # graph-level norms (lowering.graph_norms)
                given_batch = batch if "batch" in self.names else None
                scope.enter_context(use_stats(TableStats(graph_ids, given_batch)))
            return as_tuple(self.model(**{k: given[k] for k in self.names}))


def table_feeds(feeds: dict[str, np.ndarray], layout: TableLayout) -> dict[str, np.ndarray]:
    """The table model's inputs for graph ``feeds`` (x, edge_index[, edge_attr][, batch]).

    As the runtime builds them for an engine taking any shape.

    Raises:
        InvalidInputError: The graph exceeds the layout's degree limit.
    """
    batch = feeds.get("batch")
    graphs = int(batch.max()) + 1 if batch is not None and batch.size else 1
    out = {"x": feeds["x"]}
    if "edge_attr" in feeds:
        out["edge_attr"] = feeds["edge_attr"]
    n = feeds["x"].shape[0]
    return out | request_tables(feeds["edge_index"], n, layout, batch=batch, num_graphs=graphs)


def trace_feeds(feeds: dict[str, np.ndarray], layout: TableLayout) -> dict[str, np.ndarray]:
    """:func:`table_feeds` padded so ``torch.export`` keeps every table dim symbolic.

    A dim seen as 0 or 1 is specialised to it, so every class gets at least 2 rows,
    ``order`` at least 2 columns (where the layout has more than one) and the readout
    table at least 2 graphs (an empty one added).
    """
    real = table_feeds(feeds, layout)
    caps = [
        [[max(2, real[f"{v}.index{c}"].shape[0]) for c in range(len(layout.widths))]]
        for v in layout.variants
    ]
    update: dict[str, object] = {}
    batch = feeds.get("batch")
    graphs = int(batch.max()) + 1 if batch is not None and batch.size else 1
    if layout.pool_widths:
        kmax = layout.pool_widths[-1]
        sizes = np.bincount(batch, minlength=graphs) if batch is not None else [feeds["x"].shape[0]]
        update["pool_splits"] = max(layout.pool_splits, -(-int(max(sizes)) // kmax))
        pool_caps = [
            max(2, real[f"{POOL}.index{c}"].shape[0]) for c in range(len(layout.pool_widths))
        ]
        caps.append([pool_caps])
    update["capacities"] = caps
    padded = layout.model_copy(update=update)
    out = {k: v for k, v in real.items() if k in ("x", "edge_attr")}
    n = feeds["x"].shape[0]
    return out | request_tables(
        feeds["edge_index"], n, padded, batch=batch, num_graphs=max(2, graphs), bucket=0
    )


@dataclass
class Lowered:
    """The outcome of :func:`lower_dynamic`.

    Attributes:
        module: The export module (:class:`TableWrapper`), or ``None`` when the model
            keeps scatter.
        layout: Its tables (no capacities yet), or ``None``.
        reason: Why tables or scatter, for the manifest.
    """

    module: TableWrapper | None
    layout: TableLayout | None
    reason: str


def lower_dynamic(
    model: nn.Module,
    names: Sequence[str],
    feeds: dict[str, np.ndarray],
    expected: Sequence[np.ndarray],
    max_degree: int,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Lowered:
    """Lower a dynamic-form model to neighbour tables, or say why it keeps scatter.

    Args:
        model: The user's model (eval mode).
        names: Its forward parameters (x/edge_index/edge_attr/batch).
        feeds: The first sample's graph feeds.
        expected: The PyTorch outputs on ``feeds``.
        max_degree: In-degree limit of a request (``--max-degree``).
        atol: Tolerance of the check on the sample (absolute).
        rtol: Tolerance of the check on the sample (relative).

    Raises:
        InvalidInputError: The sample itself exceeds ``max_degree`` (names the limit).
    """
    try:
        lowered, variants = tabulate(model)
    except UnsupportedModelError as exc:
        return Lowered(None, None, f"scatter: {str(exc).splitlines()[0]}")
    if not variants:
        return Lowered(None, None, "scatter: the model has no message-passing layer to lower")
    layout = TableLayout.for_model(
        variants,
        max_degree=max_degree,
        edge_ids="edge_attr" in names,
        pool="batch" in names,
        graph_ids=has_lowered_norms(lowered),
    )
    wrapper = TableWrapper(lowered, names, layout).eval()
    inputs = table_feeds(feeds, layout)
    try:
        with torch.no_grad():
            got = wrapper(*(torch.from_numpy(inputs[k]) for k in wrapper.input_names))
    except Exception as exc:  # the user's forward does more with edge_index/batch than pass it
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Lowered(None, None, f"scatter: the model does not run over tables ({reason})")
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        g_np = g.numpy()
        if g_np.shape != e.shape:
            return Lowered(None, None, f"scatter: tables give {list(g_np.shape)}, not {e.shape}")
        worst = max(worst, float(np.max(np.abs(g_np - e) - rtol * np.abs(e), initial=0.0)))
    if worst > atol:
        return Lowered(
            None, None, f"scatter: the table lowering differs from PyTorch by {worst:.3g}"
        )
    return Lowered(
        wrapper,
        layout,
        f"tables: every layer lowered; in-degree limit {layout.max_degree} (--max-degree)",
    )
