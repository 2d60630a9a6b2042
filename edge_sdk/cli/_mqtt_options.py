"""The broker options every connecting ``edge-fleet`` command shares, in one place.

``@broker_options`` gives a command ``--broker``, ``--protocol``,
``--username``, ``--ca``, ``--cert`` and ``--tls-key`` and calls it with one
``broker: BrokerConfig`` built from them. Names and meanings are the node's
(``edge-node run``, :class:`edge_sdk.mqtt.config.BrokerConfig`); the password
comes from ``EDGE_SDK_MQTT_PASSWORD``, never a flag (flags show in ``ps``). The
client key is ``--tls-key`` because ``edge-fleet deploy --key`` is the bundle
signing key; ``edge-node run`` takes ``--tls-key`` too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ._common import fail_on_errors, setup_logging

__all__ = ["BROKER_HELP", "Protocol", "broker_config", "broker_options"]

F = TypeVar("F", bound=Callable[..., Any])

#: Appended to each connecting command's epilog.
BROKER_HELP = (
    "Broker: --broker mqtt://host:1883 or mqtts://host:8883 (or EDGE_SDK_BROKER); "
    "--protocol 3.1.1 for a broker without MQTT 5 (auto tries 5, then 3.1.1); "
    "--username with the password in EDGE_SDK_MQTT_PASSWORD; TLS: --ca, and --cert with "
    "--tls-key for a client certificate."
)


class Protocol(StrEnum):
    """The MQTT version a fleet command speaks."""

    AUTO = "auto"
    V5 = "5"
    V311 = "3.1.1"


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


_PARAMS = [
    _option(
        "broker_url",
        Annotated[
            str,
            typer.Option(
                "--broker",
                envvar="EDGE_SDK_BROKER",
                help="mqtt://host:port or mqtts://host:port (TLS).",
            ),
        ],
        "mqtt://127.0.0.1:1883",
    ),
    _option(
        "protocol",
        Annotated[
            Protocol,
            typer.Option(
                help="MQTT version: 5, 3.1.1, or auto (MQTT 5, falling back to 3.1.1 when "
                "the broker refuses, ignores or drops an MQTT 5 CONNECT)."
            ),
        ],
        Protocol.AUTO,
    ),
    _option(
        "username",
        Annotated[
            str | None, typer.Option(help="MQTT user name (password: EDGE_SDK_MQTT_PASSWORD).")
        ],
        None,
    ),
    _option(
        "ca",
        Annotated[Path | None, typer.Option(help="CA certificate (mqtts; default system CAs).")],
        None,
    ),
    _option(
        "cert", Annotated[Path | None, typer.Option(help="Client certificate (mutual TLS).")], None
    ),
    _option(
        "tls_key",
        Annotated[Path | None, typer.Option(help="Client private key (mutual TLS).")],
        None,
    ),
]
_NAMES = [p.name for p in _PARAMS]


def broker_config(
    broker_url: str,
    protocol: Protocol = Protocol.AUTO,
    username: str | None = None,
    ca: Path | None = None,
    cert: Path | None = None,
    tls_key: Path | None = None,
) -> Any:
    """The :class:`BrokerConfig` of the options (password from ``EDGE_SDK_MQTT_PASSWORD``).

    Raises:
        ConfigError: A bad URL, TLS files with an ``mqtt://`` URL, or a missing file.
    """
    from edge_sdk.errors import ConfigError
    from edge_sdk.mqtt.config import BrokerConfig

    tls_files = {"--ca": ca, "--cert": cert, "--tls-key": tls_key}
    given = [flag for flag, path in tls_files.items() if path is not None]
    try:
        config = BrokerConfig(
            url=broker_url,
            protocol=protocol.value,
            username=username,
            ca=ca,
            cert=cert,
            key=tls_key,
        )
    except ValueError as exc:  # pydantic wraps the ConfigError of the URL check
        raise ConfigError(str(exc).splitlines()[-1].strip()) from None
    if given and not config.tls:
        raise ConfigError(
            f"{', '.join(given)} need a TLS broker URL: use mqtts://host:8883, not {broker_url}"
        )
    for flag, path in tls_files.items():
        if path is not None and not path.is_file():
            raise ConfigError(f"{flag} {path}: file not found")
    return config


def broker_options(command: F) -> F:
    """Give ``command`` the shared broker options; it receives ``broker: BrokerConfig``.

    ``command`` declares a ``broker`` parameter (any annotation); the options
    replace it on the command line, after the command's own options.
    """
    sig = inspect.signature(command, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "broker"]
    assert len(own) == len(sig.parameters) - 1, f"{command.__name__} takes no broker parameter"

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NAMES}
        setup_logging(daemon=False)  # the link's warnings (fallback, refusals) as one line each
        with fail_on_errors():
            broker = broker_config(**values)
        return command(*args, broker=broker, **kwargs)

    run.__signature__ = sig.replace(parameters=[*own, *_PARAMS])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in [*own, *_PARAMS]}
    return run  # type: ignore[return-value]
