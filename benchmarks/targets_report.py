"""Markdown report of ``benchmarks/targets.py`` results (``targets.json`` -> ``targets.md``)."""

from __future__ import annotations

from typing import Any

from _common import meta_line


def _mb(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _ms(stats: dict[Any, dict[str, float]], t: int, key: str) -> str:
    s = stats.get(t) or stats.get(str(t))
    if not s:
        return "–"
    v = s[key]
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def model_section(res: dict[str, Any]) -> list[str]:
    cora = res["model"] != "sensor"
    lines = [f"## {res['title']}", "", res["workload"] + ".", ""]
    if cora:
        lines += [
            f"PyTorch test accuracy {100 * res['pytorch_test_acc']:.1f} % (best validation "
            f"{100 * res['training']['best_val_acc']:.1f} % at epoch "
            f"{res['training']['best_epoch']}). Export took {res['export_s']:.0f} s.",
            "",
            "| backend | precision | layout | median ms 1t | p99 1t | median 2t | p99 2t | "
            "size | accuracy | Δ pp |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            f"Untrained model: no accuracy; the last column is max |out − ref| / max |ref| "
            f"over 64 random windows against PyTorch. Export took {res['export_s']:.0f} s.",
            "",
            "| backend | precision | layout | median ms 1t | p99 1t | median 2t | p99 2t | "
            "size | accuracy | rel. error vs PyTorch |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    ref = res["pytorch"]
    lines.append(
        f"| PyTorch eager (reference) | fp32 | – | {_ms(ref, 1, 'median_ms')} | "
        f"{_ms(ref, 1, 'p99_ms')} | {_ms(ref, 2, 'median_ms')} | {_ms(ref, 2, 'p99_ms')} | "
        f"{_mb(res['pytorch_param_bytes'])} | "
        + (f"{100 * res['pytorch_test_acc']:.1f} % | 0 |" if cora else "n/a | 0 |")
    )
    for r in res["rows"]:
        st = {int(k): v for k, v in r["latency_ms"].items()}
        if cora:
            acc = f"{100 * r['accuracy']:.1f} %" if r["accuracy"] is not None else "–"
            last = f"{r['delta_pp']:+.1f}" if r["delta_pp"] is not None else "–"
        else:
            acc = "n/a"
            last = (
                f"{r['rel_error_vs_pytorch']:.1e}" if r["rel_error_vs_pytorch"] is not None else "–"
            )
        backend = r["backend"] + (" (not built, see below)" if r["path"] is None else "")
        lines.append(
            f"| {backend} | {r['precision']} | {r['layout']} | {_ms(st, 1, 'median_ms')} | "
            f"{_ms(st, 1, 'p99_ms')} | {_ms(st, 2, 'median_ms')} | {_ms(st, 2, 'p99_ms')} | "
            f"{_mb(r['size_bytes'])} | {acc} | {last} |"
        )
    notes = [r for r in res["rows"] if r["note"]]
    if notes:
        lines.append("")
        lines += [f"- {r['backend']} {r['precision']} {r['layout']}: {r['note']}" for r in notes]
    # LiteRT NHWC vs native, side by side
    lit = {
        (r["precision"].split()[0], r["layout"]): r
        for r in res["rows"]
        if r["backend"] == "litert" and r["path"]
    }
    lines += [
        "",
        "LiteRT layouts side by side (NHWC / native median; < 1 means NHWC faster):",
        "",
        "| precision | native 1t | NHWC 1t | ratio 1t | native 2t | NHWC 2t | ratio 2t |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in ("fp32", "int8"):
        n, h = lit.get((p, "native")), lit.get((p, "nhwc"))
        if not n or not h or n["path"] == h["path"]:
            lines.append(f"| {p} | – | – | – | – | – | – |")
            continue
        cells = []
        for t in ("1", "2"):
            a, b = n["latency_ms"][t]["median_ms"], h["latency_ms"][t]["median_ms"]
            cells += [f"{a:.3f}", f"{b:.3f}", f"**{b / a:.2f}**"]
        lines.append(f"| {p} | " + " | ".join(cells[:3]) + " | " + " | ".join(cells[3:]) + " |")
    lines += ["", "What the export chose per profile (`manifest.targets`):", ""]
    for c in res["choices"]:
        lines.append(
            f"- `{c['profile']}`: {c['artifact'] or 'nothing'} "
            f"({c['precision'] or '–'}, {c['layout']}): {c['reason']}"
        )
    lines.append("")
    return lines


def render_md(report: dict[str, Any]) -> str:
    """The Markdown report of a result (``targets.json``)."""
    meta = report["meta"]
    lines = [
        "# Per-target compilation: backend x precision x layout",
        "",
        meta_line(meta),
        "",
        "Timings are on a **shared 2-core VM** (other work ran alongside; CPU features in the"
        " line above): read ratios between rows, not absolute numbers. Rows are timed round-"
        "robin in blocks (each row runs 6 consecutive calls for Cora, 50 for the sensor "
        "model, the first 1 / 10 not counted, then the next row, round after round), so every"
        " row saw the same background load and no engine's spinning worker threads slowed "
        "another's calls. Median and p99 over the counted calls of each row at 1 and 2 intra-"
        "op threads (Cora: 60 calls, so p99 is close to the maximum). One request = the full "
        "graph (batch 1) through `edge_sdk.Runtime.infer`; PyTorch eager runs the original "
        "module (sparse message passing) on the same input. Size = artifact file(s) incl. "
        "companions (OpenVINO .bin); the PyTorch row gives the parameter bytes. LiteRT INT8 "
        "is the first flavour that passes the accuracy gate, named in the precision column: "
        "full-integer, int16 activations (16x8), or weights-only (dynamic range), all with "
        "float32 I/O. At 2 threads on 2 shared cores, engines whose parallel regions wait for"
        " every worker (PyTorch's OpenMP above all) lose the most when the other core is "
        "busy: a 2-thread row far slower than its 1-thread row is that contention, not the "
        "engine.",
        "",
    ]
    for res in report["models"]:
        lines += model_section(res)
    lines += [
        f"Total run time {meta['total_s'] / 60:.1f} min. Reproduce with "
        f"`python benchmarks/targets.py` (`--quick` for a smoke run).",
        "",
    ]
    return "\n".join(lines)
