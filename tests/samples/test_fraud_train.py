"""The fraud sample's metrics, models and training (``samples/fraud/{metrics,models,train}.py``).

Metrics against hand-computed cases (ties included); the models' per-node logits
and their independence of what else shares a disjoint-union batch; and one tiny
training run on a small SYNTHETIC stream (shared by the module): training
improves validation PR-AUC over the untrained model, the threshold honours the
alert budget on validation, the baseline ranks better than chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from sample_scripts import fraud_module

# The shared training run (generate, requests, 2 GNNs x 2 epochs, HGB) takes ~15 s on 2 cores.
pytestmark = [pytest.mark.timeout(240)]

metrics = fraud_module("metrics")
models = fraud_module("models")


# -- metrics -------------------------------------------------------------------------------------


def test_pr_and_roc_auc_match_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    # Ranked: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-): AP = 1/2 * 1 + 1/2 * 2/3.
    assert metrics.pr_auc(y, s) == pytest.approx(0.5 + 1 / 3)
    # Positive-negative pairs ordered right: (0.8 > both) + (0.35 > 0.1) = 3 of 4.
    assert metrics.roc_auc(y, s) == pytest.approx(0.75)
    # A tie between a positive and a negative counts half.
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert np.isnan(metrics.pr_auc([0, 0], [0.1, 0.2]))


def test_recall_at_fpr_thresholds_exactly_and_alerts_ties_together() -> None:
    pos = [0.9, 0.8, 0.5, 0.5]
    neg = [0.5, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.04, 0.03, 0.02]  # one tied with two positives
    y = np.array([1] * 4 + [0] * 10)
    s = np.array(pos + neg)
    # t = 0.8 catches 2 of 4 with no false positive; t = 0.5 catches 4 but also 1 of 10 legit.
    assert metrics.recall_at_fpr(y, s, 0.05) == pytest.approx(0.5)  # no interpolation to 0.75
    assert metrics.recall_at_fpr(y, s, 0.10) == pytest.approx(1.0)
    assert metrics.recall_at_fpr(y, s, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fpr"):
        metrics.recall_at_fpr(y, s, 1.5)


def test_budget_threshold_alerts_at_most_the_budget() -> None:
    s = np.arange(200, dtype=np.float64)[::-1] / 200.0
    t = metrics.budget_threshold(s, 0.05)
    assert (s >= t).sum() == 10
    tied = np.concatenate([np.full(3, 0.9), np.linspace(0.0, 0.5, 97)])
    t = metrics.budget_threshold(tied, 0.02)  # 2 alerts asked, the top 3 are tied
    assert (tied >= t).sum() <= 2
    y = np.zeros(200, np.int64)
    y[:4] = 1  # the 4 highest scores
    at = metrics.at_threshold(y, s, metrics.budget_threshold(s, 0.05))
    assert at["alert_rate"] == pytest.approx(0.05)
    assert at["precision"] == pytest.approx(4 / 10) and at["recall"] == pytest.approx(1.0)
    assert at["fpr"] == pytest.approx(6 / 196)


def test_per_pattern_compares_each_pattern_with_all_legit_only() -> None:
    #        legit x4           ring x2     mule x2
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pattern = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.15, 0.05])
    out = metrics.per_pattern(y, s, pattern)
    assert set(out) == {"ring", "mule"}  # absent patterns get no row
    assert out["ring"]["n"] == 6 and out["ring"]["fraud"] == 2
    assert out["ring"]["roc_auc"] == pytest.approx(1.0)  # mules' low scores do not count
    assert out["ring"]["recall_at_fpr"] == pytest.approx(1.0)
    # Mules: 0.15 beats 1 of 4 legit, 0.05 none: 1 of 8 pairs.
    assert out["mule"]["roc_auc"] == pytest.approx(1 / 8)
    assert out["mule"]["recall_at_fpr"] == pytest.approx(0.0)
    assert metrics.roc_auc(y, s) < out["ring"]["roc_auc"]


# -- models --------------------------------------------------------------------------------------

F, A = 7, 3


def random_subgraph(rng: np.random.Generator, fanouts: list[int]) -> Any:
    """A request of the store's shape: node 0, its entities, each entity's earlier events."""
    from types import SimpleNamespace

    roles = len(fanouts)
    src, dst = [], []
    k = 1 + roles
    for r, fan in enumerate(fanouts):
        src += [0, 1 + r]
        dst += [1 + r, 0]
        for _ in range(fan):
            src += [k, 1 + r]
            dst += [1 + r, k]
            k += 1
    ei = np.array([src, dst], np.int64)
    return SimpleNamespace(
        x=rng.standard_normal((k, F)).astype(np.float32),
        edge_index=ei,
        edge_attr=rng.standard_normal((ei.shape[1], A)).astype(np.float32),
    )


@pytest.mark.parametrize("kind", ["sage", "gatv2", "gatv2_gine"])
def test_models_give_logits_per_node_independent_of_the_batch(kind: str) -> None:
    torch.manual_seed(0)
    model = models.build(kind, F, A, hidden=16).eval()
    rng = np.random.default_rng(1)
    graphs = [random_subgraph(rng, f) for f in ([3, 0, 5], [0], [16, 16, 2, 1], [1, 1])]
    g = graphs[2]
    args = [torch.from_numpy(g.x), torch.from_numpy(g.edge_index)]
    if kind != "sage":
        args.append(torch.from_numpy(g.edge_attr))
    with torch.no_grad():
        logits = model(*args)
    assert logits.shape == (g.x.shape[0], 2) and logits.dtype == torch.float32
    alone = np.array([models.score_gnn(model, [h])[0] for h in graphs])
    batched = models.score_gnn(model, graphs)
    shuffled = models.score_gnn(model, graphs[::-1])[::-1]
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(shuffled, alone, rtol=0, atol=1e-6)
    assert np.ptp(alone) > 1e-4  # the graphs are told apart
    # The disjoint union places each graph's node 0 at its node offset.
    x, ei, ea, centers = models.Packed(graphs).batch(np.array([1, 3]))
    assert centers.tolist() == [0, graphs[1].x.shape[0]]
    assert x.shape[0] == graphs[1].x.shape[0] + graphs[3].x.shape[0]
    assert (
        ei.shape[1] == ea.shape[0] == graphs[1].edge_index.shape[1] + graphs[3].edge_index.shape[1]
    )
    assert ei.min() >= 0 and ei.max() < x.shape[0]


def test_scaler_standardises_training_features() -> None:
    model = models.FraudSAGE(F, hidden=8)
    x = np.random.default_rng(0).normal(5.0, 3.0, (500, F)).astype(np.float32)
    x[:, 2] = 1.0  # constant: scale stays 1
    model.fit_scaler(x)
    z = (torch.from_numpy(x) - model.shift) * model.scale
    assert z.mean(0).abs().max() < 1e-4
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy()[[0, 1, 3]], 1.0, atol=1e-4)
    assert float(model.scale[2]) == 1.0
    with pytest.raises(ValueError, match="expected x"):
        model.fit_scaler(x[:, :3])
    with pytest.raises(ValueError, match="unknown model kind"):
        models.build("gcn", F, A)


# -- training on a small SYNTHETIC stream (one shared run) ---------------------------------------


@pytest.fixture(scope="module")
def small() -> dict[str, Any]:
    generate, train, spec = (fraud_module(n) for n in ("generate", "train", "spec"))
    tx = generate.generate(1, accounts=600, days=10)
    req = train.build_requests(tx, spec.fraud_spec(fanout=8), train_sample=0.5, seed=0)
    # Balanced class weights and every negative each epoch: ~140 training frauds, 3-4 epochs.
    kw = {"seed": 0, "hidden": 16, "budget": 0.02, "weight_power": 1.0, "neg_fraction": 1.0}
    return {
        "tx": tx,
        "req": req,
        "sage": train.train_gnn("sage", req, epochs=3, **kw),
        "gatv2": train.train_gnn("gatv2", req, epochs=4, **kw),
        "gatv2_gine": train.train_gnn("gatv2_gine", req, epochs=4, **kw),
        "hgb": train.train_baseline(req, 0, max_rounds=50, budget=0.02),
    }


def test_requests_keep_every_evaluated_and_fraud_row_and_a_share_of_legit_training(
    small: dict[str, Any],
) -> None:
    tx, req = small["tx"], small["req"]
    generate = fraud_module("generate")
    train, val, test = generate.split(tx)
    kept = np.zeros(len(tx.t), bool)
    kept[req.index] = True
    assert kept[val | test].all() and kept[tx.label == 1].all()
    legit_train = train & (tx.label == 0)
    assert 0.4 < kept[legit_train].mean() < 0.6
    assert len(req.subgraphs) == len(req.events) == len(req.tabular) == len(req.index)
    np.testing.assert_array_equal(req.y, tx.label[req.index])
    np.testing.assert_array_equal(req.test, test[req.index])
    assert [e["id"] for e in req.events[:50]] == [f"tx{i}" for i in req.index[:50]]
    spec = req.spec
    assert req.tabular.shape[1] == spec.num_tabular_features
    assert all(g.x.shape[1] == spec.num_node_features for g in req.subgraphs[:200])
    with pytest.raises(ValueError, match="train_sample"):
        fraud_module("train").build_requests(tx, spec, train_sample=0.0)


@pytest.mark.parametrize("kind", ["sage", "gatv2", "gatv2_gine"])
def test_training_improves_validation_pr_auc_over_the_untrained_model(
    small: dict[str, Any], kind: str
) -> None:
    train = fraud_module("train")
    req, trained = small["req"], small[kind]
    torch.manual_seed(0)  # train_gnn's initial weights for seed 0
    untrained = models.build(
        kind, req.spec.num_node_features, req.spec.num_edge_features, hidden=16
    ).eval()
    untrained.fit_scaler(models.Packed(req.select(req.train)).x)
    y_val = req.y[req.val]
    before = metrics.pr_auc(y_val, train.score_gnn(untrained, req.select(req.val)))
    s_val = train.score_gnn(trained.model, req.select(req.val))
    after = metrics.pr_auc(y_val, s_val)
    assert after == pytest.approx(max(h["val_pr_auc"] for h in trained.history))
    assert after > before + 0.1 and after > 3 * y_val.mean()
    assert ((s_val >= 0) & (s_val <= 1)).all()
    assert 1 <= trained.best <= len(trained.history)


@pytest.mark.parametrize("kind", ["sage", "gatv2", "gatv2_gine", "hgb"])
def test_threshold_alerts_the_budget_of_validation_transactions(
    small: dict[str, Any], kind: str
) -> None:
    train = fraud_module("train")
    req, trained = small["req"], small[kind]
    if kind == "hgb":
        s_val = train.score_baseline(trained.model, req.tabular[req.val])
    else:
        s_val = train.score_gnn(trained.model, req.select(req.val))
    n = int(req.val.sum())
    alerted = int((s_val >= trained.threshold).sum())
    assert trained.budget == 0.02
    assert int(0.02 * n) - 3 <= alerted <= int(0.02 * n)  # a tie may only lower it
    at = metrics.at_threshold(req.y[req.val], s_val, trained.threshold)
    assert trained.val_at_threshold == pytest.approx(at)
    model, threshold = trained  # unpacks as (model, threshold)
    assert model is trained.model and threshold == trained.threshold


def test_baseline_ranks_better_than_chance(small: dict[str, Any]) -> None:
    train = fraud_module("train")
    req, hgb = small["req"], small["hgb"]
    s = train.score_baseline(hgb.model, req.tabular)
    out = train.evaluate(req.y, s, req.pattern, req.val | req.test, hgb.threshold)
    assert out["overall"]["roc_auc"] > 0.7
    assert out["overall"]["pr_auc"] > 3 * out["overall"]["prevalence"]
    assert out["at_threshold"]["threshold"] == hgb.threshold
    assert set(out["patterns"]) <= {"ring", "mule", "burst", "takeover"} and out["patterns"]
