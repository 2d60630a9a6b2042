"""Sparkplug B 3.0 topic names: ``spBv1.0/{group}/{type}/{node}[/{device}]`` and STATE."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

NAMESPACE = "spBv1.0"


class MessageType(StrEnum):
    """Sparkplug B message types (the third topic level)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"
    STATE = "STATE"


def topic(group: str, kind: MessageType, node: str, device: str | None = None) -> str:
    """``spBv1.0/{group}/{kind}/{node}[/{device}]``."""
    base = f"{NAMESPACE}/{group}/{kind.value}/{node}"
    return f"{base}/{device}" if device else base


def state_topic(host: str) -> str:
    """The 3.0 primary host STATE topic."""
    return f"{NAMESPACE}/STATE/{host}"


@dataclass(frozen=True)
class SparkplugTopic:
    """A parsed ``spBv1.0/...`` topic."""

    kind: MessageType
    group: str = ""
    node: str = ""
    device: str | None = None
    host: str = ""


def parse_topic(name: str) -> SparkplugTopic | None:
    """Split a Sparkplug topic; None when it is not one."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE:
        return None
    if parts[1] == "STATE" and len(parts) == 3:
        return SparkplugTopic(MessageType.STATE, host=parts[2])
    if len(parts) not in (4, 5):
        return None
    try:
        kind = MessageType(parts[2])
    except ValueError:
        return None
    return SparkplugTopic(kind, parts[1], parts[3], parts[4] if len(parts) == 5 else None)


def now_ms() -> int:
    return int(time.time() * 1000)
