"""What the worker needs from the node it works for (:class:`~edge_sdk.node.node.EdgeNode`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..mqtt.topics import Inbound, Outbound
from .outbox import Outgoing, Priority

if TYPE_CHECKING:
    from ..mqtt.link import Delivery, MqttLink
    from ..mqtt.topics import JsonScheme
    from .active_model import ActiveModel
    from .alerts import Alerts
    from .config import NodeConfig
    from .ingress import Message
    from .ota import UpdateAgent
    from .outbox import Outbox
    from .telemetry import NodeStats


class WorkerHost(Protocol):
    """What the worker needs from the node it works for (the node implements it)."""

    config: NodeConfig
    stats: NodeStats
    model: ActiveModel
    scheme: JsonScheme
    link: MqttLink | None
    outbox: Outbox | None
    updates: UpdateAgent | None
    alerts: Alerts
    on_result: Callable[[dict[str, Any]], None] | None

    def infer(self, inputs: Any, *, strict: bool = False) -> dict[str, np.ndarray]: ...

    def message(self, kind: Outbound, body: dict[str, Any], priority: Priority) -> Outgoing: ...

    def error_message(
        self,
        field_name: str,
        message: str,
        kind: Inbound | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Outgoing: ...

    def commit(self, out: list[Outgoing], state: dict[str, bytes] | None = None) -> None: ...

    def command(self, msg: Message, out: list[Outgoing]) -> None: ...

    def telemetry_due(self) -> Outgoing | None: ...

    def ack(self, *deliveries: Delivery | None) -> None: ...
