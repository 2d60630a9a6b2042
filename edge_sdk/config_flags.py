"""How a config field shows on ``edge-export export``: its :class:`Flag`, declared beside it.

A field of an :mod:`~edge_sdk.export_config` group that the CLI offers carries a
:class:`Flag` in its metadata (``field(default=..., metadata=cli_flag("help"))``);
the CLI builds its options from these declarations, so an option is declared once.
"""

# No ``from __future__ import annotations``: the CLI reads the fields' types as objects.

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: ``Flag.default`` when the CLI default is the field's own.
FIELD_DEFAULT: Any = type("FieldDefault", (), {"__repr__": lambda _self: "FIELD_DEFAULT"})()


@dataclass(frozen=True)
class Flag:
    """How a config field shows on ``edge-export export``.

    Attributes:
        help: The option's help text.
        decls: Flag names when they are not ``--<field-name>`` (e.g. ``--profile, -p``).
        param: The CLI parameter name when it differs from the flat field name.
        type: The CLI value type when it differs from the field's (e.g. comma-separated text).
        default: The CLI default when it differs from the field's (before ``parse``).
        parse: Turns the CLI value into the field's value.
        min: Smallest value the CLI accepts.
    """

    help: str
    decls: tuple[str, ...] = ()
    param: str | None = None
    type: Any = None
    default: Any = FIELD_DEFAULT
    parse: Callable[[Any], Any] | None = None
    min: int | None = None


def cli_flag(help: str, **options: Any) -> dict[str, Flag]:
    """Field metadata that offers the field on ``edge-export export`` (see :class:`Flag`)."""
    return {"flag": Flag(help, **options)}


__all__ = ["FIELD_DEFAULT", "Flag", "cli_flag"]
