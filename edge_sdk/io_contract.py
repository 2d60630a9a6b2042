"""The input/output contract of an exported graph model (the manifest's ``graph`` section).

Not to be confused with :mod:`edge_sdk.signing`, which signs and verifies bundles.

These types are part of the bundle manifest and are what the runtime checks
every request against, so every backend rejects bad input with the same words.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ExportError
from .neighbour_tables import TableLayout


class GraphForm(StrEnum):
    """How the graph reaches the model (see DESIGN.md, "Graph forms")."""

    STATIC = "static"  #: fixed topology folded into the model; input x [B, N, F]
    DYNAMIC = "dynamic"  #: each request brings x [N, F] and edge_index [2, E]
    LEARNED = "learned"  #: the model computes its adjacency; input x [B, N, F]


class OutputLevel(StrEnum):
    """What the first axis of an output indexes (used to split batched results)."""

    NODE = "node"  #: one row per node
    GRAPH = "graph"  #: one row per graph (readout)
    BATCH = "batch"  #: static forms: axis 0 is the stacked batch B


class _Spec(BaseModel):
    # Unknown fields are ignored, not refused: a newer minor schema version may
    # add fields anywhere, and a 1.0 reader must still read a 1.x manifest.
    model_config = ConfigDict(extra="ignore", frozen=True)


Dim = int | str


class TensorSpec(_Spec):
    """One named tensor: dtype and shape; strings in the shape are symbolic dims."""

    name: str
    dtype: str = Field(description="numpy dtype name, e.g. float32, int64")
    shape: list[Dim]
    level: OutputLevel | None = Field(default=None, description="outputs only")


class Bucket(_Spec):
    """A padded size that static-shape backends are compiled for."""

    max_nodes: int = Field(gt=1)
    max_edges: int = Field(ge=0)
    max_graphs: int = Field(default=1, ge=1)


def parse_buckets(values: Sequence[str] | None) -> list[Bucket]:
    """``--bucket NODES:EDGES[:GRAPHS]`` values as ascending buckets.

    Raises:
        ExportError: A value that is not two or three integers separated by ``:``
            (or sizes a bucket refuses); the value and the expected form are named.
    """
    buckets = []
    for value in values or []:
        parts = value.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError("expected 2 or 3 numbers")
            names = ("max_nodes", "max_edges", "max_graphs")[: len(parts)]
            buckets.append(Bucket(**dict(zip(names, map(int, parts), strict=True))))
        except ValueError as exc:  # int() and pydantic's ValidationError
            why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ExportError(
                f"--bucket {value!r}: expected NODES:EDGES[:GRAPHS], e.g. --bucket 1024:4096 "
                f"or --bucket 2048:8192:16 (nodes >= 2, edges >= 0, graphs >= 1; {why})"
            ) from None
    return sorted(buckets, key=lambda b: (b.max_nodes, b.max_edges, b.max_graphs))


class GraphSpec(_Spec):
    """The graph contract: form, sizes and limits the runtime enforces.

    For static and learned forms ``num_nodes`` is the fixed node count and
    ``max_batch`` bounds B. For the dynamic form ``max_nodes``/``max_edges``
    bound a request and ``buckets`` (ascending) list the padded sizes.
    """

    form: GraphForm
    num_features: int = Field(gt=0)
    num_nodes: int | None = Field(default=None, gt=0)
    edge_dim: int | None = Field(default=None, gt=0)
    has_batch: bool = False
    max_nodes: int = Field(default=1_000_000, gt=0)
    max_edges: int = Field(default=10_000_000, ge=0)
    max_batch: int = Field(default=4096, gt=0)
    buckets: list[Bucket] = Field(default_factory=list)
    aggregation: str = Field(
        default="scatter",
        description="how neighbour aggregation is lowered: dense ([N, N] constants) | "
        "tables (neighbour tables) | scatter (gather/scatter over edge_index) | model "
        "(the model's own operators)",
    )
    aggregation_reason: str = Field(
        default="",
        description="why the exporter chose this aggregation: the option asked for, the "
        "rule, or the latencies it measured",
    )

    whole_request_stats: bool = Field(
        default=False,
        description="outputs depend on statistics over the whole request (a graph-level "
        "norm called without a batch vector): the runtime never merges requests",
    )

    tables: TableLayout | None = Field(
        default=None,
        description="dynamic form with neighbour tables: the tables the runtime builds per "
        "request from edge_index/batch (model inputs instead of them); None: the model "
        "takes edge_index (and batch) itself",
    )

    @model_validator(mode="after")
    def _check(self) -> GraphSpec:
        if self.form is not GraphForm.DYNAMIC and self.num_nodes is None:
            raise ValueError(f"num_nodes is required for the {self.form} form")
        sizes = [(b.max_nodes, b.max_edges) for b in self.buckets]
        if sizes != sorted(sizes):
            raise ValueError("buckets must be in ascending order")
        caps = self.tables.capacities if self.tables is not None else []
        if any(len(per) != len(self.buckets) for per in caps):
            raise ValueError("tables.capacities must hold one entry per bucket")
        return self

    @property
    def input_names(self) -> list[str]:
        """The request's inputs in order (the model's own: :attr:`model_input_names`)."""
        if self.form is not GraphForm.DYNAMIC:
            return ["x"]
        names = ["x", "edge_index"]
        if self.edge_dim is not None:
            names.append("edge_attr")
        if self.has_batch:
            names.append("batch")
        return names

    @property
    def model_input_names(self) -> list[str]:
        """The exported model's inputs in order: :attr:`input_names`, or with
        :attr:`tables`, ``x`` (``edge_attr``) and the table inputs the runtime builds."""
        if self.tables is None:
            return self.input_names
        names = ["x"] + (["edge_attr"] if self.edge_dim is not None else [])
        return names + self.tables.input_names()

    def fixed_shapes(self, bucket: int) -> dict[str, list[int]]:
        """Every model input's fixed shape for ``buckets[bucket]`` (static-shape engines).

        Raises:
            ValueError: No such bucket, or a model without :attr:`tables` (its inputs'
                shapes follow the padded graph: ``x [max_nodes, F]``, ``edge_index
                [2, max_edges]``...).
        """
        if self.tables is None:
            raise ValueError("this model takes no neighbour tables")
        if not 0 <= bucket < len(self.buckets):
            raise ValueError(f"bucket {bucket}: the model has {len(self.buckets)} bucket(s)")
        return self.tables.fixed_shapes(
            self.buckets[bucket], bucket, self.num_features, self.edge_dim
        )
