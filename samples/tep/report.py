"""Plots and the Markdown (and HTML) report of the TEP sample.

Scores are :class:`pca.RunScore` objects (``detection_rate``,
``false_alarm_rate``, ``delay_samples``, ``n_faulty``, ``n_normal``), grouped as
``{method: {fault: RunScore}}`` where fault 0 is the normal test run
(``d00_te.dat``) and methods are display names ("GNN INT8 OpenVINO", "PCA T²").

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas, never through ``pyplot``: nothing is registered with pyplot's figure
manager, so no figure can leak and no global backend is switched under the
caller's feet. Every figure is 12 inches wide saved at 100 dpi (1200 px).

The HTML file is rendered from the same sections as the Markdown (headings,
paragraphs, bullet lists, tables, images), with no dependency beyond the
standard library.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

HARD_FAULTS = (3, 9, 15)
SAMPLE_MINUTES = 3.0
BANNER = (
    "SYNTHETIC DATA — not the Tennessee Eastman process; numbers say nothing about the GNN on TEP"
)
#: More methods than this make grouped bars unreadable at 1200 px.
MAX_METHODS = 6
DPI = 100
WIDTH_IN = 12.0
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_HARD_SHADE = "#e6e6e6"
_NONE = "–"


class ScoreLike(Protocol):
    """What the plots read from a ``pca.RunScore``."""

    fault: int
    detection_rate: float
    false_alarm_rate: float
    delay_samples: int | None
    n_faulty: int
    n_normal: int


class SummaryLike(Protocol):
    """What :func:`method_table` reads from a ``pca.Summary``."""

    mean_detection: float
    mean_detection_hard: float
    far_normal: float
    far_pre_onset: float
    mean_delay_samples: float


Scores = Mapping[str, Mapping[int, ScoreLike]]


@dataclass(frozen=True)
class Trace:
    """One monitored run for :func:`plot_traces`.

    Attributes:
        fault: The run's fault id (0 for normal operation).
        t: ``[k]`` sample index of each score (a window's last sample).
        score: ``[k]`` the anomaly score (T², SPE, the GNN's score...).
        threshold: The alarm threshold on ``score``.
        onset: First faulty sample, or None for a normal run.
        alerts: Sample indices where an alert was raised (e.g. by the node).
        label: What the score is ("GNN INT8 OpenVINO, anomaly score").
    """

    fault: int
    t: np.ndarray
    score: np.ndarray
    threshold: float
    onset: int | None
    alerts: list[int]
    label: str


@dataclass(frozen=True)
class Table:
    """A table of strings: ``columns`` headers and ``rows`` of as many cells."""

    columns: list[str]
    rows: list[list[str]]

    def __post_init__(self) -> None:
        for n, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table row {n} has {len(row)} cells, expected {len(self.columns)} "
                    f"({', '.join(self.columns)})"
                )


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        heading: The section's title.
        text: Markdown-ish prose: paragraphs split by blank lines, ``- `` bullets,
            ``**bold**`` and ```code``` (the HTML renderer understands those).
        table: An optional table, shown after the text.
        images: PNGs shown after the table; absolute, or relative to the report folder.
    """

    heading: str
    text: str = ""
    table: Table | None = None
    images: list[Path] = field(default_factory=list)


# -- helpers -----------------------------------------------------------------------------


def _figure(height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself: savefig needs a canvas, pyplot is never involved
    return fig


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()  # drop the artists now rather than when the garbage collector gets to them
    return path


def _methods(scores: Scores) -> list[str]:
    methods = list(scores)
    if not methods:
        raise ValueError("no methods to plot (scores is empty)")
    if len(methods) > MAX_METHODS:
        raise ValueError(
            f"{len(methods)} methods: at most {MAX_METHODS} fit one readable plot "
            f"({', '.join(methods)}); plot a subset"
        )
    return methods


def _faults(scores: Scores) -> list[int]:
    faults = sorted({f for per in scores.values() for f in per if f != 0})
    if not faults:
        raise ValueError("no fault runs in scores (only fault 0, or nothing)")
    return faults


def _finite(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def _pct(v: float | None) -> str:
    return f"{100.0 * v:.1f}" if v is not None and _finite(v) else _NONE


def _far_pre_onset(per: Mapping[int, ScoreLike]) -> float:
    """Alarm share over the pre-onset samples of every fault run (weighted by samples)."""
    runs = [s for f, s in per.items() if f != 0 and s.n_normal]
    total = sum(s.n_normal for s in runs)
    return sum(s.false_alarm_rate * s.n_normal for s in runs) / total if total else math.nan


def _mark_hard(ax: Any, faults: list[int], positions: np.ndarray) -> None:
    """Grey band behind each hard fault and a grey ``N*`` tick label."""
    for f, x in zip(faults, positions, strict=True):
        if f in HARD_FAULTS:
            ax.axvspan(x - 0.5, x + 0.5, color=_HARD_SHADE, zorder=0, lw=0)
    ax.set_xticks(positions)
    ax.set_xticklabels([f"{f}*" if f in HARD_FAULTS else str(f) for f in faults], fontsize=11)
    for label, f in zip(ax.get_xticklabels(), faults, strict=True):
        if f in HARD_FAULTS:
            label.set_color("#777777")
    ax.set_xlim(positions[0] - 0.6, positions[-1] + 0.6)


def _hard_handle() -> Any:
    from matplotlib.patches import Patch

    return Patch(facecolor=_HARD_SHADE, edgecolor="none", label="* hard fault (3, 9, 15)")


# -- plots -------------------------------------------------------------------------------


def plot_detection(scores: Scores, path: Path, title: str) -> Path:
    """Per-fault detection rate of each method, and each method's false-alarm rates.

    Top panel: grouped bars, one group per fault (hard faults 3, 9, 15 on a grey
    band with grey ``N*`` labels), one bar per method, plus a dashed line at each
    method's average detection rate over the other faults. Bottom panel: each
    method's false-alarm rate on ``d00_te`` (fault 0) and before the onset of the
    fault runs, against the 5 % target.

    Args:
        scores: ``{method: {fault: RunScore}}`` (fault 0: the normal test run).
        path: The PNG to write.
        title: The figure's title.

    Returns:
        ``path``.

    Raises:
        ValueError: No methods, more than :data:`MAX_METHODS`, or no fault runs.
    """
    methods, faults = _methods(scores), _faults(scores)
    fig = _figure(8.0)
    top, bottom = fig.subplots(2, 1, height_ratios=[3.0, 1.25])
    x = np.arange(len(faults), dtype=float)
    width = 0.84 / len(methods)
    for m, method in enumerate(methods):
        per = scores[method]
        values = [
            100.0 * per[f].detection_rate if f in per and _finite(per[f].detection_rate) else 0.0
            for f in faults
        ]
        colour = _COLOURS[m]
        top.bar(x - 0.42 + width * (m + 0.5), values, width, color=colour, label=method, zorder=2)
        easy = [v for f, v in zip(faults, values, strict=True) if f not in HARD_FAULTS and f in per]
        if easy:
            top.axhline(float(np.mean(easy)), color=colour, ls="--", lw=1.3, zorder=3)
    _mark_hard(top, faults, x)
    top.set_ylim(0, 105)
    top.set_ylabel("detection rate after onset (%)", fontsize=11)
    top.set_xlabel("fault", fontsize=11)
    top.grid(axis="y", color="#dddddd", zorder=1)
    top.tick_params(axis="y", labelsize=10)
    fig.suptitle(title, fontsize=14)
    from matplotlib.lines import Line2D

    handles, _ = top.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="#555555", ls="--", label="mean excl. 3, 9, 15"),
        _hard_handle(),
    ]
    top.legend(
        handles=handles,
        fontsize=10,
        ncols=min(4, len(handles)),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )

    # false alarms: two bars per method (normal test run, pre-onset of fault runs)
    y = np.arange(len(methods), dtype=float)
    far_normal = [
        100.0 * scores[m][0].false_alarm_rate if 0 in scores[m] else math.nan for m in methods
    ]
    far_pre = [100.0 * _far_pre_onset(scores[m]) for m in methods]
    for offset, vals, hatch, name in (
        (-0.2, far_normal, "", "on d00_te (normal run)"),
        (0.2, far_pre, "//", "before onset (fault runs)"),
    ):
        shown = [0.0 if math.isnan(v) else v for v in vals]
        bars = bottom.barh(
            y + offset,
            shown,
            0.38,
            color=_COLOURS[: len(methods)],
            hatch=hatch,
            edgecolor="white",
            label=name,
            zorder=2,
        )
        for bar, v in zip(bars, vals, strict=True):
            text = "n/a" if math.isnan(v) else f"{v:.1f} %"
            bottom.text(
                bar.get_width() + 0.1,
                bar.get_y() + bar.get_height() / 2,
                text,
                va="center",
                fontsize=9,
            )
    finite = [v for v in far_normal + far_pre if not math.isnan(v)]
    bottom.set_xlim(0, max(6.5, 1.25 * max(finite, default=0.0)))
    bottom.axvline(5.0, color="#d62728", ls=":", lw=1.3, zorder=3)
    bottom.text(5.05, len(methods) - 0.45, "5 % target", color="#d62728", fontsize=9)
    bottom.set_yticks(y)
    bottom.set_yticklabels(methods, fontsize=10)
    bottom.invert_yaxis()
    bottom.set_xlabel(
        "false-alarm rate (%)  ·  plain: d00_te  ·  hatched: before onset", fontsize=10
    )
    bottom.grid(axis="x", color="#dddddd", zorder=1)
    return _save(fig, path)


def plot_delay(scores: Scores, path: Path, title: str) -> Path:
    """Detection delay (minutes, one sample = 3 min) per fault and method.

    Lollipops (a stem from zero to a dot) so that a delay of 0 stays visible; a
    fault a method never detects gets a cross in the "not detected" band at
    the top.

    Args:
        scores: ``{method: {fault: RunScore}}``.
        path: The PNG to write.
        title: The figure's title.

    Returns:
        ``path``.

    Raises:
        ValueError: No methods, more than :data:`MAX_METHODS`, or no fault runs.
    """
    methods, faults = _methods(scores), _faults(scores)

    def minutes(score: ScoreLike) -> float | None:
        samples = score.delay_samples
        return None if samples is None else float(samples) * SAMPLE_MINUTES

    delays = {m: {f: minutes(scores[m][f]) for f in faults if f in scores[m]} for m in methods}
    seen = [d for per in delays.values() for d in per.values() if d is not None]
    top = max(seen, default=60.0)
    top = max(top, 30.0)
    nd_level = top * 1.15  # the "not detected" band sits above every measured delay
    fig = _figure(6.0)
    ax = fig.subplots()
    x = np.arange(len(faults), dtype=float)
    step = 0.8 / len(methods)
    undetected_any = False
    for m, method in enumerate(methods):
        colour = _COLOURS[m]
        xs = x - 0.4 + step * (m + 0.5)
        det_x, det_y, nd_x = [], [], []
        for xi, f in zip(xs, faults, strict=True):
            if f not in delays[method]:
                continue
            d = delays[method][f]
            if d is None:
                nd_x.append(xi)
            else:
                det_x.append(xi)
                det_y.append(d)
        ax.vlines(det_x, 0, det_y, color=colour, lw=2.0, zorder=2)
        ax.scatter(det_x, det_y, color=colour, s=28, zorder=3, label=method)
        if nd_x:
            undetected_any = True
            ax.scatter(nd_x, [nd_level] * len(nd_x), marker="x", color=colour, s=45, zorder=3)
    _mark_hard(ax, faults, x)
    ax.axhline(top * 1.07, color="#999999", lw=0.8, ls=":")
    ax.set_ylim(0, top * 1.23)
    ticks = [t for t in ax.get_yticks() if 0 <= t <= top * 1.02]
    ax.set_yticks([*ticks, nd_level])
    ax.set_yticklabels([f"{t:g}" for t in ticks] + ["not\ndetected"], fontsize=10)
    ax.set_ylabel("detection delay (minutes after onset)", fontsize=11)
    ax.set_xlabel("fault", fontsize=11)
    ax.grid(axis="y", color="#eeeeee", zorder=1)
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    if undetected_any:
        handles.append(Line2D([], [], marker="x", color="#555555", ls="", label="not detected"))
    handles.append(_hard_handle())
    ax.legend(
        handles=handles,
        fontsize=10,
        ncols=min(4, len(handles)),
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    fig.suptitle(title, fontsize=14)
    return _save(fig, path)


def plot_traces(traces: Mapping[int, Trace], path: Path, title: str) -> Path:
    """One small panel per run: the score over time, threshold, onset and alerts.

    A score that climbs far above its threshold (T² on a big fault) is drawn on
    a log axis so the pre-onset part stays readable.

    Args:
        traces: ``{key: Trace}`` (usually keyed by fault), drawn in key order.
        path: The PNG to write.
        title: The figure's title.

    Returns:
        ``path``.

    Raises:
        ValueError: No traces, or a trace whose ``t`` and ``score`` differ in length.
    """
    if not traces:
        raise ValueError("no traces to plot")
    items = [traces[k] for k in sorted(traces)]
    for tr in items:
        if np.shape(tr.t) != np.shape(tr.score):
            raise ValueError(
                f"trace of fault {tr.fault}: t {np.shape(tr.t)} and score {np.shape(tr.score)} "
                "differ in shape"
            )
    ncols = 1 if len(items) == 1 else 2 if len(items) <= 8 else 3
    nrows = math.ceil(len(items) / ncols)
    fig = _figure(1.2 + 2.6 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, tr in zip(axes, items, strict=False):
        t = np.asarray(tr.t, dtype=float)
        score = np.asarray(tr.score, dtype=float)
        ax.plot(t, score, color="#1f77b4", lw=1.0, label="score")
        ax.axhline(tr.threshold, color="#d62728", ls="--", lw=1.1, label="threshold")
        if tr.onset is not None:
            ax.axvline(tr.onset, color="#333333", ls=":", lw=1.3, label="fault onset")
        if tr.alerts and t.size:
            at = np.asarray(tr.alerts, dtype=float)
            order = np.argsort(t)
            ax.scatter(
                at,
                np.interp(at, t[order], score[order]),
                marker="v",
                color="#ff7f0e",
                s=22,
                zorder=3,
                label="alert",
            )
        positive = score[np.isfinite(score)]
        if (
            positive.size
            and tr.threshold > 0
            and positive.min() > 0
            and positive.max() > 50 * tr.threshold
        ):
            ax.set_yscale("log")
        n_alerts = len(tr.alerts)
        ax.set_title(
            f"fault {tr.fault}: {tr.label} ({n_alerts} alert{'s' if n_alerts != 1 else ''})",
            fontsize=10,
        )
        ax.set_xlabel("sample (3 min each)", fontsize=9)
        ax.tick_params(labelsize=9)
        ax.grid(color="#eeeeee")
    for ax in axes[len(items) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=14)
    return _save(fig, path)


# -- the table ---------------------------------------------------------------------------


def method_table(scores: Scores, summaries: Mapping[str, SummaryLike]) -> Table:
    """The sample's comparison table: one column per method.

    Rows: detection rate (%) per fault 1..21 (hard faults marked ``*``), then the
    average detection rate over the faults other than 3, 9, 15, over 3, 9, 15,
    the false-alarm rate on ``d00_te`` and before the onset (%), and the mean
    detection delay (minutes). Percentages have one decimal; ``–`` where a
    method has no value.

    Args:
        scores: ``{method: {fault: RunScore}}``.
        summaries: ``{method: pca.Summary}`` (from ``pca.summarize``).

    Raises:
        ValueError: A method in ``scores`` has no summary.
    """
    methods = list(scores)
    missing = [m for m in methods if m not in summaries]
    if missing:
        raise ValueError(f"no summary for {', '.join(missing)}")
    rows: list[list[str]] = []
    for f in _faults(scores):
        label = f"{f}*" if f in HARD_FAULTS else str(f)
        rows.append(
            [label]
            + [_pct(scores[m][f].detection_rate) if f in scores[m] else _NONE for m in methods]
        )
    for label, attr in (
        ("avg DR excl. 3, 9, 15", "mean_detection"),
        ("avg DR 3, 9, 15", "mean_detection_hard"),
        ("FAR d00_te", "far_normal"),
        ("FAR pre-onset", "far_pre_onset"),
    ):
        rows.append([label] + [_pct(getattr(summaries[m], attr)) for m in methods])
    delay_row = ["mean delay (min)"]
    for m in methods:
        d = summaries[m].mean_delay_samples
        delay_row.append(f"{d * SAMPLE_MINUTES:.1f}" if _finite(d) else _NONE)
    rows.append(delay_row)
    return Table(columns=["fault (DR %)", *methods], rows=rows)


# -- the report --------------------------------------------------------------------------


def _image_link(image: Path, out_dir: Path) -> str:
    """``image`` relative to ``out_dir`` with forward slashes; it must exist."""
    image = Path(image)
    full = image if image.is_absolute() else out_dir / image
    if not full.is_file():
        raise FileNotFoundError(f"report image not found: {full}")
    return Path(os.path.relpath(full.resolve(), out_dir.resolve())).as_posix()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(c) for c in table.columns) + " |"]
    # first column left (labels), the rest right-aligned (numbers)
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(table.columns) - 1)) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def _render_markdown(
    title: str, synthetic: bool, sections: Sequence[Section], out_dir: Path
) -> str:
    lines = [f"# {title}", ""]
    if synthetic:
        lines += [f"> **⚠ {BANNER}**", ""]
    for section in sections:
        lines += [f"## {section.heading}", ""]
        if section.text.strip():
            lines += [section.text.strip(), ""]
        if section.table is not None:
            lines += [*_md_table(section.table), ""]
        for image in section.images:
            link = _image_link(image, out_dir)
            lines += [f"![{Path(image).stem}]({link})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _text_html(text: str) -> list[str]:
    parts: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if lines and all(ln.startswith(("- ", "* ")) for ln in lines):
            parts.append("<ul>")
            parts += [f"<li>{_inline_html(ln[2:])}</li>" for ln in lines]
            parts.append("</ul>")
        elif lines:
            parts.append(f"<p>{_inline_html(' '.join(lines))}</p>")
    return parts


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1240px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
    "padding:.25em .6em}td{text-align:right}td:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%}.banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em 1em;"
    "font-weight:bold;font-size:1.15em}code{background:#f3f3f3;padding:0 .2em}"
)


def _render_html(title: str, synthetic: bool, sections: Sequence[Section], out_dir: Path) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if synthetic:
        parts.append(f'<p class="banner">⚠ {html.escape(BANNER)}</p>')
    for section in sections:
        parts.append(f"<h2>{html.escape(section.heading)}</h2>")
        parts += _text_html(section.text)
        if section.table is not None:
            head = "".join(f"<th>{html.escape(c)}</th>" for c in section.table.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in section.table.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        for image in section.images:
            link = html.escape(_image_link(image, out_dir), quote=True)
            alt = html.escape(Path(image).stem, quote=True)
            parts.append(f'<p><img src="{link}" alt="{alt}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: Path,
    *,
    title: str,
    synthetic: bool,
    sections: Sequence[Section],
    html_copy: bool = True,
) -> Path:
    """Write ``report.md`` (and ``report.html``) into ``out_dir``.

    Args:
        out_dir: The report folder (created if missing); image links are relative to it.
        title: The report's title.
        synthetic: The data came from the synthetic plant: the report then opens
            with the :data:`BANNER` warning.
        sections: The report's sections, in order.
        html_copy: Also write ``report.html`` with the same content.

    Returns:
        The path of ``report.md``.

    Raises:
        FileNotFoundError: A section's image does not exist (no broken links are written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # render both before writing either, so a missing image leaves no half report behind
    markdown = _render_markdown(title, synthetic, sections, out_dir)
    page = _render_html(title, synthetic, sections, out_dir) if html_copy else None
    md_path = out_dir / "report.md"
    md_path.write_text(markdown, encoding="utf-8")
    if page is not None:
        (out_dir / "report.html").write_text(page, encoding="utf-8")
    return md_path
