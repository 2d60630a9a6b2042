"""``edge-export bench``: how fast a bundle serves, per backend and precision, on this machine.

For every backend that is available here and every precision the bundle has
for it, the bundle is loaded, warmed up, and measured three ways:

* ``unbatched``: closed loop, ``concurrency`` clients calling ``Runtime.infer``
  (the runtime serialises them: one backend call per request);
* ``batched``: the same clients through a :class:`DynamicBatcher`;
* ``open``: requests at a fixed offered rate through the batcher (default 70 %
  of the batched closed-loop throughput), latency from the scheduled time.

Requests are the bundle's canary inputs, with a little noise per request for
static forms so that no two are equal. Results go to ``bench.json``,
``bench.md`` and ``bench.png`` in the output directory.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, runtimes
from ..bundle import Bundle
from ..errors import ManifestError, UnsupportedTargetError
from ..io_contract import GraphForm
from ..runtime import Runtime
from .batcher import BatcherConfig, DynamicBatcher
from .loadgen import LoadResult, closed_loop, open_loop

_VARIANTS = 256


def request_maker(bundle: Bundle) -> Callable[[int], dict[str, np.ndarray]]:
    """``make(i)``: request ``i`` built from the canary (static forms: plus noise)."""
    inputs, _ = bundle.load_canary()
    if bundle.manifest.graph.form is GraphForm.DYNAMIC:
        return lambda i: inputs
    rng = np.random.default_rng(0)
    x = inputs["x"]
    pool = [
        {"x": (x + 0.01 * rng.standard_normal(x.shape)).astype(x.dtype)} for _ in range(_VARIANTS)
    ]
    return lambda i: pool[i % _VARIANTS]


def _targets(bundle: Bundle, backends: list[str] | None, precisions: list[str] | None) -> list:
    out = []
    for name in backends or runtimes.known_backends():
        if runtimes.unavailable_reason(name):
            continue
        for art in bundle.manifest.artifacts:
            ok_backend = runtimes.backend_for_target(art.target) == name
            if ok_backend and (precisions is None or str(art.precision) in precisions):
                out.append((name, str(art.precision)))
    return sorted(set(out))


def bench_bundle(
    bundle_path: str | Path,
    out_dir: str | Path,
    concurrency: int = 32,
    duration_s: float = 5.0,
    rate_rps: float | None = None,
    backends: list[str] | None = None,
    precisions: list[str] | None = None,
    threads: int | None = None,
    batcher: BatcherConfig | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure a bundle and write ``bench.{json,md,png}``.

    Args:
        bundle_path: Bundle directory or ``.tar.gz``.
        out_dir: Where the reports go.
        concurrency: Closed-loop clients.
        duration_s: Measured seconds per run.
        rate_rps: Open-loop offered rate (default 70 % of batched throughput).
        backends: Restrict to these backends.
        precisions: Restrict to these precisions.
        threads: Inference threads.
        batcher: Batching settings.
        say: Progress output.

    Returns:
        The report (also written as JSON).

    Raises:
        ManifestError: The bundle is invalid or has no canary to build requests from.
        UnsupportedTargetError: Nothing in the bundle runs here.
    """
    bundle = Bundle.open(bundle_path)
    if bundle.manifest.canary is None:
        raise ManifestError("bench builds its requests from the canary; this bundle has none")
    targets = _targets(bundle, backends, precisions)
    if not targets:
        here = [b for b in runtimes.known_backends() if not runtimes.unavailable_reason(b)]
        raise UnsupportedTargetError(
            f"no artifact of this bundle runs on an available backend (available: {here})"
        )
    make = request_maker(bundle)
    cfg = batcher or BatcherConfig()
    rows: list[dict[str, Any]] = []
    for backend, precision in targets:
        rt = Runtime.load(bundle, backend=backend, precision=precision, threads=threads)
        rt.warmup()
        say(f"{backend}/{precision}: unbatched, {concurrency} clients, {duration_s:g} s")
        runs: list[tuple[str, LoadResult]] = [
            ("unbatched", closed_loop(rt.infer, make, concurrency, duration_s))
        ]
        with DynamicBatcher(rt, cfg) as b:
            say(f"{backend}/{precision}: batched (max {cfg.max_batch}, {cfg.max_delay_ms} ms)")
            batched = closed_loop(b.infer, make, concurrency, duration_s)
            runs.append(("batched", batched))
            rate = rate_rps or max(1.0, 0.7 * batched.throughput_rps)
            say(f"{backend}/{precision}: open loop at {rate:.0f} req/s")
            runs.append(("open", open_loop(b.infer, make, rate, duration_s, concurrency)))
        rt.close()
        for label, r in runs:
            rows.append({"backend": backend, "precision": precision, "run": label, **r.as_dict()})
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "bundle": str(bundle_path),
            "model": f"{bundle.manifest.model.name} {bundle.manifest.model.version}",
            "machine": platform.machine(),
            "python": platform.python_version(),
            "edge_graph_sdk": __version__,
            "concurrency": concurrency,
            "duration_s": duration_s,
            "threads": threads,
            "max_batch": cfg.max_batch,
            "max_delay_ms": cfg.max_delay_ms,
        },
        "rows": rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "bench.md").write_text(_markdown(report))
    _plot(rows, out / "bench.png", report["meta"]["model"])
    return report


def _markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"# Serving benchmark: {meta['model']}",
        "",
        f"{meta['date']} · {meta['machine']} · Python {meta['python']} · "
        f"edge-graph-sdk {meta['edge_graph_sdk']} · {meta['concurrency']} clients · "
        f"{meta['duration_s']} s per run · max batch {meta['max_batch']}, "
        f"max delay {meta['max_delay_ms']} ms",
        "",
        "| backend | precision | run | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        run = r["run"] + (f" @ {r['rate_rps']:.0f}/s" if r["rate_rps"] else "")
        lines.append(
            f"| {r['backend']} | {r['precision']} | {run} | {r['throughput_rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    from .._optional import require

    require("matplotlib", "the bench plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['backend']}\n{r['precision']}\n{r['run']}" for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows)), 4.5))
    ax1.bar(labels, [r["throughput_rps"] for r in rows], color="#4c72b0")
    ax1.set_ylabel("requests / s")
    ax1.set_title("throughput")
    x = np.arange(len(rows))
    for offset, key, color in (
        (-0.25, "p50_ms", "#55a868"),
        (0, "p90_ms", "#dd8452"),
        (0.25, "p99_ms", "#c44e52"),
    ):
        ax2.bar(x + offset, [r[key] for r in rows], width=0.25, label=key[:3], color=color)
    ax2.set_xticks(x, labels)
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("latency percentiles")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
