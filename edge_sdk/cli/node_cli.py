"""``edge-node``: the on-device daemon.

Exit codes: 0 success, 1 internal error, 2 usage error, 3 user error (bad
config, bundle or broker URL; one line), 5 trusted keys given and the bundle
is not signed by one of them (unsigned, edited after signing, or signed by
another key; nothing is served).
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import console, err_console, fail_on_errors, make_app, setup_logging

#: Environment variable holding the HTTP bearer token (never a flag: flags show in ps).
TOKEN_ENV = "EDGE_SDK_HTTP_TOKEN"
#: Longest an HTTP events request waits for the node's worker to score it.
EVENTS_TIMEOUT_S = 30.0

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
        "  edge-node run --bundle tep.bundle --broker mqtt://mq1:1883 --broker mqtt://mq2:1883 "
        "--username line3 --node-id line3 --group plant-a --trusted-key fleet.pub"
        "   # a broker cluster\n\n"
        "  edge-node run --bundle tep.bundle --broker mqtt://broker:1883 --scheme sparkplug "
        "--node-id line3 --group plant-a --primary-host scada   # Sparkplug B 3.0\n\n"
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
        list[str] | None,
        typer.Option(
            metavar="URL",
            help="mqtt://host:port or mqtts://host:port; none = local only. Repeat it (or "
            "separate URLs by commas) for the members of a broker cluster: the node fails "
            "over to the next one when its member is lost.",
        ),
    ] = None,
    node_id: Annotated[str | None, typer.Option(help="Node name in topics.")] = None,
    group: Annotated[str | None, typer.Option(help="Fleet group.")] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Model slots, outbox and downloads (default ./edge-node-state, "
            "relative to the working directory)."
        ),
    ] = None,
    username: Annotated[str | None, typer.Option(help="MQTT user name.")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA certificate (mqtts).")] = None,
    cert: Annotated[Path | None, typer.Option(help="Client certificate (mutual TLS).")] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", "--tls-key", help="Client private key (mutual TLS)."),
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="5, 3.1.1 or auto.")] = None,
    scheme: Annotated[
        str | None,
        typer.Option(
            help="json (edge/{group}/{node}/..., QoS 1) or sparkplug (Sparkplug B 3.0: "
            "NBIRTH/DDATA... under spBv1.0/{group}; updates stay on the JSON topics)."
        ),
    ] = None,
    primary_host: Annotated[
        str | None,
        typer.Option(help="Sparkplug: host application id whose STATE gates births and data."),
    ] = None,
    sparkplug_device: Annotated[
        str | None, typer.Option(help="Sparkplug: device id of the served model (default model).")
    ] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="Public key (.pub or a directory) trusted for the first bundle and for "
            "updates; repeatable. With keys, only signed bundles load (exit 5 otherwise)."
        ),
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
    http: Annotated[
        int | None,
        typer.Option(
            "--http",
            help="Also serve the current model over HTTP (Open Inference Protocol) on this "
            "port; token from EDGE_SDK_HTTP_TOKEN.",
        ),
    ] = None,
    http_host: Annotated[
        str, typer.Option(help="Address the --http server binds (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
) -> None:
    """Start the node and serve until stopped."""
    setup_logging()
    with fail_on_errors():
        from edge_sdk.node import EdgeNode, HeapKeeper, load_config

        urls = [u.strip() for b in broker or [] for u in b.split(",") if u.strip()]
        overrides: dict[str, Any] = {
            "bundle": bundle,
            "node_id": node_id,
            "group": group,
            "state_dir": state_dir,
            "broker.url": urls[0] if urls else None,
            "broker.failover_urls": urls[1:] if urls else None,
            "broker.username": username,
            "broker.ca": ca,
            "broker.cert": cert,
            "broker.key": key,
            "broker.protocol": protocol,
            "scheme": scheme,
            "sparkplug.primary_host": primary_host,
            "sparkplug.device": sparkplug_device,
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
        if cfg.broker and cfg.scheme == "sparkplug":
            host = cfg.sparkplug.primary_host
            where += f", Sparkplug B edge node {cfg.group}/{cfg.node_id}/{cfg.sparkplug.device}"
            where += f" (waits for host {host})" if host else ""
        console.print(
            f"edge-node {cfg.group}/{cfg.node_id}: {d['model']['name']} {d['model']['version']} "
            f"on {d['backend']} ({d['precision']}), {where}",
            highlight=False,
        )
        node.start()
        server = None
        keeper = None
        try:
            if http is not None:
                from edge_sdk.serving.http import InferenceServer

                adapter = _NodeModel(node)
                server = InferenceServer(
                    adapter,
                    host=http_host,
                    port=http,
                    predictor=adapter,
                    token=os.environ.get(TOKEN_ENV) or None,
                ).start()
                console.print(f"HTTP inference on {server.url}/v2", highlight=False)
            keeper = HeapKeeper().start()  # long collector passes paused scoring (docs/node.md)
            stop.wait(timeout=duration)
        finally:
            if keeper is not None:
                keeper.stop()
            if server is not None:
                server.stop()
            node.stop()
            console.print("edge-node stopped")


class _NodeModel:
    """The node's current model as the HTTP server's source and predictor.

    Every call borrows whatever runtime the node serves at that moment, so a
    model update swaps under the HTTP server without failing a request.
    """

    def __init__(self, node: Any) -> None:
        self._node = node

    @property
    def manifest(self) -> Any:
        return self._node.model.runtime.manifest

    def describe(self) -> dict[str, Any]:
        with self._node.model.use() as rt:
            return dict(rt.describe())

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return dict(self._node.infer(inputs))

    def score_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score ``events`` in the node's store, as if from MQTT; wait for every outcome."""
        from edge_sdk.errors import OverloadedError

        outcomes: list[dict[str, Any] | None] = [None] * len(events)
        left = [len(events)]
        done = threading.Event()
        lock = threading.Lock()

        def reply(i: int, outcome: dict[str, Any]) -> None:
            with lock:
                outcomes[i] = outcome
                left[0] -= 1
                if left[0] == 0:
                    done.set()

        self._node.submit_events(events, reply=reply)
        if not done.wait(EVENTS_TIMEOUT_S):
            raise OverloadedError(
                f"the node did not score {len(events)} event(s) within {EVENTS_TIMEOUT_S:g} s"
            )
        return [o for o in outcomes if o is not None]


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edge-node serve out/tep.bundle          # http://127.0.0.1:8000\n\n"
        "  EDGE_SDK_HTTP_TOKEN=s3cret edge-node serve tep.bundle --host 0.0.0.0\n\n"
        "  edge-node serve tep.bundle --max-batch 64 --threads 2 --cache-mb 64\n\n"
        "  curl localhost:8000/v2/models/tep-sensor-gcn      # metadata\n\n"
        "  curl -d @request.json localhost:8000/v2/models/tep-sensor-gcn/infer\n\n"
        "Speaks the Open Inference Protocol (KServe v2 REST, with the binary tensor "
        "extension); Prometheus metrics on /metrics. Concurrent requests are merged into "
        "batches of up to --max-batch: by default whatever waits when the model is free "
        "(--max-delay-ms > 0 waits that long for fuller batches). Not meant "
        "to face the internet: bind 127.0.0.1 (default) or put a reverse proxy with TLS in "
        "front, and set a token. Stop with Ctrl-C or SIGTERM."
    )
)
def serve(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz.")],
    host: Annotated[
        str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: pick a free one).")] = 8000,
    token_env: Annotated[
        str,
        typer.Option(
            help="Environment variable holding the bearer token; unset or empty: no token."
        ),
    ] = TOKEN_ENV,
    max_batch: Annotated[int, typer.Option(min=1, help="Most requests per backend call.")] = 32,
    max_delay_ms: Annotated[
        float, typer.Option(min=0, help="Longest wait for a batch to fill, in milliseconds.")
    ] = 0.0,
    max_body_mb: Annotated[
        float, typer.Option(min=0.001, help="Largest request body in MiB (larger: 413).")
    ] = 8.0,
    request_timeout_s: Annotated[
        float,
        typer.Option(
            min=0.001, help="Seconds a request has to arrive whole, headers and body (later: 408)."
        ),
    ] = 10.0,
    max_connections: Annotated[
        int,
        typer.Option(
            min=1,
            help="Connections open at once; at the limit the slowest unfinished one makes room.",
        ),
    ] = 128,
    cache_mb: Annotated[
        float,
        typer.Option(min=0, help="Result cache in MiB (0: off); repeated requests skip the model."),
    ] = 0.0,
    threads: Annotated[int | None, typer.Option(help="Inference threads.")] = None,
    profile: Annotated[str, typer.Option(help="Device profile (auto, name or YAML).")] = "auto",
    backend: Annotated[str | None, typer.Option(help="Force one inference backend.")] = None,
    precision: Annotated[str | None, typer.Option(help="Force fp32, fp16 or int8.")] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option(
            help="Public key (.pub or a directory); repeatable. Serve only a bundle signed "
            "by one of them (unsigned, edited or foreign-signed: exit 5, nothing served)."
        ),
    ] = None,
) -> None:
    """Serve a bundle over HTTP (Open Inference Protocol) until stopped."""
    setup_logging()
    with fail_on_errors():
        from edge_sdk.runtime import Runtime
        from edge_sdk.serving.batcher import BatcherConfig
        from edge_sdk.serving.http import InferenceServer

        token = os.environ.get(token_env) or None
        rt = Runtime.load(
            bundle,
            profile=profile,
            backend=backend,
            threads=threads,
            precision=precision,
            trusted_keys=trusted_key or None,
        )
        try:
            server = InferenceServer(
                rt,
                host=host,
                port=port,
                token=token,
                max_body_bytes=int(max_body_mb * (1 << 20)),
                request_timeout_s=request_timeout_s,
                max_connections=max_connections,
                batcher=BatcherConfig(max_batch=max_batch, max_delay_ms=max_delay_ms),
                cache_bytes=int(cache_mb * (1 << 20)),
            )
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: server.request_stop())
            d = rt.describe()
            server.start()  # binds, warms up
            console.print(
                f"edge-node serve: {d['model']} {d['version']} on {d['backend']} "
                f"({d['precision']}) at {server.url}/v2/models/{d['model']}"
                + ("" if token else " (no token)"),
                highlight=False,
            )
            if not token and host not in ("127.0.0.1", "localhost", "::1"):
                err_console.print(
                    f"warning: {host} without a token: anyone who reaches this port can "
                    f"run the model (set {token_env})",
                    highlight=False,
                )
            server.serve_forever()
        finally:
            rt.close()
        console.print("edge-node serve stopped")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
