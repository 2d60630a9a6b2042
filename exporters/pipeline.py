"""The export pipeline: prepare -> prune -> ONNX -> parity -> INT8 -> targets -> bundle.

Each step is a function of one :class:`~.steps.ExportContext` (see
:mod:`.steps`); :func:`_export` is the list of them, in order. The options are
:class:`~edge_sdk.export_config.ExportConfig`, grouped by step.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.bundle import pack
from edge_sdk.errors import ExportError
from edge_sdk.export_config import ExportConfig, check_decision_names
from edge_sdk.manifest import Manifest

from .intake import ModelSource, SampleSource
from .steps import (
    ExportContext,
    Progress,
    compile_targets,
    prepare_model,
    prune,
    quantize,
    target_inputs,
    to_onnx,
    verify_onnx,
)
from .write_bundle import write_bundle


@dataclass
class ExportResult:
    """Where the bundle went and what it holds."""

    bundle_dir: Path
    manifest: Manifest
    archive: Path | None = None


def export_model(
    model: ModelSource,
    samples: SampleSource,
    out_dir: str | Path,
    config: ExportConfig | None = None,
    weights: str | Path | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export a trained graph model to a verified bundle.

    Args:
        model: A module, a ``torch.export`` program, a ``.pt2`` path, or a
            ``module:function`` string.
        samples: Sample graphs (objects or ``.npz`` paths); parity is measured
            on all of them, the first one is traced.
        out_dir: Bundle directory to create (must be empty or absent).
        config: Options; defaults are sane for a CPU x86 target.
        weights: Checkpoint loaded into a ``module:function`` model.
        progress: Called with a short message at each step.

    Returns:
        The bundle directory and its manifest.

    Raises:
        UnsupportedModelError: A layer/option that cannot be lowered.
        ParityError: The artifact does not reproduce the model.
        ExportError: Any other failure, with the reason.
    """
    cfg = config or ExportConfig()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"output directory {out} is not empty; choose a new path")
    existed = out.exists()
    try:
        return _export(ExportContext.start(model, samples, out, cfg, weights, progress))
    except BaseException:
        # A failed export leaves nothing behind: no half bundle to mistake for a good one.
        if out.exists() and not existed:
            shutil.rmtree(out)
        elif out.exists():
            for path in out.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        raise


def _export(ctx: ExportContext) -> ExportResult:
    """Run the steps in order; a step that fails stops the export (nothing is kept)."""
    cfg = ctx.cfg
    with ctx.timed("prepare_s"):
        prepare_model(ctx)
        if cfg.pruning.spec:
            prune(ctx)
    with ctx.timed("onnx_s"):
        to_onnx(ctx)
    with ctx.timed("parity_s"):
        verify_onnx(ctx)
    if cfg.quant.enabled:
        with ctx.timed("int8_s"):
            quantize(ctx)
    with ctx.timed("targets_s"):
        target_inputs(ctx)
        compile_targets(ctx)
    manifest = write_bundle(ctx)
    archive = (
        pack(ctx.out, ctx.out.with_name(ctx.out.name + ".tar.gz")) if cfg.bundle.pack else None
    )
    return ExportResult(ctx.out, manifest, archive)


__all__ = ["ExportConfig", "ExportResult", "check_decision_names", "export_model"]
