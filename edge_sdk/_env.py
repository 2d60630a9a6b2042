"""The one parser of ``EDGE_SDK_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import EdgeSDKError

PREFIX = "EDGE_SDK_"


def env_str(name: str, default: str | None = None) -> str | None:
    """Read ``EDGE_SDK_<name>``; empty counts as unset."""
    value = os.environ.get(PREFIX + name, "").strip()
    return value or default


def env_int(name: str, default: int | None = None) -> int | None:
    """Read ``EDGE_SDK_<name>`` as an integer.

    Raises:
        EdgeSDKError: The variable is set but is not an integer.
    """
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise EdgeSDKError(f"{PREFIX}{name}={raw!r} is not an integer") from None


def env_path(name: str, default: Path | None = None) -> Path | None:
    """Read ``EDGE_SDK_<name>`` as a path (``~`` expanded)."""
    raw = env_str(name)
    return Path(raw).expanduser() if raw is not None else default
