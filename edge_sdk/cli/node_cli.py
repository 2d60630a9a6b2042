"""``edge-node``: the on-device daemon.

Exit codes: 0 success, 1 internal error, 2 usage error, 3 user error (bad
config, bundle or broker URL; one line).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import console, fail_on_errors, make_app, setup_logging

app = make_app(
    "edge-node",
    (
        "Run a factory edge node: serve a bundle locally and, with a broker, keep it in sync "
        "with the cloud over MQTT (results and telemetry out through a durable outbox, "
        "signed model updates in).\n\n"
        "Example: edge-node run --bundle tep.bundle --broker mqtt://broker:1883 "
        "--node-id line3 --group plant-a --trusted-key fleet.pub"
    ),
)


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edge-node run --bundle out/tep.bundle                       # local only\n\n"
        "  edge-node run --config /etc/edge-node/node.yaml\n\n"
        "  edge-node run --bundle tep.bundle --broker mqtts://broker:8883 --ca ca.pem "
        "--username line3 --node-id line3 --group plant-a --trusted-key fleet.pub\n\n"
        "The password comes from EDGE_SDK_MQTT_PASSWORD. Stop with Ctrl-C or SIGTERM: "
        "the node publishes 'offline' and flushes in-flight messages first."
    )
)
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML/JSON config file.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Bundle to serve on first start (dir or .tar.gz).")
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="mqtt://host:port or mqtts://host:port; none = local only.")
    ] = None,
    node_id: Annotated[str | None, typer.Option(help="Node name in topics.")] = None,
    group: Annotated[str | None, typer.Option(help="Fleet group.")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Model slots, outbox and downloads.")
    ] = None,
    username: Annotated[str | None, typer.Option(help="MQTT user name.")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificate (mqtts).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (mutual TLS).")] = None,
    key: Annotated[Path | None, typer.Option(help="Client private key (mutual TLS).")] = None,
    protocol: Annotated[str | None, typer.Option(help="5, 3.1.1 or auto.")] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(help="Public key (.pub or a directory) accepted for updates; repeatable."),
    ] = None,
    telemetry_interval: Annotated[
        float | None, typer.Option(help="Seconds between telemetry messages (0: off).")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="Device profile.")] = None,
    backend: Annotated[str | None, typer.Option(help="Force one inference backend.")] = None,
    precision: Annotated[str | None, typer.Option(help="Force fp32, fp16 or int8.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Inference threads (1 suits small sensor models).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (tests, demos).")
    ] = None,
) -> None:
    """Start the node and serve until stopped."""
    setup_logging()
    with fail_on_errors():
        from edge_sdk.node import EdgeNode, load_config

        overrides: dict[str, Any] = {
            "bundle": bundle,
            "node_id": node_id,
            "group": group,
            "state_dir": state_dir,
            "broker.url": broker,
            "broker.username": username,
            "broker.ca": ca,
            "broker.cert": cert,
            "broker.key": key,
            "broker.protocol": protocol,
            "trusted_keys": trusted_key or None,
            "telemetry_interval_s": telemetry_interval,
            "profile": profile,
            "backend": backend,
            "precision": precision,
            "threads": threads,
        }
        cfg = load_config(config, **overrides)
        node = EdgeNode(cfg)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        d = node.describe()
        where = cfg.broker.url if cfg.broker else "local only (no broker)"
        console.print(
            f"edge-node {cfg.group}/{cfg.node_id}: {d['model']['name']} {d['model']['version']} "
            f"on {d['backend']} ({d['precision']}), {where}",
            highlight=False,
        )
        node.start()
        try:
            stop.wait(timeout=duration)
        finally:
            node.stop()
            console.print("edge-node stopped")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
