"""Model and sample-data intake: ``module:function``, weights, ``.pt2``, ``.npz``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

from edge_sdk.errors import ExportError

from .wrappers import DYNAMIC_INPUTS


@dataclass
class Sample:
    """One sample graph (or stacked batch) with optional labels.

    Attributes:
        inputs: Model inputs by name: ``x`` plus, for the dynamic form,
            ``edge_index`` / ``edge_attr`` / ``batch``.
        topology: Static form only: the fixed ``edge_index`` (and
            ``edge_weight``) that the exporter folds into the model.
        labels: Integer class per node (or per graph / per stacked graph).
        mask: Which label rows count for the reported task metric (e.g. a test split).
        val_mask: Rows used to *decide* (accuracy gate, quantisation fallback); the
            reported ``mask`` rows are never used to choose anything. Defaults to ``mask``.
        train_mask: Rows recovery fine-tuning may train on.
        name: Where it came from, for messages.
    """

    inputs: dict[str, np.ndarray]
    topology: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    name: str = "sample"
    val_mask: np.ndarray | None = None
    train_mask: np.ndarray | None = None

    @property
    def decision_mask(self) -> np.ndarray | None:
        """Rows that compression decisions are measured on (validation, else ``mask``)."""
        return self.val_mask if self.val_mask is not None else self.mask


_INPUT_KEYS = ("x", "edge_index", "edge_attr", "batch")
_KNOWN_KEYS = {*_INPUT_KEYS, "edge_weight", "y", "mask", "val_mask", "train_mask"}


def load_samples(path: str | Path) -> Sample:
    """Read a sample ``.npz``.

    Keys: ``x`` (required), ``edge_index``, ``edge_attr``, ``batch``, ``y``
    (labels), ``mask`` (bool rows counted by the reported metric, e.g. test),
    ``val_mask`` (rows compression decisions are made on), ``train_mask`` (rows
    fine-tuning trains on), ``edge_weight``.
    A rank-3 ``x`` ``[B, N, F]`` with an ``edge_index`` is a static-topology
    sample: its ``edge_index`` is the one fixed graph of all B.

    Raises:
        ExportError: Unreadable file, pickled content or unknown keys.
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise ExportError(f"sample data not found: {p}") from None
    except (ValueError, OSError) as exc:
        raise ExportError(f"cannot read sample data {p} as .npz ({exc})") from None
    unknown = sorted(set(arrays) - _KNOWN_KEYS)
    if unknown:
        raise ExportError(f"{p}: unknown key(s) {unknown}; expected some of {sorted(_KNOWN_KEYS)}")
    if "x" not in arrays:
        raise ExportError(f"{p}: missing key 'x' (node features)")
    return sample_from_arrays(arrays, name=p.name)


def sample_from_arrays(arrays: dict[str, Any], name: str = "sample") -> Sample:
    """Build a :class:`Sample` from named arrays (the ``.npz`` keys).

    Raises:
        ExportError: A static-form sample (``x [B, N, F]``) with ``edge_attr``.
    """
    a = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    static = a["x"].ndim == 3
    if static and "edge_attr" in a:
        raise ExportError(
            f"{name}: static form has no edge input: x [B, N, F] folds one topology, and "
            "the sample's edge_attr cannot be folded; export with --form dynamic (x [N, F]), "
            "where edge_attr [E, D] is a request input"
        )
    if static:
        inputs = {"x": a["x"].astype(np.float32)}
        topology: dict[str, np.ndarray] = {k: a[k] for k in ("edge_index", "edge_weight") if k in a}
    else:
        inputs = {k: a[k] for k in _INPUT_KEYS if k in a}
        inputs["x"] = inputs["x"].astype(np.float32)
        if "edge_attr" in inputs:
            inputs["edge_attr"] = inputs["edge_attr"].astype(np.float32)
        for k in ("edge_index", "batch"):
            if k in inputs:
                inputs[k] = inputs[k].astype(np.int64)
        topology = {}
    masks = {k: a[k].astype(bool) if k in a else None for k in ("mask", "val_mask", "train_mask")}
    return Sample(
        inputs,
        topology,
        a.get("y"),
        masks["mask"],
        name,
        val_mask=masks["val_mask"],
        train_mask=masks["train_mask"],
    )


def as_static(sample: Sample) -> Sample:
    """One graph ``x [N, F]`` + ``edge_index`` seen as a static-form sample ``x [1, N, F]``.

    So the same ``.npz`` (e.g. the Cora graph) exports in either form: with
    ``--form static`` its ``edge_index`` becomes the fixed topology.

    Raises:
        ExportError: The sample has edge features or several graphs (``batch``),
            which the static form cannot fold.
    """
    x = sample.inputs["x"]
    if x.ndim != 2:
        return sample
    if "edge_index" not in sample.inputs:
        raise ExportError(f"{sample.name}: the static form needs the graph's edge_index")
    extra = sorted({"edge_attr", "batch"} & set(sample.inputs))
    if extra:
        raise ExportError(
            f"{sample.name}: the static form folds one graph's topology; {extra} cannot be "
            "folded (stack several graphs as x [B, N, F] instead)"
        )
    return Sample(
        {"x": x[None]},
        {"edge_index": sample.inputs["edge_index"], **sample.topology},
        sample.labels,
        sample.mask,
        sample.name,
        val_mask=sample.val_mask,
        train_mask=sample.train_mask,
    )


def load_model(spec: str, weights: str | Path | None = None) -> torch.nn.Module:
    """Build a model from ``module:function`` (or ``path/to/file.py:function``).

    Args:
        spec: Importable module or Python file, a colon, and a callable
            returning a ``torch.nn.Module``.
        weights: Optional checkpoint (a state dict, or a dict holding one under
            ``state_dict`` / ``model_state_dict``).

    Raises:
        ExportError: Bad spec, import failure, not a Module, or weights that
            do not fit (missing/unexpected keys are listed).
    """
    if ":" not in spec:
        raise ExportError(f"--model {spec!r}: expected 'module:function' or 'file.py:function'")
    mod_name, _, fn_name = spec.rpartition(":")
    module = _import(mod_name)
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise ExportError(f"--model {spec!r}: {mod_name} has no callable {fn_name!r}")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise ExportError(
            f"--model {spec!r}: {fn_name}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _import(name: str) -> Any:
    if name.endswith(".py"):
        path = Path(name)
        if not path.is_file():
            raise ExportError(f"--model: file not found: {path}")
        mod_id = f"_edge_user_model_{abs(hash(path.resolve()))}"
        spec = importlib.util.spec_from_file_location(mod_id, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_id] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # let `mypkg.models:build` resolve from the working directory
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExportError(f"--model: cannot import {name!r}: {exc}") from exc


def load_weights(model: torch.nn.Module, weights: str | Path) -> None:
    """Load a checkpoint into ``model`` strictly (see :func:`load_model`)."""
    p = Path(weights)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError(f"--weights: file not found: {p}") from None
    except Exception as exc:
        raise ExportError(f"--weights: cannot load {p}: {exc}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ExportError(f"--weights: {p} holds a {type(state).__name__}, not a state dict")
    if any(k.endswith(("weight_orig", "weight_mask")) for k in state):
        raise ExportError(
            f"--weights: {p} holds torch.nn.utils.prune reparametrisations (weight_orig/"
            "weight_mask); call torch.nn.utils.prune.remove(module, 'weight') before saving"
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            f"--weights: {p} does not fit the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def load_program(path: str | Path) -> torch.export.ExportedProgram:
    """Load a ``torch.export`` program file (``.pt2``).

    Raises:
        ExportError: Missing or unreadable file.
    """
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"--model: file not found: {p}")
    try:
        return torch.export.load(p)
    except Exception as exc:
        raise ExportError(f"--model: {p} is not a torch.export program: {exc}") from None


#: What :func:`~edge_sdk.exporters.export_model` accepts as a model.
ModelSource: TypeAlias = torch.nn.Module | torch.export.ExportedProgram | str | Path
#: What :func:`~edge_sdk.exporters.export_model` accepts as samples.
SampleSource: TypeAlias = Sample | Sequence[Sample] | str | Path | Sequence[str | Path]


def samples_of(samples: SampleSource, form: str = "auto") -> list[Sample]:
    """The sample graphs (objects or ``.npz`` paths), made static for ``form='static'``.

    Raises:
        ExportError: No sample, or an unreadable file.
    """
    items = [samples] if isinstance(samples, Sample | str | Path) else list(samples)
    if not items:
        raise ExportError("no sample data: give at least one sample graph (--sample-data)")
    loaded = [s if isinstance(s, Sample) else load_samples(s) for s in items]
    return [as_static(s) for s in loaded] if form == "static" else loaded


def module_of(model: ModelSource, weights: str | Path | None = None) -> torch.nn.Module:
    """The model as a module: a ``.pt2`` program, a ``module:function`` spec, or a module.

    Raises:
        ExportError: Unloadable model, or ``weights`` for a ``.pt2`` program.
    """
    if isinstance(model, str | Path) and str(model).endswith(".pt2"):
        model = load_program(model)
    elif isinstance(model, str | Path):
        return load_model(str(model), weights)
    if isinstance(model, torch.export.ExportedProgram):
        if weights is not None:
            raise ExportError(
                "--weights cannot be applied to a .pt2 program (its weights are inside)"
            )
        return ProgramModule(model)
    if weights is not None:
        load_weights(model, weights)
    return model


class ProgramModule(torch.nn.Module):
    """A ``torch.export`` program seen as a module (its signature is x, edge_index...)."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program = program.module()
        self.program_inputs = [
            s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"
        ]
        unknown = sorted(set(self.program_inputs) - set(DYNAMIC_INPUTS))
        if unknown:
            raise ExportError(
                f"the .pt2 program takes {unknown}; supported inputs are {list(DYNAMIC_INPUTS)}"
            )

    def train(self, mode: bool = True) -> ProgramModule:
        # A program's train/eval behaviour was fixed when it was exported.
        return self

    def forward(
        self,
        x: torch.Tensor,
        edge_index: torch.Tensor | None = None,
        edge_attr: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
    ) -> object:
        given = {"x": x, "edge_index": edge_index, "edge_attr": edge_attr, "batch": batch}
        return self.program(*[given[n] for n in self.program_inputs])
