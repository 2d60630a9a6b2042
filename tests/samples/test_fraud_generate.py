"""The fraud sample's SYNTHETIC transaction generator: determinism, order, labels, split, wire form.

Small streams (600 accounts x 10 days, well under a second) for the
invariants; one default-size stream for the prevalence and per-pattern counts
the README and the must-show rely on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sample_scripts import load_script

REPO = Path(__file__).resolve().parents[2]
gen = load_script(REPO / "samples" / "fraud" / "generate.py", "_edge_sdk_sample_fraud_generate")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def small():
    return gen.generate(3, accounts=600, days=10)


@pytest.fixture(scope="module")
def default():
    return gen.generate(0)


def _columns(tx):
    return {name: getattr(tx, name) for name in gen._DTYPES}


def test_same_seed_same_stream_other_seed_other_stream(small):
    again = gen.generate(3, accounts=600, days=10)
    for name, column in _columns(small).items():
        np.testing.assert_array_equal(column, getattr(again, name), err_msg=name)
    other = gen.generate(4, accounts=600, days=10)
    assert len(other) != len(small) or not np.array_equal(other.t, small.t)


def test_columns_sorted_typed_and_consistent(small):
    n = len(small)
    assert n > 1000
    for name, dtype in gen._DTYPES.items():
        column = getattr(small, name)
        assert column.dtype == dtype and column.shape == (n,), name
    np.testing.assert_array_equal(small.id, np.arange(n))
    assert np.all(np.diff(small.t) >= 0)
    assert small.t[0] >= 0 and small.t[-1] < 10 * 86400
    assert np.all(np.isfinite(small.amount)) and np.all(small.amount > 0)
    transfer = small.dst >= 0
    assert np.all(transfer != (small.merchant >= 0)), "dst xor merchant"
    np.testing.assert_array_equal(transfer, small.channel == gen.CHANNELS.index("transfer"))
    assert np.all(small.src[transfer] != small.dst[transfer])
    assert small.channel.min() >= 0 and small.channel.max() < len(gen.CHANNELS)
    assert min(small.device.min(), small.ip.min(), small.src.min()) >= 0


def test_labels_patterns_and_noise_agree(small):
    np.testing.assert_array_equal(small.label, (small.pattern > 0).astype(np.int8))
    assert np.all(small.noise[small.label == 1] == 0), "look-alike codes are for legit rows only"
    assert set(np.unique(small.pattern)) == set(range(len(gen.PATTERNS)))
    assert set(np.unique(small.noise)) == set(range(len(gen.NOISE)))


def test_default_size_prevalence_and_test_split_counts(default):
    rate = default.label.mean()
    assert 0.005 <= rate <= 0.02, rate
    assert 60_000 <= len(default) <= 160_000
    _, _, test = gen.split(default)
    for code, name in enumerate(gen.PATTERNS[1:], start=1):
        assert int((default.pattern[test] == code).sum()) >= 60, name
    table = {row["split"]: row for row in gen.prevalence(default)}
    assert table["all"]["n"] == len(default)
    assert sum(table[s]["fraud"] for s in ("train", "val", "test")) == int(default.label.sum())


def test_split_by_time_disjoint_and_complete(small):
    train, val, test = gen.split(small)
    assert np.all(train.astype(int) + val + test == 1)
    assert small.t[train].max() < small.t[val].min() <= small.t[val].max() < small.t[test].min()
    span = small.t[-1] - small.t[0]
    assert small.t[test].min() - small.t[0] >= 0.8 * span - 1e-6
    with pytest.raises(ValueError, match="fractions"):
        gen.split(small, (0.5, 0.5, 0.5))


def test_events_are_the_wire_form(small):
    rows = np.flatnonzero(small.label == 1)[:50].tolist() + list(range(50))
    rows = sorted(set(rows))
    events = list(small.events(rows))
    assert len(events) == len(rows)
    for i, event in zip(rows, events, strict=True):
        json.dumps(event)
        assert set(event) == {
            "id",
            "t",
            "src",
            "dst",
            "merchant",
            "device",
            "ip",
            "amount",
            "channel",
        }
        assert event["id"] == f"tx{i}" and event["t"] == small.t[i]
        assert event["src"] == f"a{small.src[i]}"
        assert event["device"] == f"d{small.device[i]}" and event["ip"] == f"i{small.ip[i]}"
        assert (event["dst"] is None) != (event["merchant"] is None)
        if event["dst"] is not None:
            assert event["dst"] == f"a{small.dst[i]}" and event["channel"] == "transfer"
        else:
            assert event["merchant"] == f"m{small.merchant[i]}" and event["channel"] != "transfer"
        assert math.isclose(event["amount"], float(small.amount[i]), abs_tol=0.006)
    mask = np.zeros(len(small), bool)
    mask[rows] = True
    assert [e["id"] for e in small.events(mask)] == [e["id"] for e in events]


def test_save_load_round_trip(small, tmp_path):
    path = gen.save(small, tmp_path / "tx.npz")
    back = gen.load(path)
    for name, column in _columns(small).items():
        np.testing.assert_array_equal(column, getattr(back, name), err_msg=name)
        assert getattr(back, name).dtype == column.dtype
    np.savez(tmp_path / "bad.npz", t=small.t)
    with pytest.raises(ValueError, match="missing"):
        gen.load(tmp_path / "bad.npz")


def test_cli_writes_a_file_and_says_synthetic(tmp_path, capsys):
    assert (
        gen.main(
            ["--out", str(tmp_path / "s.npz"), "--seed", "1", "--accounts", "300", "--days", "4"]
        )
        == 0
    )
    assert "SYNTHETIC" in capsys.readouterr().out
    assert len(gen.load(tmp_path / "s.npz")) > 0
