"""Connecting a fleet tool's link, and saying why the broker said no.

Every fleet tool (deploy, watch, status, command) connects through
:func:`connect`. When the connection does not come up, the error carries what
the link learnt from the broker (:attr:`MqttLink.connect_error`: the CONNACK's
reason code, a refused TCP connection, a connection closed during the CONNECT)
and what to set, instead of a bare "cannot reach the broker". A subscription
the broker refused (:attr:`MqttLink.refused_subscriptions`, e.g. a shared
subscription on a broker without them) is an error too: the tool would
otherwise watch nothing and say nothing.
"""

from __future__ import annotations

import time

from ..errors import ConfigError
from ..mqtt.link import MqttLink

__all__ = ["connect", "unreachable"]

#: Refusals that no retry changes: fail at once instead of at the timeout.
_FINAL = (
    "CONNACK 0x85",
    "CONNACK 0x86",
    "CONNACK 0x87",
    "CONNACK 0x8A",
    "CONNACK 0x8C",
    "CERTIFICATE_VERIFY_FAILED",
)

#: (words in the link's error, what to do about it)
_HINTS = (
    (
        ("CONNACK 0x86", "CONNACK 0x87", "CONNACK 0x8C"),
        "check --username and EDGE_SDK_MQTT_PASSWORD",
    ),
    (("CONNACK 0x85",), "the broker refuses this client id"),
    (("CONNACK 0x8A",), "the broker has banned this client"),
    (
        ("during the MQTT 5 CONNECT", "MQTT 5 CONNECT within", "CONNACK 0x84"),
        "if the broker speaks only MQTT 3.1.1, set --protocol 3.1.1",
    ),
    (("connection refused",), "is the broker running and listening on that port?"),
    (
        ("certificate", "SSL", "TLS", "handshake"),
        "check --ca (the broker's CA), --cert/--tls-key and the host name in the URL",
    ),
)


def unreachable(link: MqttLink, waited_s: float) -> ConfigError:
    """The error for a link that did not connect: the broker's reason and what to set."""
    reason = link.connect_error or f"no connection within {waited_s:g} s"
    hint = next((h for words, h in _HINTS if any(w in reason for w in words)), "")
    return ConfigError(
        f"cannot reach the broker at {link.broker.url}: {reason}" + (f": {hint}" if hint else "")
    )


def connect(link: MqttLink, timeout_s: float) -> MqttLink:
    """Start ``link`` and wait until it is connected and subscribed.

    Returns at once with an error when the broker refuses the client in a way
    no retry changes (bad credentials, not authorised, banned, a server
    certificate that does not verify), or the link's capability probe refused
    the broker (:attr:`BrokerProbe.refused`).

    Raises:
        ConfigError: Not connected within ``timeout_s`` or refused (the link is
            stopped), naming the broker's reason; or a subscription refused,
            naming the topic filter and the broker's reason code.
    """
    link.start()
    deadline = time.monotonic() + timeout_s
    probe = link.probe
    while not link.wait_connected(0.05):
        error = link.connect_error or ""
        given_up = probe is not None and probe.refused is not None  # no reconnect follows
        if given_up or time.monotonic() >= deadline or any(code in error for code in _FINAL):
            link.stop(flush_s=0)
            raise unreachable(link, timeout_s)
    refused = link.refused_subscriptions
    if refused:
        link.stop(flush_s=0)
        what = "; ".join(f"{topic}: {reason}" for topic, reason in sorted(refused.items()))
        shared = any(topic.startswith("$share/") for topic in refused)
        hint = ": leave out --share, or enable shared subscriptions on the broker" if shared else ""
        raise ConfigError(
            f"the broker at {link.broker.url} refused the subscription to {what}{hint}"
        )
    return link
