"""Swap a model's PyG conv layers for their neighbour-table lowerings.

:func:`tabulate` replaces every supported ``MessagePassing`` layer of a copy of
the model by its :mod:`.table_convs` class and reports which table variants the
model needs; :func:`constant_tables` builds those tables for one fixed graph
(the static form). The dynamic form feeds them per request instead.
"""

from __future__ import annotations

import copy

import numpy as np
from torch import nn
from torch_geometric.nn.conv import MessagePassing

from edge_sdk.errors import UnsupportedModelError
from edge_sdk.neighbour_tables import (
    VARIANTS,
    NeighbourTable,
    apply_variant,
    build_table,
    next_pow2,
    widths_up_to,
)

from .graph_norms import lower_norms
from .jumping import lower_jumping_knowledge
from .table_attention import ATTENTION_CONVS
from .table_convs import MESSAGE_CONVS, TableConv
from .table_edge_conv import EDGE_CONVS
from .table_pna import PNA_CONVS
from .tables import ConstantTables

#: Widest class of a table built for a fixed graph: wider rows spill over several.
MAX_STATIC_WIDTH = 1024

#: PyG layer -> its table lowering (exact classes: a subclass may change the message).
TABLE_CONVS: dict[type, type[TableConv]] = {
    **MESSAGE_CONVS,
    **ATTENTION_CONVS,
    **PNA_CONVS,
    **EDGE_CONVS,
}


def tabulate(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Lower every supported PyG conv of a copy of ``model`` to neighbour tables.

    Graph-level norms are lowered too (:func:`.graph_norms.lower_norms`): the copy then
    runs inside :func:`.graph_norms.use_stats`.

    Returns:
        The lowered copy (eval mode) and the table variants its layers read, in
        :data:`~edge_sdk.neighbour_tables.VARIANTS` order.

    Raises:
        UnsupportedModelError: A message-passing layer without a table lowering,
            or an option of one that cannot be lowered (named with its path).
    """
    lowered = copy.deepcopy(model).eval()
    supported = ", ".join(cls.__name__ for cls in TABLE_CONVS)
    used: set[str] = set()
    for path, module in list(lowered.named_modules()):
        if not isinstance(module, MessagePassing):
            continue
        cls = TABLE_CONVS.get(type(module))
        if cls is None:
            raise UnsupportedModelError(
                f"Cannot lower layer '{path or '<root>'}' ({type(module).__name__}) to "
                f"neighbour tables: no lowering exists for this layer type; supported: "
                f"{supported}."
            )
        table_conv: TableConv = cls(module, path=path).eval()
        used.add(table_conv.variant)
        if not path:
            return table_conv, [v for v in VARIANTS if v in used]
        parent, _, name = path.rpartition(".")
        setattr(lowered.get_submodule(parent), name, table_conv)
    lower_norms(lowered)
    lower_jumping_knowledge(lowered)
    return lowered, [v for v in VARIANTS if v in used]


def graph_tables(
    edge_index: np.ndarray, num_nodes: int, variants: list[str], max_width: int = MAX_STATIC_WIDTH
) -> dict[str, NeighbourTable]:
    """Build the tables of one fixed graph, classes up to its largest in-degree."""
    out: dict[str, NeighbourTable] = {}
    for variant in variants:
        src, dst, eid = apply_variant(edge_index, num_nodes, variant)
        top = int(np.bincount(dst, minlength=num_nodes).max()) if dst.size else 1
        widths = widths_up_to(min(next_pow2(top), max_width))
        table = build_table(src, dst, num_nodes, widths, eid=eid, index_dtype=np.int32)
        out[variant] = drop_empty_classes(table)
    return out


def drop_empty_classes(table: NeighbourTable) -> NeighbourTable:
    """The table without classes of zero rows (row ids are unchanged: they hold none)."""
    keep = [c for c, idx in enumerate(table.index) if idx.shape[0]]
    return NeighbourTable(
        index=[table.index[c] for c in keep],
        mask=[table.mask[c] for c in keep],
        target=[table.target[c] for c in keep],
        edge=None if table.edge is None else [table.edge[c] for c in keep],
        order=table.order,
        order_mask=table.order_mask,
        edges=table.edges,
    )


def constant_tables(
    edge_index: np.ndarray, num_nodes: int, variants: list[str], max_width: int = MAX_STATIC_WIDTH
) -> ConstantTables:
    """The static form's tables: :func:`graph_tables` folded into buffers."""
    return ConstantTables(graph_tables(edge_index, num_nodes, variants, max_width), num_nodes)
