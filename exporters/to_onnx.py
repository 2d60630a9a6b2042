"""Export a wrapped model to ONNX: torch.export -> ONNX -> check -> simplify.

Opset 18 is the one every target reads: ScatterElements with max/min
reduction (GAT softmax, max aggregation) needs 18; TensorRT 10's parser,
OpenVINO 2024+, onnx2tf 1.28 and ONNX Runtime all accept it, while 19+ adds
nothing graph models use and narrows the set of older device runtimes.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from edge_sdk._optional import is_available
from edge_sdk.bundle import file_digest
from edge_sdk.errors import ExportError
from edge_sdk.io_contract import GraphForm
from edge_sdk.manifest import Artifact, Precision, Target

OPSET = 18


@dataclass
class OnnxResult:
    """What :class:`ToOnnx` produced."""

    model: onnx.ModelProto
    nodes_before_simplify: int
    nodes_after_simplify: int
    simplifier: str
    export_mode: str


class ToOnnx:
    """Pipeline step: trace ``module`` and write checked, simplified ONNX.

    Args:
        input_names: ONNX input names, in forward order.
        output_names: ONNX output names.
        dynamic_axes: Per input name, axis -> symbolic name (e.g. ``num_nodes``); inputs
            sharing a name share one ``torch.export.Dim`` (a table class's rows).
        output_dim_names: Per output name, axis -> symbolic name to stamp.
        simplify: Run onnxslim (kept only if the checker still passes).
    """

    def __init__(
        self,
        input_names: Sequence[str],
        output_names: Sequence[str],
        dynamic_axes: Mapping[str, Mapping[int, str]],
        output_dim_names: Mapping[str, Mapping[int, str]] | None = None,
        simplify: bool = True,
    ) -> None:
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.dynamic_axes = dynamic_axes
        self.output_dim_names = output_dim_names or {}
        self.simplify = simplify

    def __call__(
        self, module: torch.nn.Module, inputs: Mapping[str, torch.Tensor], path: Path
    ) -> OnnxResult:
        """Trace with example ``inputs`` (by name) and write ``path``.

        Raises:
            ExportError: Tracing, conversion or the ONNX checker failed.
        """
        _quiet_torch_logs()
        ep, mode = self._trace(module, inputs)
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                program = torch.onnx.export(
                    ep,
                    dynamo=True,
                    opset_version=OPSET,
                    input_names=self.input_names,
                    output_names=self.output_names,
                    verbose=False,
                    optimize=True,
                )
            except Exception as exc:
                raise ExportError(f"ONNX conversion failed: {_first_line(exc)}") from exc
        if program is None:  # only when an output file is given, which we never do
            raise ExportError("ONNX conversion returned no program")
        model = program.model_proto
        self._rename_dims(model)
        _check(model)
        before = len(model.graph.node)
        simplifier = "none"
        if self.simplify and is_available("onnxslim"):
            model, simplifier = _simplify(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(path))
        return OnnxResult(model, before, len(model.graph.node), simplifier, mode)

    def _trace(
        self, module: torch.nn.Module, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.export.ExportedProgram, str]:
        dims: dict[str, torch.export.Dim] = {}
        shapes = {
            name: {ax: dims.setdefault(d, torch.export.Dim(d)) for ax, d in axes.items()} or None
            for name in self.input_names
            if (axes := self.dynamic_axes.get(name, {})) is not None
        }
        errors = []
        # Non-strict tracing handles PyG's attention code; strict (dynamo)
        # handles readouts whose graph count comes from batch.max(). Try both.
        for strict in (False, True):
            try:
                # torch prints the whole FX graph when a trace attempt fails;
                # the first attempt failing is expected, so keep it off the terminal.
                with warnings.catch_warnings(), redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    if getattr(module, "positional_inputs", False):
                        # forward(*inputs): names with dots (neighbour tables) are no keywords.
                        args = tuple(inputs[n] for n in self.input_names)
                        ordered = (tuple(shapes[n] for n in self.input_names),)
                        ep = torch.export.export(
                            module, args, dynamic_shapes=ordered, strict=strict
                        )
                    else:
                        ep = torch.export.export(
                            module, (), dict(inputs), dynamic_shapes=shapes, strict=strict
                        )
                return ep, "strict" if strict else "non-strict"
            except Exception as exc:
                errors.append(f"{'strict' if strict else 'non-strict'}: {_first_line(exc)}")
        raise ExportError("torch.export could not trace the model: " + " | ".join(errors))

    def _rename_dims(self, model: onnx.ModelProto) -> None:
        mapping: dict[str, str] = {}
        for value in model.graph.input:
            for ax, name in self.dynamic_axes.get(value.name, {}).items():
                dim = value.type.tensor_type.shape.dim[ax]
                if dim.dim_param:
                    mapping[dim.dim_param] = name
        for value in model.graph.output:
            for ax, name in self.output_dim_names.get(value.name, {}).items():
                dims = value.type.tensor_type.shape.dim
                if ax < len(dims) and dims[ax].dim_param and dims[ax].dim_param not in mapping:
                    mapping[dims[ax].dim_param] = name
        for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param in mapping:
                    dim.dim_param = mapping[dim.dim_param]


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported ONNX fails onnx.checker: {_first_line(exc)}") from exc


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    import onnxslim

    try:
        with redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(model)
        onnx.checker.check_model(slim, full_check=True)
    except Exception as exc:  # a simplifier bug must not block an export that was fine
        logging.getLogger(__name__).warning(
            "onnxslim failed, keeping the unsimplified model: %s", exc
        )
        return model, f"none (onnxslim failed: {_first_line(exc)})"
    # onnxslim may drop names we stamped on outputs' dims; restore from the original.
    for out_new, out_old in zip(slim.graph.output, model.graph.output, strict=True):
        for d_new, d_old in zip(
            out_new.type.tensor_type.shape.dim, out_old.type.tensor_type.shape.dim, strict=False
        ):
            if d_old.dim_param and not d_new.dim_value:
                d_new.dim_param = d_old.dim_param
    return slim, f"onnxslim {onnxslim.__version__}"


def _quiet_torch_logs() -> None:
    for name in (
        "torch.export",
        "torch._export",
        "torch.fx.experimental.symbolic_shapes",
        "torch._dynamo",
        "torch.onnx._internal.exporter._registration",  # "torchvision is not installed"
    ):
        logging.getLogger(name).setLevel(logging.ERROR)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def op_types(model: onnx.ModelProto) -> list[str]:
    """Sorted distinct op types of a model (recorded in the manifest)."""
    return sorted({n.op_type for n in model.graph.node})


def onnx_artifact(
    path: Path, name: str, precision: Precision, form: GraphForm, notes: str = ""
) -> Artifact:
    """Describe an ONNX file in ``path`` as a bundle artifact (size, sha256, ops)."""
    size, sha = file_digest(path)
    model = onnx.load(str(path), load_external_data=False)
    return Artifact(
        name=name,
        path=path.name,
        target=Target.ONNXRUNTIME,
        precision=precision,
        layout="NF" if form is GraphForm.DYNAMIC else "BNF",
        size_bytes=size,
        sha256=sha,
        opset=OPSET,
        ops=op_types(model),
        notes=notes,
    )
