"""mosquitto as a local MQTT broker (tests, benchmarks and the demo).

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
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConfigError
from . import installed
from .erlang import login_probe
from .process import BrokerProcess, free_port, kill_quietly, probe

DROPPED_MARKER = "Outgoing messages are being dropped"


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
        users: User name -> password: the broker then refuses anonymous
            clients (``allow_anonymous false``) and others ("not authorised"),
            with a ``password_file`` made by ``mosquitto_passwd``; ``start()``
            logs in as the first user.

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
        users: Mapping[str, str] | None = None,
    ) -> None:
        if autosave_interval_s < 0:
            raise ConfigError(f"autosave_interval_s must be >= 0, got {autosave_interval_s}")
        super().__init__(workdir, port, host)
        self.persistence = persistence
        self.autosave_interval_s = autosave_interval_s
        self.limits = limits if limits is not None else BrokerLimits()
        self.extra_config = extra_config
        self.users = dict(users or {})

    # -- config ------------------------------------------------------------------------

    def _config_text(self) -> str:
        lines = [
            "# written by edge_sdk.fleet.brokers.LocalBroker",
            f"listener {self.port} {self.host}",
            *(
                ["allow_anonymous false", f"password_file {self.password_path.resolve()}"]
                if self.users
                else ["allow_anonymous true"]
            ),
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

    @property
    def password_path(self) -> Path:
        return self.workdir / "passwd"

    def _write_password_file(self) -> None:
        """``mosquitto_passwd -b`` for each user (mosquitto's own hashing)."""
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        self.password_path.unlink(missing_ok=True)
        self.password_path.touch(mode=0o600)
        for user, password in self.users.items():
            done = subprocess.run(
                [tool, "-b", str(self.password_path), user, password],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise ConfigError(f"mosquitto_passwd failed for {user!r}: {done.stderr.strip()}")

    def _probe(self, probe_id: str) -> bool:
        if not self.users:
            return probe(self.host, self.port, probe_id)
        user, password = next(iter(self.users.items()))
        return login_probe(self.host, self.port, probe_id, user, password) == 0

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
        binary = installed.find_mosquitto()
        if binary is None:
            raise ConfigError(installed.INSTALL_HINT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.users:
            self._write_password_file()
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
                kill_quietly(proc)
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
            if self._probe(probe_id):
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
