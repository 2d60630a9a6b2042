"""A :class:`~.base.TargetJob` outside a full export, for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sdk.profiles import TargetSpec

from ..calibration import calibration_feeds
from ..intake import as_static
from ..pipeline import ExportConfig, _graph_spec, _model, _output_names, _samples, export_model
from ..prepare import prepare
from .base import TargetJob
from .cases import target_cases


def make_job(
    model: Any,
    samples: Any,
    workdir: str | Path,
    target: TargetSpec,
    *,
    form: str = "auto",
    int8: bool = False,
    dense_threshold: int = 2048,
    calibration: int = 32,
) -> TargetJob:
    """A :class:`TargetJob` for one target outside a full export (tests, benchmarks).

    Exports ``model`` for ONNX Runtime into ``workdir`` (``model.onnx``, and
    ``model.int8.onnx`` with ``int8``) and fills the job as the pipeline would.
    """
    cfg = ExportConfig(
        form=form, int8=int8, dense_threshold=dense_threshold, calibration=calibration
    )
    out = Path(workdir)
    sample_list = _samples(samples)
    if form == "static":
        sample_list = [as_static(s) for s in sample_list]
    result = export_model(model, sample_list, out, cfg)
    prepared = prepare(_model(model, None), sample_list, form, dense_threshold)
    names = _output_names(cfg, prepared)
    m = result.manifest
    return TargetJob(
        out=out,
        onnx_fp32=out / "model.onnx",
        onnx_int8=out / "model.int8.onnx" if int8 else None,
        prepared=prepared,
        graph=_graph_spec(prepared, cfg),
        inputs=m.inputs,
        outputs=m.outputs,
        calibration=calibration_feeds(prepared, sample_list, calibration),
        cases=target_cases(prepared, sample_list, names),
        target=target,
        int8=int8,
        atol=cfg.atol,
        rtol=cfg.rtol,
        max_accuracy_drop=cfg.max_accuracy_drop,
        max_rel_error=cfg.max_rel_error,
    )
