"""The Sparkplug B payload codec against the compiled schema and the 3.0 value rules."""

from __future__ import annotations

import struct

import pytest

from edge_sdk.errors import InvalidInputError
from edge_sdk.mqtt.sparkplug import (
    DataType,
    MessageType,
    Metric,
    decode,
    encode,
    parse_topic,
    topic,
)
from edge_sdk.mqtt.sparkplug import sparkplug_b_pb2 as pb


def test_datatype_numbers_are_the_schema_s():
    schema = {v.name: v.number for v in pb.DataType.DESCRIPTOR.values}
    ours = {dt.name: dt.value for dt in DataType}
    assert len(schema) == len(ours) == 35
    assert {k.replace("_", "").upper(): v for k, v in ours.items()} == {
        k.upper(): v for k, v in schema.items()
    }


@pytest.mark.parametrize(
    ("dt", "value"),
    [
        (DataType.INT8, -128),
        (DataType.INT16, -2),
        (DataType.INT32, -(2**31)),
        (DataType.INT64, -(2**63)),
        (DataType.UINT8, 255),
        (DataType.UINT32, 2**32 - 1),
        (DataType.UINT64, 2**64 - 1),
        (DataType.DATETIME, 1_700_000_000_123),
        (DataType.DOUBLE, 0.1),
        (DataType.BOOLEAN, True),
        (DataType.STRING, "läuft"),
        (DataType.BYTES, b"\x00\x01"),
        (DataType.DOUBLE_ARRAY, [1.5, -2.25, 0.0]),
        (DataType.INT16_ARRAY, [-1, 2, 300]),
        (DataType.UINT64_ARRAY, [0, 2**64 - 1]),
        (DataType.BOOLEAN_ARRAY, [True, False, True, True, False, False, False, False, True]),
        (DataType.STRING_ARRAY, ["a", "", "xyz"]),
    ],
)
def test_values_round_trip(dt, value):
    out = decode(encode([Metric("m", value, dt, timestamp=5)], timestamp=7, seq=3))
    assert out.seq == 3 and out.timestamp == 7
    (m,) = out.metrics
    assert (m.name, m.datatype, m.timestamp, m.value) == ("m", dt, 5, value)


def test_wire_encoding_follows_the_specification():
    raw = pb.Payload.FromString(
        encode(
            [
                Metric("i8", -1, DataType.INT8),
                Metric("arr", [1.0, 2.0], DataType.FLOAT_ARRAY),
                Metric("none", None, DataType.DOUBLE),
                Metric("old", 1.0, DataType.DOUBLE, is_historical=True),
            ],
            timestamp=1,
            seq=None,
        )
    )
    assert not raw.HasField("seq")  # NDEATH has none
    i8, arr, none, old = raw.metrics
    assert i8.int_value == 0xFFFFFFFF  # two's complement in the uint32 field
    assert arr.bytes_value == struct.pack("<2f", 1.0, 2.0)  # little-endian, packed
    assert none.is_null and none.WhichOneof("value") is None
    assert old.is_historical and not i8.is_historical


@pytest.mark.parametrize(
    ("dt", "value", "why"),
    [
        (DataType.INT8, 128, "8-bit"),
        (DataType.UINT32, -1, "unsigned"),
        (DataType.UINT64, -5, "negative"),
        (DataType.INT64, 1.5, "whole"),
        (DataType.INT32, float("nan"), "whole"),
        (DataType.DOUBLE, "x", "could not convert"),
    ],
)
def test_values_that_do_not_fit_are_refused_naming_the_metric(dt, value, why):
    with pytest.raises(InvalidInputError, match=why) as err:
        encode([Metric("Line/Speed", value, dt)], timestamp=1, seq=0)
    assert err.value.field == "Line/Speed"


def test_bad_payloads_and_seq_are_refused():
    with pytest.raises(InvalidInputError, match="not a Sparkplug B payload"):
        decode(b"\xff\xff\xff")
    with pytest.raises(InvalidInputError, match="0-255"):
        encode([], timestamp=1, seq=256)


def test_topics():
    assert topic("g", MessageType.DDATA, "n", "dev") == "spBv1.0/g/DDATA/n/dev"
    assert parse_topic("spBv1.0/g/NCMD/n") == parse_topic(topic("g", MessageType.NCMD, "n"))
    assert parse_topic("spBv1.0/STATE/scada").host == "scada"
    assert parse_topic("spBv1.0/g/BOGUS/n") is None
    assert parse_topic("edge/g/n/results") is None


def test_data_leaves_datatypes_out_and_the_decoder_takes_them_from_the_birth():
    data = encode(
        [Metric("Temp", -3, DataType.INT16), Metric("Spectrum", [0.5, 1.5], DataType.DOUBLE_ARRAY)],
        timestamp=1,
        seq=4,
        with_datatypes=False,
    )
    raw = pb.Payload.FromString(data)
    assert not any(m.HasField("datatype") for m in raw.metrics)
    blind = decode(data)  # without the birth the values cannot be interpreted
    assert blind.metrics[0].datatype is DataType.UNKNOWN and blind.get("Temp") == 2**32 - 3
    births = {"Temp": DataType.INT16, "Spectrum": DataType.DOUBLE_ARRAY}
    assert decode(data, births).get("Temp") == -3
    assert decode(data, births).get("Spectrum") == [0.5, 1.5]


def test_alias_only_metrics_get_their_names_from_the_birth():
    p = pb.Payload(timestamp=1, seq=2)
    p.metrics.add(alias=7, float_value=2.5, timestamp=1)
    p.metrics.add(alias=8, float_value=1.0, timestamp=1)  # never declared
    out = decode(p.SerializeToString(), {"Flow": DataType.FLOAT}, {7: "Flow"})
    assert [(m.name, m.value, m.datatype) for m in out.metrics] == [
        ("Flow", 2.5, DataType.FLOAT),
        ("", 1.0, DataType.UNKNOWN),
    ]


def test_the_committed_module_is_compiled_from_the_committed_proto():
    """Every field and enum value of sparkplug_b.proto is in sparkplug_b_pb2 and vice versa
    (an edited .proto needs `make proto`)."""
    import re
    from pathlib import Path

    text = Path(pb.__file__).with_name("sparkplug_b.proto").read_text()
    text = re.sub(r"//[^\n]*", "", text)
    fields = set(re.findall(r"(?:optional|repeated)?\s*[\w.]+\s+(\w+)\s*=\s*(\d+)\s*;", text))
    enum_body = re.search(r"enum DataType \{(.*?)\}", text, re.S).group(1)
    enums = set(re.findall(r"(\w+)\s*=\s*(\d+)\s*;", enum_body))

    compiled: set[tuple[str, str]] = set()

    def walk(message):
        compiled.update((f.name, str(f.number)) for f in message.fields)
        for nested in message.nested_types:
            walk(nested)

    walk(pb.Payload.DESCRIPTOR)
    assert fields - enums == compiled
    assert enums == {(v.name, str(v.number)) for v in pb.DataType.DESCRIPTOR.values}


def test_dbirth_declares_anomaly_metrics_only_for_a_model_with_a_decision_rule():
    from edge_sdk.mqtt.sparkplug import metrics as spm

    model = {"name": "m", "version": "1.0.0"}
    plain = {name: value for name, _, value in spm.device_birth(model, ["out"], None)}
    ruled = {name: value for name, _, value in spm.device_birth(model, ["out"], 2.5)}
    assert not any(name.startswith("Anomaly/") for name in plain)
    assert {"Anomaly/Score", "Anomaly/Threshold", "Anomaly/Above"} <= set(ruled)
    assert ruled["Anomaly/Threshold"] == 2.5 and ruled["Anomaly/Score"] is None
    # everything else is declared either way: the class rule still raises alerts
    assert set(ruled) - set(plain) == {"Anomaly/Score", "Anomaly/Threshold", "Anomaly/Above"}
    assert plain["Alert/Active"] is False and "Result/Outputs/out" in plain
