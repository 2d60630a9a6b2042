"""Sparkplug B 3.0 on the wire: payload codec, topic names, metric names, host view.

The edge-node session (births, deaths, sequence numbers) is the node's
(:mod:`edge_sdk.node.sparkplug`); :mod:`.metrics` names the metrics both sides use.
"""

from .codec import DataType, Metric, Payload, decode, encode
from .topics import (
    NAMESPACE,
    MessageType,
    SparkplugTopic,
    now_ms,
    parse_topic,
    state_topic,
    topic,
)

__all__ = [
    "NAMESPACE",
    "DataType",
    "MessageType",
    "Metric",
    "Payload",
    "SparkplugTopic",
    "decode",
    "encode",
    "now_ms",
    "parse_topic",
    "state_topic",
    "topic",
]
