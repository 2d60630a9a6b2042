"""Markdown tables of a ``graph_scale.py`` run (kept apart so the script stays readable)."""

from __future__ import annotations

from typing import Any

from _common import meta_line

ENGINE_LABEL = {
    "ort-fp32": "ONNX Runtime FP32",
    "ort-int8": "ONNX Runtime INT8",
    "ov-fp32": "OpenVINO FP32",
    "ov-int8": "OpenVINO INT8",
    "litert-fp32": "LiteRT FP32",
    "litert-int8": "LiteRT INT8",
}


def _mb(b: float) -> str:
    return f"{b / 1e6:.2f}"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _err(v: float | None) -> str:
    return "–" if v is None else f"{v:.1e}"


def _why(r: dict[str, Any]) -> str:
    text = str(r.get("error") or r.get("reason") or "not built")
    return text.replace("|", "/").replace("\n", " ")[:160]


def scale_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Synthetic power-law graphs: static form, neighbour tables",
        "",
        "Each engine row and PyG eager run in their own process, timed in turn in blocks; "
        "*peak RSS* is that process's high-water mark (`VmHWM`), *ready* its RSS once "
        "imports and the input were loaded "
        "(so peak − ready is the model's and the engine's share). *× PyG* is PyG eager "
        "median / the row's median (above 1: faster than PyG). *size / budget* is the "
        "artifact against the model's weights + 8 bytes per edge. Errors are max |Δ| "
        "against PyG eager over all nodes and classes.",
        "",
        "| nodes | edges | model | engine | export s | size MB | size / budget | median ms "
        "| p99 ms | × PyG | peak RSS MB (ready) | RSS / PyG | max abs err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        g = row["graph"]
        head = f"| {g['nodes']:,} | {g['edges']:,} | {row['model']} "
        e = row["pyg_eager"]
        if "error" in e:
            lines.append(head + f"| PyG eager | | | | {_why(e)} | | | | | | |")
        else:
            lines.append(
                head + f"| **PyG eager** | – | – | – | {_ms(e['median_ms'])} | "
                f"{_ms(e['p99_ms'])} | 1.00x | {e['peak_rss_mb']:.0f} "
                f"({e['rss_ready_mb']:.0f}) | 1.00x | reference |"
            )
        exp = row["export"]
        if "error" in exp:
            lines.append(head + f"| export | failed: {_why(exp)} | | | | | | | | | |")
            continue
        for name, r in row["engines"].items():
            label = ENGINE_LABEL.get(name, name)
            if r.get("int8_flavour"):
                label += f" ({r['int8_flavour']})"
            if "median_ms" not in r:
                lines.append(head + f"| {label} | not built: {_why(r)} | | | | | | | | | |")
                continue
            lines.append(
                head + f"| {label} | {exp['export_s']:.0f} | {_mb(r['size_bytes'])} | "
                f"{r['size_vs_budget']:.2f} | {_ms(r['median_ms'])} | {_ms(r['p99_ms'])} | "
                f"{_x(r.get('speedup_vs_pyg'))} | {r['peak_rss_mb']:.0f} "
                f"({r['rss_ready_mb']:.0f}) | {_x(r.get('rss_vs_pyg'))} | "
                f"{_err(r['max_abs_err'])} |"
            )
    lines += [
        "",
        "*export s* is the whole `export_model` call for the bundle (ONNX export, parity, "
        "INT8 calibration, every engine's compile and parity check), the same on every "
        "row of one model.",
        "",
    ]
    return lines


def cora_table(cora: dict[str, Any], engines: list[str]) -> list[str]:
    g = cora["graph"]
    lines = [
        f"## Cora ({g['nodes']:,} nodes, {g['edges']:,} edges, {g['features']:,} features): "
        "dense vs neighbour tables vs scatter",
        "",
        "Every row through `Runtime` in one process, timed round-robin in blocks (same "
        "background load for all rows). Cells: median ms (× PyG eager: above 1 is faster).",
        "",
    ]
    aggs = ["dense", "tables", "scatter"]
    header = "| model | PyG eager ms | " + " | ".join(
        f"{a} {ENGINE_LABEL.get(e, e)}" for e in engines for a in aggs
    )
    lines += [header + " |", "|---|---|" + "---|" * (len(engines) * len(aggs))]
    for m in cora["models"]:
        cells = []
        for e in engines:
            for a in aggs:
                r = m["rows"].get(f"{a}/{e}")
                if r is None:
                    cells.append("–")
                elif "median_ms" not in r:
                    cells.append("not built")
                else:
                    cells.append(f"{_ms(r['median_ms'])} ({_x(r['speedup_vs_pyg'])})")
        lines.append(
            f"| {m['model']} | {_ms(m['pyg_eager']['median_ms'])} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Artifact size (MB) and max abs error against PyG eager:", ""]
    lines += [
        "| model | aggregation | " + " | ".join(ENGINE_LABEL.get(e, e) for e in engines) + " |",
        "|---|---|" + "---|" * len(engines),
    ]
    for m in cora["models"]:
        for a in aggs:
            cells = []
            for e in engines:
                r = m["rows"].get(f"{a}/{e}")
                if r is None:
                    cells.append("–")
                elif "size_bytes" not in r:
                    cells.append(f"not built: {_why(r)}")
                else:
                    cells.append(f"{_mb(r['size_bytes'])} MB, {_err(r.get('max_abs_err'))}")
            if any(c != "–" for c in cells):
                lines.append(f"| {m['model']} | {a} | " + " | ".join(cells) + " |")
    gcn = next((m for m in cora["models"] if m["model"] == "gcn"), None)
    if gcn is not None:
        lines += [
            "",
            "GCN: whole model against its matrix products alone (the two linear layers, "
            "no aggregation, exported and run the same way):",
            "",
            "| engine | matmul-only ms | " + " | ".join(f"{a} / matmul-only" for a in aggs) + " |",
            "|---|---|" + "---|" * len(aggs),
        ]
        for e in engines:
            mm = gcn["rows"].get(f"matmul-only/{e}", {})
            if "median_ms" not in mm:
                continue
            cells = [_x(gcn["rows"].get(f"{a}/{e}", {}).get("over_matmul_only")) for a in aggs]
            lines.append(
                f"| {ENGINE_LABEL.get(e, e)} | {_ms(mm['median_ms'])} | " + " | ".join(cells) + " |"
            )
    return [*lines, ""]


def host_table(host: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Host table building (`edge_sdk.neighbour_tables.request_tables`, GCN `loops` variant)",
        "",
        "| graph | nodes | edges | classes | table MB | runs | median ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in host:
        lines.append(
            f"| {h['graph']} | {h['nodes']:,} | {h['edges']:,} | {len(h['widths'])} | "
            f"{_mb(h['table_bytes'])} | {h['calls']} | {_ms(h['median_ms'])} | "
            f"{_ms(h['p99_ms'])} |"
        )
    return [*lines, ""]


def _code_note(git: dict[str, Any]) -> str:
    start = git["start"]
    dirty = start["uncommitted_files"]
    text = f"Code: commit {start['commit']} at the start" + (
        f" with {len(dirty)} files uncommitted" if dirty else ""
    )
    landed = git["commits_during_run"]
    if landed:
        text += (
            f"; {len(landed)} commits landed during the run (shared checkout; listed in the "
            f"JSON), ending at {git['end']['commit']}"
        )
    return text + "." + (f" {git['note']}" if git.get("note") else "")


def _load_note(meta: dict[str, Any]) -> str:
    load = meta.get("loadavg_1min")
    if not load:
        return ""
    return (
        f" Machine load (1-min average) {load['start']:.1f} at the start and {load['end']:.1f} "
        f"at the end on {meta['cpus']} CPUs: other jobs shared the cores, so absolute times "
        "are noisy; the rows of one model on one graph were timed in turn, so their ratios "
        "are fair."
    )


def render_md(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    lines = [
        "# Graph scale: neighbour tables vs PyG eager",
        "",
        meta_line(meta),
        "",
        f"Threads: {meta['threads']} (every engine and PyTorch). Seed {meta['seed']}. "
        f"Workload: {meta['workload']}. Whole run: {meta['wall_s'] / 60:.1f} min. "
        f"Command: `{meta['command'].strip()}`. " + _code_note(meta["git"]) + _load_note(meta),
        "",
    ]
    lines += scale_table(doc["scale"])
    if doc.get("cora"):
        engines = sorted(
            {k.split("/")[1] for m in doc["cora"]["models"] for k in m["rows"]},
            key=list(ENGINE_LABEL).index,
        )
        lines += cora_table(doc["cora"], engines)
    lines += host_table(doc["host_tables"])
    reps = meta["repeats"]
    lines += [
        f"Calls: {reps['scale_engine']} per synthetic-graph row, PyG eager included (after "
        "warm-up; the p99 of so few calls is close to the slowest call), "
        f"{reps['cora']} per Cora row, {reps['host_tables']} table builds on Cora (5 on the "
        "largest graph). A row stops early once it has 8 calls and 6 s of them (the JSON "
        "has each row's count).",
    ]
    return "\n".join(lines) + "\n"
