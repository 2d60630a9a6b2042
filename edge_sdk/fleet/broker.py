"""Run a real local MQTT broker (tests, benchmarks and the demo).

:class:`LocalBroker` writes a config file into a work directory, spawns
``mosquitto -c CONF`` on a loopback port and waits until the broker answers a
real MQTT CONNECT with a CONNACK. ``kill()`` is what a broker crash looks like
(SIGKILL, on-disk state kept), ``stop()`` a clean shutdown (SIGTERM: mosquitto
writes its persistence database), ``restart()`` brings it back on the same
port with the same persistence directory.

Why the queue limits default to "unlimited" (``0``)
---------------------------------------------------
mosquitto's defaults (``max_queued_messages 1000``, ``max_inflight_messages
20``) silently discard QoS 1 messages for a slow consumer: measured on
loopback (see FIELD_NOTES "MQTT"), a burst of 5,000 QoS 1 messages reached a
subscriber ~2,000 times and the broker only logged "Outgoing messages are
being dropped for client ...". The publisher got its PUBACK for every one of
them, so a PUBACK does not mean the subscriber will get the message. With
``0`` (no maximum) all 5,000 arrived at ~3,000 msg/s. The edge node does its
own flow control (bounded in-flight window, outbox rows released only on
PUBACK), so in tests the broker must not be the component that loses data;
:meth:`LocalBroker.dropped_messages_logged` lets a test assert it did not.

Production brokers should *not* run unbounded: set bounded
``max_queued_messages`` / ``max_queued_bytes`` sized for the longest outage a
consumer must survive (messages per second x seconds x bytes per message),
keep ``persistence true`` so queued QoS 1 data survives a broker restart,
alert on the "being dropped" log line, and rely on the node's own flow
control (bounded in-flight window, store-and-forward outbox) rather than on
broker queues to absorb bursts.

The embedded fallback: ``EmbeddedBroker``
-----------------------------------------
Where mosquitto is not installed (a laptop without apt, a locked-down CI
image), :class:`edge_sdk.fleet.embedded_broker.EmbeddedBroker` runs amqtt (``pip install
"edge-graph-sdk[broker]"``), a pure-Python broker, in a child process: the
caller's own process, its event loop and its paho clients are not touched.
:func:`start_local_broker` picks mosquitto when it is found and amqtt
otherwise. Limits of amqtt, which is for demos and tests, not production:

* MQTT 3.1.1 only (``EmbeddedBroker.protocol``): an MQTT 5 CONNECT is
  refused, or, when it carries CONNECT properties, never answered at all;
  clients must speak 3.1.1 or use the node's ``protocol: auto``, which falls
  back. No MQTT 5 features: no shared subscriptions (``$share/...`` is an
  ordinary topic there), no message expiry, no response topic or correlation
  data (the node puts ``reply_to``/``correlation`` in the JSON body instead).
* Sessions, queued messages and retained messages live in memory: a restart
  or a crash loses them (no persistence), and queues are unbounded.
* One asyncio process in Python: fine for a demo plant streaming a few hundred
  rows per second, not sized for a fleet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from .._optional import install_hint, is_available
from ..errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from .embedded_broker import EmbeddedBroker

__all__ = [
    "BrokerLimits",
    "BrokerProcess",
    "LocalBroker",
    "embedded_broker_available",
    "find_mosquitto",
    "free_port",
    "start_local_broker",
]

INSTALL_HINT = (
    "mosquitto is not installed: `apt-get install -y mosquitto` (Debian/Ubuntu) "
    "or `make test` which installs it"
)
NO_BROKER_HINT = (
    "no local MQTT broker: mosquitto is not installed and neither is the embedded "
    "fallback amqtt; install one of them: `apt-get install -y mosquitto` "
    f"(Debian/Ubuntu) or {install_hint('amqtt')}"
)
DROPPED_MARKER = "Outgoing messages are being dropped"
_FALLBACK_PATH = "/usr/sbin/mosquitto"  # Debian installs it outside a user's PATH


def find_mosquitto() -> str | None:
    """Return the path of the mosquitto binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.path.isfile(_FALLBACK_PATH) and os.access(_FALLBACK_PATH, os.X_OK):
        return _FALLBACK_PATH
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class BrokerLimits:
    """Per-client queue limits written into the broker config; ``0`` = no maximum.

    The defaults are unlimited on purpose (see the module docstring); pass
    bounded values to reproduce a production broker. ``queue_qos0_messages``
    also queues QoS 0 messages for a disconnected persistent client (a bridge
    whose uplink is down carrying Sparkplug NDATA); they count towards
    ``max_queued_messages``. :func:`edge_sdk.fleet.bridge.outage_limits` sizes
    them for an uplink outage.
    """

    max_queued_messages: int = 0
    max_inflight_messages: int = 0
    max_queued_bytes: int = 0
    queue_qos0_messages: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.queue_qos0_messages, bool):
            raise ConfigError(
                f"BrokerLimits.queue_qos0_messages must be a bool, got {self.queue_qos0_messages!r}"
            )
        for name in ("max_queued_messages", "max_inflight_messages", "max_queued_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"BrokerLimits.{name} must be an integer >= 0, got {value!r}")
        if self.max_inflight_messages > 65535:
            raise ConfigError(
                "BrokerLimits.max_inflight_messages must be <= 65535 (mosquitto's limit), "
                f"got {self.max_inflight_messages}"
            )


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _connect_packet(client_id: str) -> bytes:
    """A minimal MQTT 3.1.1 CONNECT: clean session, keep-alive 10 s, no credentials."""
    body = _mqtt_string("MQTT") + bytes([4, 0x02]) + (10).to_bytes(2, "big")
    body += _mqtt_string(client_id)
    assert len(body) < 128  # one-byte remaining length
    return bytes([0x10, len(body)]) + body


def _probe(host: str, port: int, client_id: str, timeout_s: float = 1.0) -> bool:
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


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
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
        self._finalizer = weakref.finalize(self, _kill_quietly, proc)
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


class LocalBroker(BrokerProcess):
    """A mosquitto process on a loopback port, with its state in ``workdir``.

    Args:
        workdir: Directory for ``mosquitto.conf``, ``mosquitto.log`` and the
            persistence database (created if missing).
        port: TCP port; a free one is picked when None.
        persistence: Keep sessions and queued QoS >= 1 messages on disk.
        autosave_interval_s: Seconds between persistence saves (mosquitto
            also saves on a clean exit).
        limits: Queue limits; unlimited by default (see module docstring).
        extra_config: Extra lines appended verbatim to the config (keep
            ``connection_messages`` on: ``start()`` finds its probe in the log).
        host: Address to listen on.

    Example:
        >>> with LocalBroker(tmp_path).start() as broker:  # doctest: +SKIP
        ...     client.connect(broker.host, broker.port)
    """

    #: MQTT version to speak to it (mosquitto also accepts 3.1.1 and 3.1).
    protocol = "5"
    CONFIG_NAME = "mosquitto.conf"
    LOG_NAME = "mosquitto.log"
    STOP_SIGNAL = signal.SIGTERM  # mosquitto writes its persistence database on SIGTERM

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        persistence: bool = True,
        autosave_interval_s: int = 1,
        limits: BrokerLimits | None = None,
        extra_config: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        if autosave_interval_s < 0:
            raise ConfigError(f"autosave_interval_s must be >= 0, got {autosave_interval_s}")
        super().__init__(workdir, port, host)
        self.persistence = persistence
        self.autosave_interval_s = autosave_interval_s
        self.limits = limits if limits is not None else BrokerLimits()
        self.extra_config = extra_config

    # -- config ------------------------------------------------------------------------

    def _config_text(self) -> str:
        lines = [
            "# written by edge_sdk.fleet.broker.LocalBroker",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir.resolve()}/",
            f"autosave_interval {self.autosave_interval_s}",
            f"max_queued_messages {self.limits.max_queued_messages}",
            f"max_inflight_messages {self.limits.max_inflight_messages}",
            f"max_queued_bytes {self.limits.max_queued_bytes}",
            f"queue_qos0_messages {'true' if self.limits.queue_qos0_messages else 'false'}",
            # stderr is unbuffered: every line is in mosquitto.log at once, even after
            # a SIGKILL (log_dest stdout/file are block-buffered).
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp true",
            "connection_messages true",  # start() recognises its probe by these lines
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", which cannot write the
            # persistence database into a root-owned workdir.
            lines.append("user root")
        if self.extra_config:
            lines.append(self.extra_config.rstrip("\n"))
        return "\n".join(lines) + "\n"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        """Spawn mosquitto and wait until it accepts an MQTT connection.

        Retries briefly while the port is still held (``restart()`` right after
        ``kill()``); a port picked automatically is replaced by another free one
        if it was taken by someone else before the first start.

        Raises:
            ConfigError: mosquitto is not installed, or exited at start (bad
                config, port in use); the message carries the log tail.
            RuntimeError: it is running but did not answer within ``timeout_s``.
        """
        if self.running():
            raise RuntimeError(f"broker on port {self.port} is already running")
        binary = find_mosquitto()
        if binary is None:
            raise ConfigError(INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        while True:
            self.config_path.write_text(self._config_text())
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._spawn([binary, "-c", str(self.config_path)])
            outcome = self._wait_ready(proc, deadline, log_offset)
            if outcome == "ready":
                self._started_once = True
                return self
            if outcome == "timeout":
                _kill_quietly(proc)
                raise RuntimeError(
                    f"mosquitto did not accept MQTT connections on {self.url} within "
                    f"{timeout_s:g} s; log tail:\n{self.log_tail()}"
                )
            # exited
            new_log = self._read_log(log_offset)
            if "Address already in use" in new_log and time.monotonic() < deadline:
                if not self._port_given and not self._started_once:
                    self.port = free_port(self.host)
                time.sleep(0.1)
                continue
            why = (
                f"port {self.port} on {self.host} is in use by another process"
                if "Address already in use" in new_log
                else f"exit code {proc.returncode}, config {self.config_path}"
            )
            raise ConfigError(f"mosquitto exited at start ({why}); log tail:\n{self.log_tail(20)}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float, log_offset: int) -> str:
        """Poll until *this* process answers MQTT: "ready", "exited" or "timeout".

        A CONNACK alone is not enough: when the port is taken, the probe may reach
        another broker while ours is failing to bind. The probe's client id in
        our own log proves which process answered.
        """
        delay = 0.005
        while True:
            if proc.poll() is not None:
                return "exited"
            probe_id = f"edge-sdk-probe-{uuid.uuid4().hex[:12]}"
            if _probe(self.host, self.port, probe_id):
                seen_until = time.monotonic() + 0.5
                while time.monotonic() < seen_until:
                    if f" as {probe_id} " in self._read_log(log_offset):
                        return "ready"
                    if proc.poll() is not None:
                        return "exited"
                    time.sleep(0.005)
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    # -- logs --------------------------------------------------------------------------

    def dropped_messages_logged(self) -> bool:
        """True when mosquitto logged that it dropped outgoing messages for a client."""
        return DROPPED_MARKER in self._read_log()


# -- choosing a broker ---------------------------------------------------------------------


def embedded_broker_available() -> bool:
    """True when amqtt (the ``[broker]`` extra) is installed; does not import it."""
    return is_available("amqtt")


def start_local_broker(
    workdir: str | os.PathLike[str],
    say: Callable[[str], None] | None = None,
    timeout_s: float = 15.0,
) -> LocalBroker | EmbeddedBroker:
    """Start a broker on a free loopback port: mosquitto if installed, else amqtt.

    Check the returned broker's ``protocol`` (``"5"`` or ``"3.1.1"``) before
    connecting a client that must speak one version; the node's and the
    watcher's ``protocol: auto`` handle both.

    Args:
        workdir: The broker's work directory (config, log, persistence).
        say: Told which broker started and why (one line); silent when None.
        timeout_s: How long to wait for it to accept connections.

    Returns:
        The started broker; the caller stops it.

    Raises:
        BackendUnavailableError: Neither mosquitto nor amqtt is installed
            (the message names both fixes).
    """
    tell = say if say is not None else (lambda _line: None)
    binary = find_mosquitto()
    if binary is not None:
        mosquitto = LocalBroker(workdir).start(timeout_s=timeout_s)
        tell(f"broker: mosquitto ({binary}) on {mosquitto.url}")
        return mosquitto
    if embedded_broker_available():
        from .embedded_broker import EmbeddedBroker

        embedded = EmbeddedBroker(workdir).start(timeout_s=timeout_s)
        tell(
            f"broker: amqtt {embedded.version} (embedded; mosquitto not found) on "
            f"{embedded.url}, MQTT 3.1.1 only"
        )
        return embedded
    raise BackendUnavailableError(NO_BROKER_HINT)
