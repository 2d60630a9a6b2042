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


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    if "median_ms" not in r:
        return "not built" if "error" not in r else "failed"
    return f"{_ms(r['median_ms'])} ({_x(r['speedup_vs_pyg'])})"


def _pp(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f} pp"


def _engines(cora: dict[str, Any], aggs: tuple[str, ...]) -> list[str]:
    found = {k.split("/")[1] for m in cora["models"] for k in m["rows"] if k.split("/")[0] in aggs}
    return [e for e in ENGINE_LABEL if e in found]


def cora_table(cora: dict[str, Any]) -> list[str]:
    g = cora["graph"]
    aggs = ("dense", "tables", "scatter")
    fp32 = _engines(cora, ("dense", "scatter"))
    every = _engines(cora, aggs)
    lines = [
        f"## Cora ({g['nodes']:,} nodes, {g['edges']:,} edges, {g['features']:,} features): "
        "dense vs neighbour tables vs scatter",
        "",
        "Every row through `Runtime` in one process, timed round-robin in blocks (same "
        "background load for all rows). Cells: median ms (× PyG eager: above 1 is faster).",
        "",
    ]
    header = "| model | PyG eager ms | " + " | ".join(
        f"{a} {ENGINE_LABEL.get(e, e)}" for e in fp32 for a in aggs
    )
    lines += [header + " |", "|---|---|" + "---|" * (len(fp32) * len(aggs))]
    for m in cora["models"]:
        cells = [_cell(m["rows"].get(f"{a}/{e}")) for e in fp32 for a in aggs]
        lines.append(
            f"| {m['model']} | {_ms(m['pyg_eager']['median_ms'])} | " + " | ".join(cells) + " |"
        )
    if any("best" in m for m in cora["models"]):
        lines += _best_tables(cora, every)
    lines += ["", "Artifact size (MB) and max abs error against PyG eager:", ""]
    lines += [
        "| model | aggregation | " + " | ".join(ENGINE_LABEL.get(e, e) for e in every) + " |",
        "|---|---|" + "---|" * len(every),
    ]
    for m in cora["models"]:
        for a in aggs:
            cells = []
            for e in every:
                r = m["rows"].get(f"{a}/{e}")
                if r is None:
                    cells.append("–")
                elif "size_bytes" not in r:
                    cells.append(f"not built: {_why(r)}")
                elif "error" in r:
                    cells.append(f"failed: {_why(r)}")
                else:
                    cells.append(f"{_mb(r['size_bytes'])} MB, {_err(r.get('max_abs_err'))}")
            if any(c != "–" for c in cells):
                lines.append(f"| {m['model']} | {a} | " + " | ".join(cells) + " |")
    gcn = next((m for m in cora["models"] if m["model"] == "gcn"), None)
    if gcn is not None:
        lines += [
            "",
            "GCN: whole model against its matrix products alone (the two linear layers, "
            "no aggregation, exported and run the same way, same engine and precision):",
            "",
            "| engine | matmul-only ms | " + " | ".join(f"{a} / matmul-only" for a in aggs) + " |",
            "|---|---|" + "---|" * len(aggs),
        ]
        for e in every:
            mm = gcn["rows"].get(f"matmul-only/{e}", {})
            if "median_ms" not in mm:
                continue
            cells = [_x(gcn["rows"].get(f"{a}/{e}", {}).get("over_matmul_only")) for a in aggs]
            label = ENGINE_LABEL.get(e, e)
            flavour = gcn["rows"].get(f"tables/{e}", {}).get("int8_flavour")
            if mm.get("int8_flavour") != flavour:  # the export picks a flavour per bundle
                label += f" (matmul-only {mm.get('int8_flavour')}, tables {flavour})"
            lines.append(f"| {label} | {_ms(mm['median_ms'])} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _best_tables(cora: dict[str, Any], every: list[str]) -> list[str]:
    """Neighbour tables on every engine and precision; each model's best CPU artifact."""
    lines = [
        "",
        "Neighbour tables on every engine and precision (trained models): median ms (× PyG "
        "eager), and the test accuracy's change against PyG eager on Cora's "
        f"{cora['graph'].get('test_nodes', 1000):,} test nodes:",
        "",
        "| model | PyG eager ms | PyG test acc | "
        + " | ".join(f"tables {ENGINE_LABEL.get(e, e)}" for e in every)
        + " |",
        "|---|---|---|" + "---|" * len(every),
    ]
    for m in cora["models"]:
        cells = []
        for e in every:
            r = m["rows"].get(f"tables/{e}")
            cell = _cell(r)
            if r is not None and "median_ms" in r:
                cell += f", {_pp(r.get('acc_delta_pp'))}"
            cells.append(cell)
        acc = m.get("pyg_test_acc")
        lines.append(
            f"| {m['model']} | {_ms(m['pyg_eager']['median_ms'])} | "
            f"{'–' if acc is None else f'{acc:.3f}'} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Best CPU artifact per model (the fastest row of any aggregation, engine and "
        "precision above) against issue #17's bar; *÷ matmul-only* is its time over the "
        "same engine and precision's matrix products alone (GCN):",
        "",
        "| model | best CPU artifact | median ms | × PyG eager | bar | met | test acc Δ "
        "| ÷ matmul-only |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in cora["models"]:
        b = m.get("best")
        if not b:
            lines.append(f"| {m['model']} | none timed | | | | | | |")
            continue
        agg, e = b["row"].split("/")
        label = f"{agg}, {ENGINE_LABEL.get(e, e)}"
        flavour = m["rows"][b["row"]].get("int8_flavour")
        if flavour:
            label += f" ({flavour})"
        bar = b.get("bar")
        met = "–" if bar is None else ("yes" if b.get("meets_bar") else "**no**")
        lines.append(
            f"| {m['model']} | {label} | {_ms(b['median_ms'])} | {_x(b['speedup_vs_pyg'])} | "
            f"{'–' if bar is None else f'≥ {bar:g}x'} | {met} | {_pp(b.get('acc_delta_pp'))} "
            f"| {_x(b.get('over_matmul_only'))} |"
        )
    return lines


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


#: ``--only`` name -> the section's key in the result JSON.
SECTIONS = {"synthetic": "scale", "cora": "cora", "host": "host_tables"}
_TITLES = {"scale": "synthetic graphs", "cora": "Cora", "host_tables": "host table building"}


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """The result with a stamp per section; a result from before stamps existed gets its
    run's stamp on every section."""
    if "stamps" in doc:
        return doc
    meta = doc["meta"]
    stamp = {
        k: meta[k]
        for k in ("command", "threads", "seed", "versions", "git", "loadavg_1min", "repeats")
        if k in meta
    }
    stamp.update(date=meta["date"], run=meta["date"], workload=meta.get("workload", ""))
    stamp["whole_run_s"] = meta.get("wall_s")
    return {**doc, "stamps": {k: dict(stamp) for k in SECTIONS.values() if k in doc}}


def merge_docs(
    base: dict[str, Any] | None,
    meta: dict[str, Any],
    results: dict[str, Any],
    stamps: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """This run's sections over ``base``'s (each keeps its own stamp); ``meta`` is this run's."""
    doc: dict[str, Any] = {"meta": meta, "stamps": {}}
    for key in SECTIONS.values():
        if key in results:
            doc[key], doc["stamps"][key] = results[key], stamps[key]
        elif base is not None and key in base:
            doc[key], doc["stamps"][key] = base[key], base["stamps"][key]
    return doc


def _code_note(git: dict[str, Any]) -> str:
    start = git["start"]
    dirty = start["uncommitted_files"]
    text = f"Code: commit {start['commit']} at the start" + (
        f" with {len(dirty)} files uncommitted" if dirty else ""
    )
    landed = git["commits_during_run"]
    if landed:
        text += (
            f"; {len(landed)} commit{'s' if len(landed) > 1 else ''} landed during the run "
            f"(shared checkout; listed in the JSON), ending at {git['end']['commit']}"
        )
    return text + "." + (f" {git['note']}" if git.get("note") else "")


def _load_note(stamp: dict[str, Any], cpus: int) -> str:
    load = stamp.get("loadavg_1min")
    if not load:
        return ""
    return (
        f" Machine load (1-min average) {load['start']:.1f} at the start and {load['end']:.1f} "
        f"at the end on {cpus} CPUs"
        + (
            ": other jobs shared the cores, so absolute times are noisy; the rows of one "
            "model on one graph were timed in turn, so their ratios are fair."
            if max(load["start"], load["end"]) > 0.75 * cpus
            else "."
        )
    )


def _run_note(stamp: dict[str, Any], cpus: int) -> str:
    """Date, command, code and load of the run a section comes from."""
    if stamp.get("wall_s") is not None:
        took = f"this section took {stamp['wall_s'] / 60:.1f} min"
    else:
        took = f"whole run {stamp['whole_run_s'] / 60:.1f} min (before per-section stamps)"
    return (
        f"*Run:* {stamp['date']}, `{stamp['command'].strip()}`, threads {stamp['threads']} "
        f"(every engine and PyTorch), seed {stamp['seed']}; {took}. Workload: "
        f"{stamp['workload']}. "
        + _code_note(stamp["git"])
        + _load_note(stamp, cpus)
        + (f" {stamp['note']}" if stamp.get("note") else "")
    )


def _calls_note(key: str, reps: dict[str, Any]) -> str:
    tail = " A row stops early once it has 8 calls and 6 s of them (the JSON has each row's count)."
    if key == "scale":
        return (
            f"Calls: {reps.get('scale_engine')} per row, PyG eager included (after warm-up; "
            "the p99 of so few calls is close to the slowest call)." + tail
        )
    if key == "cora":
        return f"Calls: {reps.get('cora')} per row, after warm-up." + tail
    return f"Runs: {reps.get('host_tables')} table builds on Cora, 5 on the largest graph."


def render_md(doc: dict[str, Any]) -> str:
    doc = upgrade(doc)
    meta, stamps = doc["meta"], doc["stamps"]
    cpus = meta["cpus"]
    present = [k for k in SECTIONS.values() if k in doc]
    runs = sorted({stamps[k]["run"] for k in present})
    lines = ["# Graph scale: neighbour tables vs PyG eager", "", meta_line(meta), ""]
    if len(runs) == 1 and present:
        lines += [_run_note(stamps[present[0]], cpus), ""]
    if len(runs) > 1:
        lines += [
            f"**This file merges sections from {len(runs)} different runs** (`--only ... "
            "--merge`): compare numbers across sections with care. "
            + "; ".join(
                f"{_TITLES[k]}: run of {stamps[k]['run']} (commit "
                f"{stamps[k]['git']['start']['commit']})"
                for k in present
            )
            + ". Each section states its own run.",
            "",
        ]
    sections = {
        "scale": lambda: scale_table(doc["scale"]),
        "cora": lambda: cora_table(doc["cora"]),
        "host_tables": lambda: host_table(doc["host_tables"]),
    }
    for key in present:
        body = sections[key]()
        stamp = stamps[key]
        if len(runs) > 1:
            note = _run_note(stamp, cpus)
            differ = {
                k: v for k, v in stamp.get("versions", {}).items() if meta["versions"].get(k) != v
            }
            if differ:
                note += " Versions in that run: " + ", ".join(f"{k} {v}" for k, v in differ.items())
            body[1:1] = ["", note]
        lines += [*body, _calls_note(key, stamp.get("repeats", {})), ""]
    return "\n".join(lines).rstrip("\n") + "\n"
