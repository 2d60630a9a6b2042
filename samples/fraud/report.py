"""The fraud demo's report: ``report.md``, ``report.html`` and their plots, from one results dict.

Everything here reads the dict :mod:`fraud` writes to ``results.json`` (plus
the score and latency arrays it saves in ``scores.npz``), so a report can be
re-drawn from a finished run without training anything, and the tests feed it
a hand-made dict. The schema (keys not listed are carried along untouched):

``results``::

    synthetic: True                      # always: the generator's data
    note: str                            # the SYNTHETIC sentence every output carries
    date: str; machine: {python, cpu_count, platform, edge_sdk, torch}
    args: {accounts, days, epochs, seconds, profiles, seed, ...}
    data: {transactions, fraud_rate, splits: {train|val|test: {n, fraud}},
           test_patterns: {pattern: count of fraud transactions in the test split}}
    gnn: str                             # the exported GNN (e.g. "GATv2+GINE FP32 (PyTorch)")
    baseline: str                        # the baseline's method name
    threshold: {budget, value, fitted_on, test_alert_rate, test_precision, test_recall}
    metrics: {method: {pr_auc, roc_auc, recall_at_1pct_fpr, n, positives,
                       per_pattern: {pattern: {pr_auc, roc_auc, recall_at_1pct_fpr, n_fraud}}}}
    engines: {method: {backend, profile, precision, pr_auc_minus_fp32}}   # INT8 engines
    litert_parity: {...} | None          # whatever the export step measured, shown as is
    serving: {mode: "mqtt" | "local-batcher", broker, note, benchmark,
              runs: {name: {transactions, decisions, lost, seconds, throughput_tps,
                            latency_ms: {p50, p99, n}, max_batch}}}
    alerts: [{id, score, label, pattern, why: [{event, role, entity, drop}]}]
    seconds: {step: wall seconds, ..., total}
    skipped: [str]                       # what the run did not do, and why

``arrays`` (``scores.npz``): ``y`` (int8 labels of the test split), ``pattern``
(pattern names' codes), ``score/<method>`` (float scores of each method on the
test split), ``latency/<run>`` (end-to-end ms of each served transaction).

Figures use the Agg canvas on :class:`matplotlib.figure.Figure`, never pyplot
(no global backend switch, nothing leaks), 12 inches at 100 dpi like the TEP
sample's.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BANNER = (
    "SYNTHETIC DATA — a generated transaction stream with injected fraud patterns; "
    "no real customer, account or payment. Numbers say how the models separate these "
    "patterns, not how they would do on a bank's traffic."
)
DPI, WIDTH_IN = 100, 12.0
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf")
_NONE = "–"
Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Table:
    """A table of strings: ``columns`` headers and ``rows`` of as many cells."""

    columns: list[str]
    rows: list[list[str]]

    def __post_init__(self) -> None:
        for n, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table row {n} has {len(row)} cells, not {len(self.columns)}")


@dataclass(frozen=True)
class Section:
    """One part of the report: prose (paragraphs, ``- `` bullets), a table, images."""

    heading: str
    text: str = ""
    table: Table | None = None
    images: list[str] = field(default_factory=list)  # file names inside the report folder


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell; missing or NaN as a dash."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return _NONE
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    return f"{float(v):.{digits}f}"


# -- plots -------------------------------------------------------------------------------


def _figure(height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()
    return path


def plot_pr_curves(arrays: Arrays, methods: Sequence[str], path: Path, title: str) -> Path:
    """Precision-recall curves of ``methods`` on the test split, PR-AUC in the legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y = np.asarray(arrays["y"]).astype(int)
    fig = _figure(6.0)
    ax = fig.subplots()
    for i, m in enumerate(methods):
        s = np.asarray(arrays[f"score/{m}"], dtype=np.float64)
        p, r, _ = precision_recall_curve(y, s)
        ap = average_precision_score(y, s)
        ax.plot(r, p, color=_COLOURS[i % len(_COLOURS)], lw=1.6, label=f"{m} (PR-AUC {ap:.3f})")
    ax.axhline(y.mean(), color="#999999", ls=":", lw=1.0, label=f"prevalence {y.mean():.2%}")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.grid(color="#eeeeee")
    ax.legend(fontsize=10, loc="upper right")
    fig.suptitle(title, fontsize=14)
    return _save(fig, path)


def plot_pattern_recall(results: Mapping[str, Any], methods: Sequence[str], path: Path) -> Path:
    """Grouped bars: recall at 1 % FPR per fraud pattern (and overall) for each method."""
    metrics = results["metrics"]
    patterns = list(metrics[methods[0]]["per_pattern"])
    groups = ["overall", *patterns]
    fig = _figure(5.5)
    ax = fig.subplots()
    x = np.arange(len(groups), dtype=float)
    width = 0.84 / len(methods)
    for i, m in enumerate(methods):
        per = metrics[m]["per_pattern"]
        vals = [metrics[m]["recall_at_1pct_fpr"]] + [
            per.get(p, {}).get("recall_at_1pct_fpr", math.nan) for p in patterns
        ]
        shown = [0.0 if v is None or math.isnan(v) else 100.0 * v for v in vals]
        bars = ax.bar(x - 0.42 + width * (i + 0.5), shown, width, label=m, zorder=2)
        for b in bars:
            b.set_color(_COLOURS[i % len(_COLOURS)])
        for b, v in zip(bars, shown, strict=True):
            ax.text(b.get_x() + b.get_width() / 2, v + 1, f"{v:.0f}", ha="center", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=11)
    ax.set(ylim=(0, 110), ylabel="recall at 1 % false-positive rate (%)")
    ax.grid(axis="y", color="#eeeeee", zorder=1)
    ax.legend(
        fontsize=10,
        ncols=min(4, len(methods)),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    fig.suptitle("Recall at 1 % FPR per fraud pattern (SYNTHETIC test period)", fontsize=14)
    return _save(fig, path)


def plot_latency(arrays: Arrays, runs: Sequence[str], path: Path, title: str) -> Path:
    """Histogram of end-to-end latency per served transaction, one colour per run."""
    fig = _figure(4.5)
    ax = fig.subplots()
    values = {r: np.asarray(arrays[f"latency/{r}"], dtype=np.float64) for r in runs}
    top = max((float(np.percentile(v, 99.5)) for v in values.values() if v.size), default=1.0)
    # log-spaced: a saturated run's seconds and a keeping-up run's milliseconds on one axis
    low = min((float(np.percentile(v, 0.5)) for v in values.values() if v.size), default=0.1)
    bins = np.geomspace(max(low, 0.01), max(top, low * 10, 0.1), 60)
    for i, (r, v) in enumerate(values.items()):
        if not v.size:
            continue
        p50, p99 = np.percentile(v, [50, 99])
        colour = _COLOURS[i % len(_COLOURS)]
        ax.hist(
            np.clip(v, bins[0], bins[-1]),
            bins=bins,
            alpha=0.55,
            color=colour,
            label=f"{r}: p50 {p50:.2f} ms, p99 {p99:.2f} ms (n={v.size:,})",
        )
        ax.axvline(p99, color=colour, ls="--", lw=1.1)
    ax.set_xscale("log")
    ax.set(xlabel="end-to-end latency per transaction (ms, log scale; dashed: p99)")
    ax.set(ylabel="transactions")
    ax.grid(color="#eeeeee")
    ax.legend(fontsize=10)
    fig.suptitle(title, fontsize=14)
    return _save(fig, path)


# -- tables ------------------------------------------------------------------------------


def must_show_table(results: Mapping[str, Any]) -> Table:
    """The issue's table: the GNN vs the baseline, overall and per pattern, with the gaps."""
    gnn, base = results["metrics"][results["gnn"]], results["metrics"][results["baseline"]]
    rows = []
    for name, g, b in [("overall", gnn, base)] + [
        (p, gnn["per_pattern"][p], base["per_pattern"].get(p, {})) for p in gnn["per_pattern"]
    ]:
        gp, bp = g.get("pr_auc"), b.get("pr_auc")
        gr, br = g.get("recall_at_1pct_fpr"), b.get("recall_at_1pct_fpr")
        n = g.get("positives", g.get("n_fraud"))
        rows.append(
            [name, fmt(n), fmt(gp), fmt(bp), _diff(gp, bp), fmt(gr), fmt(br), _diff(gr, br)]
        )
    return Table(
        [
            "test period",
            "fraud tx",
            "PR-AUC GNN",
            "PR-AUC baseline",
            "Δ",
            "recall@1%FPR GNN",
            "recall@1%FPR baseline",
            "Δ",
        ],
        rows,
    )


def _diff(a: Any, b: Any) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return _NONE
    return f"{a - b:+.3f}"


def methods_table(results: Mapping[str, Any]) -> Table:
    """Every method overall: PR-AUC, ROC-AUC, recall at 1 % FPR."""
    rows = [
        [m, fmt(v.get("pr_auc")), fmt(v.get("roc_auc")), fmt(v.get("recall_at_1pct_fpr"))]
        for m, v in results["metrics"].items()
    ]
    return Table(["method", "PR-AUC", "ROC-AUC", "recall@1%FPR"], rows)


def engines_table(results: Mapping[str, Any]) -> Table:
    """Each INT8 engine against the FP32 PyTorch model it was exported from."""
    rows = []
    for m, e in results.get("engines", {}).items():
        pr = results["metrics"].get(m, {}).get("pr_auc")
        gap = e.get("pr_auc_minus_fp32")
        ok = _NONE if gap is None else ("yes" if abs(gap) <= 0.01 else "NO")
        rows.append(
            [
                m,
                str(e.get("profile", _NONE)),
                str(e.get("backend")),
                str(e.get("precision")),
                fmt(pr),
                _diff(gap, 0.0),
                ok,
            ]
        )
    return Table(
        ["engine", "profile", "backend", "precision", "PR-AUC", "Δ vs FP32", "≤ 0.01"], rows
    )


def serving_table(results: Mapping[str, Any]) -> Table:
    """Latency and throughput per serving run (batched, unbatched)."""
    rows = []
    for name, r in results.get("serving", {}).get("runs", {}).items():
        lat = r.get("latency_ms", {})
        rows.append(
            [
                name,
                fmt(r.get("transactions")),
                fmt(r.get("decisions")),
                fmt(r.get("lost")),
                fmt(r.get("seconds"), 1),
                fmt(r.get("throughput_tps"), 0),
                fmt(lat.get("p50"), 2),
                fmt(lat.get("p99"), 2),
            ]
        )
    return Table(
        ["run", "transactions", "decisions", "lost", "s", "tx/s", "p50 ms", "p99 ms"], rows
    )


def alerts_text(results: Mapping[str, Any], limit: int = 3) -> str:
    """A few alerts with the neighbour events that pushed their score up most (``why``)."""
    lines = []
    for a in results.get("alerts", [])[:limit]:
        truth = f"fraud: {a.get('pattern')}" if a.get("label") else "legitimate"
        lines.append(f"- `{a['id']}` score {fmt(a.get('score'))} (truth: {truth})")
        for w in a.get("why", [])[:4]:
            lines.append(
                f"- ↳ event `{w.get('event')}` via {w.get('role')} `{w.get('entity')}`: "
                f"score drops {fmt(w.get('drop'))} without it"
            )
    return "\n".join(lines) if lines else "No alert was raised on the served stream."


# -- the report --------------------------------------------------------------------------


def sections(results: Mapping[str, Any], images: Mapping[str, str]) -> list[Section]:
    """The report's sections; ``images`` maps ``pr``/``patterns``/``latency`` to PNG names."""
    th, data, srv = (
        results.get("threshold", {}),
        results.get("data", {}),
        results.get("serving", {}),
    )
    out = [
        Section(
            "GNN vs baseline on the test period",
            f"`{results['gnn']}` (exported) against `{results['baseline']}` on the same per-"
            "transaction and per-entity features, on the last 20 % of the stream (time split, "
            f"no future leakage): {fmt(data.get('splits', {}).get('test', {}).get('n'))} "
            "transactions. Per pattern: that pattern's fraud vs all legitimate transactions.",
            must_show_table(results),
            [images[k] for k in ("pr", "patterns") if k in images],
        ),
        Section(
            "Every method",
            "PyTorch FP32 of both GNNs, each INT8 engine, the baseline.",
            methods_table(results),
        ),
        Section(
            "Engines vs FP32 PyTorch",
            "Each engine of the bundle (forced in turn through `edge_sdk.Runtime`), its PR-AUC "
            "from its own scores on the test subgraphs; the must-show bound is 0.01 for INT8. "
            + _parity_text(results.get("litert_parity")),
            engines_table(results),
        ),
        Section(
            "Alert budget and threshold",
            f"Threshold {fmt(th.get('value'), 4)} chosen on {th.get('fitted_on', 'validation')} "
            f"so that {100 * float(th.get('budget', 0.01)):.1f} % of transactions raise an alert. "
            f"On test: {100 * float(th.get('test_alert_rate', math.nan)):.2f} % alerted, "
            f"precision {fmt(th.get('test_precision'))}, recall {fmt(th.get('test_recall'))}.",
        ),
        Section(
            "Serving: latency and throughput",
            f"Mode: **{srv.get('mode', 'not run')}**"
            + (f" ({srv['broker']})" if srv.get("broker") else "")
            + ". Latency: transaction published → decision received (subgraph build + "
            "inference + transport). "
            + _ratio_text(srv)
            + str(srv.get("note", ""))
            + (
                f" Sustained 60 s throughput and p99 are measured by the node benchmark "
                f"(`{srv['benchmark']}`), not by this short run."
                if srv.get("benchmark")
                else ""
            ),
            serving_table(results),
            [images["latency"]] if "latency" in images else [],
        ),
        Section("Alerts and why", alerts_text(results)),
        Section(
            "Run",
            "Step timings (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in results.get("seconds", {}).items())
            + _export_text(results.get("export") or {})
            + ". Machine: "
            + ", ".join(f"{k} {v}" for k, v in results.get("machine", {}).items())
            + ".\n\n"
            + (
                "Skipped:\n\n" + "\n".join(f"- {s}" for s in results["skipped"])
                if results.get("skipped")
                else "Nothing was skipped."
            ),
        ),
    ]
    return out


def _export_text(ex: Mapping[str, Any]) -> str:
    """The export's own split of its seconds, and the INT8 routes it did not build."""
    steps = {**(ex.get("steps_s") or {}), **(ex.get("engines_s") or {})}
    text = "; export: " + ", ".join(f"{k} {fmt(v, 1)}" for k, v in steps.items()) if steps else ""
    routes = ex.get("int8_routes")
    return text + (f"; INT8 routes limited to {routes}" if isinstance(routes, dict) else "")


def _ratio_text(srv: Mapping[str, Any]) -> str:
    """Batched vs unbatched throughput, with what an equal offered rate means."""
    runs = srv.get("runs", {})
    b, u = runs.get("batched", {}), runs.get("unbatched", {})
    if not b.get("throughput_tps") or not u.get("throughput_tps"):
        return ""
    return (
        f"Batched / unbatched throughput: {b['throughput_tps'] / u['throughput_tps']:.2f}x at the "
        "same offered rate (where the unbatched node keeps up, both match the offered rate and "
        "batching shows in latency only). "
    )


def _parity_text(parity: Any) -> str:
    """The scalar findings of the LiteRT parity check (its per-group detail stays in JSON)."""
    if not parity:
        return "LiteRT parity: not measured in this run."
    shown = {
        k: v for k, v in dict(parity).items() if isinstance(v, str | int | float) and k != "note"
    }
    items = [f"{k} {fmt(v, 6) if isinstance(v, float) else v}" for k, v in shown.items()]
    return "LiteRT parity on subgraphs of varying size: " + ", ".join(items) + "."


def _md_table(t: Table) -> list[str]:
    cell = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    return [
        "| " + " | ".join(cell(c) for c in t.columns) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(t.columns) - 1)) + "|",
        *("| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows),
    ]


def render_markdown(title: str, parts: Sequence[Section]) -> str:
    lines = [f"# {title}", "", f"> **⚠ {BANNER}**", ""]
    for s in parts:
        lines += [f"## {s.heading}", ""]
        if s.text.strip():
            lines += [s.text.strip(), ""]
        if s.table is not None:
            lines += [*_md_table(s.table), ""]
        lines += [x for img in s.images for x in (f"![{Path(img).stem}]({img})", "")]
    return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .6em}"
    "td{text-align:right}td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}"
    ".banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em 1em;font-weight:bold}"
    "code{background:#f3f3f3;padding:0 .2em}"
)


def render_html(title: str, parts: Sequence[Section]) -> str:
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="banner">⚠ {html.escape(BANNER)}</p>',
    ]
    for s in parts:
        out.append(f"<h2>{html.escape(s.heading)}</h2>")
        for block in re.split(r"\n\s*\n", s.text.strip()):
            lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
            if lines and all(ln.startswith("- ") for ln in lines):
                out += ["<ul>", *(f"<li>{_inline(ln[2:])}</li>" for ln in lines), "</ul>"]
            elif lines:
                out.append(f"<p>{_inline(' '.join(lines))}</p>")
        if s.table is not None:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in s.table.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                for r in s.table.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        out += [
            f'<p><img src="{html.escape(i)}" alt="{html.escape(Path(i).stem)}"></p>'
            for i in s.images
        ]
    return "\n".join([*out, "</body></html>"]) + "\n"


def write_report(out: Path, results: Mapping[str, Any], arrays: Arrays) -> Path:
    """Draw the plots and write ``report.md`` / ``report.html`` into ``out``; returns the .md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    gnns = [m for m in results["metrics"] if m.endswith("(PyTorch)")]
    curves = [m for m in [*gnns, results["baseline"]] if f"score/{m}" in arrays]
    if curves and "y" in arrays:
        title = "Precision-recall on the SYNTHETIC test period"
        images["pr"] = plot_pr_curves(arrays, curves, out / "pr_curves.png", title).name
    bars = [m for m in [results["gnn"], results["baseline"]] if m in results["metrics"]]
    if bars and results["metrics"][bars[0]].get("per_pattern"):
        images["patterns"] = plot_pattern_recall(results, bars, out / "pattern_recall.png").name
    runs = [r for r in results.get("serving", {}).get("runs", {}) if f"latency/{r}" in arrays]
    if runs:
        title = "End-to-end latency per transaction (SYNTHETIC stream)"
        images["latency"] = plot_latency(arrays, runs, out / "latency.png", title).name
    parts = sections(results, images)
    title = "Fraud detection on transaction graphs at the edge (SYNTHETIC)"
    md = out / "report.md"
    md.write_text(render_markdown(title, parts), encoding="utf-8")
    (out / "report.html").write_text(render_html(title, parts), encoding="utf-8")
    return md
