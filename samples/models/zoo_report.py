"""The zoo's report as Markdown (``samples/models/zoo.py`` writes it beside its JSON)."""

from __future__ import annotations

from typing import Any

from _common import meta_line  # benchmarks/, on the path zoo.py sets


def markdown(report: dict[str, Any], fp32_atol: float, gate_pp: float) -> str:
    """The report as a Markdown page (the table of samples/models.md), with the bounds
    its rows were judged by (FP32 max abs error, INT8 accuracy drop in pp)."""
    meta = report["meta"]
    lines = [
        "# PyG model classes: export and run on every engine",
        "",
        meta_line(meta),
        "",
        f"`python samples/models/zoo.py` (seed {report['seed']}): dynamic form, `--int8`, "
        f"profiles {', '.join(report['profiles'])}"
        + (" + `fp32-engines.yaml` (keeps FP32 OpenVINO/LiteRT)" if report["fp32_engines"] else "")
        + ". Errors and accuracy on unseen graphs (other sizes than the export's samples) "
        "through `edge_sdk.Runtime`, against eager PyG. Bounds: FP32 max |err| <= "
        f"{fp32_atol:g}; INT8 accuracy drop <= {gate_pp:g} pp (the export's gate).",
        "",
        "| model | artifact | engine | precision | max abs err | rel. err | accuracy | eager acc "
        "| Δ pp vs eager | argmax = eager | ok |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["models"]:
        for a in r["artifacts"]:
            if "error" in a:
                lines.append(
                    f"| {r['model']} | {a['backend']} {a['precision']}: {a['error']} |"
                    + " |" * 9
                    + " ✗ |"
                )
                continue
            delta = round(100 * (a["accuracy"] - r["torch_accuracy"]), 2) + 0.0  # no -0.00
            lines.append(
                f"| {r['model']} | {a['artifact']} | {a['backend']} | {a['precision']} | "
                f"{a['max_abs_err']:.1e} | {a['rel_err']:.1e} | {100 * a['accuracy']:.2f} % | "
                f"{100 * r['torch_accuracy']:.2f} % | {delta:+.2f} | "
                f"{100 * a['agreement']:.2f} % | {'✓' if a['passed'] else '✗'} |"
            )
        if not r["artifacts"]:
            lines.append(
                f"| {r['model']} | export failed (exit {r['export_rc']}) | | | | | | | ✗ |"
            )
    lines += ["", "What each profile runs (`Runtime.load(bundle, profile=...)`), export time:", ""]
    lines += ["| model | config | " + " | ".join(report["profiles"]) + " | export s |"]
    lines += ["|---|---|" + "---|" * len(report["profiles"]) + "---:|"]
    for r in report["models"]:
        cells = [
            f"{r['profiles'][p]['runtime_runs']['artifact']}" if p in r["profiles"] else "–"
            for p in report["profiles"]
        ]
        lines.append(
            f"| {r['model']} | `{r['config']}` | " + " | ".join(cells) + f" | {r['export_s']} |"
        )
    lines += ["", f"All bounds met: **{'yes' if report['passed'] else 'NO'}**.", ""]
    return "\n".join(lines)
