"""A :class:`TargetJob` outside a full export, for the per-engine compiler tests.

Imported by name (``from target_jobs import make_job``): tests/ is on
``sys.path``. It lives here, not in the package, because only tests build a
job by hand; an export builds its jobs in one place,
:meth:`edge_sdk.exporters.steps.ExportContext.target_job`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_sdk.export_config import ExportConfig
from edge_sdk.exporters import export_model
from edge_sdk.exporters.steps import ExportContext, prepare_model, target_inputs
from edge_sdk.exporters.targets.base import TargetJob
from edge_sdk.profiles import TargetSpec


def make_job(
    model: Any,
    samples: Any,
    workdir: str | Path,
    target: TargetSpec,
    *,
    form: str = "auto",
    int8: bool = False,
    dense_threshold: int = 256,
    aggregation: str = "auto",
    calibration: int = 32,
    **config: Any,
) -> TargetJob:
    """A :class:`TargetJob` for ``target`` beside a finished ONNX Runtime bundle.

    Exports ``model`` into ``workdir`` (``model.onnx``, and ``model.int8.onnx``
    with ``int8``, and a manifest a test may extend), then fills the job as the
    pipeline would. ``config``: more :class:`ExportConfig` flat options (``buckets``...).
    """
    cfg = ExportConfig(
        form=form,
        int8=int8,
        dense_threshold=dense_threshold,
        aggregation=aggregation,
        calibration=calibration,
        **config,
    )
    out = Path(workdir)
    manifest = export_model(model, samples, out, cfg).manifest
    ctx = ExportContext.start(model, samples, out, cfg)
    prepare_model(ctx)
    ctx.inputs, ctx.outputs = manifest.inputs, manifest.outputs
    target_inputs(ctx)
    return ctx.target_job(target)
