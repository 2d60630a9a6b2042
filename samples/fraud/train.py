"""Train the fraud GNNs (GraphSAGE, GATv2) and the tabular baseline on SYNTHETIC transactions.

Protocol (nothing is fitted or chosen on the test period):

- **requests**: one pass over the stream in time order; each transaction's
  subgraph and tabular row are built by ``EventGraphStore.score_request`` /
  ``tabular`` *as of its time* (the store then ingests it), exactly what the
  node does live, so no future information reaches any model;
- **GNNs**: trained on node 0 of training-period subgraphs, batched as disjoint
  unions, class-weighted cross-entropy (inverse frequency ** 0.5), Adam; the epoch
  kept is the best validation PR-AUC (early stopping with ``patience``);
- **baseline**: ``HistGradientBoostingClassifier`` on the store's tabular rows
  (the event's own features and each role entity's as-of statistics: the same
  information the graph's hop 1 holds, minus who the neighbours are),
  ``class_weight='balanced'``, boosting rounds chosen by validation PR-AUC;
- **threshold**: for a fixed alert budget (default: the top 1 % of validation
  transactions' scores are alerted), fitted on validation scores only.

Run ``python samples/fraud/train.py --help``. All data is SYNTHETIC.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_HERE = Path(__file__).resolve().parent


def _sibling(name: str) -> ModuleType:
    """Import ``samples/fraud/<name>.py`` (samples are not a package) under a private name."""
    key = f"_edge_sdk_sample_fraud_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, _HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


metrics = _sibling("metrics")
models = _sibling("models")

SYNTHETIC = "SYNTHETIC data: generated transactions, not real customers or real fraud."
#: Default alert budget: share of (validation) transactions alerted.
BUDGET = 0.01
#: :func:`train_gnn`'s most epochs per kind; GraphSAGE (the reference, never exported): 4.
EPOCHS = {"sage": 4, "gatv2": 12, "gatv2_gine": 12}
Say = Callable[[str], None]


# -- requests ------------------------------------------------------------------------------------


@dataclass
class Requests:
    """The stream's transactions as scoring requests, in time order.

    Every array has one row per *kept* transaction: all of them unless
    :func:`build_requests` sampled the legitimate training ones (``train_sample``);
    ``index`` maps rows back to ``Transactions`` rows. Validation and test rows
    are always all kept.

    Attributes:
        subgraphs: One ``Subgraph`` per row (``x``, ``edge_index``, ``edge_attr``).
        tabular: ``[n, T]`` float32 baseline rows (each subgraph's ``tabular``), same as-of rule.
        y: ``[n]`` int64 labels (1 fraud).
        pattern: ``[n]`` int64 pattern codes (0 legit; names in ``generate.PATTERNS``).
        train, val, test: ``[n]`` boolean masks (time-ordered split).
        events: The rows' wire-form event dicts (the node receives exactly these).
        spec: The ``EventGraphSpec`` the subgraphs were built with.
        index: ``[n]`` int64 row of each request in the ``Transactions``.
        seconds: Wall time of the pass (subgraphs + tabular rows + ingesting the rest).
    """

    subgraphs: list[Any]
    tabular: np.ndarray
    y: np.ndarray
    pattern: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    events: list[dict[str, Any]]
    spec: Any
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.subgraphs)

    def select(self, mask: np.ndarray) -> list[Any]:
        """The subgraphs of a boolean mask (e.g. ``requests.select(requests.test)``)."""
        return [self.subgraphs[i] for i in np.flatnonzero(mask)]


def build_requests(
    tx: Any,
    spec: Any,
    split: tuple[np.ndarray, ...] | None = None,
    *,
    train_sample: float = 1.0,
    seed: int = 0,
) -> Requests:
    """One pass over ``tx`` (``generate.Transactions``) in time order through a fresh store.

    Every transaction is ingested (the store's state is the full stream's); a
    request (subgraph + tabular row) is built as of its time for every
    validation, test and fraud transaction, and for a ``train_sample`` share of
    the legitimate training ones (the rest are only ingested: about 4x cheaper).

    Args:
        tx: The transactions (sorted by time, as the generator returns them).
        spec: ``EventGraphSpec`` (``samples/fraud/spec.py``).
        split: ``(train, val, test)`` masks; default ``generate.split(tx)``.
        train_sample: Share of legitimate training transactions kept (the
            demo's speed knob; class weights follow what is kept).
        seed: Seeds that sample.
    """
    from edge_sdk.eventgraph import EventGraphStore

    if not 0.0 < train_sample <= 1.0:
        raise ValueError(f"train_sample must be in (0, 1], got {train_sample}")
    train, val, test = split if split is not None else _sibling("generate").split(tx)
    train, val, test = (np.asarray(m, bool) for m in (train, val, test))
    y = np.asarray(tx.label, dtype=np.int64)
    keep = ~train | (y == 1)
    if train_sample < 1.0:
        keep |= train & (np.random.default_rng(seed).random(len(y)) < train_sample)
    else:
        keep[:] = True
    store = EventGraphStore(spec)
    subgraphs, rows, events = [], [], []
    start = time.perf_counter()
    for event, kept in zip(tx.events(), keep, strict=True):
        if kept:
            sg = store.score_request(event)  # its tabular row is built with it, same as-of rule
            rows.append(sg.tabular)
            subgraphs.append(sg)
            events.append(event)
        else:
            store.ingest(event)
    seconds = time.perf_counter() - start
    index = np.flatnonzero(keep)
    return Requests(
        subgraphs=subgraphs,
        tabular=np.asarray(rows, dtype=np.float32).reshape(len(rows), spec.num_tabular_features),
        y=y[index],
        pattern=np.asarray(tx.pattern, dtype=np.int64)[index],
        train=train[index],
        val=val[index],
        test=test[index],
        events=events,
        spec=spec,
        index=index,
        seconds=seconds,
    )


# batching and scoring live with the models (the export and the node batch the same way)
Packed, score_gnn = models.Packed, models.score_gnn

# -- training ------------------------------------------------------------------------------------


@dataclass
class Trained:
    """A trained scorer and its validation-fitted alert threshold.

    Unpacks as ``model, threshold = trained``.

    Attributes:
        model: The GNN (eval mode, best-validation weights) or the fitted classifier.
        threshold: Alert when the fraud probability is ``>= threshold``.
        budget: Share of validation transactions the threshold alerts (at most).
        val_at_threshold: Validation alert rate, precision, recall, FPR at the threshold.
        history: One dict per epoch (GNN) or boosting stage checked (baseline):
            ``loss`` (GNN), ``val_pr_auc``, ``seconds``.
        best: The kept epoch (1-based) or number of boosting rounds.
        seconds: Training wall time.
        kind: ``sage``, ``gatv2`` or ``hgb``.
    """

    model: Any
    threshold: float
    budget: float
    val_at_threshold: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best: int = 0
    seconds: float = 0.0
    kind: str = ""

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.threshold))


def _fit_threshold(
    y_val: np.ndarray, s_val: np.ndarray, budget: float
) -> tuple[float, dict[str, float]]:
    t = metrics.budget_threshold(s_val, budget)
    return t, metrics.at_threshold(y_val, s_val, t)


def train_gnn(
    kind: str,
    requests: Requests,
    *,
    seed: int = 0,
    epochs: int | None = None,
    hidden: int = 48,
    heads: int = 4,
    batch_size: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 1e-5,
    patience: int = 4,
    neg_fraction: float = 1.0,
    weight_power: float = 0.5,
    budget: float = BUDGET,
    say: Say | None = None,
    **model_kw: Any,
) -> Trained:
    """Train a GNN of ``models.KINDS``: ``sage``, ``gatv2`` or ``gatv2_gine``.

    Args:
        kind: ``sage``, ``gatv2`` or ``gatv2_gine``.
        requests: From :func:`build_requests`; its ``train``/``val`` masks are used.
        seed: Seeds the weights, the shuffling, the negative sampling and dropout.
        epochs: Most passes; None: :data:`EPOCHS` of ``kind`` (GATv2 and GATv2+GINE 12,
            patience 4; GraphSAGE 4: the reference, never exported).
        hidden, heads: Hidden width; GATv2 attention heads.
        batch_size, lr, weight_decay: Subgraphs per step (one disjoint union); Adam's.
        patience: Epochs without a better validation PR-AUC before stopping.
        neg_fraction: Share of legitimate training requests drawn afresh each epoch
            (all frauds kept, class weights follow); 0.35 halves an epoch's cost but
            GATv2's test PR-AUC fell on seed 0 (0.60 -> 0.54 with 16 epochs).
        weight_power: Class weights are inverse frequency to this power (1: balanced;
            0.5: milder, fewer look-alikes on top: on seed 0 GATv2 reached in 2 epochs
            the val PR-AUC of 6 balanced ones; 0: unweighted).
        budget: Alert budget of the threshold (share of validation transactions).
        say: Progress callback, one line per epoch.
        model_kw: More model arguments (e.g. ``aggr=["mean", "max"]`` for SAGE).
    """
    if not 0.0 < neg_fraction <= 1.0:
        raise ValueError(f"neg_fraction must be in (0, 1], got {neg_fraction}")
    start = time.perf_counter()
    epochs = EPOCHS.get(kind, 12) if epochs is None else epochs
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = requests.spec
    kw: dict[str, Any] = {"hidden": hidden} | ({"heads": heads} if kind != "sage" else {})
    kw |= model_kw
    model = models.build(kind, spec.num_node_features, spec.num_edge_features, **kw)
    train_ids, val_ids = np.flatnonzero(requests.train), np.flatnonzero(requests.val)
    train = Packed([requests.subgraphs[i] for i in train_ids])
    val = Packed([requests.subgraphs[i] for i in val_ids])
    y_train, y_val = requests.y[train_ids], requests.y[val_ids]
    model.fit_scaler(train.x)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    pos, neg = np.flatnonzero(y_train == 1), np.flatnonzero(y_train == 0)
    yt = torch.from_numpy(y_train)
    history: list[dict[str, float]] = []
    best, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        take = neg if neg_fraction >= 1 else rng.choice(neg, int(len(neg) * neg_fraction), False)
        order = rng.permutation(np.concatenate([pos, take]))
        weight = models.class_weights(y_train[order]) ** weight_power
        model.train()
        total = 0.0
        for i in range(0, len(order), batch_size):
            ids = order[i : i + batch_size]
            loss = F.cross_entropy(
                models.center_logits(model, train.batch(ids)), yt[ids], weight=weight
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(ids)
        val_pr = metrics.pr_auc(y_val, score_gnn(model, val))
        history.append(
            {"loss": total / len(order), "val_pr_auc": val_pr, "seconds": time.perf_counter() - t0}
        )
        if say is not None:
            h = history[-1]
            say(f"{kind} epoch {epoch}/{epochs}: loss {h['loss']:.4f}, val PR-AUC {val_pr:.4f}")
        if val_pr > best:
            best, best_epoch, best_state = val_pr, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    threshold, at = _fit_threshold(y_val, score_gnn(model, val), budget)
    return Trained(
        model, threshold, budget, at, history, best_epoch, time.perf_counter() - start, kind
    )


def train_baseline(
    requests: Requests,
    seed: int = 0,
    *,
    max_rounds: int = 800,
    step: int = 50,
    patience: int = 2,
    budget: float = BUDGET,
    say: Say | None = None,
) -> Trained:
    """``HistGradientBoostingClassifier`` on the tabular rows; unpacks as ``clf, threshold``.

    ``clf`` is a ``Pipeline`` of :class:`models.QuantileBins` (why: its docstring)
    and the classifier; :func:`score_baseline` takes the raw tabular rows. Boosting
    grows ``step`` rounds at a time (``warm_start``); the rounds kept are the best
    validation PR-AUC, stopping after ``patience`` steps without improvement (the
    GNNs' train/val split, not scikit-learn's random internal one). Up to 800: on
    seed 0 val PR-AUC still rose at 300 (0.699) and peaked at 750 (0.719).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    start = time.perf_counter()
    bins = models.QuantileBins().fit(requests.tabular[requests.train])
    xt, yt = bins.transform(requests.tabular[requests.train]), requests.y[requests.train]
    xv, yv = bins.transform(requests.tabular[requests.val]), requests.y[requests.val]
    clf = HistGradientBoostingClassifier(
        learning_rate=0.1,
        max_iter=step,
        max_leaf_nodes=31,
        l2_regularization=1.0,
        class_weight="balanced",
        early_stopping=False,
        warm_start=True,
        random_state=seed,
    )
    history: list[dict[str, float]] = []
    best, best_rounds, best_clf = -1.0, 0, None
    for rounds in range(step, max_rounds + 1, step):
        t0 = time.perf_counter()
        clf.set_params(max_iter=rounds)
        clf.fit(xt, yt)
        val_pr = metrics.pr_auc(yv, clf.predict_proba(xv)[:, 1])
        seconds = time.perf_counter() - t0
        history.append({"rounds": rounds, "val_pr_auc": val_pr, "seconds": seconds})
        if say is not None:
            say(f"hgb {rounds} rounds: val PR-AUC {val_pr:.4f}")
        if val_pr > best:
            best, best_rounds, best_clf = val_pr, rounds, copy.deepcopy(clf)
        elif (rounds - best_rounds) // step >= patience:
            break
    assert best_clf is not None
    model = Pipeline([("bins", bins), ("hgb", best_clf)])
    threshold, at = _fit_threshold(
        yv, score_baseline(model, requests.tabular[requests.val]), budget
    )
    seconds = time.perf_counter() - start
    return Trained(model, threshold, budget, at, history, best_rounds, seconds, "hgb")


def score_baseline(clf: Any, tabular: np.ndarray) -> np.ndarray:
    """The baseline's fraud probability per tabular row (float64 ``[n]``)."""
    return np.asarray(clf.predict_proba(np.asarray(tabular, np.float32))[:, 1], np.float64)


#: ``evaluate(y, scores, pattern, mask, threshold=None, fpr=0.01) -> dict``: overall, per
#: pattern and at the threshold, on the rows of ``mask`` (see :func:`metrics.evaluate`).
evaluate = metrics.evaluate


# -- the command line ----------------------------------------------------------------------------


def run(
    seed: int = 0,
    *,
    kinds: Sequence[str] = ("sage", "gatv2_gine"),
    epochs: int | None = None,
    hidden: int = 48,
    neg_fraction: float = 1.0,
    train_sample: float = 1.0,
    generator: dict[str, Any] | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """generate -> requests -> train each GNN and the baseline -> test metrics and timings.

    Args:
        seed: Seeds the generator and every model.
        kinds: GNNs to train.
        epochs, hidden, neg_fraction: :func:`train_gnn`'s knobs.
        train_sample: :func:`build_requests`' share of legitimate training requests.
        generator: Keyword arguments of ``generate.generate`` (sizes; default its defaults).
        say: Progress lines.

    Returns:
        ``{"seconds": {step: s}, "models": {name: {"test": evaluate(...), "threshold",
        "val_at_threshold", "best"}}, "requests": n, "note": SYNTHETIC}``.
    """
    generate, fraud_spec = _sibling("generate"), _sibling("spec")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    tx = generate.generate(seed, **(generator or {}))
    seconds["generate"] = time.perf_counter() - t0
    requests = build_requests(tx, fraud_spec.fraud_spec(), train_sample=train_sample, seed=seed)
    seconds["requests"] = requests.seconds
    say(f"{len(requests)} requests ({int(requests.y.sum())} fraud) in {requests.seconds:.1f} s")
    trained = {
        k: train_gnn(
            k, requests, seed=seed, epochs=epochs, hidden=hidden, neg_fraction=neg_fraction, say=say
        )
        for k in kinds
    }
    trained["hgb"] = train_baseline(requests, seed, say=say)
    out: dict[str, Any] = {"note": SYNTHETIC, "requests": len(requests), "models": {}}
    for name, tr in trained.items():
        seconds[f"train_{name}"] = tr.seconds
        t1 = time.perf_counter()
        if name == "hgb":
            s = score_baseline(tr.model, requests.tabular[requests.test])
        else:
            s = score_gnn(tr.model, requests.select(requests.test))
        seconds[f"score_{name}"] = time.perf_counter() - t1
        full = np.full(len(requests), np.nan)
        full[requests.test] = s
        out["models"][name] = {
            "test": evaluate(requests.y, full, requests.pattern, requests.test, tr.threshold),
            "threshold": tr.threshold,
            "budget": tr.budget,
            "val_at_threshold": tr.val_at_threshold,
            "best": tr.best,
        }
    out["seconds"] = seconds
    return out


def table(result: dict[str, Any]) -> str:
    """The test-period comparison as plain text (says SYNTHETIC)."""
    head = f"{'model':<7}{'slice':<10}{'PR-AUC':>8}{'ROC-AUC':>9}{'R@1%FPR':>9}{'fraud':>7}"
    lines = [f"Fraud scorers on the test period ({SYNTHETIC})", head]
    for name, m in result["models"].items():
        rows = {"overall": m["test"]["overall"]} | m["test"]["patterns"]
        for sl, r in rows.items():
            lines.append(
                f"{name:<7}{sl:<10}{r['pr_auc']:>8.3f}{r['roc_auc']:>9.3f}"
                f"{r['recall_at_fpr']:>9.3f}{r['fraud']:>7d}"
            )
    lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python samples/fraud/train.py``: train and compare, print the table."""
    parser = argparse.ArgumentParser(
        description=f"Train the fraud GNNs and the HGB baseline; print test metrics. {SYNTHETIC}"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator and model seed (0)")
    parser.add_argument("--epochs", type=int, default=None, help="most GNN epochs (EPOCHS)")
    parser.add_argument("--hidden", type=int, default=48, help="GNN hidden width (48)")
    parser.add_argument(
        "--models", default="sage,gatv2_gine", help="GNNs to train, of sage,gatv2,gatv2_gine"
    )
    parser.add_argument("--neg-fraction", type=float, default=1.0, help="legit per epoch")
    parser.add_argument(
        "--train-sample", type=float, default=1.0, help="legit training requests built (1.0)"
    )
    parser.add_argument("--accounts", type=int, default=None, help="generator size (its default)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (OMP default)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = {} if args.accounts is None else {"accounts": args.accounts}
    kinds = [k for k in args.models.split(",") if k]
    result = run(
        args.seed,
        kinds=kinds,
        epochs=args.epochs,
        hidden=args.hidden,
        neg_fraction=args.neg_fraction,
        train_sample=args.train_sample,
        generator=gen,
    )
    print(table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
