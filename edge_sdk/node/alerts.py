"""The node's alert decision: the model's own rule (:mod:`.alarm`) or the class rule.

A model with a decision rule (a score and a threshold in its manifest) is
alerted by an :class:`~edge_sdk.node.alarm.Alarm`; one without is alerted when
its predicted class leaves ``alert.normal_class`` with ``score >=
alert.threshold``, and cleared when it comes back. Either way an alert is
raised once and cleared once, never repeated per window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..manifest import Manifest
from .alarm import CLEARED, RAISED, Alarm, AlarmRule
from .config import AlertConfig

#: One window's outputs by name.
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class Decision:
    """What one window's result means for alerting.

    Attributes:
        alert: The ``alerts`` message body, when the state changed.
        error: Why the model's rule could not be applied to this window.
    """

    alert: dict[str, Any] | None = None
    error: str | None = None

    @property
    def raised(self) -> bool:
        return self.alert is not None and self.alert.get("state") == RAISED


class Alerts:
    """The alerting state of the model a node serves.

    Args:
        config: The node's ``alert:`` settings.
        manifest: The model served first.

    Raises:
        ConfigError: ``alert`` overrides a decision rule the model lacks.
    """

    def __init__(self, config: AlertConfig, manifest: Manifest) -> None:
        self.config = config
        # The model the alarm belongs to, set together with it: a batch run on another
        # model (during a swap) is not alerted by the wrong rule.
        self.bound: tuple[Manifest, Alarm | None] = (manifest, self.alarm_for(manifest))
        self._alert_class: int | None = None

    def alarm_for(self, m: Manifest) -> Alarm | None:
        """A fresh alarm for the model's decision rule (None: the class rule applies).

        Raises:
            ConfigError: ``alert.score_threshold`` or ``alert.consecutive`` is set
                but the model has no decision rule to override.
        """
        rule = AlarmRule.for_model(m, self.config)
        return Alarm(rule, m) if rule is not None else None

    def bind(self, manifest: Manifest, alarm: Alarm | None) -> None:
        """Alert by ``alarm`` (from :meth:`alarm_for`) from the next window of ``manifest`` on."""
        self.bound = (manifest, alarm)

    def judge(self, manifest: Manifest) -> Callable[[Outputs, dict[str, Any]], Decision]:
        """How to alert on the windows of one batch that model ``manifest`` ran.

        The rule is taken once per batch: a swap meanwhile does not change it
        under the batch, and outputs of a model swapped out (or in) mid-batch
        get no rule of the other model.

        Returns:
            A function of one window's outputs and result body to its
            :class:`Decision` (it adds ``anomaly`` to the body under a decision rule).
        """
        bound, alarm = self.bound
        if bound is not manifest:
            return lambda values, body: Decision()
        if alarm is None:
            return lambda values, body: Decision(alert=self._class_rule(body))

        def step(values: Outputs, body: dict[str, Any]) -> Decision:
            try:
                return Decision(alert=alarm.step(values, body))
            except ValueError as exc:
                return Decision(error=str(exc))

        return step

    def _class_rule(self, body: dict[str, Any]) -> dict[str, Any] | None:
        cls = body.get("class")
        if cls is None:
            return None
        rule = self.config
        fault = cls != rule.normal_class and body["score"] >= rule.threshold
        if fault and cls != self._alert_class:
            self._alert_class = cls
            return {"state": RAISED, **body}
        if not fault and cls == rule.normal_class and self._alert_class is not None:
            self._alert_class = None
            return {"state": CLEARED, **body}
        return None
