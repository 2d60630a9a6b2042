"""Markdown report of ``benchmarks/fraud_node.py`` results (``fraud_node.json`` -> ``.md``)."""

from __future__ import annotations

import argparse

from _common import meta_line


def render_md(args: argparse.Namespace, meta: dict, modes: dict, result: dict) -> str:
    """The run as Markdown: the stamp, the bar's table, every probe and hold."""
    ratio, bar = result["batched_over_unbatched"], result["bar"]
    lines = [
        "# Fraud scoring on the node over MQTT (SYNTHETIC transactions, loopback, QoS 1)",
        "",
        meta_line(meta) + f" · {meta['mosquitto']} · node inference threads 1 · load average "
        f"(1 min) {meta['load_average_1m_at_start_and_end'][0]} at start, "
        f"{meta['load_average_1m_at_start_and_end'][1]} at end",
        "",
        f"Model: {meta['model']} ({meta['bundle']}); 2-hop subgraphs, fan-out "
        f"{meta['spec']['fanout']}; {args.prime:,} transactions primed before measuring. "
        "One transaction per MQTT message.",
        "",
        f"Highest rate held for {args.seconds:.0f} s with p99 ≤ {args.p99_ms:.0f} ms end to "
        "end, 0 lost and ≥ 97 % of the rate achieved:",
        "",
        "| mode | backend | max sustained tx/s | achieved tx/s | p50 ms | p99 ms | max ms | lost "
        "| node CPU ms/tx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in modes.items():
        nd = r["node"]
        h = r["held"][-1] if r["held"] else None
        row = (
            f"| {name} (max_batch {r['max_batch']}) | {nd.get('backend')} {nd.get('precision')} "
            f"| **{r['max_sustained_per_s']:.0f}** | "
        )
        if h is None:
            row += "– | – | – | – | – | – |"
        else:
            lat = h["latency_ms"]
            row += (
                f"{h['throughput_per_s']:.0f} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
                f"{lat['max']:.1f} | {h['lost']} | {h['node_cpu_ms_per_tx']:.2f} |"
            )
        lines.append(row)
    verdict = "**met**" if bar["met"] else "**not met**"
    lines += [
        "",
        f"Batched / unbatched at the same bound: **{ratio}x**."
        if ratio
        else "Batched / unbatched: no ratio (a mode held no rate for the full window).",
        "",
        f"Must-show (≥ {bar['rate_per_s']:.0f} tx/s for ≥ 60 s, p99 ≤ {bar['p99_ms']:.0f} ms, "
        f"0 lost; batching ≥ 1.5x): {verdict} in this run.",
        "",
        "Runs (rate for seconds: achieved/s, p50 / p99 ms, lost, node CPU ms/tx, load, pass):",
        "",
    ]
    for name, r in modes.items():
        for kind in ("probes", "held"):
            runs = "; ".join(
                f"{s['rate_target_per_s']:.0f}/s for {s['seconds']:.0f} s: "
                f"{s['throughput_per_s']:.0f}/s, {s['latency_ms']['p50']:.1f} / "
                f"{s['latency_ms']['p99']:.1f} ms, lost {s['lost']}, "
                f"{s['node_cpu_ms_per_tx']:.2f} ms, load {s['load_average_1m']:.1f}, "
                f"{'ok' if s['pass'] else 'FAIL'}"
                for s in r[kind]
            )
            lines.append(f"- {name}, {kind}: {runs or 'none'}")
    lines += [
        "",
        "Publisher, mosquitto (`set_tcp_nodelay true`), the node process and the subscriber "
        "share the machine's CPUs; every MQTT socket has TCP_NODELAY. Latency: transaction "
        "published -> its decision received (first copy), on one monotonic clock; the first "
        f"{args.warmup:.0f} s of each run are not measured. After each run the script waits "
        "for every decision (the node drains its backlog) before the next. Node CPU ms/tx: "
        "the user + system time of the node process and its explainer process (alerts' why, "
        "`explain_in: process`, nice +10) over the run / transactions. Reproduce with "
        "`python benchmarks/fraud_node.py --bundle <a trained fraud.bundle>`.",
    ]
    return "\n".join(lines) + "\n"
