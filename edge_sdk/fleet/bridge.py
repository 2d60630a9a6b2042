"""The mosquitto bridge section for an edge broker that forwards to a cloud broker.

An edge site runs its own mosquitto: nodes on the plant network publish to it
and keep working when the uplink is down. A *bridge* (a connection the edge
broker opens to the cloud broker) carries ``edge/#`` (the JSON scheme, OTA
offers, chunks and commands included) both ways, and, for Sparkplug B nodes,
``spBv1.0/#``. :func:`bridge_config` writes that section; append it to the
edge broker's config (``LocalBroker(extra_config=...)`` does exactly that).

What makes an uplink outage survivable is *not* in the bridge section
---------------------------------------------------------------------
While the uplink is down the edge broker queues what the bridge should
forward in the bridge's own session (``cleansession false``). That queue is
bounded by the broker-wide settings ``max_queued_messages`` and
``max_queued_bytes`` (per client, the bridge counts as one client), and QoS 0
messages (Sparkplug ``NDATA``) are queued only with ``queue_qos0_messages
true``. Beyond the limit mosquitto drops messages *after* it has sent the
node its PUBACK: the node's outbox counts them delivered and the cloud never
sees them (``tests/fleet/test_bridge.py`` measures it). Set them with
:class:`edge_sdk.fleet.brokers.BrokerLimits` (``LocalBroker(limits=...)``), or
in the edge broker's main config, sized with :func:`outage_limits`.

MQTT v5 bridges and sessions (mosquitto 2.0.x)
-----------------------------------------------
mosquitto's v5 bridge sends no Session Expiry Interval, so with
``bridge_protocol_version mqttv50`` the *cloud* broker ends the bridge's
session at every disconnect, whatever ``cleansession`` says (mosquitto issues
#1632, #2424, #2980). Edge-to-cloud data is unaffected: it waits in the edge
broker's queue. Cloud-to-edge messages published while the uplink is down
(commands, OTA chunks) are lost; the node re-asks for chunks it lacks and a
retained offer is sent again when the bridge re-subscribes. ``mqttv311``
keeps the cloud-side session (cloud-to-edge QoS 1 messages are queued for the
bridge) but drops MQTT 5 properties (response topic, correlation data: the
node's ``reply_to``/``correlation`` JSON fields still work).

Measured with mosquitto 2.0.11 (``tests/fleet/test_bridge.py``, and by hand)
---------------------------------------------------------------------------
* An MQTT 5 bridge on a broker whose ``max_inflight_messages`` is ``0``
  (unlimited) or ``65535`` sends a CONNECT the cloud broker refuses as a
  protocol error, forever. Use 1..65534 (mosquitto's default is 20).
* ``try_private true`` (the bridge bit in the protocol version) is accepted
  by mosquitto with either protocol; other brokers may refuse it, so it is
  written ``false`` for ``mqttv50``, where the bridge's subscriptions carry No
  Local and Retain As Published instead.
* A constant ``restart_timeout N`` is not honoured: reconnects still back off
  as with the default (jittered, 5 to 30 s); ``restart_timeout BASE CAP`` is.
* After every reconnect the edge's retained messages (node births) cross
  again, up to twice: consumers must treat retained state as idempotent
  (it is: the latest status wins).
* After a reconnect, messages published once the bridge is back may overtake
  the queued backlog (2 runs in 15): consumers order by the envelope's ``seq``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError
from .brokers import BrokerLimits

__all__ = [
    "DEFAULT_TOPICS",
    "JSON_TOPICS",
    "SPARKPLUG_TOPICS",
    "BridgeTopic",
    "bridge_config",
    "outage_limits",
]

Direction = Literal["in", "out", "both"]
BridgeProtocol = Literal["mqttv50", "mqttv311"]

_DIRECTIONS = ("in", "out", "both")
_PROTOCOLS = ("mqttv50", "mqttv311")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
# A client id or connection name also names the notification topic
# ``$SYS/broker/connection/<remote_clientid>/state``: no topic separators or wildcards.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


# -- checks ---------------------------------------------------------------------------------


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _has_space(text: str) -> bool:
    return any(ch.isspace() for ch in text)


def _check_host(host: str) -> str:
    if not isinstance(host, str) or not host:
        raise ConfigError(f"bridge host must be a host name or IP address, got {host!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ConfigError(
                f"bridge host {host!r} is not a valid host name or IP address "
                "(give the host only, e.g. 'cloud.example.com', and the port separately)"
            ) from None
        return host
    return str(ip)  # mosquitto splits "address" at the last ':', so IPv6 works as is


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"bridge port must be an integer in 1..65535, got {port!r}")
    return port


def _check_id(label: str, value: str) -> str:
    if not isinstance(value, str) or not _CLIENT_ID.match(value):
        raise ConfigError(
            f"{label} {value!r} is not valid: use 1-128 characters from [A-Za-z0-9_.:-], "
            "starting with a letter or digit (it names the topic "
            "$SYS/broker/connection/<id>/state, so no '/', '+', '#' or spaces)"
        )
    return value


def _check_filter(pattern: str) -> None:
    if not isinstance(pattern, str) or not pattern or _has_space(pattern):
        raise ConfigError(
            f"bridge topic pattern must be a non-empty topic filter without spaces, got {pattern!r}"
        )
    levels = pattern.split("/")
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            raise ConfigError(
                f"bridge topic pattern {pattern!r} is not a valid filter: '+' must be a whole "
                "level and '#' the whole last level (e.g. 'edge/+/results', 'edge/#')"
            )


def _restart_timeout(value: int | tuple[int, int]) -> str:
    if isinstance(value, tuple):
        if (
            len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and 0 < value[0] <= value[1]
        ):
            return f"{value[0]} {value[1]}"
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    raise ConfigError(
        "restart_timeout_s must be seconds > 0, or (base, cap) with 0 < base <= cap for "
        f"mosquitto's jittered backoff, got {value!r}"
    )


def _check_value(label: str, value: str) -> str:
    if not value or "\n" in value or "\r" in value or value != value.strip():
        raise ConfigError(
            f"bridge {label} must be non-empty, on one line, without leading or trailing spaces"
        )
    return value


def _tls_lines(
    cafile: str | os.PathLike[str] | None,
    certfile: str | os.PathLike[str] | None,
    keyfile: str | os.PathLike[str] | None,
) -> list[str]:
    if (certfile is None) != (keyfile is None):
        raise ConfigError("bridge TLS: give certfile and keyfile together (mutual TLS), or neither")
    if certfile is not None and cafile is None:
        raise ConfigError(
            "bridge TLS: a client certificate needs cafile too (the CA that signed the "
            "cloud broker's certificate); mosquitto only enables TLS with bridge_cafile"
        )
    lines = []
    for key, path in (
        ("bridge_cafile", cafile),
        ("bridge_certfile", certfile),
        ("bridge_keyfile", keyfile),
    ):
        if path is not None:
            lines.append(f"{key} {_check_value(key, os.fspath(path))}")
    return lines


def _credential_lines(username: str | None, password: str | None) -> list[str]:
    if password is not None and username is None:
        raise ConfigError("bridge remote_password needs remote_username too")
    lines = []
    if username is not None:
        lines.append(f"remote_username {_check_value('remote_username', username)}")
    if password is not None:
        lines.append(f"remote_password {_check_value('remote_password', password)}")
    return lines


# -- the bridge section ---------------------------------------------------------------------


@dataclass(frozen=True)
class BridgeTopic:
    """One ``topic`` line of a bridge: which messages cross, which way, at which QoS.

    Attributes:
        pattern: Topic filter (``+`` and ``#`` allowed as whole levels).
        direction: ``out`` (edge to cloud), ``in`` (cloud to edge) or ``both``.
        qos: QoS of the bridge's subscriptions: a message crosses at the lower
            of its own QoS and this one.
        local_prefix: Prefix on the edge side (topic remapping); ``""`` for none.
        remote_prefix: Prefix on the cloud side; ``""`` for none.

    Raises:
        ConfigError: Bad pattern, direction, QoS or prefix.
    """

    pattern: str
    direction: Direction = "both"
    qos: int = 1
    local_prefix: str = ""
    remote_prefix: str = ""

    def __post_init__(self) -> None:
        _check_filter(self.pattern)
        if self.direction not in _DIRECTIONS:
            raise ConfigError(
                f"bridge topic {self.pattern!r}: direction must be one of "
                f"{', '.join(_DIRECTIONS)}, got {self.direction!r}"
            )
        if isinstance(self.qos, bool) or self.qos not in (0, 1, 2):
            raise ConfigError(
                f"bridge topic {self.pattern!r}: qos must be 0, 1 or 2, got {self.qos!r}"
            )
        for side, prefix in (
            ("local_prefix", self.local_prefix),
            ("remote_prefix", self.remote_prefix),
        ):
            if prefix and (_has_space(prefix) or "+" in prefix or "#" in prefix):
                raise ConfigError(
                    f"bridge topic {self.pattern!r}: {side} {prefix!r} must be a plain topic "
                    "prefix (no spaces, no wildcards), e.g. 'site-a/'"
                )

    @classmethod
    def parse(cls, line: str) -> BridgeTopic:
        """Read mosquitto's form ``pattern [direction [qos [local remote]]]``.

        Example:
            >>> BridgeTopic.parse("edge/# out 1").line()
            'topic edge/# out 1'

        Raises:
            ConfigError: Not that form, or a bad field.
        """
        fields = line.split()
        if not 1 <= len(fields) <= 5 or len(fields) == 4:
            raise ConfigError(
                f"bridge topic {line!r}: expected 'pattern [in|out|both [qos [local-prefix "
                "remote-prefix]]]', e.g. 'edge/# both 1'"
            )
        direction = fields[1] if len(fields) > 1 else "both"
        try:
            qos = int(fields[2]) if len(fields) > 2 else 1
        except ValueError:
            raise ConfigError(
                f"bridge topic {line!r}: qos must be 0, 1 or 2, got {fields[2]!r}"
            ) from None
        prefixes = [p if p != '""' else "" for p in fields[3:]] or ["", ""]
        return cls(fields[0], direction, qos, prefixes[0], prefixes[1])  # type: ignore[arg-type]

    def line(self) -> str:
        """The ``topic ...`` config line."""
        text = f"topic {self.pattern} {self.direction} {self.qos}"
        if self.local_prefix or self.remote_prefix:
            empty = '""'  # mosquitto's marker for an empty prefix
            text += f" {self.local_prefix or empty} {self.remote_prefix or empty}"
        return text


#: The JSON scheme, both ways at QoS 1: results, alerts, status and ``ota/get`` out;
#: commands, ``ota/offer`` (retained) and ``ota/chunk`` in.
JSON_TOPICS: tuple[BridgeTopic, ...] = (BridgeTopic("edge/#", "both", 1),)
#: Sparkplug B. The bridge's QoS is a ceiling, not a level: NBIRTH/NDATA/DDATA (QoS 0)
#: still cross at 0 (an outage keeps them only with ``queue_qos0_messages``), while NDEATH,
#: NCMD and STATE keep their QoS 1. With ``both 0`` they would be downgraded to QoS 0
#: (measured: a QoS 1 NDEATH reached a QoS 1 cloud subscriber at QoS 0).
SPARKPLUG_TOPICS: tuple[BridgeTopic, ...] = (BridgeTopic("spBv1.0/#", "both", 1),)
DEFAULT_TOPICS: tuple[BridgeTopic, ...] = JSON_TOPICS + SPARKPLUG_TOPICS


def bridge_config(
    host: str,
    port: int = 1883,
    *,
    name: str = "edge-to-cloud",
    remote_clientid: str | None = None,
    local_clientid: str | None = None,
    protocol: BridgeProtocol = "mqttv50",
    topics: Sequence[BridgeTopic | str] = DEFAULT_TOPICS,
    cleansession: bool = False,
    restart_timeout_s: int | tuple[int, int] = (5, 30),
    keepalive_s: int = 60,
    notifications: bool = True,
    try_private: bool | None = None,
    cafile: str | os.PathLike[str] | None = None,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """Return the mosquitto bridge section (``connection NAME`` ...) for an edge broker.

    Append it to the edge broker's config, after the broker-wide settings
    (``LocalBroker(extra_config=bridge_config(...))``). The queue limits that
    decide how long an uplink outage may last are broker-wide, not part of
    this section: see the module docstring and :func:`outage_limits`.

    Args:
        host: Cloud broker host name or IP address.
        port: Cloud broker port (8883 with TLS, by convention).
        name: Connection name (``connection NAME``).
        remote_clientid: Client id on the cloud broker; default ``bridge-{name}``.
            Give every edge site its own: a second bridge with the same id
            takes the session over and the two kick each other off.
        local_clientid: Client id of the bridge inside the edge broker; default
            ``local.{remote_clientid}`` (mosquitto's own default, written out).
        protocol: ``mqttv50`` (keeps MQTT 5 properties) or ``mqttv311`` (keeps the
            cloud-side session across disconnects, see the module docstring).
        topics: What crosses; :class:`BridgeTopic` or mosquitto's
            ``"pattern direction qos"`` strings. Default: ``edge/# both 1`` and
            ``spBv1.0/# both 1`` (see :data:`SPARKPLUG_TOPICS`). One site's
            bridge should carry only its own group (``edge/plant-a/# both 1``),
            which is also what the cloud broker's ACL for it allows.
        cleansession: ``False`` keeps the bridge's sessions (and so its queue on
            the edge broker) across disconnects; ``True`` throws them away.
        restart_timeout_s: Seconds before reconnecting: ``(base, cap)`` for
            mosquitto's jittered backoff, or a constant (which mosquitto 2.0.11
            ignores: it keeps its default 5-30 s backoff).
        keepalive_s: MQTT keep-alive of the bridge connection (>= 5): how
            long a silently dead uplink goes unnoticed, at most ~1.5x this.
        notifications: Publish ``1``/``0`` (retained; ``0`` as the will) on
            ``$SYS/broker/connection/{remote_clientid}/state`` on both brokers.
        try_private: Mark the connection as a bridge (mosquitto's protocol
            version bit 0x80) for loop detection. Default: on for ``mqttv311``,
            off for ``mqttv50``, where mosquitto 2.0 answers the marked CONNECT
            with a protocol error and loops are prevented by the subscription
            options instead (No Local, Retain As Published).
        cafile: CA that signed the cloud broker's certificate; enables TLS.
        certfile: Client certificate of this edge site (mutual TLS).
        keyfile: Private key of ``certfile``.
        username: ``remote_username`` on the cloud broker.
        password: ``remote_password`` (needs ``username``).

    Returns:
        The config lines, newline-terminated.

    Raises:
        ConfigError: Bad host, port, name, client id, topic (pattern, direction,
            QoS), protocol, timing or TLS/credential combination.

    Example:
        >>> print(bridge_config("cloud.example.com", 8883, name="plant-a",
        ...                     cafile="/etc/mosquitto/ca.pem"))  # doctest: +SKIP
    """
    address = f"{_check_host(host)}:{_check_port(port)}"
    _check_id("connection name", name)
    remote_id = _check_id("remote_clientid", remote_clientid or f"bridge-{name}")
    local_id = _check_id("local_clientid", local_clientid or f"local.{remote_id}")
    if local_id == remote_id:
        raise ConfigError(
            f"local_clientid and remote_clientid are both {remote_id!r}: they must differ "
            "(mosquitto mixes the two sessions up when a broker bridges to itself)"
        )
    if protocol not in _PROTOCOLS:
        raise ConfigError(
            f"bridge protocol must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}"
        )
    parsed = [t if isinstance(t, BridgeTopic) else BridgeTopic.parse(t) for t in topics]
    if not parsed:
        raise ConfigError("a bridge needs at least one topic, e.g. 'edge/# both 1'")
    if isinstance(keepalive_s, bool) or not isinstance(keepalive_s, int) or keepalive_s < 5:
        raise ConfigError(
            f"keepalive_s must be an integer >= 5 (mosquitto's minimum), got {keepalive_s!r}"
        )
    restart = _restart_timeout(restart_timeout_s)

    lines = [
        "",
        "# bridge to the cloud broker, written by edge_sdk.fleet.bridge.bridge_config",
        f"connection {name}",
        f"address {address}",
        f"bridge_protocol_version {protocol}",
        f"cleansession {_bool(cleansession)}",
        f"remote_clientid {remote_id}",
        f"local_clientid {local_id}",
        "start_type automatic",
        f"restart_timeout {restart}",
        f"keepalive_interval {keepalive_s}",
        f"notifications {_bool(notifications)}",
        f"try_private {_bool(protocol == 'mqttv311' if try_private is None else try_private)}",
    ]
    lines += [t.line() for t in parsed]
    lines += _tls_lines(cafile, certfile, keyfile)
    lines += _credential_lines(username, password)
    return "\n".join(lines) + "\n"


def outage_limits(
    outage_s: float,
    messages_per_s: float,
    message_bytes: int,
    headroom: float = 2.0,
    queue_qos0: bool = False,
    max_inflight_messages: int = 20,
) -> BrokerLimits:
    """Size the edge broker's queue limits for an uplink outage of ``outage_s`` seconds.

    ``max_queued_messages = ceil(outage_s x messages_per_s x headroom)`` and
    ``max_queued_bytes`` the same times ``message_bytes`` (topic + payload).
    Both limits are per client: the bridge is one client, so its queue holds
    the whole site's traffic. Memory: the broker holds the queue in RAM (and
    in its persistence file), so check ``max_queued_bytes`` against the
    machine.

    Args:
        outage_s: Longest uplink outage to survive without loss.
        messages_per_s: Messages per second the site sends across the bridge.
        message_bytes: Typical topic + payload size.
        headroom: Factor over the estimate (bursts, a backlog after the outage).
        queue_qos0: Also queue QoS 0 messages for a disconnected bridge
            (Sparkplug NDATA); they then count towards the same limits.
        max_inflight_messages: Unacknowledged QoS 1 messages per client, 1..65534;
            keep it at or below the cloud broker's Receive Maximum (mosquitto
            2.0 bridges were reported to exceed it: issues #2301, #3002).

    Returns:
        Limits for ``LocalBroker(limits=...)``; in a hand-written config, the
        lines ``max_queued_messages``, ``max_queued_bytes``,
        ``queue_qos0_messages`` and ``max_inflight_messages``.

    Raises:
        ConfigError: A non-positive or non-finite input.
    """
    for label, value in (
        ("outage_s", outage_s),
        ("messages_per_s", messages_per_s),
        ("message_bytes", message_bytes),
        ("headroom", headroom),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ConfigError(f"outage_limits: {label} must be a positive number, got {value!r}")
    if headroom < 1:
        raise ConfigError(f"outage_limits: headroom must be >= 1, got {headroom!r}")
    if not 0 < max_inflight_messages < 65535:
        # Measured with mosquitto 2.0.11: with 0 (unlimited) or 65535 the edge broker's
        # MQTT 5 bridge CONNECT is refused by the cloud broker as a protocol error.
        raise ConfigError(
            "outage_limits: max_inflight_messages must be in 1..65534 on a bridging broker "
            f"(0 or 65535 break mosquitto 2.0's MQTT 5 bridge), got {max_inflight_messages!r}"
        )
    messages = math.ceil(outage_s * messages_per_s * headroom)
    return BrokerLimits(
        max_queued_messages=messages,
        max_queued_bytes=messages * int(message_bytes),
        max_inflight_messages=max_inflight_messages,
        queue_qos0_messages=queue_qos0,
    )
