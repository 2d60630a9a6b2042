"""Sparkplug B 3.0 for the edge node: payload codec, topics and the edge-node session.

See :mod:`edge_sdk.node.sparkplug.session` for what the specification asks and
where it is done, and :mod:`edge_sdk.node.sparkplug.metrics` for the metric names.
"""

from .codec import DataType, Metric, Payload, decode, encode
from .session import (
    NAMESPACE,
    BdSeq,
    MessageType,
    SparkplugSession,
    SparkplugTopic,
    now_ms,
    parse_topic,
    state_topic,
    stored_payload,
    topic,
)

__all__ = [
    "NAMESPACE",
    "BdSeq",
    "DataType",
    "MessageType",
    "Metric",
    "Payload",
    "SparkplugSession",
    "SparkplugTopic",
    "decode",
    "encode",
    "now_ms",
    "parse_topic",
    "state_topic",
    "stored_payload",
    "topic",
]
