"""EjabberdBroker and RabbitBroker: start on free ports, login, kill/restart, no orphans."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from edge_sdk.errors import ConfigError
from edge_sdk.fleet.brokers import EjabberdBroker, ErlangBroker, RabbitBroker
from edge_sdk.fleet.brokers import installed as broker_mod
from edge_sdk.fleet.brokers.erlang import descendants, login_probe, running_pids


def _tree(b: ErlangBroker) -> set[int]:
    assert b._proc is not None
    pids = {b._proc.pid} | descendants(b._proc.pid)
    if b._epmd is not None:
        pids.add(b._epmd.pid)
    return pids


@pytest.mark.parametrize("kind", ["ejabberd", "rabbitmq"])
def test_start_login_kill_restart_stop_leaves_no_process(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    request.getfixturevalue(f"{kind}_path")
    b: ErlangBroker = (EjabberdBroker if kind == "ejabberd" else RabbitBroker)(tmp_path / kind)
    try:
        b.start()
        assert b.running() and b.last_start_s is not None
        if isinstance(b, EjabberdBroker):
            assert b.client_options() == {"username": "edge-sdk", "password": "edge-sdk"}
            assert login_probe(b.host, b.port, "anon") == 5  # not authorised: no user name
            assert b.protocol == "5"
        else:
            assert b.client_options() == {}
            assert login_probe(b.host, b.port, "anon") == 0  # guest, from loopback
            assert b.protocol == "3.1.1"
            # registered with its own epmd, not a system one on 4369
            epmd = broker_mod.find_epmd()
            assert epmd is not None and b.epmd_port not in (None, 4369)
            names = subprocess.run(
                [epmd, "-port", str(b.epmd_port), "-names"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            assert f"name {b.node_name.split('@')[0]} at port {b.dist_port}" in names
        assert login_probe(b.host, b.port, "p1", b.username, b.password) == 0
        first = _tree(b)
        assert len(first) >= 2  # the VM and its helpers (and epmd for RabbitMQ)

        port, node = b.port, b.node_name
        b.kill()
        assert not b.running()
        assert running_pids(first) == set(), "kill() left processes of the broker running"
        assert login_probe(b.host, port, "gone") is None

        b.restart()
        assert (b.port, b.node_name) == (port, node)
        assert login_probe(b.host, b.port, "p2", b.username, b.password) == 0
        second = _tree(b)
    finally:
        b.stop()
    assert running_pids(second) == set(), "stop() left processes of the broker running"


def test_port_in_use_says_why_with_the_log_tail(ejabberd_path: str, tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        b = EjabberdBroker(tmp_path / "ej", port=port)
        with pytest.raises(ConfigError, match=r"ejabberd exited at start .*in use") as err:
            b.start(timeout_s=20)
    assert "log tail" in str(err.value) and "eaddrinuse" in str(err.value)
    assert not b.running()


@pytest.mark.parametrize("cls", [EjabberdBroker, RabbitBroker])
def test_not_installed_names_the_install_command(
    cls: type[ErlangBroker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_mod, "find_ejabberd", lambda: None)
    monkeypatch.setattr(broker_mod, "find_rabbitmq", lambda: None)
    with pytest.raises(ConfigError, match=r"apt-get install .*make brokers"):
        cls(tmp_path).start()


def test_a_group_is_killed_once_its_pid_may_be_reused_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a broker's group is killed and reaped, later kills (the finalizer) send nothing.

    Its pid is then free: pids wrap at ``pid_max`` (every thread takes one), so
    a late ``killpg`` could hit a new session that got the same number.
    """
    from edge_sdk.fleet.brokers import erlang

    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    sent: list[tuple[int, int]] = []
    real_killpg = erlang.os.killpg

    def recording_killpg(pgid: int, sig: int) -> None:
        sent.append((pgid, sig))
        real_killpg(pgid, sig)

    monkeypatch.setattr(erlang.os, "killpg", recording_killpg)
    erlang._kill_tree(proc)
    assert proc.returncode is not None and running_pids({proc.pid}) == set()
    assert len(sent) == 1 and sent[0][0] == proc.pid
    erlang._kill_tree(proc)  # a second kill() ...
    erlang._reap([proc])  # ... and the finalizer
    assert len(sent) == 1, "a reaped group was signalled again"
