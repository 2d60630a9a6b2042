"""Readable tables of manifests and outputs (rich)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from rich.markup import escape
from rich.table import Table

from edge_sdk.manifest import Manifest
from edge_sdk.parity import ArtifactCheck


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def _shape(shape: list[int | str]) -> str:
    return escape("[" + ", ".join(str(d) for d in shape) + "]")


def summary_table(m: Manifest) -> Table:
    """One row per artifact: precision, size, parity (the export summary)."""
    table = Table(title=f"{m.model.name} {m.model.version} ({m.graph.form} form)")
    for col in ("artifact", "target", "precision", "size", "max abs err", "accuracy", "parity"):
        table.add_column(col)
    reports = {r.artifact: r for r in m.parity}
    for a in m.artifacts:
        r = reports.get(a.name)
        err = f"{max(o.max_abs_err for o in r.outputs):.2e}" if r else "-"
        acc = (
            f"{100 * r.artifact_metric:.2f}% (ref {100 * r.reference_metric:.2f}%)"
            if r and r.artifact_metric is not None and r.reference_metric is not None
            else "-"
        )
        verdict = ("passed" if r.passed else "FAILED") if r else "not measured"
        size = a.size_bytes + sum(f.size_bytes for f in a.companions)
        table.add_row(a.name, str(a.target), str(a.precision), _kb(size), err, acc, verdict)
    return table


def targets_table(m: Manifest) -> Table:
    """Per profile and engine: the artifact chosen and why (with measurements)."""
    table = Table(title="targets: what each device profile runs")
    for col in ("profile", "engine", "artifact", "why"):
        table.add_column(col)
    for c in m.targets:
        refused = [f"{x.artifact} refused: {x.note}" for x in c.measured if not x.passed]
        table.add_row(
            c.profile,
            f"{c.backend}:{c.device}",
            c.artifact or "-",
            escape("; ".join([c.reason, *refused])),
        )
    return table


def verify_table(checks: Sequence[ArtifactCheck]) -> Table:
    """``edge-export verify``: one row per artifact."""
    table = Table(title="parity on this machine")
    for col in ("artifact", "backend", "precision", "max abs err", "accuracy", "result"):
        table.add_column(col)
    for c in checks:
        r = c.report
        if r is None:
            table.add_row(
                c.artifact.name,
                c.backend,
                str(c.artifact.precision),
                "-",
                "-",
                f"skipped: {escape(c.skipped)}",
            )
            continue
        err = f"{max(o.max_abs_err for o in r.outputs):.2e}" if r.outputs else "-"
        acc = (
            f"{100 * r.artifact_metric:.2f}% (ref {100 * r.reference_metric:.2f}%)"
            if r.artifact_metric is not None and r.reference_metric is not None
            else "-"
        )
        table.add_row(
            c.artifact.name,
            c.backend,
            str(c.artifact.precision),
            err,
            acc,
            "passed" if r.passed else "FAILED",
        )
    return table


def compression_table(m: Manifest) -> Table:
    """Size and task metric per compression stage, and what stayed float."""
    c = m.compression
    table = Table(title="compression")
    for col in ("stage", "size", "vs fp32", "val acc", "test acc"):
        table.add_column(col)
    fp32 = c.sizes.get("fp32")

    def pct(v: float | None) -> str:
        return f"{100 * v:.2f}%" if v is not None else "-"

    stages = sorted(
        c.sizes,
        key=lambda k: (
            ["fp32", "pruned", "int8"].index(k) if k in ("fp32", "pruned", "int8") else 99
        ),
    )
    for stage in stages:
        size = c.sizes[stage]
        met = c.metrics.get(stage, {})
        ratio = f"{fp32 / size:.1f}x smaller" if fp32 and stage != "fp32" else "-"
        table.add_row(stage, _kb(size), ratio, pct(met.get("val")), pct(met.get("test")))
    if c.stayed_float:
        table.caption = escape(stayed_float_summary(c.stayed_float))
    return table


def stayed_float_summary(items: list[dict[str, str]]) -> str:
    """What stayed float, grouped: ops float by design by type, others by node and reason."""
    by_design: Counter[str] = Counter()
    chosen: list[str] = []
    for f in items:
        reason = f.get("reason", "")
        if reason.startswith("not quantisable"):
            by_design[f.get("op", "?")] += 1
        else:
            chosen.append(f"{f.get('node')} ({f.get('op')}): {reason}")
    parts = []
    if chosen:
        parts.append("kept float: " + "; ".join(chosen))
    if by_design:
        ops = ", ".join(f"{op} x{n}" for op, n in by_design.most_common())
        parts.append(f"float by design (no INT8 kernel or no weights): {ops}")
    return "\n".join(parts)


def manifest_tables(m: Manifest) -> list[Table]:
    """All sections of a manifest as tables (``edge-export inspect``)."""
    model = Table(title="model", show_header=False)
    model.add_column("field")
    model.add_column("value")
    rows = [
        ("name", m.model.name),
        ("version", m.model.version),
        ("task", m.model.task),
        ("labels", ", ".join(m.model.labels) or "-"),
        ("schema", m.schema_version),
        ("created", m.created_at),
        ("graph form", str(m.graph.form)),
        ("nodes", str(m.graph.num_nodes) if m.graph.num_nodes else "per request"),
        ("features", str(m.graph.num_features)),
        (
            "aggregation",
            escape(
                m.graph.aggregation + (f" ({why})" if (why := m.graph.aggregation_reason) else "")
            ),
        ),
        ("limits", f"max_nodes {m.graph.max_nodes:,}, max_edges {m.graph.max_edges:,}"),
        ("buckets", ", ".join(f"{b.max_nodes}n/{b.max_edges}e" for b in m.graph.buckets) or "-"),
        ("profiles", ", ".join(m.profiles) or "-"),
        ("scaling", "yes" if m.preprocessing.feature_scaling else "no"),
    ]
    if m.decision is not None:
        rows.append(("decision", escape(decision_line(m))))
    if m.topology is not None:
        rows.append(("topology", escape(topology_line(m))))
    for k, v in rows:
        model.add_row(k, v)

    sig = Table(title="signature")
    for col in ("kind", "name", "dtype", "shape", "level"):
        sig.add_column(col)
    for t in m.inputs:
        sig.add_row("input", t.name, t.dtype, _shape(t.shape), "")
    for t in m.outputs:
        sig.add_row("output", t.name, t.dtype, _shape(t.shape), str(t.level or ""))

    arts = Table(title="artifacts")
    for col in ("name", "target", "precision", "layout", "path", "size", "sha256", "ops"):
        arts.add_column(col)
    for a in m.artifacts:
        arts.add_row(
            a.name,
            str(a.target),
            str(a.precision),
            a.layout,
            a.path,
            _kb(a.size_bytes),
            a.sha256[:12] + "…",
            str(len(a.ops)),
        )

    parity = Table(title="parity (measured at export)")
    for col in ("artifact", "backend", "output", "max abs", "max rel", "tolerance", "metric"):
        parity.add_column(col)
    for r in m.parity:
        metric = (
            f"{r.metric} {r.artifact_metric:.4f} (ref {r.reference_metric:.4f})"
            if r.metric and r.artifact_metric is not None and r.reference_metric is not None
            else "-"
        )
        for o in r.outputs:
            parity.add_row(
                r.artifact,
                r.backend,
                o.output,
                f"{o.max_abs_err:.2e}",
                f"{o.max_rel_err:.2e}",
                f"atol {o.atol:g} rtol {o.rtol:g}",
                metric,
            )

    tools = Table(title="toolchain", show_header=False)
    tools.add_column("package")
    tools.add_column("version")
    for k, v in sorted(m.toolchain.items()):
        tools.add_row(k, v)
    tables = [model, sig, arts, parity, tools]
    if m.targets:
        tables.insert(3, targets_table(m))
    if m.compression.sizes:
        tables.insert(-1, compression_table(m))
    return tables


def decision_line(m: Manifest) -> str:
    """The alarm rule in one line, e.g. ``score > 2.5 for 3 windows in a row ...``."""
    d = m.decision
    if d is None:
        return "-"
    windows = "1 window" if d.consecutive == 1 else f"{d.consecutive} windows in a row"
    line = f"{d.output} > {d.threshold:g} for {windows} raises"
    if d.clear_after is None:
        line += ", as many at or below clear"
    else:
        line += f", {d.clear_after} at or below in a row clear"
    if d.class_output is not None:
        line += f"; fault named by argmax of {d.class_output} (normal class {d.normal_class})"
    if d.fitted_on:
        line += f"; fitted on {d.fitted_on}"
    return line


def topology_line(m: Manifest) -> str:
    """Where the graph came from in one line, e.g. ``learned, folded: 52 nodes, 312 edges``."""
    t = m.topology
    if t is None:
        return "-"
    edges = f", {t.num_edges:,} edges" if t.num_edges is not None else ""
    line = f"{t.source}, {'folded into the model' if t.folded else 'not folded'}: "
    line += f"{t.num_nodes:,} nodes{edges}"
    return line + (f"; {t.note}" if t.note else "")


def outputs_table(outputs: Mapping[str, np.ndarray], labels: list[str], rows: int = 10) -> Table:
    """Shapes and the first rows of each output (argmax class when labelled)."""
    table = Table(title="outputs")
    for col in ("output", "shape", "dtype", f"first {rows} rows"):
        table.add_column(col)
    for name, value in outputs.items():
        flat = value.reshape(-1, value.shape[-1]) if value.ndim >= 2 else value.reshape(-1, 1)
        head = flat[:rows]
        if labels and flat.shape[-1] == len(labels):
            shown = ", ".join(labels[int(i)] for i in head.argmax(-1))
        else:
            shown = np.array2string(head, precision=4, threshold=60)
        table.add_row(name, escape(str(list(value.shape))), str(value.dtype), escape(shown))
    return table
