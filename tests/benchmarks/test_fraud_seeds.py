"""benchmarks/fraud_seeds.py: the margins its report states, and a tiny run's JSON.

The report's numbers are checked against hand-made runs; the tiny run (one seed,
a small SYNTHETIC stream, one epoch) checks that the JSON holds every model and
the baseline per seed and that the Markdown is made from it. No accuracy bar is
asserted on the tiny run: one epoch on 300 accounts says nothing about #19's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import fraud_seeds  # noqa: E402


def _model(pr_auc: float) -> dict[str, float]:
    return {"pr_auc": pr_auc, "ring_recall": 0.5, "mule_recall": 0.25}


def test_report_states_each_margin_and_how_many_seeds_clear_the_bar() -> None:
    runs = [
        {"seed": 0, "models": {"gatv2_gine": _model(0.70), "hgb": _model(0.59)}},
        {"seed": 1, "models": {"gatv2_gine": _model(0.72), "hgb": _model(0.66)}},
        {"seed": 2, "models": {"gatv2_gine": _model(0.60), "hgb": _model(0.50)}},
    ]
    out = {
        "meta": {
            "date": "d",
            "machine": "m",
            "cpus": 2,
            "python": "3",
            "versions": {},
            "torch_threads": 1,
        },
        "note": "SYNTHETIC",
        "settings": {"train_sample": 0.25},
        "runs": runs,
    }
    md = fraud_seeds.report(out, ["gatv2_gine"])
    assert "| 0 | 0.700 | 0.590 | +0.110 |" in md
    assert "| 1 | 0.720 | 0.660 | +0.060 |" in md
    # +0.11 and +0.10 clear the bar (>=), +0.06 does not; the median margin is +0.100
    assert "median +0.100 (min +0.060, max +0.110); at least +0.10 on 2 of 3 seeds" in md
    assert "SYNTHETIC" in md


@pytest.mark.timeout(300)
def test_tiny_run_writes_every_model_per_seed(tmp_path: Path) -> None:
    fraud_seeds.main(
        [
            "--seeds", "3",
            "--models", "gatv2_gine",
            "--accounts", "300",
            "--days", "6",
            "--epochs", "1",
            "--threads", "1",
            "--out", str(tmp_path),
        ]
    )  # fmt: skip
    data = json.loads((tmp_path / "fraud_seeds.json").read_text())
    assert data["settings"]["models"] == ["gatv2_gine"] and data["settings"]["epochs"] == 1
    assert [r["seed"] for r in data["runs"]] == [3]
    models = data["runs"][0]["models"]
    assert set(models) == {"gatv2_gine", "hgb"}
    for m in models.values():
        assert 0.0 <= m["pr_auc"] <= 1.0 and 0.0 <= m["recall_at_1pct_fpr"] <= 1.0
        assert set(m["pattern_pr_auc"]) <= {"ring", "mule", "burst", "takeover"}
    md = (tmp_path / "fraud_seeds.md").read_text()
    margin = models["gatv2_gine"]["pr_auc"] - models["hgb"]["pr_auc"]
    assert f"{margin:+.3f}" in md and "SYNTHETIC" in md
