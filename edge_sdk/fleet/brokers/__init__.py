"""Real local MQTT brokers for tests, benchmarks and the demo.

* :class:`LocalBroker`: mosquitto (:mod:`.mosquitto`, with why its queue
  limits default to unlimited);
* :class:`EmbeddedBroker`: amqtt in a child process where mosquitto is not
  installed (:mod:`.embedded`, with its limits);
* :class:`EjabberdBroker` (:mod:`.ejabberd`, MQTT 5) and :class:`RabbitBroker`
  (:mod:`.rabbitmq`, MQTT 3.1.1): the compatibility suite's other brokers, on
  :class:`~.erlang.ErlangBroker` (process group, private epmd, login probe);
* all on :class:`~.process.BrokerProcess`, the shared child-process base;
* :func:`start_local_broker` picks the first one installed (:mod:`.installed`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...errors import BackendUnavailableError
from . import installed
from .ejabberd import EjabberdBroker
from .embedded import EmbeddedBroker
from .erlang import ErlangBroker
from .installed import (
    INSTALL_HINT,
    embedded_broker_available,
    find_ejabberd,
    find_mosquitto,
    find_rabbitmq,
)
from .mosquitto import DROPPED_MARKER, BrokerLimits, LocalBroker
from .process import BrokerProcess, free_port
from .rabbitmq import RabbitBroker

__all__ = [
    "DROPPED_MARKER",
    "INSTALL_HINT",
    "BrokerLimits",
    "BrokerProcess",
    "EjabberdBroker",
    "EmbeddedBroker",
    "ErlangBroker",
    "LocalBroker",
    "RabbitBroker",
    "embedded_broker_available",
    "find_ejabberd",
    "find_mosquitto",
    "find_rabbitmq",
    "free_port",
    "start_local_broker",
]


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
    binary = installed.find_mosquitto()
    if binary is not None:
        mosquitto = LocalBroker(workdir).start(timeout_s=timeout_s)
        tell(f"broker: mosquitto ({binary}) on {mosquitto.url}")
        return mosquitto
    if installed.embedded_broker_available():
        embedded = EmbeddedBroker(workdir).start(timeout_s=timeout_s)
        tell(
            f"broker: amqtt {embedded.version} (embedded; mosquitto not found) on "
            f"{embedded.url}, MQTT 3.1.1 only"
        )
        return embedded
    raise BackendUnavailableError(installed.NO_BROKER_HINT)
