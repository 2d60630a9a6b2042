"""``edge-fleet``: the cloud-side tool (keys, signing, deploys, status, live watch).

Exit codes: 0 success, 1 internal error, 2 usage error, 3 user error (one
line), 5 a deploy that some node refused or never answered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from ._common import console, err_console, fail_on_errors, make_app
from ._json_lines import json_line
from ._mqtt_options import BROKER_HELP, broker_options

EXIT_DEPLOY_INCOMPLETE = 5

app = make_app(
    "edge-fleet",
    (
        "Manage a fleet of edge nodes over MQTT: make signing keys, sign bundles, deploy "
        "them to a group, and watch status, results and telemetry.\n\n"
        "Example: edge-fleet deploy out/tep.bundle --group plant-a --key fleet.key "
        "--broker mqtt://broker:1883"
    ),
)


@app.command(epilog="Example:\n\n  edge-fleet keys --out keys/ --name fleet")
def keys(
    out: Annotated[Path, typer.Option(help="Directory for the key pair.")] = Path("."),
    name: Annotated[str, typer.Option(help="File stem: NAME.key and NAME.pub.")] = "fleet",
    overwrite: Annotated[bool, typer.Option(help="Replace existing files.")] = False,
) -> None:
    """Create an ed25519 signing key pair (keep NAME.key secret; give nodes NAME.pub)."""
    with fail_on_errors():
        from edge_sdk.signing import generate_keypair, key_id, load_private_key

        priv, pub = generate_keypair(out, name, overwrite=overwrite)
        kid = key_id(load_private_key(priv).public_key())
        console.print(f"private key: {priv}\npublic key:  {pub}\nkey id:      {kid}")


@app.command(epilog="Example:\n\n  edge-fleet sign out/tep.bundle --key keys/fleet.key")
def sign(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    key: Annotated[Path, typer.Option(help="ed25519 private key (PEM).")],
) -> None:
    """Sign a bundle's manifest (writes manifest.sig into the bundle)."""
    with fail_on_errors():
        from edge_sdk.signing import sign_bundle

        console.print(f"signed: {sign_bundle(bundle, key)}")


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edge-fleet deploy out/tep.bundle --group plant-a --key keys/fleet.key\n\n"
        "  edge-fleet deploy tep-signed.tar.gz --group plant-a --node line3 --force\n\n"
        "Nodes check the signature against their trusted keys, refuse versions that are not "
        "newer (unless --force), run the bundle's canary, and report each step.\n\n" + BROKER_HELP
    )
)
@broker_options
def deploy(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or signed .tar.gz.")],
    group: Annotated[str, typer.Option(help="Target group.")],
    broker: Any,
    node: Annotated[
        str | None, typer.Option(help="Only this node (default: every node of the group).")
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="Sign the bundle directory with this key first.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Install even if not newer.")] = False,
    wait_for: Annotated[
        list[str] | None, typer.Option(help="Wait for these nodes (repeatable).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the nodes.")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Offer a signed bundle to a group (or one node), serve its chunks, report outcomes."""
    with fail_on_errors():
        from edge_sdk.fleet.deploy import deploy as run_deploy

        def show(p: Any) -> None:
            if not as_json:
                extra = f" {p.received}/{p.chunks}" if p.step == "downloading" else ""
                reason = f": {p.reason}" if p.reason else ""
                err_console.print(f"{p.node}: {p.step}{extra}{reason}", highlight=False)

        outcome = run_deploy(
            broker,
            group,
            bundle,
            key=key,
            node=node,
            force=force,
            timeout_s=timeout,
            wait_for=set(wait_for) if wait_for else None,
            on_progress=show,
        )
        if as_json:
            console.print_json(json.dumps({n: p.__dict__ for n, p in outcome.items()}))
        else:
            table = Table("node", "outcome", "reason")
            for n, p in sorted(outcome.items()):
                table.add_row(n, p.step, p.reason)
            console.print(table)
        if not outcome or any(p.step != "swapped" for p in outcome.values()):
            if not outcome:
                err_console.print("no node of the group answered (are they online?)")
            raise typer.Exit(EXIT_DEPLOY_INCOMPLETE)


def _node_table(views: list[Any]) -> Table:
    table = Table(
        "group/node",
        "state",
        "model",
        "backend",
        "results",
        "last class",
        "alerts",
        "errors",
        "p50/p99 ms",
        "outbox",
        "update",
        "seen",
    )
    now = time.time()
    for v in views:
        lat = (
            f"{v.latency_p50_ms:.2f}/{v.latency_p99_ms:.2f}"
            if v.latency_p50_ms is not None and v.latency_p99_ms is not None
            else ""
        )
        table.add_row(
            f"{v.group}/{v.node}",
            v.state,
            f"{v.model} {v.version}".strip(),
            v.backend,
            str(v.results),
            v.last_class,
            f"{v.alerts} {v.alert_state}".strip(),
            str(v.errors),
            lat,
            "" if v.outbox_pending is None else str(v.outbox_pending),
            v.update,
            f"{now - v.last_seen:.0f}s ago",
        )
    return table


@app.command(
    epilog="Examples:\n\n  edge-fleet status --group plant-a --json\n\n"
    "  edge-fleet status --broker mqtts://broker:8883 --ca ca.pem --username fleet "
    "--protocol 3.1.1\n\n" + BROKER_HELP
)
@broker_options
def status(
    broker: Any,
    group: Annotated[str, typer.Option(help="Group, or + for all.")] = "+",
    wait: Annotated[float, typer.Option(help="Seconds to collect retained statuses.")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which node runs which model version and backend (from their retained status)."""
    with fail_on_errors():
        from edge_sdk.fleet.watch import FleetWatcher

        with FleetWatcher(broker, group, streams=()) as watcher:
            time.sleep(wait)
            views = watcher.snapshot()
        if as_json:
            console.print_json(json.dumps([v.as_dict() for v in views]))
        else:
            console.print(_node_table(views))


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edge-fleet watch --group plant-a\n\n"
        "  edge-fleet watch --json --duration 60 > results.jsonl\n\n"
        "  edge-fleet watch --share consumers --json    # MQTT 5 shared subscription\n\n"
        "  edge-fleet watch --broker mqtt://rabbit:1883 --protocol 3.1.1 --json\n\n" + BROKER_HELP
    )
)
@broker_options
def watch(
    broker: Any,
    group: Annotated[str, typer.Option(help="Group, or + for all.")] = "+",
    share: Annotated[
        str | None, typer.Option(help="MQTT 5 shared subscription name (scale out consumers).")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON message per line instead of a table. Sparkplug metrics are JSON "
            "values; bytes (BYTES metrics, and arrays of a node whose birth this watch has "
            "not seen) are base64 text; NaN and infinities are null.",
        ),
    ] = False,
) -> None:
    """Live table of the fleet's results, alerts and telemetry (duplicates removed)."""
    with fail_on_errors():
        from edge_sdk.fleet.watch import FleetWatcher

        def emit(kind: str, body: dict[str, Any]) -> None:
            if as_json:
                print(json_line(body), flush=True)

        deadline = time.monotonic() + duration if duration else None
        with FleetWatcher(broker, group, share, on_message=emit) as w:
            try:
                if as_json:
                    while deadline is None or time.monotonic() < deadline:
                        time.sleep(0.2)
                else:
                    with Live(_node_table([]), console=console, refresh_per_second=4) as live:
                        while deadline is None or time.monotonic() < deadline:
                            live.update(_node_table(w.snapshot()))
                            time.sleep(0.25)
            except KeyboardInterrupt:
                pass


@app.command(
    epilog=(
        "Examples:\n\n"
        "  edge-fleet command rollback --group plant-a --node line3\n\n"
        "  edge-fleet command telemetry_interval --value 5 --group plant-a\n\n"
        "  edge-fleet command rebirth --group plant-a --node line3 --sparkplug   # NCMD\n\n"
        + BROKER_HELP
    )
)
@broker_options
def command(
    cmd: Annotated[str, typer.Argument(help="telemetry_interval, telemetry, rollback, rebirth.")],
    group: Annotated[str, typer.Option(help="Target group.")],
    node: Annotated[str | None, typer.Option(help="One node (default: the whole group).")] = None,
    value: Annotated[float | None, typer.Option(help="Argument of the command.")] = None,
    broker: Any = None,
    sparkplug: Annotated[
        bool,
        typer.Option(
            "--sparkplug",
            help="Send it as a Sparkplug B NCMD (rebirth, rollback, telemetry_interval; one node).",
        ),
    ] = False,
) -> None:
    """Send a command to one node or a whole group."""
    with fail_on_errors():
        import uuid

        from edge_sdk.errors import ConfigError
        from edge_sdk.fleet.connect import connect
        from edge_sdk.mqtt.link import MqttLink
        from edge_sdk.mqtt.topics import GROUP_WIDE, Inbound, JsonScheme, dumps

        scheme = JsonScheme(group, node or GROUP_WIDE) if node else None
        topic = scheme.topic(Inbound.CMD) if scheme else f"edge/{group}/{GROUP_WIDE}/{Inbound.CMD}"
        if sparkplug:
            from edge_sdk.mqtt.sparkplug import MessageType
            from edge_sdk.mqtt.sparkplug import topic as sparkplug_topic
            from edge_sdk.mqtt.sparkplug.host import command as sparkplug_command

            if not node:
                raise ConfigError("Sparkplug commands go to one node: give --node")
            topic = sparkplug_topic(group, MessageType.NCMD, node)
            payload = sparkplug_command(cmd, value)
        link = connect(MqttLink(broker, f"edge-fleet-cmd-{uuid.uuid4().hex[:8]}"), 10.0)
        try:
            if not sparkplug:
                body: dict[str, Any] = {"cmd": cmd}
                if value is not None:
                    body["value"] = value
                payload = dumps(body)
            if not link.publish_wait(topic, payload):
                raise ConfigError("the broker did not acknowledge the command")
            console.print(f"sent {cmd} to {topic}")
        finally:
            link.stop(flush_s=0)


@app.command(
    "bridge-config",
    epilog=(
        "Examples:\n\n"
        "  edge-fleet bridge-config --cloud cloud.example.com:8883 --name plant-a "
        "--topic 'edge/plant-a/# both 1' --topic 'spBv1.0/plant-a/# both 1' "
        "--cafile /etc/mosquitto/certs/cloud-ca.pem --outage 3600 --rate 50 "
        ">> /etc/mosquitto/conf.d/edge.conf\n\n"
        "Settings, reasons and measurements: docs/brokers.md."
    ),
)
def bridge_config(
    cloud: Annotated[str, typer.Option(help="Cloud broker as host:port.")],
    name: Annotated[str, typer.Option(help="Connection name; one per edge site.")],
    topic: Annotated[
        list[str] | None,
        typer.Option(help="'pattern in|out|both qos', repeatable (default edge/# and spBv1.0/#)."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="mqttv50 or mqttv311.")] = "mqttv50",
    cafile: Annotated[
        Path | None, typer.Option(help="CA of the cloud broker (enables TLS).")
    ] = None,
    certfile: Annotated[Path | None, typer.Option(help="This site's client certificate.")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="Its private key.")] = None,
    username: Annotated[str | None, typer.Option(help="remote_username on the cloud.")] = None,
    outage: Annotated[
        float, typer.Option(min=1, help="Uplink outage to survive, seconds (sizes the queues).")
    ] = 3600,
    rate: Annotated[float, typer.Option(min=0.001, help="Messages/s the site sends.")] = 50,
    message_bytes: Annotated[int, typer.Option(min=1, help="Typical topic + payload bytes.")] = 530,
    qos0: Annotated[
        bool, typer.Option(help="Queue QoS 0 (Sparkplug data) while the uplink is down.")
    ] = True,
) -> None:
    """Print an edge mosquitto's queue limits and its bridge section to a cloud broker.

    The remote password comes from EDGE_SDK_MQTT_PASSWORD.
    """
    with fail_on_errors():
        from edge_sdk._env import env_str
        from edge_sdk.errors import ConfigError
        from edge_sdk.fleet import bridge

        host, sep, port = cloud.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--cloud {cloud!r}: expected host:port, e.g. cloud.example.com:8883")
        limits = bridge.outage_limits(outage, rate, message_bytes, queue_qos0=qos0)
        print(f"# queues for a {outage:g} s outage at {rate:g} messages/s of ~{message_bytes} B")
        print(f"max_queued_messages {limits.max_queued_messages}")
        print(f"max_queued_bytes {limits.max_queued_bytes}")
        print(f"queue_qos0_messages {'true' if limits.queue_qos0_messages else 'false'}")
        print(f"max_inflight_messages {limits.max_inflight_messages}")
        print(
            bridge.bridge_config(
                host,
                int(port),
                name=name,
                protocol=protocol,  # type: ignore[arg-type]  # checked by bridge_config
                topics=topic or bridge.DEFAULT_TOPICS,
                cafile=cafile,
                certfile=certfile,
                keyfile=keyfile,
                username=username,
                password=env_str("MQTT_PASSWORD", None) if username else None,
            ),
            end="",
        )


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
