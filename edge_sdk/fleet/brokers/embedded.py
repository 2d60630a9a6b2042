"""An embedded MQTT broker for machines without mosquitto: amqtt in a child process.

Where mosquitto is not installed (a laptop without apt, a locked-down CI
image), :class:`EmbeddedBroker` runs amqtt (``pip install
"edge-graph-sdk[broker]"``), a pure-Python broker, in a child process: the
caller's own process, its event loop and its paho clients are not touched.
:func:`edge_sdk.fleet.brokers.start_local_broker` picks mosquitto when it is found and amqtt
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

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
import uuid

from ..._optional import install_hint
from ...errors import BackendUnavailableError, ConfigError
from . import installed  # one availability check, which tests can hide
from .process import BrokerProcess, free_port, kill_quietly, probe

_AMQTT_READY = "Listener 'default' bind to {bind}"
_AMQTT_FAILED = "Broker startup failed"
#: The child process's module (amqtt's Broker with loop signal handlers).
_RUNNER = "edge_sdk.fleet.brokers.amqtt_main"


class EmbeddedBroker(BrokerProcess):
    """An amqtt broker in a child Python process on a loopback port (MQTT 3.1.1 only).

    The fallback for demos and tests where mosquitto is not installed; see the
    module docstring for its limits (no MQTT 5, no persistence). It has the
    surface of :class:`LocalBroker` that callers use: ``host``, ``port``,
    ``url``, ``workdir``, ``log_path``, ``start``/``stop``/``kill``/
    ``restart``, ``running()`` and the context manager. amqtt runs in its own
    process so that its asyncio loop and its logging stay out of the caller's.

    Args:
        workdir: Directory for ``amqtt.yaml`` and ``amqtt.log`` (created if missing).
        port: TCP port; a free one is picked when None.
        host: Address to listen on.

    Example:
        >>> with EmbeddedBroker(tmp_path).start() as broker:  # doctest: +SKIP
        ...     client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTv311)
        ...     client.connect(broker.host, broker.port)
    """

    #: MQTT version to speak to it: amqtt refuses MQTT 5.
    protocol = "3.1.1"
    CONFIG_NAME = "amqtt.yaml"
    LOG_NAME = "amqtt.log"
    STOP_SIGNAL = signal.SIGINT  # amqtt_main shuts down cleanly on SIGINT and SIGTERM

    @property
    def version(self) -> str:
        """The installed amqtt version (read from its metadata, without importing it)."""
        try:
            return importlib.metadata.version("amqtt")
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def _config_text(self) -> str:
        # Only the anonymous-auth plugin: amqtt's default set adds the $SYS publisher
        # and per-packet loggers, which cost CPU on every message for nothing here.
        return "\n".join(
            [
                "# written by edge_sdk.fleet.brokers.EmbeddedBroker",
                "listeners:",
                "  default:",
                "    type: tcp",
                f"    bind: {self.host}:{self.port}",
                "    max_connections: 0",
                "plugins:",
                "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
                "    allow_anonymous: true",
                "",
            ]
        )

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Spawn amqtt and wait until it accepts an MQTT 3.1.1 connection.

        Raises:
            BackendUnavailableError: amqtt is not installed.
            ConfigError: amqtt failed at start (port in use, bad config); the
                message carries the log tail.
            RuntimeError: it is running but did not answer within ``timeout_s``.
        """
        if self.running():
            raise RuntimeError(f"broker on port {self.port} is already running")
        if not installed.embedded_broker_available():
            raise BackendUnavailableError(
                f"amqtt is not installed (needed for the embedded MQTT broker); "
                f"install it with: {install_hint('amqtt')}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        in_use = False
        while True:
            self.config_path.write_text(self._config_text())
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            # ``python -m`` of this interpreter: the amqtt that embedded_broker_available()
            # found, whatever the console scripts on PATH are; our runner (amqtt_main)
            # for a shutdown that always runs.
            proc = self._spawn(
                [sys.executable, "-m", _RUNNER, "-c", str(self.config_path)],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            outcome = self._wait_ready(proc, deadline, log_offset)
            if outcome == "ready":
                self._started_once = True
                return self
            # A failed start ends the process (amqtt_main); a hung one is ended here.
            kill_quietly(proc)
            if outcome == "timeout" and not in_use:
                raise RuntimeError(
                    f"amqtt did not accept MQTT connections on {self.url} within "
                    f"{timeout_s:g} s; log tail:\n{self.log_tail()}"
                )
            # A timeout after "port in use" failures: the port is still taken.
            new_log = self._read_log(log_offset)
            in_use = in_use if outcome == "timeout" else "address already in use" in new_log.lower()
            if in_use and time.monotonic() < deadline:
                if not self._port_given and not self._started_once:
                    self.port = free_port(self.host)
                time.sleep(0.1)
                continue
            why = (
                f"port {self.port} on {self.host} is in use by another process"
                if in_use
                else f"exit code {proc.returncode}, config {self.config_path}"
            )
            raise ConfigError(f"amqtt failed at start ({why}); log tail:\n{self.log_tail(20)}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float, log_offset: int) -> str:
        """Poll until *this* process answers MQTT: "ready", "failed" or "timeout".

        amqtt logs no client ids at INFO, so the proof that the CONNACK came
        from our process (and not from another one holding the port) is its
        own "bind to HOST:PORT" line in our log, written after the bind.
        """
        bound = _AMQTT_READY.format(bind=f"{self.host}:{self.port}")
        delay = 0.02
        while True:
            if proc.poll() is not None:
                return "failed"
            new_log = self._read_log(log_offset)
            if _AMQTT_FAILED in new_log:
                return "failed"
            if bound in new_log and probe(
                self.host, self.port, f"edge-sdk-probe-{uuid.uuid4().hex[:12]}"
            ):
                return "ready"
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
