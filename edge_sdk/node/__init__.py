"""The edge node: MQTT sync, store-and-forward, model updates.

Importing this package imports no MQTT client or crypto library: paho-mqtt and
cryptography (the ``[mqtt]`` extra) load when a node connects or verifies.
"""

from __future__ import annotations

from ..mqtt.topics import JsonScheme
from .config import AlertConfig, BrokerConfig, NodeConfig, SparkplugConfig, load_config
from .heap import HeapKeeper
from .node import EdgeNode
from .outbox import Outbox, OutboxStats

__all__ = [
    "AlertConfig",
    "BrokerConfig",
    "EdgeNode",
    "HeapKeeper",
    "JsonScheme",
    "NodeConfig",
    "Outbox",
    "OutboxStats",
    "SparkplugConfig",
    "load_config",
]
