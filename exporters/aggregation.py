"""How the static form aggregates over its fixed graph: the rule behind ``--aggregation``.

* ``tables``: neighbour tables (degree-bucketed ELL, :mod:`.lowering.tables`)
  folded as constants: a few bytes per edge, only ``Gather``/reductions, so
  every engine (LiteRT, INT8, NPUs) runs it. The default.
* ``dense``: the adjacency folded into ``[N, N]`` constants (``4·N²`` bytes,
  ``N²`` work per feature): only worth it on small graphs.
* ``scatter``: the constant ``edge_index`` with PyG's gather/scatter, as in the
  dynamic form (compact, but no LiteRT and no INT8 aggregation).

``auto`` takes tables, except dense when the graph is small
(``N <= dense_threshold``) *and* dense measures faster than tables on ONNX
Runtime on the build machine (both traced and timed on the sample at one
thread, a few runs: small graphs trace in about a second). A model whose
layers have no table lowering falls back to dense (small graphs) or scatter;
one with no dense lowering (``EdgeConv``) takes tables untimed.
Every choice says why, for the manifest and the progress output.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import ExportError, UnsupportedModelError
from edge_sdk.export_config import AGGREGATIONS

from .lowering import densify
from .lowering.tabulate import constant_tables, tabulate
from .rewrites import project_first
from .to_onnx import OPSET, ToOnnx
from .wrappers import StaticWrapper

#: Largest N for which ``auto`` times dense against tables (above it: tables, unmeasured).
#: Measured on the 2-core build machine, ORT at 1 thread, 2-layer GCN, 16 features, B=1:
#: dense is faster up to a few hundred nodes, tables beyond (docs/graph-export.md).
DEFAULT_DENSE_THRESHOLD = 256

#: Timed runs per candidate (after one warm-up); the median is compared.
TIMED_RUNS = 5


@dataclass(frozen=True)
class Choice:
    """The static form's aggregation and why.

    Attributes:
        aggregation: ``dense``, ``tables`` or ``scatter``.
        reason: One line for the manifest and the progress output.
    """

    aggregation: str
    reason: str


def check_aggregation(value: str) -> str:
    """``value`` if it is one of :data:`AGGREGATIONS`.

    Raises:
        ExportError: Any other value, naming the choices.
    """
    if value not in AGGREGATIONS:
        raise ExportError(f"aggregation {value!r}: expected one of {', '.join(AGGREGATIONS)}")
    return value


def time_onnx_ms(module: nn.Module, x: np.ndarray, outputs: int, runs: int = TIMED_RUNS) -> float:
    """Median ONNX Runtime latency (ms, 1 thread) of ``module`` on one graph of ``x [B, N, F]``.

    Raises:
        ExportError: The module could not be converted to ONNX.
    """
    import onnxruntime as ort

    one = x[:1]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(
        _candidate_onnx(module, one, outputs), options, providers=["CPUExecutionProvider"]
    )
    feeds = {session.get_inputs()[0].name: one}
    session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def _candidate_onnx(module: nn.Module, x: np.ndarray, outputs: int) -> bytes:
    """ONNX of ``module`` for ``x``'s fixed shape, only to be timed.

    The TorchScript exporter takes well under a second where ``torch.export`` +
    the dynamo exporter (what the artifact goes through) take ~10 s for a
    neighbour-table model, and the ops (so the timing) are the same; where it
    fails, the artifact's own path is used.
    """
    example = torch.from_numpy(x)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.onnx"
        try:
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, (example,), path, dynamo=False, opset_version=OPSET, input_names=["x"]
                )
            return path.read_bytes()
        except Exception:  # any failure: the artifact's own (slower) path below
            pass
        names = [f"out{i}" for i in range(outputs)]
        traced = np.concatenate([x, x])  # torch.export specialises a batch of 1
        ToOnnx(["x"], names, {"x": {0: "batch_size"}}, simplify=False)(
            module, {"x": torch.from_numpy(traced)}, path
        )
        return path.read_bytes()


@dataclass
class StaticLowering:
    """The static form's candidate lowerings of one model on its fixed graph.

    Attributes:
        model: The user's model (eval mode).
        edge_index: The fixed ``[2, E]`` topology.
        num_nodes: N.
        names: Forward parameters to feed (see :class:`.wrappers.StaticWrapper`).
        node_level: Per output, one row per node.
    """

    model: nn.Module
    edge_index: torch.Tensor
    num_nodes: int
    names: list[str]
    node_level: list[bool]

    def tables_refused(self) -> str | None:
        """Why the model's layers cannot aggregate over neighbour tables, or None."""
        try:
            tabulate(self.model)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    def dense_refused(self) -> str | None:
        """Why the model's layers cannot fold into dense ``[N, N]`` constants, or None."""
        try:
            densify(self.model, self.edge_index, self.num_nodes)
        except UnsupportedModelError as exc:
            return str(exc)
        return None

    def choose(self, aggregation: str, dense_threshold: int, x: np.ndarray) -> Choice:
        """Resolve ``auto`` (see :mod:`.aggregation`); an explicit choice is kept as asked."""
        n = self.num_nodes
        if aggregation != "auto":
            if aggregation == "tables" and (why := self.tables_refused()):
                raise UnsupportedModelError(f"aggregation 'tables': {why}")
            if aggregation == "dense" and (why := self.dense_refused()):
                raise UnsupportedModelError(f"aggregation 'dense': {why}")
            return Choice(aggregation, f"asked for (--aggregation {aggregation})")
        refused = self.tables_refused()
        small = n <= dense_threshold
        if refused:
            if small and (no_dense := self.dense_refused()):
                # e.g. the user's own MessagePassing layer: only its own scatter code runs it.
                return Choice(
                    "scatter",
                    f"no neighbour-table lowering ({refused.splitlines()[0]}); "
                    f"no dense lowering either ({no_dense.splitlines()[0]})",
                )
            fallback = "dense" if small else "scatter"
            limit = "<=" if small else ">"
            return Choice(
                fallback,
                f"no neighbour-table lowering ({refused.splitlines()[0]}); "
                f"N={n} {limit} dense threshold {dense_threshold}",
            )
        if not small:
            return Choice("tables", f"N={n} > dense threshold {dense_threshold}: not timed")
        if dense_refused := self.dense_refused():
            return Choice("tables", f"no dense lowering ({dense_refused.splitlines()[0]})")
        outputs = len(self.node_level)
        dense_ms = time_onnx_ms(self.build("dense")[0], x, outputs)
        tables_ms = time_onnx_ms(self.build("tables")[0], x, outputs)
        chosen = "dense" if dense_ms < tables_ms else "tables"
        return Choice(
            chosen,
            f"N={n} <= dense threshold {dense_threshold}; measured on ONNX Runtime (1 thread, "
            f"B=1, median of {TIMED_RUNS}): dense {dense_ms:.3f} ms, tables {tables_ms:.3f} ms",
        )

    def build(self, aggregation: str) -> tuple[StaticWrapper, list[str]]:
        """The export module for ``aggregation`` and the rewrites it made."""
        ei, n, names, levels = self.edge_index, self.num_nodes, self.names, self.node_level
        if aggregation == "dense":
            lowered = densify(self.model, ei, n)
            return StaticWrapper(lowered, ei, n, names, levels, dense_readout=True), []
        if aggregation == "tables":
            lowered, variants = tabulate(self.model)
            tables = constant_tables(ei.numpy(), n, variants)
            wrapper = StaticWrapper(
                lowered, ei, n, names, levels, dense_readout=True, tables=tables
            )
            return wrapper, []
        lowered, paths = project_first(self.model)
        rewrites = [f"{p}: project before aggregating" for p in paths]
        return StaticWrapper(lowered, ei, n, names, levels), rewrites
