"""Where and how an MQTT client connects: the broker URL, credentials, TLS, MQTT version.

Shared by the node (``broker:`` in its config file) and the fleet tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._env import env_str
from ..errors import ConfigError

__all__ = ["BrokerConfig", "parse_broker_url"]


class BrokerConfig(BaseModel):
    """Where and how to connect.

    Attributes:
        url: ``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS). Several
            members of a broker cluster may be given as one comma-separated
            string or a list (``mqtt://a:1883,mqtt://b:1883``): the first is
            ``url``, the others go to ``failover_urls``.
        failover_urls: Further members of the same broker cluster, tried in
            order after ``url`` whenever the connection to the current member is
            lost or cannot be made, round and round with the reconnect back-off
            (see :mod:`edge_sdk.mqtt.failover`). Same scheme as ``url``: the
            credentials and TLS settings apply to every member.
        username: MQTT user name.
        password: MQTT password (prefer ``EDGE_SDK_MQTT_PASSWORD``).
        ca: CA certificate file for ``mqtts://`` (system CAs when omitted).
        cert: Client certificate (mutual TLS).
        key: Client private key (mutual TLS).
        protocol: ``5``, ``3.1.1``, or ``auto`` (MQTT 5, falling back to 3.1.1
            when the broker refuses it, never answers it, or closes the
            connection on it twice in a row: :mod:`edge_sdk.mqtt.handshake`).
        keepalive_s: Keep-alive; the broker publishes the last will after
            about 1.5 x this without traffic.
        session_expiry_s: How long the broker keeps the node's session (its
            subscriptions and queued commands/offers) while it is away.
        reconnect_min_s: First reconnect delay; doubles up to ``reconnect_max_s``.
        reconnect_max_s: Longest reconnect delay.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    failover_urls: tuple[str, ...] = ()
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

    @model_validator(mode="before")
    @classmethod
    def _url_list(cls, data: Any) -> Any:
        """``url`` as a list or a comma-separated string: the first, then the failover URLs.

        Credentials written into the URLs (``mqtt://user:pass@host``) move to
        ``username``/``password``, so that no URL the SDK prints carries them.
        """
        if not isinstance(data, dict):
            return data
        url = data.get("url")
        if isinstance(url, str) and "," in url:
            urls = [u.strip() for u in url.split(",") if u.strip()]
        elif isinstance(url, list | tuple):
            urls = list(url)
        elif isinstance(url, str):
            urls = [url]
        else:
            return data
        if not urls:
            raise ConfigError("broker url: the list of broker URLs is empty")
        extra = list(data.get("failover_urls") or ())
        data = {**data, "url": urls[0], "failover_urls": [*urls[1:], *extra]}
        return _credentials_from_urls(data)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_broker_url(value)
        return value

    @model_validator(mode="after")
    def _members_alike(self) -> BrokerConfig:
        scheme = parse_broker_url(self.url)[0]
        for other in self.failover_urls:
            if parse_broker_url(other)[0] != scheme:
                raise ConfigError(
                    f"broker failover URL {other!r}: every member must use the scheme of "
                    f"{self.url!r} ({scheme}://), since one set of credentials and TLS "
                    "settings applies to all of them"
                )
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"broker URLs name one host:port twice: {', '.join(self.urls)}")
        return self

    @property
    def urls(self) -> tuple[str, ...]:
        """Every member's URL: ``url`` first, then ``failover_urls``."""
        return (self.url, *self.failover_urls)

    @property
    def members(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every member, in :attr:`urls` order."""
        return [parse_broker_url(u)[1:3] for u in self.urls]

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


def _credentials_from_urls(data: dict[str, Any]) -> dict[str, Any]:
    """Move ``user[:password]@`` out of every URL into ``username``/``password``.

    Raises:
        ConfigError: URLs with different credentials, or a URL user that is not
            the configured ``username``.
    """
    found: set[tuple[str | None, str | None]] = set()
    clean: list[Any] = []
    for url in [data["url"], *data["failover_urls"]]:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or "@" not in parts.netloc:
            clean.append(url)
            continue
        found.add(parse_broker_url(url)[3:5])
        clean.append(urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))
    if not found:
        return data
    if len(found) > 1:
        raise ConfigError("broker URLs carry different credentials: one user applies to all")
    (user, password) = found.pop()
    if data.get("username") not in (None, user):
        raise ConfigError(
            f"broker URL names user {user!r} but username is {data['username']!r}: give one"
        )
    return {
        **data,
        "url": clean[0],
        "failover_urls": clean[1:],
        "username": user,
        "password": data.get("password") if data.get("password") is not None else password,
    }


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
