"""The decision rule: alerts from the model's anomaly score, K windows in a row.

A bundle whose manifest carries a :class:`~edge_sdk.manifest.Decision` brings
its own alarm rule, fitted when the model was trained: a window is anomalous
when its score is above the threshold; ``consecutive`` anomalous windows in a
row raise the alarm, as many windows in a row at or below the threshold clear
it. Requiring a run trades a few windows of detection delay for far fewer
false alarms on noisy plants, and the threshold and run length are chosen
together on validation data, which is why both travel in the bundle.

The node's ``alert.score_threshold`` / ``alert.consecutive`` override the
numbers on one node (e.g. a noisier line); the rest stays the model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..manifest import Manifest
from .config import AlertConfig

RAISED, CLEARED = "raised", "cleared"


@dataclass(frozen=True)
class AlarmRule:
    """The decision rule one node applies: the bundle's, with the node's overrides.

    Attributes:
        output: Anomaly-score output (one value per window).
        threshold: A window is anomalous when its score is above this.
        consecutive: Windows in a row above the threshold that raise the alarm.
        clear_after: Windows in a row at or below it that clear the alarm.
        class_output: Output of class logits naming the fault, or None.
        normal_class: The "no fault" class of ``class_output``.
        labels: Class names of the model (index = class).
        overridden: Which numbers the node's config replaced.
    """

    output: str
    threshold: float
    consecutive: int
    clear_after: int
    class_output: str | None = None
    normal_class: int = 0
    labels: tuple[str, ...] = ()
    overridden: tuple[str, ...] = ()

    @classmethod
    def for_model(cls, manifest: Manifest, alert: AlertConfig) -> AlarmRule | None:
        """The rule for ``manifest`` on a node configured with ``alert``.

        Returns:
            The decision rule, or None when the bundle has no decision (the
            node then uses the class rule).

        Raises:
            ConfigError: The config overrides the decision rule but the bundle
                has none.
        """
        overrides = {
            name: value
            for name, value in (
                ("score_threshold", alert.score_threshold),
                ("consecutive", alert.consecutive),
                ("clear_after", alert.clear_after),
            )
            if value is not None
        }
        d = manifest.decision
        if d is None:
            if overrides:
                names = " and ".join(f"alert.{k}" for k in overrides)
                raise ConfigError(
                    f"{names} override the model's alarm rule, but bundle "
                    f"{manifest.model.name} {manifest.model.version} has none (no decision "
                    "in its manifest): remove the override, or export the model with a "
                    "decision (ExportConfig.decision, edge-export --alert-output/--alert-threshold)"
                )
            return None
        consecutive = d.consecutive if alert.consecutive is None else alert.consecutive
        return cls(
            output=d.output,
            threshold=d.threshold if alert.score_threshold is None else alert.score_threshold,
            consecutive=consecutive,
            # an explicit off-delay (node, then bundle) wins; else it mirrors the on-delay
            clear_after=alert.clear_after or d.clear_after or consecutive,
            class_output=d.class_output,
            normal_class=d.normal_class,
            labels=tuple(manifest.model.labels),
            overridden=tuple(overrides),
        )


class Alarm:
    """Run-length state of one node's decision rule (used by the worker thread only).

    Args:
        rule: The rule to apply.
        manifest: The model it belongs to (the node checks a batch's outputs
            came from this model before applying it).
    """

    def __init__(self, rule: AlarmRule, manifest: Manifest) -> None:
        self.rule = rule
        self.manifest = manifest
        self.active = False
        self._run = 0  # windows in a row that disagree with the current state
        self._fault: dict[str, Any] = {}

    def step(self, values: dict[str, np.ndarray], body: dict[str, Any]) -> dict[str, Any] | None:
        """Apply the rule to one window's outputs.

        Adds ``anomaly`` (score, threshold, above) to the result ``body``.

        Args:
            values: The window's outputs by name.
            body: Its result message body (outputs, window, model...).

        Returns:
            The alert body when this window raises or clears the alarm, else None.

        Raises:
            ValueError: The score output does not hold one value for the window.
        """
        rule = self.rule
        raw = np.asarray(values[rule.output]).ravel()
        if raw.size != 1:
            raise ValueError(
                f"decision output {rule.output!r} gave {raw.size} values for one window, expected 1"
            )
        score = float(raw[0])
        if not math.isfinite(score):
            # Neither evidence of a fault nor of normal operation: the run is left as it is.
            body["anomaly"] = {"score": None, "threshold": rule.threshold, "above": None}
            return None
        above = score > rule.threshold
        body["anomaly"] = {"score": round(score, 6), "threshold": rule.threshold, "above": above}
        self._run = self._run + 1 if above != self.active else 0
        if self._run < (rule.clear_after if self.active else rule.consecutive):
            return None
        self._run = 0
        self.active = above
        if above:
            self._fault = self._fault_class(values)
        alert = {k: v for k, v in body.items() if k not in ("class", "label", "score")}
        alert.update(
            state=RAISED if above else CLEARED,
            score=round(score, 6),
            threshold=rule.threshold,
            consecutive=rule.consecutive,
            clear_after=rule.clear_after,
            **self._fault,  # a clear names the fault it ends
        )
        if not above:
            self._fault = {}
        return alert

    def _fault_class(self, values: dict[str, np.ndarray]) -> dict[str, Any]:
        rule = self.rule
        if rule.class_output is None:
            return {}
        logits = np.asarray(values[rule.class_output], np.float64).ravel().copy()
        if logits.size < 2:
            return {}
        if rule.normal_class < logits.size:
            logits[rule.normal_class] = -np.inf  # the most likely *fault*, even when normal wins
        cls = int(np.argmax(logits))
        fault: dict[str, Any] = {"class": cls}
        if cls < len(rule.labels):
            fault["label"] = rule.labels[cls]
        return fault
