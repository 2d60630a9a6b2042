"""The last export step: canary, ``verify.npz`` and the manifest that describes the bundle."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from edge_sdk.bundle import file_digest, save_npz, write_manifest
from edge_sdk.io_contract import GraphForm
from edge_sdk.manifest import (
    SCHEMA_VERSION,
    Canary,
    CompressionReport,
    FeatureScaling,
    Manifest,
    ModelInfo,
    Preprocessing,
)

from .calibration import induced_subgraph
from .steps import ExportContext
from .targets.cases import write_verification

#: Distributions whose versions the manifest records (those installed).
TOOLCHAIN = (
    "edge-graph-sdk",
    "torch",
    "torch-geometric",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxslim",
    "numpy",
)


def write_bundle(ctx: ExportContext) -> Manifest:
    """Write ``canary.npz``, ``verify.npz`` and ``manifest.json``; return the manifest."""
    ctx.say("writing bundle")
    cfg, traced = ctx.cfg, ctx.traced
    scaling = cfg.model.feature_scaling
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        model=ModelInfo(
            name=cfg.model.name,
            version=cfg.model.version,
            task=cfg.model.task,
            labels=cfg.model.labels,
        ),
        graph=ctx.graph,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
        decision=cfg.model.decision,
        topology=cfg.model.topology,
        event_graph=cfg.model.event_graph,
        preprocessing=Preprocessing(
            feature_scaling=FeatureScaling(mean=list(scaling[0]), std=list(scaling[1]))
            if scaling
            else None
        ),
        artifacts=ctx.artifacts,
        parity=ctx.reports,
        compression=_compression(ctx),
        profiles=[p.name for p in ctx.profiles],
        targets=ctx.compiled.choices,
        canary=_write_canary(ctx),
        verification=write_verification(
            ctx.out, ctx.cases, len(ctx.samples), cfg.parity, cfg.quant
        ),
        toolchain=toolchain(),
        export={
            "graph_layers": sorted(set(ctx.prepared.graph_layers)),
            "rewrites": ctx.prepared.rewrites,
            "trace_mode": traced.mode,
            "simplifier": traced.simplifier,
            "nodes_before_simplify": traced.nodes[0],
            "nodes_after_simplify": traced.nodes[1],
            "timings": {k: round(v, 3) for k, v in ctx.timings.items()},
        },
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_manifest(ctx.out, manifest)
    return manifest


def _compression(ctx: ExportContext) -> CompressionReport:
    """The compression report, with sizes and metrics once anything was compressed."""
    c = ctx.compression
    if not (ctx.cfg.pruning.spec or ctx.cfg.quant.enabled):
        return c
    return CompressionReport(
        pruning=c.pruning,
        quantization=c.quantization,
        stayed_float=c.stayed_float,
        sizes=ctx.sizes,
        metrics=ctx.metrics,
    )


def _write_canary(ctx: ExportContext) -> Canary:
    """A small input with its reference output, for health checks after an update."""
    prepared = ctx.prepared
    feeds = prepared.feeds(ctx.samples[0])
    if prepared.form is GraphForm.DYNAMIC:
        nodes = min(ctx.cfg.bundle.canary_nodes, feeds["x"].shape[0])
        feeds = induced_subgraph(feeds, np.arange(nodes))
    else:
        feeds = {"x": feeds["x"][:1]}
    expected = dict(zip(ctx.names, prepared.run_reference(feeds), strict=True))
    arrays = {f"in/{k}": v for k, v in feeds.items()} | {f"out/{k}": v for k, v in expected.items()}
    save_npz(ctx.out / "canary.npz", arrays)
    size, sha = file_digest(ctx.out / "canary.npz")
    p = ctx.cfg.parity
    return Canary(path="canary.npz", sha256=sha, size_bytes=size, atol=p.atol, rtol=p.rtol)


def toolchain() -> dict[str, str]:
    """Python and the installed :data:`TOOLCHAIN` distributions, with their versions."""
    versions = {"python": platform.python_version()}
    for dist in TOOLCHAIN:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return versions
