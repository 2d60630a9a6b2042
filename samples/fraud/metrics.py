"""How a fraud scorer is judged: ranking quality at ~1 % prevalence, and what an alert budget buys.

All curves come from scikit-learn; this module only fixes the definitions the
report and the tests rely on:

- ``pr_auc``: average precision (step-wise area under the precision-recall
  curve, scikit-learn's ``average_precision_score``; no trapezoidal
  interpolation, which overstates it at low prevalence);
- ``roc_auc``: area under the ROC curve (ties count half);
- ``recall_at_fpr``: **exact thresholding, no interpolation**: the highest
  recall of any threshold ``t`` (alert when ``score >= t``) whose false-positive
  rate is at most ``fpr``. Tied scores are alerted together, so a tie that would
  cross the FPR limit is left out entirely: the number is what a deployed
  threshold can actually achieve, never a point between two thresholds;
- ``per_pattern``: each fraud pattern against **all** legitimate transactions
  (the other patterns left out), so a pattern's PR-AUC reflects its own, lower,
  prevalence; recall at 1 % FPR is comparable across patterns;
- ``budget_threshold`` / ``at_threshold``: the alert threshold that alerts at
  most a given share of transactions, and what it catches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

#: Pattern names by code (``generate.PATTERNS``; code 0 is legitimate).
PATTERNS = ("none", "ring", "mule", "burst", "takeover")

__all__ = [
    "PATTERNS",
    "at_threshold",
    "budget_threshold",
    "evaluate",
    "per_pattern",
    "pr_auc",
    "recall_at_fpr",
    "roc_auc",
    "summary",
]


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(y).astype(np.int64).ravel(), np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got {sorted(set(np.unique(y)))}")
    return y, s


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.any() and not y.all())


def pr_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision of scores ``s`` for labels ``y`` (NaN without both classes)."""
    y, s = _check(y, s)
    return float(average_precision_score(y, s)) if _both_classes(y) else float("nan")


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (NaN without both classes)."""
    y, s = _check(y, s)
    return float(roc_auc_score(y, s)) if _both_classes(y) else float("nan")


def recall_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float = 0.01) -> float:
    """Highest recall of a real threshold whose false-positive rate is ``<= fpr``.

    Exact thresholding over the distinct scores (see the module docstring): no
    interpolation between ROC points, ties alerted together.
    """
    y, s = _check(y, s)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    if not _both_classes(y):
        return float("nan")
    fp, tp, _ = roc_curve(y, s, drop_intermediate=False)
    ok = fp <= fpr + 1e-12
    return float(tp[ok].max())


def budget_threshold(scores: np.ndarray, budget: float = 0.01) -> float:
    """The threshold that alerts (``score >= t``) on at most ``budget`` of ``scores``.

    The most alerts within the budget: ``t`` is the ``k``-th highest score,
    ``k = max(1, floor(budget * n))``, raised past a tie that would exceed ``k``
    (above every score when the highest ones tie beyond the budget).
    Fitted on validation scores only, never test.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())[::-1]
    if s.size == 0:
        raise ValueError("no scores to fit an alert threshold on")
    if not 0.0 < budget < 1.0:
        raise ValueError(f"budget must be in (0, 1), got {budget}")
    k = max(1, int(np.floor(budget * s.size)))
    t = s[k - 1]
    if (s >= t).sum() > k:
        higher = s[s > t]
        t = higher.min() if higher.size else np.nextafter(t, np.inf)  # a top tie: no alert
    return float(t)


def at_threshold(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """Alert rate, precision, recall and FPR of alerting on ``score >= threshold``."""
    y, s = _check(y, s)
    alert = s >= threshold
    tp = float((alert & (y == 1)).sum())
    return {
        "alert_rate": float(alert.mean()) if y.size else float("nan"),
        "precision": tp / alert.sum() if alert.any() else float("nan"),
        "recall": tp / y.sum() if y.any() else float("nan"),
        "fpr": float((alert & (y == 0)).sum() / max(1, (y == 0).sum())),
    }


def summary(y: np.ndarray, s: np.ndarray, fpr: float = 0.01) -> dict[str, float]:
    """``pr_auc``, ``roc_auc``, ``recall_at_fpr``, counts and prevalence of one slice."""
    y, s = _check(y, s)
    return {
        "pr_auc": pr_auc(y, s),
        "roc_auc": roc_auc(y, s),
        "recall_at_fpr": recall_at_fpr(y, s, fpr),
        "n": int(y.size),
        "fraud": int(y.sum()),
        "prevalence": float(y.mean()) if y.size else float("nan"),
    }


def per_pattern(
    y: np.ndarray,
    s: np.ndarray,
    pattern: np.ndarray,
    names: Sequence[str] = PATTERNS,
    fpr: float = 0.01,
) -> dict[str, dict[str, float]]:
    """:func:`summary` of each fraud pattern against all legitimate transactions.

    Args:
        y: 0/1 labels.
        s: Scores.
        pattern: Pattern code per transaction (index into ``names``; 0 = legit).
        names: Pattern names; code 0 is the legitimate class and gets no entry.
        fpr: The false-positive rate of ``recall_at_fpr``.

    Returns:
        ``{name: summary}`` for every fraud pattern present in ``pattern``.
    """
    y, s = _check(y, s)
    pattern = np.asarray(pattern).astype(np.int64).ravel()
    if pattern.shape != y.shape:
        raise ValueError(f"pattern has {pattern.size} rows, labels {y.size}")
    legit = y == 0
    out: dict[str, dict[str, float]] = {}
    for code, name in enumerate(names):
        if code == 0:
            continue
        rows = (pattern == code) & (y == 1)
        if not rows.any():
            continue
        mask = rows | legit
        out[name] = summary(y[mask], s[mask], fpr)
    return out


def evaluate(
    y: np.ndarray,
    scores: np.ndarray,
    pattern: np.ndarray,
    mask: np.ndarray,
    threshold: float | None = None,
    fpr: float = 0.01,
    names: Sequence[str] = PATTERNS,
) -> dict[str, Any]:
    """Metrics of ``scores`` on the rows of ``mask``: overall, per pattern, at the threshold.

    Returns:
        ``{"overall": summary, "patterns": {name: summary}, "at_threshold": {...}}``
        (``at_threshold``, with the ``threshold`` itself, only when one is given).
    """
    mask = np.asarray(mask, bool)
    y, s, p = np.asarray(y)[mask], np.asarray(scores)[mask], np.asarray(pattern)[mask]
    out: dict[str, Any] = {
        "overall": summary(y, s, fpr),
        "patterns": per_pattern(y, s, p, names, fpr),
    }
    if threshold is not None:
        out["at_threshold"] = at_threshold(y, s, threshold) | {"threshold": float(threshold)}
    return out
