"""What the Erlang brokers (ejabberd, RabbitMQ) share: a process group, a login probe.

An Erlang VM leaves helpers behind a plain ``Popen.kill()``: RabbitMQ runs
``beam.smp`` under a shell wrapper, ``epmd`` daemonizes, and the VM's port
programs (``erl_child_setup``, ``inet_gethost``) live in their own sessions.
:class:`ErlangBroker` therefore starts the broker in a new session and kills
the whole process group (the port programs exit when the VM's pipes close);
a broker that needs ``epmd`` gets a private one in the foreground on a free
port (``ERL_EPMD_PORT``), stopped with it. A system ``epmd`` on 4369 (a
Debian package's service) is never used or touched, so it cannot clash.

``start()`` waits until the broker answers a real MQTT CONNECT with CONNACK
"accepted" *and* its own log says its MQTT listener is on our port (a
CONNACK alone could come from another broker holding the port).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import uuid
import weakref
from abc import abstractmethod
from pathlib import Path
from typing import Self

from ...errors import ConfigError
from . import installed
from .process import BrokerProcess, free_port

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def login_probe(
    host: str,
    port: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 1.0,
) -> int | None:
    """Send an MQTT 3.1.1 CONNECT (with credentials when given); return the CONNACK code.

    Returns:
        0 when accepted, the broker's refusal code (e.g. 5 "not authorised"),
        or None when nothing answered (refused, closed, timed out).
    """
    flags = 0x02
    payload = _mqtt_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
        if password is not None:
            flags |= 0x40
            payload += _mqtt_string(password)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big") + payload
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return None
                reply += chunk
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            if reply[0] != 0x20 or reply[1] != 0x02:
                return None
            return reply[3]
    except OSError:
        return None


def descendants(pid: int) -> set[int]:
    """The processes started under ``pid``, however deep (Linux ``/proc``; empty elsewhere).

    The VM's port programs (``erl_child_setup``, ``inet_gethost``, RabbitMQ's
    disk monitor) start their own sessions: a process-group kill misses them.
    """
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def running_pids(pids: set[int]) -> set[int]:
    """The ``pids`` still running; zombies (dead, not yet reaped) do not count."""
    alive = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


def _kill_pids(pids: set[int], timeout_s: float = 10.0) -> None:
    """SIGKILL ``pids`` and wait until none runs (a dying VM takes a moment to go)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while running_pids(pids) and time.monotonic() < deadline:
        time.sleep(0.02)


#: Processes whose group :func:`_kill_tree` has already killed and reaped.
_FINISHED: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s group and every descendant (collected first), then reap ``proc``.

    Once only per process: after that its pid (the group id) is free, and on a
    busy machine (pids wrap at ``pid_max``, 32768 by default, and every thread
    takes one) a later call, e.g. the finalizer when the broker object is
    collected minutes after ``stop()``, could SIGKILL an unrelated new session
    whose leader got the same number: another test's broker.
    """
    if proc in _FINISHED:
        return
    others = descendants(proc.pid) if proc.poll() is None else set()
    _kill_group(proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        proc.wait(timeout=10)
    _kill_pids(others)
    _FINISHED.add(proc)


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    """Finalizer: SIGKILL each process group and wait (no orphan ``beam.smp``/``epmd``)."""
    for proc in procs:
        _kill_tree(proc)


def spawn_epmd(epmd: str, workdir: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    """A private epmd in the foreground on ``host:port`` (its own session; log in ``workdir``).

    epmd binds at once; the Erlang VMs retry their registration, so no wait is needed.
    """
    with open(workdir / "epmd.log", "ab") as log:
        return subprocess.Popen(
            [epmd, "-port", str(port), "-address", host],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=workdir,
            start_new_session=True,
        )


class ErlangBroker(BrokerProcess):
    """Base of :class:`~.ejabberd.EjabberdBroker` and :class:`~.rabbitmq.RabbitBroker`.

    Subclasses write their files and return the command (``_prepare``), say
    which log line proves their MQTT listener is up (``_listener_marker``) and
    name the broker (``NAME``). ``username``/``password`` are what a client
    must send (None: anonymous): :meth:`client_options`.
    """

    NAME = "broker"
    #: True: start a private epmd on a free port for this broker (``ERL_EPMD_PORT``).
    NEEDS_EPMD = False

    username: str | None = None
    password: str | None = None

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        node_name: str | None = None,
    ) -> None:
        super().__init__(workdir, port, host)
        #: The Erlang node name: unique, kept across restarts (its database is named by it).
        self.node_name = node_name or f"{self.NAME}-{uuid.uuid4().hex[:10]}@localhost"
        self.dist_port = free_port(host)
        self._epmd: subprocess.Popen[bytes] | None = None
        self.epmd_port: int | None = None
        self.last_start_s: float | None = None

    def client_options(self) -> dict[str, str]:
        """``username``/``password`` for a :class:`~edge_sdk.mqtt.config.BrokerConfig` (or {})."""
        if self.username is None:
            return {}
        return {"username": self.username, "password": self.password or ""}

    @abstractmethod
    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        """Write config files into the work directory; return ``(argv, env)``."""

    @abstractmethod
    def _listener_marker(self) -> str:
        """A log line fragment that appears once the MQTT listener is on ``self.port``."""

    @abstractmethod
    def _find(self) -> str | None:
        """The broker's launcher, or None when it is not installed."""

    INSTALL_HINT = ""

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> Self:
        """Spawn the broker and wait until it accepts an MQTT login on :attr:`port`.

        Raises:
            ConfigError: The broker is not installed (the message says how to
                install it), or it exited at start (bad config, port in use);
                the message carries the log tail.
            RuntimeError: It is running but did not accept an MQTT login within
                ``timeout_s``; it is killed and the message carries the log tail.
        """
        if self.running():
            raise RuntimeError(f"{self.NAME} on port {self.port} is already running")
        if self._find() is None:
            raise ConfigError(self.INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        if not self._port_given and not self._started_once:
            self.port = free_port(self.host)  # picked at __init__: may be taken by now
        argv, env = self._prepare()
        if self.NEEDS_EPMD:
            self._start_epmd(env)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        proc = self._spawn_group(argv, env)
        outcome = self._wait_ready(proc, deadline, log_offset)
        if outcome == "ready":
            self._started_once = True
            self.last_start_s = time.monotonic() - t0
            return self
        self.kill()
        tail = self.log_tail(30)
        if outcome == "timeout":
            raise RuntimeError(
                f"{self.NAME} did not accept an MQTT login on {self.host}:{self.port} within "
                f"{timeout_s:g} s (killed); log {self.log_path}, tail:\n{tail}"
            )
        new_log = self._read_log(log_offset)
        why = (
            f"a port it listens on ({self.host}:{self.port} or another of its ports) is in "
            "use by another process"
            if "eaddrinuse" in new_log or "already in use" in new_log
            else f"exit code {proc.returncode}, config {self.config_path}"
        )
        raise ConfigError(f"{self.NAME} exited at start ({why}); log tail:\n{tail}")

    def _start_epmd(self, env: dict[str, str]) -> None:
        """A private epmd in the foreground on a free loopback port, for this broker only."""
        epmd = installed.find_epmd()
        if epmd is None:
            raise ConfigError(f"epmd (Erlang) is not installed; {self.INSTALL_HINT}")
        self.epmd_port = free_port(self.host)
        env["ERL_EPMD_PORT"] = str(self.epmd_port)
        self._epmd = spawn_epmd(epmd, self.workdir, self.host, self.epmd_port)

    def _spawn_group(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the leader of a new process group, output appended to the log."""
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        self._proc = proc
        if self._finalizer is not None:
            self._finalizer.detach()
        procs = [proc] + ([self._epmd] if self._epmd is not None else [])
        self._finalizer = weakref.finalize(self, _reap, procs)
        return proc

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float, log_offset: int) -> str:
        """Poll until the broker accepts a login: "ready", "exited" or "timeout"."""
        marker = self._listener_marker()
        delay = 0.05
        while True:
            if proc.poll() is not None:
                return "exited"
            if marker in self._read_log(log_offset):
                probe_id = f"edge-sdk-probe-{uuid.uuid4().hex[:12]}"
                code = login_probe(self.host, self.port, probe_id, self.username, self.password)
                if code == 0:
                    return "ready"
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def kill(self) -> None:
        """SIGKILL the broker's process group (and its epmd): a crash, on-disk state kept."""
        for proc in (self._proc, self._epmd):
            if proc is not None:
                _kill_tree(proc)
        self._epmd = None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Clean shutdown (``STOP_SIGNAL`` to the VM's group), then SIGKILL what is left."""
        proc = self._proc
        helpers: set[int] = set()
        if proc is not None and proc.poll() is None:
            helpers = descendants(proc.pid)
            _kill_group(proc.pid, self.STOP_SIGNAL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        self.kill()  # stragglers of the group and the private epmd
        _kill_pids(helpers)  # port programs whose VM is gone

    def restart(self, timeout_s: float = 60.0) -> Self:
        """Start again on the same port with the same node name and data (stops it first)."""
        self.stop()
        return self.start(timeout_s=timeout_s)

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the broker's log, colour codes removed."""
        return "\n".join(_ANSI.sub("", self._read_log()).splitlines()[-n:])

    def _base_env(self) -> dict[str, str]:
        """The environment of the VM: HOME (its Erlang cookie) is the work directory."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env["HOME"] = str(self.workdir)
        return env
