"""Compression steps of the pipeline: prune (+ fine-tune) and INT8, with the accuracy gate.

Every decision (the gate, the quantiser's fallback) is measured on the
samples' validation rows (``val_mask``, else ``mask``); the reported rows
(``mask``, e.g. a test split) are only reported. The gate compares each
compressed model with the *original* FP32 model, so pruning and INT8 drops add up.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sdk.errors import AccuracyError, ExportError
from edge_sdk.export_config import ParityOptions, QuantOptions
from edge_sdk.io_contract import GraphForm, TensorSpec
from edge_sdk.manifest import Artifact, ParityReport, Precision
from edge_sdk.parity import ParityCase, VerifyParity, accuracy, run_artifact

from .calibration import calibration_feeds
from .intake import Sample
from .prepare import Prepared
from .to_onnx import onnx_artifact
from .wrappers import StaticWrapper


@dataclass
class Metrics:
    """Task metric (accuracy) on decision (validation) and report (test) rows."""

    val: float | None
    test: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"val": self.val, "test": self.test}


def metrics_of(
    outputs: Sequence[dict[str, np.ndarray]], samples: Sequence[Sample], first: str
) -> Metrics:
    """Accuracy of ``outputs[i][first]`` against each sample's labels."""
    val_hits = val_n = test_hits = test_n = 0.0
    for out, s in zip(outputs, samples, strict=True):
        if s.labels is None:
            continue
        for mask, kind in ((s.decision_mask, "val"), (s.mask, "test")):
            n = int(mask.sum()) if mask is not None else s.labels.size
            acc = accuracy(out[first], s.labels, mask) * n
            if kind == "val":
                val_hits, val_n = val_hits + acc, val_n + n
            else:
                test_hits, test_n = test_hits + acc, test_n + n
    return Metrics(val_hits / val_n if val_n else None, test_hits / test_n if test_n else None)


def torch_metrics(prepared: Prepared, samples: Sequence[Sample], names: list[str]) -> Metrics:
    """Task metric of the PyTorch reference of ``prepared``."""
    outs = [
        dict(zip(names, prepared.run_reference(prepared.feeds(s)), strict=True)) for s in samples
    ]
    return metrics_of(outs, samples, names[0])


def check_gate(
    what: str, got: Metrics, base: Metrics, max_drop: float, allow: bool, tried: str = ""
) -> None:
    """Raise :class:`AccuracyError` when ``got`` lost more than ``max_drop`` on validation."""
    if got.val is None or base.val is None or got.val >= base.val - max_drop - 1e-12:
        return
    msg = (
        f"{what}: validation accuracy {100 * got.val:.2f}% vs FP32 {100 * base.val:.2f}% "
        f"(drop {100 * (base.val - got.val):.2f} pp > --max-accuracy-drop "
        f"{100 * max_drop:.2f} pp){tried}. Use --allow-accuracy-drop to keep it anyway."
    )
    if not allow:
        raise AccuracyError(msg)


def example_inputs(prepared: Prepared, sample: Sample) -> dict[str, torch.Tensor]:
    """Forward kwargs of the user's model for ``sample`` (what pruning traces)."""
    feeds = {k: torch.from_numpy(v) for k, v in prepared.feeds(sample).items()}
    if prepared.form is GraphForm.DYNAMIC:
        return feeds
    if isinstance(prepared.reference, StaticWrapper):
        return prepared.reference.flat_inputs(feeds["x"])
    return feeds


def prune_model(
    model: nn.Module,
    prepared: Prepared,
    samples: Sequence[Sample],
    spec_text: str,
    fine_tune_epochs: int,
    fine_tune_fn: Callable[[nn.Module], None] | None,
    say: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``model`` and optionally fine-tune it.

    Raises:
        ExportError: Bad spec, unsupported layer, or fine-tuning without labels.
    """
    from .prune import PruneSpec, fine_tune, fine_tune_with, prune

    spec = PruneSpec.parse(spec_text)
    say(f"pruning ({spec.kind}, {spec.amount:.0%})")
    pruned, report = prune(copy.deepcopy(model), spec, example_inputs(prepared, samples[0]))
    info: dict[str, Any] = report.to_dict()
    if fine_tune_fn is not None:
        say("fine-tuning with the given callable")
        fine_tune_with(pruned, fine_tune_fn)
        info["fine_tune"] = {"callable": getattr(fine_tune_fn, "__name__", "callable")}
    elif fine_tune_epochs > 0:
        if prepared.form is not GraphForm.DYNAMIC:
            raise ExportError("--fine-tune-epochs needs dynamic-form samples with train_mask")
        say(f"fine-tuning {fine_tune_epochs} epochs")
        losses = fine_tune(pruned, samples[0], fine_tune_epochs)
        info["fine_tune"] = {"epochs": fine_tune_epochs, "final_loss": losses[-1]}
    return pruned.eval(), info


@dataclass
class Int8Result:
    """The INT8 artifact and everything measured about it."""

    artifact: Artifact
    parity: ParityReport
    metrics: Metrics
    report: dict[str, Any]
    stayed_float: list[dict[str, str]]


def quantize_step(
    out: Path,
    fp32_path: Path,
    original: Prepared,
    prepared: Prepared,
    samples: Sequence[Sample],
    names: list[str],
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    quant: QuantOptions,
    parity_options: ParityOptions,
    say: Callable[[str], None],
    base: Metrics | None = None,
    references: Sequence[dict[str, np.ndarray]] | None = None,
) -> Int8Result:
    """Quantise ``fp32_path`` to ``out/model.int8.onnx`` behind the accuracy gate.

    The reference is the *original* FP32 model, so a pruned+INT8 artifact is
    judged on the total drop. ``base`` and ``references`` (its metric and its
    outputs per sample) are computed here unless the caller already has them.

    Raises:
        AccuracyError: No quantisation configuration meets the gate (and
            ``allow_accuracy_drop`` is off); the message lists the attempts.
    """
    from .quantize import CalibMethod, EvalCase, QuantConfig, quantize_int8

    if base is None:
        base = torch_metrics(original, samples, names)
    # A model over neighbour tables takes the tables the runtime would build.
    calib = [
        prepared.model_feeds(f) for f in calibration_feeds(prepared, samples, quant.calibration)
    ]
    say(f"quantising to INT8 ({quant.calib_method}, {len(calib)} calibration graphs)")
    if references is None:
        references = [
            dict(zip(names, original.run_reference(original.feeds(s)), strict=True))
            for s in samples
        ]
    cases = [
        EvalCase(
            feeds=prepared.model_feeds(prepared.feeds(s)),
            reference=ref,
            labels=s.labels,
            decision_mask=s.decision_mask,
            report_mask=s.mask,
            reference_metric=base.val,
        )
        for s, ref in zip(samples, references, strict=True)
    ]
    qcfg = QuantConfig(
        method=CalibMethod(quant.calib_method),
        calibration=quant.calibration,
        percentile=quant.calib_percentile,
        max_accuracy_drop=quant.max_accuracy_drop,
        max_rel_error=quant.max_rel_error,
        allow_accuracy_drop=quant.allow_accuracy_drop,
    )
    path = out / "model.int8.onnx"
    qreport = quantize_int8(fp32_path, path, calib, cases, names, qcfg)
    artifact = onnx_artifact(
        path,
        "onnx-int8",
        Precision.INT8,
        prepared.form,
        "QDQ, symmetric (zero point 0), per-channel",
    )
    taken = {i.name for i in inputs}  # a table model may not read every table
    feeds = [{k: v for k, v in c.feeds.items() if k in taken} for c in cases]
    got = run_artifact(path, artifact, inputs, outputs, feeds)
    parity_cases = [
        ParityCase(c.feeds, c.reference, s.labels, s.mask)
        for c, s in zip(cases, samples, strict=True)
    ]
    # INT8 moves logits by design: output errors are reported, the gate decided.
    parity = VerifyParity(
        parity_options.atol, parity_options.rtol, float("inf"), outputs_gate=False
    ).report(artifact, got, parity_cases, names)
    parity = parity.model_copy(update={"passed": qreport.passed})
    info = qreport.to_dict()
    return Int8Result(
        artifact, parity, metrics_of(got, samples, names[0]), info, qreport.stayed_float
    )
