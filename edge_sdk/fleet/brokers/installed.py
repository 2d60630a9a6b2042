"""Which local brokers are installed: looked up here, in one place that tests can hide."""

from __future__ import annotations

import contextlib
import os
import shutil

from ..._optional import install_hint, is_available

INSTALL_HINT = (
    "mosquitto is not installed: `apt-get install -y mosquitto` (Debian/Ubuntu) "
    "or `make test` which installs it"
)
NO_BROKER_HINT = (
    "no local MQTT broker: mosquitto is not installed and neither is the embedded "
    "fallback amqtt; install one of them: `apt-get install -y mosquitto` "
    f"(Debian/Ubuntu) or {install_hint('amqtt')}"
)
_FALLBACK_PATH = "/usr/sbin/mosquitto"  # Debian installs it outside a user's PATH


def find_mosquitto() -> str | None:
    """Return the path of the mosquitto binary, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.path.isfile(_FALLBACK_PATH) and os.access(_FALLBACK_PATH, os.X_OK):
        return _FALLBACK_PATH
    return None


def embedded_broker_available() -> bool:
    """True when amqtt (the ``[broker]`` extra) is installed; does not import it."""
    return is_available("amqtt")


EJABBERD_HINT = (
    "ejabberd is not installed: `apt-get install -y --no-install-recommends ejabberd` "
    "(Debian/Ubuntu) or `make brokers` which installs it"
)
RABBITMQ_HINT = (
    "RabbitMQ is not installed: `apt-get install -y --no-install-recommends rabbitmq-server` "
    "(Debian/Ubuntu) or `make brokers` which installs it"
)
_EJABBERD_LIBS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")
_RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_erl() -> str | None:
    """Return the path of the Erlang VM launcher ``erl``, or None."""
    found = shutil.which("erl")
    return found or ("/usr/bin/erl" if _executable("/usr/bin/erl") else None)


def find_epmd() -> str | None:
    """Return the path of the Erlang port mapper ``epmd``, or None."""
    found = shutil.which("epmd")
    return found or ("/usr/bin/epmd" if _executable("/usr/bin/epmd") else None)


def find_ejabberd() -> str | None:
    """Return the Erlang library directory (``ERL_LIBS``) holding Debian's ejabberd, or None.

    ejabberd runs as ``erl ... -s ejabberd`` with this directory in ``ERL_LIBS``;
    None also when ``erl`` itself is missing.
    """
    if find_erl() is None:
        return None
    for libs in _EJABBERD_LIBS:
        with contextlib.suppress(OSError):
            for entry in sorted(os.listdir(libs)):
                if entry.startswith("ejabberd-") and os.path.isfile(
                    os.path.join(libs, entry, "ebin", "ejabberd.app")
                ):
                    return libs
    return None


def find_rabbitmq() -> str | None:
    """Return the path of RabbitMQ's ``rabbitmq-server`` script, or None when not installed."""
    if _executable(_RABBITMQ_SERVER) and find_erl() is not None:
        return _RABBITMQ_SERVER
    return None
