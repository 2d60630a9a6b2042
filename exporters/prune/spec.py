"""What to prune (parsed from ``--prune``) and what pruning did."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from edge_sdk.errors import ExportError

Kind = Literal["unstructured", "structured"]
Scope = Literal["global", "layer"]

_FORMS = "'unstructured:<amount>[:global|:layer]' or 'structured:<amount>', amount in (0, 1)"


@dataclass
class PruneSpec:
    """A pruning request.

    Attributes:
        kind: ``unstructured`` (zero the smallest weights, tensors keep their
            shape) or ``structured`` (remove hidden channels, tensors shrink).
        amount: Fraction to remove, in (0, 1): of the weights (unstructured) or
            of each hidden dimension's channels (structured).
        scope: Unstructured only: rank weights over the whole model
            (``global``) or within each layer (``layer``).

    Raises:
        ExportError: A kind, amount or scope outside the values above.
    """

    kind: Kind
    amount: float
    scope: Scope = "global"

    def __post_init__(self) -> None:
        if self.kind not in ("unstructured", "structured"):
            raise ExportError(f"prune kind {self.kind!r}: expected {_FORMS}")
        if isinstance(self.amount, bool) or not 0.0 < float(self.amount) < 1.0:
            raise ExportError(f"prune amount {self.amount!r}: expected a fraction in (0, 1)")
        self.amount = float(self.amount)
        if self.scope not in ("global", "layer"):
            raise ExportError(f"prune scope {self.scope!r}: expected 'global' or 'layer'")
        if self.kind == "structured" and self.scope != "global":
            raise ExportError(
                "prune scope applies to unstructured pruning only; structured pruning removes "
                "the same fraction of every hidden dimension: use 'structured:<amount>'"
            )

    @classmethod
    def parse(cls, text: str) -> PruneSpec:
        """Parse the CLI form, e.g. ``unstructured:0.5``, ``unstructured:0.5:layer``.

        Args:
            text: ``kind:amount[:scope]``.

        Returns:
            The spec.

        Raises:
            ExportError: Text that is not one of the forms above (the message
                names them).
        """
        parts = text.strip().split(":")
        problem = None
        if len(parts) not in (2, 3) or parts[0] not in ("unstructured", "structured"):
            problem = "unknown form"
        elif len(parts) == 3 and parts[0] == "structured":
            problem = "a scope is for unstructured pruning only"
        elif len(parts) == 3 and parts[2] not in ("global", "layer"):
            problem = f"unknown scope {parts[2]!r}"
        else:
            try:
                amount = float(parts[1])
            except ValueError:
                amount = float("nan")
            if not 0.0 < amount < 1.0:  # also false for nan
                problem = f"amount {parts[1]!r} is not a fraction in (0, 1)"
        if problem is not None:
            raise ExportError(f"--prune {text!r}: {problem}; expected {_FORMS}")
        scope = parts[2] if len(parts) == 3 else "global"
        return cls(cast(Kind, parts[0]), amount, cast(Scope, scope))

    def __str__(self) -> str:
        base = f"{self.kind}:{self.amount:g}"
        return f"{base}:{self.scope}" if self.kind == "unstructured" else base


@dataclass
class PruneReport:
    """What :func:`~edge_sdk.exporters.prune.prune` did.

    Attributes:
        kind: ``unstructured`` or ``structured``.
        amount: The requested fraction.
        params_before: Parameters of the input model.
        params_after: Structured: parameters of the smaller model.
            Unstructured: parameters not zeroed by pruning (the tensors keep
            their size; see ``notes``).
        layers: Per layer. Unstructured: ``{"layer", "sparsity", "params"}``.
            Structured, per pruned hidden dimension: ``{"layer", "class",
            "consumers", "channels_before", "channels_after"}`` plus ``heads``,
            ``per_head_before`` and ``per_head_after`` for attention layers,
            and ``tied`` (the layers that keep the same channels: a ``max``
            jumping knowledge) when there are several.
        scope: Unstructured: ``global`` or ``layer``.
        sparsity: Unstructured: fraction of exact zeros over all pruned weights.
        skipped: Structured: hidden dimensions left whole, ``{"layer", "reason"}``.
        notes: Caveats worth showing to the user.
    """

    kind: str
    amount: float
    params_before: int
    params_after: int
    layers: list[dict[str, Any]]
    scope: str | None = None
    sparsity: float | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for the manifest and ``--json`` output)."""
        return dataclasses.asdict(self)
