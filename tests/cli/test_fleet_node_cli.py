"""edge-node and edge-fleet command lines against a real broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import line_queue
from typer.testing import CliRunner

from edge_sdk.cli.fleet_cli import app as fleet
from edge_sdk.cli.node_cli import app as node_app
from edge_sdk.node import HeapKeeper

runner = CliRunner()


def test_keys_sign_and_deploy_through_the_cli(broker, make_node, sensor_bundles, tmp_path):
    keys = tmp_path / "keys"
    out = runner.invoke(fleet, ["keys", "--out", str(keys)])
    assert out.exit_code == 0, out.output
    assert "key id:" in out.output and (keys / "fleet.key").stat().st_mode & 0o077 == 0
    again = runner.invoke(fleet, ["keys", "--out", str(keys)])
    assert again.exit_code == 3 and "overwrite" in again.output  # never clobbers a key
    bundle = shutil.copytree(sensor_bundles["v2"], tmp_path / "v2.bundle")
    signed = runner.invoke(fleet, ["sign", str(bundle), "--key", str(keys / "fleet.key")])
    assert signed.exit_code == 0 and (bundle / "manifest.sig").is_file()

    first = shutil.copytree(sensor_bundles["v1"], tmp_path / "v1.bundle")
    # A node that trusts keys loads only signed bundles, its first one too.
    signed_first = runner.invoke(fleet, ["sign", str(first), "--key", str(keys / "fleet.key")])
    assert signed_first.exit_code == 0, signed_first.output
    node = make_node(broker, first, trusted_keys=[keys / "fleet.pub"])
    deployed = runner.invoke(
        fleet,
        ["deploy", str(bundle), "--group", "plant", "--node", "n1", "--broker", broker.url],
    )
    assert deployed.exit_code == 0, deployed.output
    assert "swapped" in deployed.output
    assert node.model.runtime.manifest.model.version == "1.1.0"

    status = runner.invoke(fleet, ["status", "--broker", broker.url, "--json", "--wait", "0.5"])
    assert status.exit_code == 0, status.output
    views = json.loads(status.output)
    assert [(v["node"], v["state"], v["version"]) for v in views] == [("n1", "online", "1.1.0")]


def test_refused_deploy_exits_5_with_the_reason(
    broker, make_node, sensor_bundles, fleet_keys, tmp_path
):
    make_node(broker, sensor_bundles["v1"])
    old = shutil.copytree(sensor_bundles["old"], tmp_path / "old.bundle")
    out = runner.invoke(
        fleet,
        [
            "deploy",
            str(old),
            "--group",
            "plant",
            "--node",
            "n1",
            "--broker",
            broker.url,
            "--key",
            str(fleet_keys["key"]),
            "--json",
        ],
    )
    assert out.exit_code == 5
    outcome = json.loads(out.output)["n1"]
    assert outcome["step"] == "refused" and "older" in outcome["reason"]


def test_watch_json_deduplicates_and_command_reaches_the_node(broker, make_node, sensor_bundles):
    """``watch --json`` prints each outbox message once; ``command telemetry`` reaches the node.

    The watch is a real ``edge-fleet`` process; the test waits for its first
    line (the node's retained status: it has subscribed) before sending, not
    for a fixed time, which a loaded machine can overrun.
    """
    node = make_node(broker, sensor_bundles["v1"])
    exe = Path(sys.executable).with_name("edge-fleet")
    args = ["watch", "--broker", broker.url, "--json", "--duration", "90"]
    watch = subprocess.Popen(
        [str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    bodies: list[dict] = []
    try:
        lines = line_queue(watch)
        bodies.append(json.loads(lines.get(timeout=30)))
        assert bodies[0]["type"] == "status"  # retained: the watch has subscribed
        sent = runner.invoke(
            fleet,
            ["command", "telemetry", "--group", "plant", "--node", "n1", "--broker", broker.url],
        )
        assert sent.exit_code == 0, sent.output
        for i in range(21):
            node.submit_sensors({"t": i, "values": [0.1 * i] * 52})

        def kinds() -> list[str]:
            return [b["type"] for b in bodies]

        deadline = time.monotonic() + 30
        while (kinds().count("telemetry"), kinds().count("results")) < (1, 2):
            assert time.monotonic() < deadline, f"the watch printed only {kinds()}"
            bodies.append(json.loads(lines.get(timeout=max(0.1, deadline - time.monotonic()))))
        time.sleep(2.0)  # a duplicate would come now: the watch must drop it
        while not lines.empty():
            bodies.append(json.loads(lines.get_nowait()))
    finally:
        watch.kill()
        _, err = watch.communicate(timeout=10)
    assert "Traceback" not in err, err
    assert kinds().count("telemetry") == 1 and kinds().count("results") == 2
    outbox_msgs = [b for b in bodies if b["type"] != "status"]  # status is retained, id-less
    assert len({b["id"] for b in outbox_msgs}) == len(outbox_msgs) == 3


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--broker", "http://broker:80"], "expected mqtt://host:port"),
        (["--node-id", "bad/name"], "not a valid name"),
        ([], "no model"),
    ],
)
def test_node_cli_user_errors_are_one_line_exit_3(args, words, tmp_path):
    out = runner.invoke(node_app, ["run", "--state-dir", str(tmp_path / "s"), *args])
    assert out.exit_code == 3, out.output
    assert words in out.output and "Traceback" not in out.output


def test_bridge_config_output_bridges_a_real_edge_broker(broker, mqtt_client_factory, tmp_path):
    """The printed section is a working mosquitto config: a message crosses edge -> cloud."""
    from edge_sdk.fleet.brokers import BrokerLimits, LocalBroker

    args = ["bridge-config", "--cloud", f"127.0.0.1:{broker.port}", "--name", "plant-a"]
    res = runner.invoke(fleet, [*args, "--topic", "edge/plant-a/# both 1", "--outage", "60"])
    assert res.exit_code == 0, res.output
    assert "max_queued_messages 6000" in res.output  # 60 s x 50 msg/s x headroom 2
    assert "queue_qos0_messages true" in res.output and "cleansession false" in res.output
    cloud = mqtt_client_factory(broker)
    cloud.subscribe("edge/plant-a/#")
    with LocalBroker(
        tmp_path / "edge", extra_config=res.output, limits=BrokerLimits(max_inflight_messages=20)
    ).start() as edge:
        site = mqtt_client_factory(edge)
        deadline = time.monotonic() + 30
        while not cloud.messages and time.monotonic() < deadline:  # until the bridge is up
            site.publish("edge/plant-a/n1/results", b'{"id": "probe"}')
            time.sleep(0.5)
    assert cloud.messages and cloud.messages[0].topic == "edge/plant-a/n1/results"

    bad = runner.invoke(fleet, ["bridge-config", "--cloud", "cloud.example.com", "--name", "x"])
    assert bad.exit_code == 3 and "host:port" in bad.output


def test_the_heap_keeper_freezes_survivors_frees_garbage_and_thaws_frozen_cycles():
    """``edge-node run``'s heap keeper (in a fresh interpreter: the collector is process-wide):
    start-up and surviving objects leave full passes, acyclic ones are still freed on their
    last reference, cycles dropped before a settle are collected by it, and a cycle that
    died frozen is collected by the next thaw (the keeper's thread does both on its own)."""
    code = (
        "import gc, json, time, weakref\n"
        "from edge_sdk.node import HeapKeeper\n"
        "class Obj: pass\n"
        "def cycle():\n"
        "    a, b = Obj(), Obj(); a.b, b.a = b, a\n"
        "    return a\n"
        "def until(check):\n"
        "    end = time.monotonic() + 20\n"
        "    while not check() and time.monotonic() < end: time.sleep(0.01)\n"
        "    return check()\n"
        "out = {'before': gc.get_freeze_count()}\n"
        "keeper = HeapKeeper(settle_every_s=0.05, thaw_every_s=3600).start()\n"
        "out['startup'] = gc.get_freeze_count()\n"
        "plain = Obj(); plain_ref = weakref.ref(plain)\n"
        "young = cycle(); young_ref = weakref.ref(young); del young\n"
        "n = keeper.settles\n"
        "out['settled'] = until(lambda: keeper.settles >= n + 2)\n"
        "out['plain_frozen'] = gc.get_freeze_count() > out['startup']\n"
        "out['young_cycle_freed'] = young_ref() is None\n"
        "del plain\n"
        "out['plain_freed'] = plain_ref() is None\n"
        "keeper.stop()\n"
        "old = cycle(); old_ref = weakref.ref(old); keeper.settle(); del old\n"
        "gc.collect()\n"
        "out['frozen_cycle_kept'] = old_ref() is not None\n"
        "out['thaw_found'] = keeper.thaw()\n"
        "out['frozen_cycle_freed'] = old_ref() is None\n"
        "auto = HeapKeeper(settle_every_s=0.05, thaw_every_s=0.2).start()\n"
        "late = cycle(); late_ref = weakref.ref(late); auto.settle(); del late\n"
        "out['thread_thawed'] = until(lambda: auto.thaws >= 1 and late_ref() is None)\n"
        "auto.stop()\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] == 0 and out["startup"] > 5_000  # the imported SDK, numpy, pydantic...
    assert out["settled"] and out["plain_frozen"]
    assert out["young_cycle_freed"]  # garbage in a cycle is collected before the freeze
    assert out["plain_freed"]  # freezing does not keep an acyclic object alive
    assert out["frozen_cycle_kept"]  # the price, bounded by the thaw:
    assert out["thaw_found"] >= 2 and out["frozen_cycle_freed"]  # the two objects
    assert out["thread_thawed"]
    with pytest.raises(ValueError, match="settle_every_s"):
        HeapKeeper(settle_every_s=2.0, thaw_every_s=1.0)
