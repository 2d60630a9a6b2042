"""Trace a prepared model to ``model.onnx`` and read the tensor specs the manifest records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from edge_sdk.io_contract import GraphForm, OutputLevel, TensorSpec

from .intake import Sample
from .prepare import Prepared
from .to_onnx import ToOnnx

#: The ONNX dim name of each output level's leading axis.
_LEVEL_DIM = {
    OutputLevel.GRAPH: "num_graphs",
    OutputLevel.NODE: "num_nodes",
    OutputLevel.BATCH: "batch_size",
}


@dataclass
class Traced:
    """The written ONNX model and what the manifest says about it.

    Attributes:
        model: The ONNX model.
        size: Its file size, bytes.
        mode: The ``torch.export`` mode that traced it.
        simplifier: The simplifier that ran (or why none).
        nodes: ONNX node count before and after simplification.
        inputs: The manifest's input specs (symbolic dims).
        outputs: The manifest's output specs.
    """

    model: onnx.ModelProto
    size: int
    mode: str
    simplifier: str
    nodes: tuple[int, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def trace_to_onnx(
    prepared: Prepared, sample: Sample, names: list[str], simplify: bool, out: Path
) -> Traced:
    """Trace ``prepared`` on ``sample`` to ``out/model.onnx``."""
    feeds = prepared.model_feeds(prepared.feeds(sample), trace=True)
    example = {k: torch.from_numpy(_traceable(k, v, prepared)) for k, v in feeds.items()}
    graph_dims = {
        n: {0: _LEVEL_DIM[lvl]} for n, lvl in zip(names, prepared.output_levels, strict=True)
    }
    path = out / "model.onnx"
    result = ToOnnx(prepared.model_names, names, prepared.dynamic_axes, graph_dims, simplify)(
        prepared.export_module, example, path
    )
    return Traced(
        result.model,
        path.stat().st_size,
        result.export_mode,
        result.simplifier,
        (result.nodes_before_simplify, result.nodes_after_simplify),
        inputs=[_spec(v) for v in result.model.graph.input],
        outputs=[
            _spec(v, level)
            for v, level in zip(result.model.graph.output, prepared.output_levels, strict=True)
        ],
    )


def _traceable(name: str, value: np.ndarray, prepared: Prepared) -> np.ndarray:
    # torch.export specialises dims it sees as 0 or 1; trace static forms with B >= 2.
    if prepared.form is not GraphForm.DYNAMIC and name == "x" and value.shape[0] < 2:
        return np.concatenate([value, value])
    return value


def _spec(value: onnx.ValueInfoProto, level: OutputLevel | None = None) -> TensorSpec:
    tt = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    shape: list[int | str] = [d.dim_param or d.dim_value for d in tt.shape.dim]
    return TensorSpec(name=value.name, dtype=dtype, shape=shape, level=level)
