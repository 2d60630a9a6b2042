"""edge-fleet as documented: the README's commands, run as written, against real brokers."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_run import edge_fleet, line_queue
from typer.testing import CliRunner

from edge_sdk.cli.fleet_cli import app as fleet

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 20  # the sensor bundles' window (samples)
runner = CliRunner()


def _documented(doc: Path, prefix: str) -> list[list[str]]:
    """Every command line of ``doc`` that starts with ``prefix``, split as a shell would."""
    lines = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith(prefix):
            lines.append(shlex.split(line, comments=True))
    return lines


def test_the_readme_group_wide_deploy_runs_as_written_and_every_node_swaps(
    broker, make_node, sensor_bundles, fleet_keys, tmp_path
):
    """``edge-fleet deploy out/tep-v2.bundle --group plant-a --key keys/fleet.key``: no --node.

    The README's line word for word, in a directory laid out as the README
    assumes (``out/``, ``keys/``), the broker from ``EDGE_SDK_BROKER``; only
    ``--json`` is added, so the outcome is read as data. Two nodes of the group
    take the update: group-wide means every node, not one.
    """
    [readme_line] = [
        words
        for words in _documented(ROOT / "README.md", "edge-fleet deploy")
        if "--node" not in words
    ]
    assert readme_line in _documented(ROOT / "docs/node.md", "edge-fleet deploy")
    bundle, group = Path(readme_line[2]), readme_line[readme_line.index("--group") + 1]
    key = Path(readme_line[readme_line.index("--key") + 1])
    shutil.copytree(sensor_bundles["v2"], tmp_path / bundle)  # unsigned: --key signs it
    (tmp_path / key.parent).mkdir(parents=True)
    shutil.copy(fleet_keys["key"], tmp_path / key)
    nodes = [make_node(broker, sensor_bundles["v1"], node_id=n, group=group) for n in ("n1", "n2")]
    assert {n.model.runtime.manifest.model.version for n in nodes} == {"1.0.0"}

    out = edge_fleet(
        *readme_line[1:], "--json", cwd=tmp_path, env={"EDGE_SDK_BROKER": broker.url}, timeout=120
    )

    outcome = json.loads(out.stdout)
    assert {n: (p["step"], p["version"]) for n, p in outcome.items()} == {
        "n1": ("swapped", "1.1.0"),
        "n2": ("swapped", "1.1.0"),
    }
    assert {n.model.runtime.manifest.model.version for n in nodes} == {"1.1.0"}


def test_watch_json_prints_every_sparkplug_ddata_as_json(broker, make_node, sensor_bundles):
    """Every line of ``watch --json`` is strict JSON, Sparkplug DDATA included.

    The watch starts after the node's births (the usual case): it has not seen
    the datatypes, so the output array arrives as base64 of its packed doubles.
    After a Rebirth (``command rebirth --sparkplug``) it is a JSON array.
    """
    from edge_sdk.node.config import OutboxConfig

    node = make_node(
        broker, sensor_bundles["v1"], scheme="sparkplug", outbox=OutboxConfig(replay_s=0)
    )
    exe = Path(sys.executable).with_name("edge-fleet")
    args = ["watch", "--json", "--broker", broker.url, "--group", "plant", "--duration", "90"]
    watch = subprocess.Popen(
        [str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        lines = line_queue(watch)
        first = json.loads(lines.get(timeout=30))  # the retained JSON status: subscribed
        assert (first["type"], first["state"]) == ("status", "online")

        fed = [0]  # rows so far: the node's time stamps must keep increasing

        def ddata(count: int) -> list[dict]:
            """Feed rows for ``count`` more results; every line until then must parse."""
            n = count + (WINDOW - 1 if not fed[0] else 0)
            rows = np.random.default_rng(count).standard_normal((n, 52))
            for t, row in enumerate(rows, fed[0]):
                node.submit_sensors({"t": t, "values": row.tolist()})
            fed[0] += n
            out: list[dict] = []
            while len(out) < count:
                msg = json.loads(lines.get(timeout=30), parse_constant=_refuse)
                if msg["type"] == "DDATA" and "Result/Id" in msg["metrics"]:
                    out.append(msg["metrics"])
            return out

        before = ddata(5)
        assert [m["Result/Id"] for m in before] == [1, 2, 3, 4, 5]
        for m in before:
            outputs = np.frombuffer(base64.b64decode(m["Result/Outputs/out"]), "<f8")
            assert outputs.shape == (22,) and int(outputs.argmax()) == m["Result/Class"]
            assert m["Result/Label"] == f"fault_{m['Result/Class']}"

        rebirth = ["command", "rebirth", "--group", "plant", "--node", "n1", "--sparkplug"]
        edge_fleet(*rebirth, "--broker", broker.url)
        after = ddata(3)
        assert [m["Result/Id"] for m in after] == [6, 7, 8]
        for m in after:
            outputs = m["Result/Outputs/out"]
            assert len(outputs) == 22 and all(isinstance(v, float) for v in outputs)
            assert int(np.argmax(outputs)) == m["Result/Class"]
    finally:
        watch.kill()
        _, err = watch.communicate(timeout=10)
    assert "Traceback" not in err and "not JSON serializable" not in err, err


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def test_json_lines_are_strict_json_whatever_a_message_holds():
    import datetime as dt

    from edge_sdk.cli._json_lines import json_line

    when = dt.datetime(2026, 12, 7, 1, 2, 3, tzinfo=dt.UTC)
    msg = {
        "nan": float("nan"),
        "inf": [float("inf"), -float("inf")],
        "bytes": b"\x00\xff",
        "when": when,
        "np": np.float32(1.5),
        "arr": np.arange(2),
        "tuple": (1, "a"),
    }
    line = json_line(msg)
    assert "\n" not in line
    assert json.loads(line, parse_constant=_refuse) == {
        "nan": None,
        "inf": [None, None],
        "bytes": "AP8=",
        "when": "2026-12-07T01:02:03+00:00",
        "np": 1.5,
        "arr": [0, 1],
        "tuple": [1, "a"],
    }


def test_status_watch_and_command_speak_mqtt_3_1_1_when_told(broker, make_node, sensor_bundles):
    """``--protocol 3.1.1`` on each connecting command: the broker's log shows the version."""
    node = make_node(broker, sensor_bundles["v1"], telemetry_interval_s=0)
    opts = ["--broker", broker.url, "--protocol", "3.1.1"]
    status = runner.invoke(fleet, ["status", *opts, "--json", "--wait", "0.5"])
    assert status.exit_code == 0, status.output
    assert [(v["node"], v["state"]) for v in json.loads(status.output)] == [("n1", "online")]

    # The watch is a real process; its first line (the node's retained status)
    # says it has subscribed, so the command is sent only then, not after a
    # fixed time that a loaded machine can overrun.
    exe = Path(sys.executable).with_name("edge-fleet")
    watch = subprocess.Popen(
        [str(exe), "watch", *opts, "--json", "--duration", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    kinds: list[str] = []
    try:
        lines = line_queue(watch)
        kinds.append(json.loads(lines.get(timeout=30))["type"])
        assert kinds == ["status"]
        sent = runner.invoke(
            fleet, ["command", "telemetry", "--group", "plant", "--node", "n1", *opts]
        )
        assert sent.exit_code == 0, sent.output
        deadline = time.monotonic() + 30
        while "telemetry" not in kinds:
            assert time.monotonic() < deadline, f"the watch printed only {kinds}"
            kinds.append(
                json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic())))["type"]
            )
    finally:
        watch.kill()
        _, err = watch.communicate(timeout=10)
    assert "Traceback" not in err, err
    assert kinds.count("telemetry") == 1
    assert node.link.connected
    # status, watch and command each connected once, with MQTT 3.1.1; the node with MQTT 5
    assert sorted(_clients(broker, "edge-fleet-").values()) == ["p2", "p2", "p2"]
    assert list(_clients(broker, "edge-node-").values()) == ["p5"]


def _clients(broker, prefix: str) -> dict[str, str]:
    """Client id -> mosquitto's protocol tag ("p2": MQTT 3.1.1, "p5": MQTT 5) from its log."""
    log = broker.log_path.read_text(errors="replace")
    found = re.findall(r"New client connected from \S+ as (\S+) \((p\d)", log)
    return {client: level for client, level in found if client.startswith(prefix)}


def test_tls_options_reach_a_tls_listener_and_a_bad_ca_says_why(
    mosquitto_path, make_node, sensor_bundles, tmp_path
):
    """``--ca`` verifies the broker; without it the error names the failed verification."""
    from mqtt_helpers import tls_material

    from edge_sdk.fleet.brokers import LocalBroker, free_port

    tls = tls_material(tmp_path)
    port = free_port()
    extra = f"listener {port} 127.0.0.1\n" + "".join(
        f"{name}file {tls[key]}\n" for name, key in (("ca", "ca"), ("cert", "cert"), ("key", "key"))
    )
    with LocalBroker(tmp_path / "broker", extra_config=extra).start() as b:
        make_node(b, sensor_bundles["v1"])  # on the plain listener
        url = f"mqtts://127.0.0.1:{port}"
        ok = runner.invoke(fleet, ["status", "--broker", url, "--ca", str(tls["ca"]), "--json"])
        assert ok.exit_code == 0, ok.output
        assert [(v["node"], v["state"]) for v in json.loads(ok.stdout)] == [("n1", "online")]

        no_ca = edge_fleet("status", "--broker", url, check=3)
        assert "certificate verify failed" in no_ca.stderr and "--ca" in no_ca.stderr
        plain = edge_fleet("status", "--broker", b.url, "--ca", str(tls["ca"]), check=3)
        assert "need a TLS broker URL" in plain.stderr


def test_a_refused_login_exits_3_with_the_brokers_reason_on_every_command(
    mosquitto_path, sensor_bundles, fleet_keys, tmp_path
):
    """mosquitto with ``allow_anonymous false`` and a password file: the reason, not a timeout."""
    from edge_sdk.fleet.brokers import LocalBroker

    bundle = shutil.copytree(sensor_bundles["v2"], tmp_path / "v2.bundle")
    with LocalBroker(tmp_path / "broker", users={"fleet": "s3cret"}).start() as b:
        commands = {
            "status": ["status"],
            "watch": ["watch", "--json", "--duration", "1"],
            "command": ["command", "telemetry", "--group", "plant"],
            "deploy": ["deploy", str(bundle), "--group", "plant", "--key", str(fleet_keys["key"])],
        }
        script = edge_fleet("status", "--broker", b.url, check=3, timeout=30)  # the real script
        errors = {"script": script.stderr}
        for name, args in commands.items():  # in-process (no interpreter start each)
            res = runner.invoke(fleet, [*args, "--broker", b.url])
            assert res.exit_code == 3, (name, res.output)
            errors[name] = res.stderr
        for name, stderr in errors.items():
            [error] = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert f"cannot reach the broker at {b.url}: not authorised (CONNACK 0x87)" in error
            assert "check --username and EDGE_SDK_MQTT_PASSWORD" in error, name

        login = ["--broker", b.url, "--username", "fleet"]
        wrong = runner.invoke(fleet, ["status", *login], env={"EDGE_SDK_MQTT_PASSWORD": "nope"})
        assert wrong.exit_code == 3  # mosquitto 2.0 answers 0x87 to a wrong password too
        assert "not authorised (CONNACK 0x87)" in wrong.stderr
        v311 = runner.invoke(
            fleet, ["status", *login, "--protocol", "3.1.1"], env={"EDGE_SDK_MQTT_PASSWORD": "x"}
        )
        assert v311.exit_code == 3 and "not authorised (CONNACK 0x87)" in v311.stderr
        right = runner.invoke(
            fleet,
            ["status", *login, "--json", "--wait", "0.2"],
            env={"EDGE_SDK_MQTT_PASSWORD": "s3cret"},
        )
        assert right.exit_code == 0, right.output
        assert json.loads(right.stdout) == []

        # Credentials in the URL log in (they were ignored before) and never show in errors.
        in_url = b.url.replace("mqtt://", "mqtt://fleet:s3cret@")
        ok = runner.invoke(fleet, ["status", "--broker", in_url, "--json", "--wait", "0.2"])
        assert ok.exit_code == 0, ok.output
        bad = runner.invoke(
            fleet, ["status", "--broker", b.url.replace("mqtt://", "mqtt://fleet:n0pe@")]
        )
        assert bad.exit_code == 3 and "n0pe" not in bad.output + bad.stderr
        assert f"cannot reach the broker at {b.url}: not authorised (CONNACK 0x87)" in bad.stderr


def test_watch_share_on_a_broker_without_shared_subscriptions_names_the_refusal(
    ejabberd_broker,
):
    """ejabberd 23.01 refuses ``$share/...`` filters (SUBACK 0x9E): said, not swallowed."""
    b = ejabberd_broker
    login = ["--broker", b.url, "--username", b.username]
    env = {"EDGE_SDK_MQTT_PASSWORD": b.password}
    out = edge_fleet("watch", *login, "--share", "consumers", "--json", env=env, check=3)
    [error] = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert f"the broker at {b.url}" in error and "shared subscriptions" in error
    assert "without --share" in error or "leave out --share" in error
    plain = edge_fleet("watch", *login, "--json", "--duration", "0.5", env=env)
    assert plain.stdout == ""  # no node, nothing to print, and no error

    # Below the watcher's probe: a link whose SUBACK refuses a filter fails naming it.
    from edge_sdk.errors import ConfigError
    from edge_sdk.fleet.connect import connect
    from edge_sdk.mqtt.config import BrokerConfig
    from edge_sdk.mqtt.link import MqttLink

    shared = "$share/g/edge/+/+/results"
    link = MqttLink(
        BrokerConfig(url=b.url, **b.client_options()), "h1-share", subscriptions=[(shared, 1)]
    )
    with pytest.raises(ConfigError) as refused:
        connect(link, 10)
    # the reason: the SUBACK's 0x9E, or the CONNACK's "Shared Subscription Available 0"
    assert (
        f"the broker at {b.url} refused the subscription to {shared}: "
        "shared subscriptions not supported ("
    ) in str(refused.value)
    hint = ": leave out --share, or enable shared subscriptions on the broker"
    assert str(refused.value).endswith(hint)
