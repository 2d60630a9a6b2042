"""Turn a user's model and samples into an exportable module per graph form.

Decides the graph form, wraps the model to the form's signature, and computes
the PyTorch reference outputs that parity is measured against. The reference
is always the user's *original* model: for the static form it runs on the
disjoint union with the real edges, so densification itself is verified too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import ExportError, InvalidInputError, UnsupportedModelError
from edge_sdk.io_contract import GraphForm, OutputLevel
from edge_sdk.neighbour_tables import DEFAULT_MAX_DEGREE, TableLayout

from .aggregation import DEFAULT_DENSE_THRESHOLD, StaticLowering, check_aggregation
from .intake import Sample
from .lowering.graph_norms import norms_without_batch
from .rewrites import project_first
from .support import check_supported
from .table_wrapper import (
    lower_dynamic,
    model_input_names,
    table_axes,
    table_feeds,
    trace_feeds,
)
from .wrappers import DynamicWrapper, StackedWrapper, StaticWrapper, as_tuple, model_inputs

T = TypeVar("T")


@dataclass
class Prepared:
    """Everything the ONNX step and the manifest need."""

    form: GraphForm
    export_module: nn.Module  # what is traced
    reference: nn.Module  # what parity compares against (same signature)
    input_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    output_levels: list[OutputLevel]
    num_features: int
    num_nodes: int | None = None
    edge_dim: int | None = None
    aggregation: str = "model"
    aggregation_reason: str = ""
    graph_layers: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    tables: TableLayout | None = None  # dynamic form over neighbour tables (model inputs)
    #: Graph-level norms called without a batch vector: statistics over the whole request.
    whole_request_stats: list[str] = field(default_factory=list)

    def feeds(self, sample: Sample) -> dict[str, np.ndarray]:
        """The request inputs of ``sample`` in this form's signature (what a caller sends)."""
        feeds = {k: v for k, v in sample.inputs.items() if k in self.input_names}
        if "batch" in self.input_names and "batch" not in feeds:
            feeds["batch"] = np.zeros(sample.inputs["x"].shape[0], np.int64)
        return {k: feeds[k] for k in self.input_names}

    @property
    def model_names(self) -> list[str]:
        """The exported model's inputs: :attr:`input_names`, or ``x``(, ``edge_attr``) and
        the neighbour tables the runtime builds from ``edge_index``/``batch``."""
        if self.tables is None:
            return self.input_names
        return model_input_names(self.input_names, self.tables)

    def model_feeds(
        self, feeds: dict[str, np.ndarray], trace: bool = False
    ) -> dict[str, np.ndarray]:
        """What the exported model takes for request ``feeds`` (for direct engine runs).

        Args:
            feeds: Request inputs (:meth:`feeds`).
            trace: Pad the tables so ``torch.export`` keeps their dims symbolic.
        """
        if self.tables is None:
            return feeds
        return (trace_feeds if trace else table_feeds)(feeds, self.tables)

    def run_reference(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """Reference outputs (PyTorch, eval mode, no grad)."""
        with torch.no_grad():
            outs = self.reference(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return tuple(o.detach().cpu().numpy() for o in as_tuple(outs))


def prepare(
    model: nn.Module,
    samples: Sequence[Sample],
    form: str = "auto",
    dense_threshold: int = DEFAULT_DENSE_THRESHOLD,
    aggregation: str = "auto",
    max_degree: int = DEFAULT_MAX_DEGREE,
) -> Prepared:
    """Choose the graph form and wrap ``model`` for it.

    Args:
        model: The user's model (eval mode is forced).
        samples: Sample graphs; the first decides shapes.
        form: ``auto`` | ``static`` | ``dynamic`` | ``learned``.
        dense_threshold: Static form, ``auto`` aggregation: largest N for which
            dense ``[N, N]`` folding is timed against neighbour tables.
        aggregation: Static form: ``auto`` | ``dense`` | ``tables`` | ``scatter``
            (see :mod:`.aggregation`). Dynamic form: ``auto``/``tables`` take
            neighbour tables where every layer has a lowering, ``scatter`` keeps
            ``edge_index`` (see :mod:`.table_wrapper`).
        max_degree: Dynamic form over tables: the in-degree limit of a request.

    Raises:
        UnsupportedModelError: A layer or option the exporter cannot lower.
        ExportError: Samples that do not fit the chosen form.
        InvalidInputError: A sample the model cannot take (field ``x``: its
            feature count or shape; ``edge_index``: a node id out of range;
            ``y`` / ``mask``: labels that do not match the model's predictions,
            e.g. node labels for a graph-level model).
    """
    model = model.eval()
    graph_layers = check_supported(model)
    check_samples(samples)
    check_aggregation(aggregation)
    prepared = _prepare(
        model, samples, form, (aggregation, dense_threshold), graph_layers, max_degree
    )
    check_labels(prepared, samples)
    return prepared


def _prepare(
    model: nn.Module,
    samples: Sequence[Sample],
    form: str,
    aggregation: tuple[str, int],
    graph_layers: list[str],
    max_degree: int = DEFAULT_MAX_DEGREE,
) -> Prepared:
    first = samples[0]
    x = first.inputs["x"]
    if form == "auto":
        form = "dynamic" if x.ndim == 2 else "static"
    chosen = GraphForm(form)
    if chosen is GraphForm.DYNAMIC:
        if x.ndim != 2:
            raise ExportError(
                f"dynamic form needs x [N, F] samples; {first.name} has x {list(x.shape)}"
            )
        return _dynamic(model, first, graph_layers, aggregation[0], max_degree)
    if x.ndim != 3:
        raise ExportError(
            f"{chosen} form needs x [B, N, F] samples; {first.name} has x {list(x.shape)}"
        )
    if graph_layers:
        if chosen is GraphForm.LEARNED:
            raise ExportError(
                f"learned-topology models compute their own adjacency; this one has PyG layers "
                f"{sorted(set(graph_layers))}: use --form static with the fixed edge_index"
            )
        return _static_pyg(model, first, graph_layers, *aggregation)
    module = StackedWrapper(model)
    return Prepared(
        form=chosen,
        export_module=module,
        reference=module,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch_size"}},
        output_levels=[OutputLevel.BATCH]
        * _on_sample(first, lambda: _count_outputs(module, {"x": _at_least_two(x)})),
        num_features=int(x.shape[2]),
        num_nodes=int(x.shape[1]),
        aggregation="model",
    )


def _dynamic(
    model: nn.Module,
    sample: Sample,
    graph_layers: list[str],
    aggregation: str = "auto",
    max_degree: int = DEFAULT_MAX_DEGREE,
) -> Prepared:
    # A .pt2 program states its inputs; a module's forward is inspected.
    names = getattr(model, "program_inputs", None) or model_inputs(model, list(sample.inputs))
    if "edge_index" not in names:
        raise ExportError("a dynamic-form model must take 'edge_index' in forward")
    reference = DynamicWrapper(model, names)
    rewritten, rewrites = project_first(model)
    prepared = Prepared(
        form=GraphForm.DYNAMIC,
        export_module=DynamicWrapper(rewritten, names) if rewrites else reference,
        reference=reference,
        input_names=names,
        dynamic_axes={
            "x": {0: "num_nodes"},
            "edge_index": {1: "num_edges"},
            "edge_attr": {0: "num_edges"},
            "batch": {0: "num_nodes"},
        },
        output_levels=[],
        num_features=int(sample.inputs["x"].shape[1]),
        edge_dim=int(sample.inputs["edge_attr"].shape[1]) if "edge_attr" in names else None,
        aggregation="scatter",
        graph_layers=graph_layers,
        rewrites=[f"{p}: project before aggregating" for p in rewrites],
    )
    feeds = prepared.feeds(sample)
    with norms_without_batch(model) as whole:
        outs = _on_sample(sample, lambda: prepared.run_reference(feeds))
    prepared.whole_request_stats = whole
    n = feeds["x"].shape[0]
    prepared.output_levels = [
        OutputLevel.NODE if o.ndim and o.shape[0] == n else OutputLevel.GRAPH for o in outs
    ]
    _dynamic_tables(prepared, model, feeds, outs, aggregation, max_degree)
    return prepared


def _dynamic_tables(
    prepared: Prepared,
    model: nn.Module,
    feeds: dict[str, np.ndarray],
    outs: Sequence[np.ndarray],
    aggregation: str,
    max_degree: int,
) -> None:
    """Switch ``prepared`` to neighbour-table inputs where the model allows (else scatter)."""
    if aggregation == "dense":
        raise ExportError(
            "--aggregation dense is for the static form; a dynamic-form model aggregates "
            "over neighbour tables (auto, tables) or scatter"
        )
    if aggregation == "scatter":
        prepared.aggregation_reason = "asked for (--aggregation scatter)"
        return
    if not prepared.graph_layers:  # no PyG layer: the model aggregates its own way
        prepared.aggregation_reason = "the model has no PyG message-passing layer"
        return
    lowered = lower_dynamic(model, prepared.input_names, feeds, outs, max_degree)
    if lowered.module is None or lowered.layout is None:
        if aggregation == "tables":
            raise UnsupportedModelError(f"aggregation 'tables': {lowered.reason}")
        prepared.aggregation_reason = lowered.reason
        return
    prepared.export_module = lowered.module
    prepared.tables = lowered.layout
    prepared.dynamic_axes = table_axes(prepared.input_names, lowered.layout)
    prepared.aggregation = "tables"
    prepared.aggregation_reason = lowered.reason
    prepared.rewrites = []


def _static_pyg(
    model: nn.Module,
    sample: Sample,
    graph_layers: list[str],
    aggregation: str,
    dense_threshold: int,
) -> Prepared:
    if "edge_index" not in sample.topology:
        raise ExportError(
            f"{sample.name}: a static-topology PyG model needs the fixed graph: add 'edge_index' "
            "[2, E] to the sample data (x is [B, N, F])"
        )
    x = sample.inputs["x"]
    n = int(x.shape[1])
    ei = torch.from_numpy(np.asarray(sample.topology["edge_index"], np.int64))
    if "edge_weight" in sample.topology:
        raise ExportError(
            f"{sample.name}: edge_weight in static samples is not supported yet; "
            "fold the weights into the model or use the dynamic form"
        )
    names = model_inputs(model, ["x", "edge_index", "batch"], static=True)
    probe = StaticWrapper(model, ei, n, names, node_level=[])
    with torch.no_grad():
        flat = probe.flat_inputs(torch.from_numpy(_at_least_two(x)))
        with norms_without_batch(model) as whole:
            outs = _on_sample(sample, lambda: as_tuple(model(**flat)))
    if whole:
        raise UnsupportedModelError(
            f"layer '{whole[0]}' ({type(model.get_submodule(whole[0])).__name__}) is called "
            "without a batch vector: in the static form its statistics would span all B "
            "stacked graphs of a request, which batching and padding change; take `batch` in "
            "forward and pass it to the norm (per-graph statistics), or use --form dynamic"
        )
    b = max(2, x.shape[0])
    node_level = [o.ndim > 0 and o.shape[0] == b * n for o in outs]
    reference = StaticWrapper(model, ei, n, names, node_level)
    lowering = StaticLowering(model, ei, n, names, node_level)
    choice = lowering.choose(aggregation, dense_threshold, _at_least_two(x))
    export_module, rewrites = lowering.build(choice.aggregation)
    return Prepared(
        form=GraphForm.STATIC,
        export_module=export_module,
        reference=reference,
        input_names=["x"],
        dynamic_axes={"x": {0: "batch_size"}},
        output_levels=[OutputLevel.BATCH] * len(outs),
        num_features=int(x.shape[2]),
        num_nodes=n,
        aggregation=choice.aggregation,
        aggregation_reason=choice.reason,
        graph_layers=graph_layers,
        rewrites=rewrites,
    )


def _at_least_two(x: np.ndarray) -> np.ndarray:
    # torch.export specialises a dim seen as 1: trace with B >= 2.
    return np.concatenate([x, x]) if x.shape[0] < 2 else x


def _count_outputs(module: nn.Module, feeds: dict[str, np.ndarray]) -> int:
    with torch.no_grad():
        return len(as_tuple(module(**{k: torch.from_numpy(v) for k, v in feeds.items()})))


# -- samples the model cannot take: user errors, named by field -----------------------------


def check_samples(samples: Sequence[Sample]) -> None:
    """Check that every sample has the first one's feature layout and valid node ids.

    Raises:
        InvalidInputError: ``x`` of another rank or feature count than the
            first sample's, or ``edge_index`` naming a node the sample lacks.
    """
    first = samples[0].inputs["x"]
    for s in samples:
        x = s.inputs["x"]
        if x.ndim not in (2, 3) or x.ndim != first.ndim or x.shape[-1] != first.shape[-1]:
            raise InvalidInputError(
                "x",
                f"sample {s.name} has x {list(x.shape)} but sample {samples[0].name} has "
                f"x {list(first.shape)}: every sample feeds the same model, so all need "
                f"[N, F] or [B, N, F] with the same F (features per node)",
            )
        ei = s.inputs.get("edge_index", s.topology.get("edge_index"))
        if ei is None:
            continue
        ei = np.asarray(ei)
        n = x.shape[-2]
        if ei.ndim != 2 or ei.shape[0] != 2:
            raise InvalidInputError(
                "edge_index", f"sample {s.name}: expected [2, E], got {list(ei.shape)}"
            )
        if ei.size and (int(ei.min()) < 0 or int(ei.max()) >= n):
            raise InvalidInputError(
                "edge_index",
                f"sample {s.name}: node ids must be in [0, {n}) for its {n} nodes; "
                f"found {int(ei.min())}..{int(ei.max())}",
            )


def check_labels(prepared: Prepared, samples: Sequence[Sample]) -> None:
    """Check that labels (and their masks) fit the model's first output.

    The task metric compares ``argmax`` of the first output with ``y`` row by
    row: a dynamic-form model predicts one row per node (node-level output)
    or one per graph (graph-level output, graphs numbered by ``batch``).

    Raises:
        InvalidInputError: ``y`` with another number of labels than the model
            makes predictions (e.g. one label per node for a graph-level
            model), or a ``mask`` / ``val_mask`` / ``train_mask`` of another
            shape than ``y``.
    """
    for s in samples:
        if s.labels is None:
            continue
        y = np.asarray(s.labels)
        if prepared.form is GraphForm.DYNAMIC and prepared.output_levels:
            nodes = int(s.inputs["x"].shape[0])
            if prepared.output_levels[0] is OutputLevel.GRAPH:
                batch = s.inputs.get("batch")
                rows = int(batch.max()) + 1 if batch is not None and batch.size else 1
                kind, hint = "graph", " (these look like node labels)" if y.size == nodes else ""
            else:
                rows, kind, hint = nodes, "node", ""
            if y.size != rows:
                raise InvalidInputError(
                    "y",
                    f"sample {s.name} has {y.size} labels{hint}, but the model's first output "
                    f"is {kind}-level: one prediction per {kind}, {rows} in this sample; "
                    f"give one label per {kind}",
                )
        for name, mask in (
            ("mask", s.mask),
            ("val_mask", s.val_mask),
            ("train_mask", s.train_mask),
        ):
            if mask is not None and np.shape(mask) != y.shape:
                raise InvalidInputError(
                    name,
                    f"sample {s.name}: shape {list(np.shape(mask))} does not match "
                    f"y {list(y.shape)} (one flag per label)",
                )


def _on_sample(sample: Sample, run: Callable[[], T]) -> T:
    """Run the user's model on ``sample``; its shape errors are the sample's (a user error)."""
    try:
        return run()
    except (RuntimeError, IndexError) as exc:
        x = sample.inputs["x"]
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            "x",
            f"the model does not run on sample {sample.name} (x {list(x.shape)}, "
            f"{x.shape[-1]} features per node): {reason}; give samples with the feature "
            "count and shapes the model was built for",
        ) from exc
