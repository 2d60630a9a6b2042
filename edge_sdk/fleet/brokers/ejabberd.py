"""ejabberd (``mod_mqtt``, MQTT 5) as a local broker: the compatibility suite's second broker.

:class:`EjabberdBroker` writes ``ejabberd.yml`` into a work directory and runs
Debian's ejabberd 23.01 as ``erl -sname NODE ... -s ejabberd`` directly (not
through ``ejabberdctl``, which switches to the ``ejabberd`` user and uses the
system's config, spool and epmd). The Erlang node has a unique name and runs
without epmd (``-start_epmd false -erl_epmd_port DIST``: its distribution
listens on a free loopback port), so a system epmd neither helps nor clashes.
Mnesia (sessions' subscriptions, retained messages) lives in
``workdir/database`` and survives ``kill()``/``restart()``.

ejabberd refuses an MQTT login without a user name (CONNACK "not
authorised"): the config accepts any user name and password (``auth_method:
anonymous`` with ``anonymous_protocol: login_anon``); :attr:`username` and
:attr:`password` are what this class tells clients to send
(:meth:`~.erlang.ErlangBroker.client_options`). A plant's ejabberd uses its
real accounts instead.
"""

from __future__ import annotations

import os

from . import installed
from .erlang import ErlangBroker


class EjabberdBroker(ErlangBroker):
    """ejabberd 23.01 with ``mod_mqtt`` on a loopback port, its state in ``workdir``.

    Args:
        workdir: Directory for ``ejabberd.yml``, ``ejabberd.log`` and the
            Mnesia database (created if missing).
        port: MQTT port; a free one is picked when None.
        host: Address to listen on.
        node_name: Erlang node name (``name@localhost``); a unique one when None.
        username: The MQTT user name clients send (any is accepted).
        password: The MQTT password clients send (any is accepted).

    Example:
        >>> with EjabberdBroker(tmp_path).start() as broker:  # doctest: +SKIP
        ...     cfg = BrokerConfig(url=broker.url, **broker.client_options())
    """

    NAME = "ejabberd"
    #: MQTT version to speak to it (``mod_mqtt`` also accepts 3.1.1).
    protocol = "5"
    CONFIG_NAME = "ejabberd.yml"
    LOG_NAME = "ejabberd.log"
    INSTALL_HINT = installed.EJABBERD_HINT

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        node_name: str | None = None,
        username: str = "edge-sdk",
        password: str = "edge-sdk",
    ) -> None:
        super().__init__(workdir, port, host, node_name)
        self.username = username
        self.password = password

    def _find(self) -> str | None:
        return installed.find_ejabberd()

    def _config_text(self) -> str:
        return (
            "\n".join(
                [
                    "# written by edge_sdk.fleet.brokers.EjabberdBroker",
                    "hosts:",
                    "  - localhost",
                    "loglevel: info",
                    "log_rotate_count: 0",
                    # mod_mqtt needs a user name; accept any user name and password
                    "auth_method: [anonymous]",
                    "anonymous_protocol: login_anon",
                    "allow_multiple_connections: true",
                    "listen:",
                    f"  - port: {self.port}",
                    f'    ip: "{self.host}"',
                    "    module: mod_mqtt",
                    "    backlog: 1000",
                    "acl:",
                    "  local:",
                    '    user_regexp: ""',
                    "access_rules:",
                    "  local:",
                    "    allow: all",
                    "modules:",
                    "  mod_mqtt:",
                    # no per-session queue cap: the broker must not be what loses test data
                    "    max_queue: unlimited",
                    "    access_publish:",
                    '      "#":',
                    "        - allow",
                    "    access_subscribe:",
                    '      "#":',
                    "        - allow",
                ]
            )
            + "\n"
        )

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        libs = installed.find_ejabberd()
        erl = installed.find_erl()
        assert libs is not None and erl is not None  # start() checked _find()
        self.config_path.write_text(self._config_text())
        database = self.workdir / "database"
        database.mkdir(exist_ok=True)
        env = self._base_env()
        env.update(
            ERL_LIBS=libs,
            EJABBERD_CONFIG_PATH=str(self.config_path),
            EJABBERD_LOG_PATH=str(self.log_path),
            ERL_CRASH_DUMP=str(self.workdir / "erl_crash.dump"),
            ERL_CRASH_DUMP_BYTES="0",
        )
        argv = [
            erl,
            "-sname",
            self.node_name,
            # no epmd: the distribution listens on a fixed free loopback port
            "-start_epmd",
            "false",
            "-erl_epmd_port",
            str(self.dist_port),
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "+K",
            "true",
            "-noinput",
            "-mnesia",
            "dir",
            f'"{database}"',
            "-s",
            "ejabberd",
        ]
        return argv, env

    def _listener_marker(self) -> str:
        return f"Start accepting TCP connections at {self.host}:{self.port} for mod_mqtt"
