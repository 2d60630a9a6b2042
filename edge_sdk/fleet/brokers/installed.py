"""Which local brokers are installed: looked up here, in one place that tests can hide."""

from __future__ import annotations

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
