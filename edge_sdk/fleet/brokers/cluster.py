"""A broker cluster on loopback: N ejabberd members joined into one cluster.

:class:`EjabberdCluster` starts N :class:`~.ejabberd.EjabberdBroker` members
(each its own MQTT port, work directory and Erlang node name), all on one
private ``epmd`` on a free port and with one shared Erlang cookie, joins
members 2..N to the first (``ejabberd_admin:join_cluster``) and waits until
every member accepts an MQTT login. :meth:`EjabberdCluster.kill` SIGKILLs one
member (a crash); its ``start()`` brings it back on the same port and node
name, and it rejoins by itself (its Mnesia schema on disk names the cluster).

Why ejabberd, not RabbitMQ 3.10 (measured here and read in their sources;
docs/brokers.md "Clustered brokers and failover" has the numbers):

* ejabberd's ``mod_mqtt`` keeps subscriptions (``mqtt_sub``) and sessions
  (``mqtt_session``) in Mnesia tables replicated on every member, and routes a
  publish on one member to subscribers on any other: a node may publish
  through member A while the fleet watches through member B, and either can
  die without the other noticing more than a lost peer. Retained messages are
  stored in a replicated Mnesia table too (``mqtt_pub``), but a running member
  delivers only those published through it or present when it started.
* RabbitMQ 3.10 (from its documentation, not run as a cluster here) keeps
  retained messages in a node-local store (a subscriber on another member
  gets none, or an old one); its MQTT plugin tracks client ids with Raft and
  accepts no connection without a majority of members (2-member clusters are
  unsupported); and a durable MQTT subscription is a classic queue on the
  member the client first connected to, unavailable while that member is down,
  unless ``mqtt.durable_queue_type = quorum`` (3.10+, 3 members or more).

The members are real child processes; :meth:`EjabberdCluster.stop` stops them
and the private epmd (nothing is left running; a finalizer SIGKILLs them if
the object is dropped without ``stop()``).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
import weakref
from pathlib import Path
from types import TracebackType
from typing import Self

from ...errors import ConfigError
from . import installed
from .ejabberd import EjabberdBroker
from .erlang import login_probe, spawn_epmd
from .process import free_port, kill_quietly

__all__ = ["ClusterMember", "EjabberdCluster"]


def find_erl_call() -> str | None:
    """Erlang's ``erl_call`` (beside ``erl`` or under ``erl_interface``), or None."""
    erl = installed.find_erl()
    if erl is None:
        return None
    root = Path(os.path.realpath(erl)).parent.parent
    for candidate in [
        root / "bin" / "erl_call",
        *sorted(root.glob("lib/erl_interface-*/bin/erl_call")),
    ]:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class ClusterMember(EjabberdBroker):
    """An :class:`~.ejabberd.EjabberdBroker` that joins Erlang distribution as a cluster member.

    The single broker runs without epmd on a fixed distribution port; a
    cluster member registers with the cluster's private epmd instead (several
    members on one host cannot share one fixed port) and uses the cluster's
    cookie, so the members can reach each other.

    Args:
        workdir: The member's work directory.
        cluster: The cluster it belongs to (its epmd port and cookie).
        node_name: Erlang node name, unique in the cluster.
        host: Address its MQTT listener binds.
    """

    def __init__(
        self, workdir: str | os.PathLike[str], cluster: EjabberdCluster, node_name: str, host: str
    ) -> None:
        super().__init__(
            workdir,
            host=host,
            node_name=node_name,
            username=cluster.username,
            password=cluster.password,
        )
        self._cluster = cluster

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super()._prepare()
        flag = argv.index("-start_epmd")
        del argv[flag : flag + 4]  # -start_epmd false -erl_epmd_port PORT
        argv[1:1] = ["-setcookie", self._cluster.cookie]
        env["ERL_EPMD_PORT"] = str(self._cluster.epmd_port)
        return argv, env


class EjabberdCluster:
    """``size`` ejabberd members on loopback, joined into one cluster.

    Args:
        workdir: Parent of the members' work directories (``member-1``...).
        size: Number of members (2 or more).
        host: Address the MQTT listeners bind.
        username: The MQTT user name clients send (any is accepted).
        password: The MQTT password clients send (any is accepted).

    Example:
        >>> with EjabberdCluster(tmp_path, size=2).start() as cluster:  # doctest: +SKIP
        ...     cfg = BrokerConfig(url=cluster.urls, **cluster.client_options())
        ...     cluster.kill(0)  # the node moves to member 2
        ...     cluster.members[0].start()  # back, rejoined
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        size: int = 2,
        host: str = "127.0.0.1",
        username: str = "edge-sdk",
        password: str = "edge-sdk",
    ) -> None:
        if size < 2:
            raise ConfigError(f"a broker cluster needs 2 or more members, got size={size}")
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.username, self.password = username, password
        self.cookie = uuid.uuid4().hex
        self.epmd_port = free_port(host)
        self._epmd: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        tag = uuid.uuid4().hex[:8]
        self.members = [
            ClusterMember(
                self.workdir / f"member-{i + 1}", self, f"ejabberd-{tag}-m{i + 1}@localhost", host
            )
            for i in range(size)
        ]
        #: Seconds the last :meth:`start` took (all members up and joined).
        self.last_start_s: float | None = None

    @property
    def urls(self) -> list[str]:
        """Every member's ``mqtt://host:port``, member 1 first (a node's broker URLs)."""
        return [m.url for m in self.members]

    def client_options(self) -> dict[str, str]:
        """``username``/``password`` for a :class:`~edge_sdk.mqtt.config.BrokerConfig`."""
        return {"username": self.username, "password": self.password}

    def start(self, timeout_s: float = 90.0) -> Self:
        """Start the epmd and every member, join them, wait until each accepts MQTT.

        Raises:
            ConfigError: ejabberd or Erlang's ``erl_call``/``epmd`` is not
                installed, or a member exited at start (its log tail).
            RuntimeError: A member did not join or answer within ``timeout_s``.
        """
        if find_erl_call() is None or installed.find_epmd() is None:
            raise ConfigError(f"Erlang's erl_call and epmd are needed; {installed.EJABBERD_HINT}")
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_epmd()
        try:
            first = self.members[0].start(timeout_s=timeout_s)
            for member in self.members[1:]:
                member.start(timeout_s=max(1.0, deadline - time.monotonic()))
                self._rpc(member, f'ejabberd_admin:join_cluster(<<"{first.node_name}">>).')
                self._wait_mqtt(member, deadline)
            self._wait_joined(deadline)
        except BaseException:
            self.stop()
            raise
        self.last_start_s = time.monotonic() - t0
        return self

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (0-based), a crash; ``members[index].start()`` restarts it."""
        self.members[index].kill()

    def running_nodes(self) -> list[str]:
        """The Erlang nodes Mnesia runs on, as a running member sees them."""
        for member in self.members:
            if member.running():
                out = self._rpc(member, "mnesia:system_info(running_db_nodes).")
                return sorted(n.strip(" '") for n in out.strip("[] ").split(",") if n.strip())
        return []

    def stop(self) -> None:
        """Stop every member, then the epmd (SIGKILL what hangs)."""
        for member in self.members:
            member.stop()
        if self._epmd is not None:
            kill_quietly(self._epmd)
            self._epmd = None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    # -- helpers -----------------------------------------------------------------------

    def _start_epmd(self) -> None:
        epmd = installed.find_epmd()
        assert epmd is not None  # start() checked
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd = spawn_epmd(epmd, self.workdir, self.host, self.epmd_port)
        self._finalizer = weakref.finalize(self, kill_quietly, self._epmd)

    def _rpc(self, member: ClusterMember, expression: str, timeout_s: float = 60.0) -> str:
        """Evaluate an Erlang ``expression`` on ``member`` (``erl_call``); its printed result.

        Raises:
            RuntimeError: erl_call failed or the result is an error tuple.
        """
        erl_call = find_erl_call()
        assert erl_call is not None
        env = {**os.environ, "ERL_EPMD_PORT": str(self.epmd_port), "HOME": str(member.workdir)}
        done = subprocess.run(
            [erl_call, "-sname", member.node_name, "-c", self.cookie, "-e"],
            input=(expression + "\n").encode(),
            capture_output=True,
            env=env,
            timeout=timeout_s,
            check=False,
        )
        out = done.stdout.decode(errors="replace").strip()
        if done.returncode != 0 or not out.startswith("{ok,") or "error" in out:
            raise RuntimeError(
                f"{expression} on {member.node_name} failed (exit {done.returncode}): "
                f"{out} {done.stderr.decode(errors='replace').strip()}; log {member.log_path}"
            )
        return out[len("{ok,") : -1].strip()

    def _wait_mqtt(self, member: ClusterMember, deadline: float) -> None:
        """Poll until ``member`` accepts an MQTT login again (a join restarts its listener)."""
        while True:
            probe_id = f"edge-sdk-probe-{uuid.uuid4().hex[:12]}"
            if login_probe(member.host, member.port, probe_id, self.username, self.password) == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster member {member.node_name} accepts no MQTT login on "
                    f"{member.host}:{member.port} after joining; log tail:\n{member.log_tail(20)}"
                )
            time.sleep(0.1)

    def _wait_joined(self, deadline: float) -> None:
        names = sorted(m.node_name for m in self.members)
        while self.running_nodes() != names:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"cluster members did not all join: Mnesia runs on {self.running_nodes()}, "
                    f"expected {names}"
                )
            time.sleep(0.2)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        up = sum(m.running() for m in self.members)
        return f"EjabberdCluster({up}/{len(self.members)} running: {', '.join(self.urls)})"
