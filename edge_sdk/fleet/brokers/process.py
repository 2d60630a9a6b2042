"""A broker in a child process: spawn, probe with a real MQTT CONNECT, stop, kill, restart.

The base of :class:`~edge_sdk.fleet.brokers.LocalBroker` (mosquitto) and
:class:`~edge_sdk.fleet.brokers.EmbeddedBroker` (amqtt).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self

from ...errors import ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s, no credentials."""
    body = _mqtt_string("MQTT") + bytes([4, 0x02]) + (10).to_bytes(2, "big")
    body += _mqtt_string(client_id)
    assert len(body) < 128  # one-byte remaining length
    return bytes([0x10, len(body)]) + body


def probe(host: str, port: int, client_id: str, timeout_s: float = 1.0) -> bool:
    """True when ``host:port`` accepts an MQTT CONNECT and answers CONNACK 'accepted'."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_connect_packet(client_id))
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            ok = reply[0] == 0x20 and reply[1] == 0x02 and reply[3] == 0x00
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            return ok
    except OSError:
        return False


def kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: never leave a broker running after the Python process exits."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class BrokerProcess(ABC):
    """A broker in a child process on a loopback port: what both brokers share.

    Subclasses name their files (``CONFIG_NAME``, ``LOG_NAME``), the MQTT
    version clients speak to them (``protocol``), the signal of their clean
    shutdown (``STOP_SIGNAL``), and implement ``start()``.

    Args:
        workdir: The broker's work directory (created at start).
        port: TCP port; a free one is picked when None.
        host: Address to listen on.
    """

    protocol = "5"
    CONFIG_NAME = "broker.conf"
    LOG_NAME = "broker.log"
    STOP_SIGNAL = signal.SIGTERM

    def __init__(
        self, workdir: str | os.PathLike[str], port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"broker port must be in 1..65535, got {port}")
        # the broker runs with cwd=workdir: a relative config path would not resolve there
        self.workdir = Path(workdir).resolve()
        self.host = host
        self._port_given = port is not None
        self.port = port if port is not None else free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._started_once = False

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / self.CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self.workdir / self.LOG_NAME

    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @abstractmethod
    def start(self, timeout_s: float = 10.0) -> Self:
        """Spawn the broker and wait until it accepts MQTT connections."""

    def kill(self) -> None:
        """SIGKILL the broker and wait: a crash (what it kept on disk stays as it was)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Send the broker's clean-shutdown signal and wait; SIGKILL if it hangs."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.STOP_SIGNAL)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, timeout_s: float = 15.0) -> Self:
        """Start again on the same port (stops it first if running)."""
        self.stop()
        return self.start(timeout_s=timeout_s)

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the work directory, output appended to the log.

        A finalizer kills the process if this object is collected without
        ``stop()``: a test that fails half-way leaves no broker behind.
        """
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir, env=env
            )
        self._proc = proc
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, kill_quietly, proc)
        return proc

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the broker's log (all its starts)."""
        return "\n".join(self._read_log().splitlines()[-n:])

    def __enter__(self) -> Self:
        if not self.running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        return f"{type(self).__name__}({self.url}, {state}, workdir={str(self.workdir)!r})"
