"""Where and how an MQTT client connects: the broker URL, credentials, TLS, MQTT version.

Shared by the node (``broker:`` in its config file) and the fleet tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._env import env_str
from ..errors import ConfigError

__all__ = ["BrokerConfig", "parse_broker_url"]


class BrokerConfig(BaseModel):
    """Where and how to connect.

    Attributes:
        url: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS).
        username: MQTT user name.
        password: MQTT password (prefer ``EDGE_SDK_MQTT_PASSWORD``).
        ca: CA certificate file for ``mqtts://`` (system CAs when omitted).
        cert: Client certificate (mutual TLS).
        key: Client private key (mutual TLS).
        protocol: ``5``, ``3.1.1``, or ``auto`` (MQTT 5, falling back to 3.1.1
            when the broker refuses it).
        keepalive_s: Keep-alive; the broker publishes the last will after
            about 1.5 x this without traffic.
        session_expiry_s: How long the broker keeps the node's session (its
            subscriptions and queued commands/offers) while it is away.
        reconnect_min_s: First reconnect delay; doubles up to ``reconnect_max_s``.
        reconnect_max_s: Longest reconnect delay.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    protocol: Literal["5", "3.1.1", "auto"] = "auto"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=24 * 3600, ge=0)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @property
    def host(self) -> str:
        return parse_broker_url(self.url)[1]

    @property
    def port(self) -> int:
        return parse_broker_url(self.url)[2]

    @property
    def tls(self) -> bool:
        return parse_broker_url(self.url)[0] == "mqtts"

    def effective_password(self) -> str | None:
        """``EDGE_SDK_MQTT_PASSWORD`` when set, else the configured password."""
        return env_str("MQTT_PASSWORD", self.password)


def parse_broker_url(url: str) -> tuple[str, str, int, str | None, str | None]:
    """Split ``mqtt[s]://[user[:pass]@]host[:port]`` into its parts.

    Raises:
        ConfigError: Another scheme, no host, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(
            f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port "
            f"(got scheme {parts.scheme or 'none'!r})"
        )
    if not parts.hostname:
        raise ConfigError(f"broker URL {url!r} has no host")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"broker URL {url!r} has an invalid port") from None
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.scheme, parts.hostname, port, user, password
