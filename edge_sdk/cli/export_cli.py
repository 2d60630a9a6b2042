"""``edge-export``: build, inspect and try bundles.

Exit codes (scripts can rely on them):

* 0: success
* 1: internal error (a bug: the traceback is printed)
* 2: usage error (bad flags)
* 3: user error: bad model, data, bundle, profile or environment (one line)
* 4: parity or accuracy check failed (one line; nothing was written)
* 5: ``--key`` given and the bundle is not signed by a trusted key: unsigned,
  manifest altered after signing, or signed by another key (one line)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ._common import console, err_console, fail_on_errors, make_app, read_input
from .export_options import EXPORT_EPILOG, decision_from_flags, export_signature

app = make_app(
    "edge-export",
    (
        "Export trained PyTorch / PyG graph models to verified edge bundles, and inspect "
        "or try those bundles.\n\n"
        "Example: edge-export export --model samples/cora/models.py:gcn "
        "--weights gcn.pt --sample-data cora.npz -o out/gcn.bundle"
    ),
)


def export(**given: Any) -> None:
    """Export a model to a bundle: ONNX, parity against PyTorch, manifest, canary."""
    decision = decision_from_flags(
        given["alert_output"],
        given["alert_threshold"],
        given["alert_consecutive"],
        given["alert_clear_after"],
        given["alert_class_output"],
    )
    with fail_on_errors():
        from rich.status import Status

        from edge_sdk.export_config import config_from_flags
        from edge_sdk.exporters import export_model

        cfg = config_from_flags(given, decision=decision)
        with Status("starting", console=err_console) as status:

            def progress(msg: str) -> None:
                status.update(msg)
                err_console.log(msg)

            result = export_model(
                given["model"],
                list(given["sample_data"]),
                given["output"],
                cfg,
                weights=given["weights"],
                progress=progress,
            )
        if given["as_json"]:
            console.print_json(result.manifest.to_json())
            return
        from ._tables import compression_table, summary_table, targets_table

        console.print(summary_table(result.manifest))
        if result.manifest.targets:
            console.print(targets_table(result.manifest))
        if result.manifest.compression.sizes:
            console.print(compression_table(result.manifest))
        console.print(f"bundle written to {result.bundle_dir}")
        if result.archive:
            console.print(f"packed to {result.archive}")


export.__signature__ = export_signature()  # type: ignore[attr-defined]
app.command(epilog=EXPORT_EPILOG)(export)


#: ``--key`` of inspect and verify.
KeyOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        "-k",
        help="Trusted public key (.pub, or a directory of them); repeatable. The bundle "
        "must then be signed by one of them over its exact manifest (exit 5 if not).",
    ),
]


@app.command(
    epilog="Examples:\n\n  edge-export inspect out/gcn.bundle\n\n"
    "  edge-export inspect out/gcn.bundle.tar.gz --json\n\n"
    "  edge-export inspect gcn-signed.tar.gz --key keys/fleet.pub\n\n"
    "The signature line reads valid, invalid, unsigned or not checked (signed, no --key)."
)
def inspect(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    key: KeyOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Verify a bundle (checksums, and the signature with --key) and print its manifest."""
    with fail_on_errors():
        from edge_sdk.bundle import Bundle
        from edge_sdk.signing import load_public_keys, signature_status

        trusted = load_public_keys(key) if key else None
        b = Bundle.open(bundle)
        status = signature_status(b.root, trusted)
        if as_json:
            console.print_json(b.manifest.to_json())
        else:
            from ._tables import manifest_tables

            for table in manifest_tables(b.manifest):
                console.print(table)
            console.print("all files present, sizes and sha256 verified", style="green")
        style = {"valid": "green", "invalid": "red"}.get(status.state, "yellow")
        err_console.print(f"signature: {status.describe()}", style=style, highlight=False)
        if status.error is not None:
            raise status.error


@app.command(
    epilog="Examples:\n\n  edge-export run out/gcn.bundle --input graph.npz\n\n"
    "  edge-export run out/gcn.bundle --input request.json --backend onnxruntime --json"
)
def run(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    input: Annotated[
        Path, typer.Option("--input", "-i", help=".npz or .json with x[, edge_index...].")
    ],
    backend: Annotated[str | None, typer.Option(help="Force a backend, e.g. onnxruntime.")] = None,
    profile: Annotated[str, typer.Option(help="Device profile name/path, or auto.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Intra-op threads.")] = None,
    precision: Annotated[
        str | None, typer.Option(help="Force an artifact precision: fp32, fp16 or int8.")
    ] = None,
    save: Annotated[Path | None, typer.Option(help="Write all outputs to this .npz.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print outputs as JSON.")] = False,
) -> None:
    """Run one request through a bundle with the on-device Runtime."""
    with fail_on_errors():
        from edge_sdk.bundle import save_npz
        from edge_sdk.runtime import Runtime

        data = read_input(input)
        # Sample files may carry labels for export-time scoring; they are not model inputs.
        labels_in = data.pop("y", None)
        mask = data.pop("mask", None)
        with Runtime.load(
            bundle, profile=profile, backend=backend, threads=threads, precision=precision
        ) as rt:
            outputs = rt.infer(data)
            info = rt.describe()
        if save:
            save_npz(save, outputs)
        labels = rt.manifest.model.labels
        first = next(iter(outputs.values()))
        if labels_in is not None and first.ndim >= 2:
            pred = first.argmax(-1).reshape(np.shape(labels_in))
            rows = np.asarray(mask, bool) if mask is not None else slice(None)
            hits = pred[rows] == np.asarray(labels_in)[rows]
            err_console.print(
                f"accuracy on the labelled rows: {hits.mean():.4f} ({hits.size} rows)"
            )
        if as_json:
            doc: dict[str, Any] = {
                "backend": info["backend"],
                "artifact": info["artifact"],
                "outputs": {k: v.tolist() for k, v in outputs.items()},
            }
            console.print_json(json.dumps(doc))
            return
        from ._tables import outputs_table

        err_console.print(f"backend {info['backend']}, artifact {info['artifact']}")
        console.print(outputs_table(outputs, labels))


@app.command(
    epilog=(
        "Examples:\n\n  edge-export profiles\n\n  edge-export profiles --show raspberry-pi-5\n\n"
        "  edge-export profiles --show host --json\n\n"
        "  edge-export profiles --show ./my-board.yaml"
    )
)
def profiles(
    show: Annotated[
        str | None,
        typer.Option(help="Show one profile in full: a shipped name, host, or a .yaml path."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the device profiles shipped with the SDK (and `host`, this machine)."""
    with fail_on_errors():
        from rich.table import Table

        from edge_sdk.profiles import load_profile, shipped_profiles

        items = [load_profile(show)] if show else [load_profile(n) for n in shipped_profiles()]
        if as_json:
            console.print_json(json.dumps([p.model_dump(mode="json") for p in items]))
            return
        table = Table(title="device profiles" if not show else f"profile {items[0].name}")
        for col in ("name", "arch", "targets (engine:device precisions)", "threads", "about"):
            table.add_column(col)
        for p in items:
            targets = "\n".join(
                f"{t.backend}:{t.device} {'/'.join(t.precisions)}"
                + (" static" if t.static_shapes else "")
                + (f" layout={t.layout}" if t.layout != "native" else "")
                for t in p.targets
            )
            table.add_row(
                p.name,
                p.arch,
                targets,
                str(p.threads or "auto"),
                p.description + (" (measured on this machine)" if p.measure else ""),
            )
        console.print(table)
        if not show:
            err_console.print("also: host (this machine, measured); or give a .yaml path")


@app.command(
    epilog=(
        "Examples:\n\n  edge-export verify out/gcn.bundle\n\n"
        "  edge-export verify gcn.bundle.tar.gz --backend litert --json\n\n"
        "  edge-export verify gcn-signed.tar.gz --key keys/fleet.pub\n\n"
        "Run it on the device after copying the bundle: every artifact whose engine is "
        "installed there is checked against the reference outputs recorded at export. "
        "With --key, an unsigned bundle, one whose manifest was edited after signing, or "
        "one signed by another key is refused first (exit 5)."
    )
)
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    key: KeyOption = None,
    backend: Annotated[
        list[str] | None, typer.Option(help="Only this backend; repeatable.")
    ] = None,
    threads: Annotated[int, typer.Option(help="Intra-op threads per engine.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Re-run cross-backend parity on this machine (exit 4 when an artifact fails).

    With --key, check the bundle's signature first (exit 5 when it is not
    signed by a trusted key).
    """
    with fail_on_errors():
        from edge_sdk.bundle import Bundle
        from edge_sdk.errors import ParityError
        from edge_sdk.parity import verify_bundle
        from edge_sdk.signing import load_public_keys

        trusted = load_public_keys(key) if key else None
        b = Bundle.open(bundle, trusted_keys=trusted)
        if trusted is not None:
            signer = b.check_signature(trusted)
            err_console.print(f"signature: valid (key {signer})", highlight=False)
        checks = verify_bundle(b, backend, threads, progress=err_console.log)
        if as_json:
            console.print_json(
                json.dumps(
                    [
                        {
                            "artifact": c.artifact.name,
                            "backend": c.backend,
                            "precision": str(c.artifact.precision),
                            "skipped": c.skipped or None,
                            "report": c.report.model_dump(mode="json") if c.report else None,
                        }
                        for c in checks
                    ]
                )
            )
        else:
            from ._tables import verify_table

            console.print(verify_table(checks))
        failed = [c.artifact.name for c in checks if c.report and not c.report.passed]
        ran = [c for c in checks if c.report]
        if failed:
            raise ParityError(f"parity failed on this machine for {', '.join(failed)}")
        if not ran:
            from edge_sdk.errors import UnsupportedTargetError

            raise UnsupportedTargetError(
                "no artifact could run here: "
                + "; ".join(f"{c.artifact.name}: {c.skipped}" for c in checks)
            )
        if not as_json:
            console.print(f"{len(ran)} artifact(s) reproduce the reference", style="green")


@app.command(name="pack", epilog="Example:\n\n  edge-export pack out/gcn.bundle gcn.tar.gz")
def pack_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    archive: Annotated[Path, typer.Argument(help="Archive to write (.tar.gz).")],
) -> None:
    """Verify a bundle directory and pack it into one .tar.gz file."""
    with fail_on_errors():
        from edge_sdk.bundle import pack

        console.print(f"packed to {pack(bundle, archive)}")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edge-export bench out/tep.bundle --out out/bench\n\n"
        "  edge-export bench out/tep.bundle --concurrency 8 --duration 10 --threads 1 "
        "--precision fp32 --rate 2000\n\n"
        "Writes bench.json, bench.md and bench.png (throughput and p50/p90/p99 per backend, "
        "precision and run: unbatched, batched, open loop)."
    )
)
def bench(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path("bench"),
    concurrency: Annotated[int, typer.Option(min=1, help="Closed-loop clients.")] = 32,
    duration: Annotated[float, typer.Option(min=0.1, help="Measured seconds per run.")] = 5.0,
    rate: Annotated[
        float | None, typer.Option(help="Open-loop requests/s (default 70 % of batched).")
    ] = None,
    backend: Annotated[
        list[str] | None, typer.Option(help="Only this backend (repeatable).")
    ] = None,
    precision: Annotated[
        list[str] | None, typer.Option(help="Only this precision (repeatable).")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads.")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Batcher: most rows per call.")] = 32,
    max_delay_ms: Annotated[
        float, typer.Option(min=0, help="Batcher: longest wait to fill a batch.")
    ] = 0.0,
) -> None:
    """Measure serving throughput and latency of a bundle on this machine."""
    with fail_on_errors():
        from edge_sdk.serving.batcher import BatcherConfig
        from edge_sdk.serving.bench import bench_bundle

        report = bench_bundle(
            bundle,
            out,
            concurrency=concurrency,
            duration_s=duration,
            rate_rps=rate,
            backends=backend,
            precisions=precision,
            threads=threads,
            batcher=BatcherConfig(max_batch=max_batch, max_delay_ms=max_delay_ms),
            say=lambda msg: err_console.print(msg, highlight=False),
        )
        console.print((out / "bench.md").read_text(), highlight=False, markup=False)
        console.print(f"{len(report['rows'])} runs; reports in {out}/bench.{{json,md,png}}")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
