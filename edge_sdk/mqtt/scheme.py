"""What a link asks of its topic scheme: the will, how a stored row leaves, births, goodbye.

A :class:`~edge_sdk.mqtt.link.MqttLink` calls its scheme; the scheme never
holds the link. The link makes every call that can publish (:meth:`Scheme.render`
then :meth:`Scheme.sent`, :meth:`Scheme.births` then :meth:`Scheme.births_done`) under
one lock of its own and hands the message to paho before releasing it, so a
scheme that numbers its messages (Sparkplug's ``seq``) sees them on the wire in
the order it numbered them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

from .rows import Row


@dataclass(frozen=True)
class Will:
    """Last-will message registered at connect."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class Message:
    """One message for the link to publish now.

    Attributes:
        numbered: It took a sequence number of the scheme, which counts as
            used only once paho accepted the message (:meth:`Scheme.sent`).
        accepted_only: A stored row rendered so is in flight only when paho
            accepted it on a live connection; otherwise it is held (paho keeps
            a refused QoS >= 1 publish for the next connection of a
            persistent session, so plain rows need not be).
    """

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    numbered: bool = False
    accepted_only: bool = False


class Hold:
    """:meth:`Scheme.render`'s answer for a row that must wait (and the rows after it)."""

    def __repr__(self) -> str:
        return "HOLD"


HOLD: Final = Hold()


class Scheme(Protocol):
    """The strategy a link calls at each point of its connection's life."""

    @property
    def clean_session(self) -> bool:
        """Start every connection with a clean session and no session expiry."""
        ...

    def will(self) -> Will | None:
        """The last will of the CONNECT about to be sent (called before each one)."""
        ...

    def render(self, row: Row) -> Message | Hold:
        """How one stored row leaves now, or :data:`HOLD`: it and later rows of its root wait."""
        ...

    def sent(self, message: Message) -> None:
        """paho accepted ``message`` (from :meth:`render` or :meth:`births`)."""
        ...

    def births(self) -> list[Message]:
        """What to publish once connected and subscribed (and on a rebirth)."""
        ...

    def births_done(self, sent: bool) -> bool:
        """Whether every birth was handed to paho; returns True when held rows may go now."""
        ...

    def lost(self) -> None:
        """The connection is gone (paho's network thread)."""
        ...

    def goodbye(self) -> list[Message]:
        """What to publish, in order, before an intentional disconnect."""
        ...


class PlainScheme:
    """Rows as stored (at least QoS 1), persistent sessions, no will, births or goodbye.

    Args:
        will: A fixed last will for every connection.
    """

    clean_session = False

    def __init__(self, will: Will | None = None) -> None:
        self._will = will

    def will(self) -> Will | None:
        return self._will

    def render(self, row: Row) -> Message | Hold:
        return Message(row.topic, row.payload, qos=max(1, row.qos), retain=row.retain)

    def sent(self, message: Message) -> None:
        return None

    def births(self) -> list[Message]:
        return []

    def births_done(self, sent: bool) -> bool:
        return False

    def lost(self) -> None:
        return None

    def goodbye(self) -> list[Message]:
        return []
