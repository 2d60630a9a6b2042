"""RabbitMQ 3.10 (``rabbitmq_mqtt``, MQTT 3.1.1 only) as a local broker.

:class:`RabbitBroker` runs Debian's ``/usr/lib/rabbitmq/bin/rabbitmq-server``
in the foreground with everything redirected into a work directory:
``RABBITMQ_CONFIG_FILE`` (``rabbitmq.conf``), ``RABBITMQ_ENABLED_PLUGINS_FILE``
(``[rabbitmq_mqtt].``), ``RABBITMQ_MNESIA_BASE``/``RABBITMQ_LOG_BASE``, a unique
``RABBITMQ_NODENAME``, free AMQP/MQTT/distribution ports, and ``HOME`` for the
Erlang cookie; ``/etc/rabbitmq`` is not read. RabbitMQ needs epmd: it gets a
private one on a free loopback port (``ERL_EPMD_PORT``), stopped with it, so a
system epmd on 4369 is neither used nor disturbed.

What a client meets (the compatibility suite's subject, docs/brokers.md):
MQTT 3.1.1 only (an MQTT 5 CONNECT makes it close the socket), anonymous
logins mapped to ``guest`` (allowed from loopback only), retained messages
delivered only to exact-topic subscriptions, and ``.`` in topics rewritten to
``/`` (topics become AMQP routing keys).
"""

from __future__ import annotations

import os

from . import installed
from .erlang import ErlangBroker
from .process import free_port


class RabbitBroker(ErlangBroker):
    """RabbitMQ with ``rabbitmq_mqtt`` on a loopback port, its state in ``workdir``.

    Args:
        workdir: Directory for ``rabbitmq.conf``, ``rabbitmq.log`` and the
            node's database (created if missing).
        port: MQTT port; a free one is picked when None.
        host: Address to listen on.
        node_name: Erlang node name (``name@localhost``); a unique one when None.
        amqp_port: AMQP 0-9-1 port; a free one is picked when None.
        sparkplug: Write ``mqtt.sparkplug = true``: RabbitMQ then keeps the
            dot of ``spBv1.0`` (other dots are still rewritten to ``/``).

    Example:
        >>> with RabbitBroker(tmp_path).start() as broker:  # doctest: +SKIP
        ...     cfg = BrokerConfig(url=broker.url, protocol=broker.protocol)
    """

    NAME = "rabbitmq"
    #: MQTT version to speak to it: rabbitmq_mqtt 3.10 has no MQTT 5.
    protocol = "3.1.1"
    CONFIG_NAME = "rabbitmq.conf"
    LOG_NAME = "rabbitmq.log"
    INSTALL_HINT = installed.RABBITMQ_HINT
    NEEDS_EPMD = True

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        node_name: str | None = None,
        amqp_port: int | None = None,
        sparkplug: bool = False,
    ) -> None:
        super().__init__(workdir, port, host, node_name)
        self.amqp_port = amqp_port if amqp_port is not None else free_port(host)
        self.sparkplug = sparkplug

    def _find(self) -> str | None:
        return installed.find_rabbitmq()

    def _config_text(self) -> str:
        return (
            "\n".join(
                [
                    "# written by edge_sdk.fleet.brokers.RabbitBroker",
                    f"listeners.tcp.default = {self.host}:{self.amqp_port}",
                    f"mqtt.listeners.tcp.default = {self.host}:{self.port}",
                    # MQTT clients without credentials log in as guest (loopback only)
                    "mqtt.allow_anonymous = true",
                    "mqtt.default_user = guest",
                    "mqtt.default_pass = guest",
                    "mqtt.vhost = /",
                    "mqtt.exchange = amq.topic",
                    "loopback_users.guest = true",
                    # a nearly full CI disk must not block publishers (default limit: 50 MB)
                    "disk_free_limit.absolute = 10MB",
                    "log.console = true",
                    "log.console.level = info",
                    "log.file = false",
                ]
                + (["mqtt.sparkplug = true"] if self.sparkplug else [])
            )
            + "\n"
        )

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        server = installed.find_rabbitmq()
        assert server is not None  # start() checked _find()
        self.config_path.write_text(self._config_text())
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[rabbitmq_mqtt].\n")
        env = self._base_env()
        env.update(
            RABBITMQ_NODENAME=self.node_name,
            RABBITMQ_CONFIG_FILE=str(self.config_path),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.workdir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.workdir / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins),
            RABBITMQ_MNESIA_BASE=str(self.workdir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.workdir / "log"),
            RABBITMQ_PID_FILE=str(self.workdir / "rabbitmq.pid"),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_CRASH_DUMP=str(self.workdir / "erl_crash.dump"),
            ERL_CRASH_DUMP_BYTES="0",
        )
        return [server], env

    def _listener_marker(self) -> str:
        return f"started MQTT TCP listener on {self.host}:{self.port}"
