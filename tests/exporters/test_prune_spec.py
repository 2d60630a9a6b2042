"""``--prune`` parsing and the report's plain form."""

from __future__ import annotations

import json

import pytest

from edge_sdk.errors import ExportError
from edge_sdk.exporters.prune import PruneReport, PruneSpec


@pytest.mark.parametrize(
    ("text", "kind", "amount", "scope"),
    [
        ("unstructured:0.5", "unstructured", 0.5, "global"),
        ("unstructured:0.25:layer", "unstructured", 0.25, "layer"),
        (" unstructured:.9:global ", "unstructured", 0.9, "global"),
        ("structured:0.5", "structured", 0.5, "global"),
    ],
)
def test_parse(text: str, kind: str, amount: float, scope: str) -> None:
    spec = PruneSpec.parse(text)
    assert (spec.kind, spec.amount, spec.scope) == (kind, amount, scope)
    assert PruneSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "structured",
        "magnitude:0.5",
        "structured:half",
        "structured:0",
        "structured:1",
        "unstructured:-0.2",
        "unstructured:nan",
        "structured:0.5:layer",
        "unstructured:0.5:model",
        "unstructured:0.5:layer:x",
    ],
)
def test_bad_text_names_the_forms(text: str) -> None:
    with pytest.raises(ExportError, match=r"expected 'unstructured:<amount>\[:global\|:layer\]'"):
        PruneSpec.parse(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "channels", "amount": 0.5}, "prune kind"),
        ({"kind": "structured", "amount": 1.5}, "fraction in"),
        ({"kind": "structured", "amount": True}, "fraction in"),
        ({"kind": "structured", "amount": 0.5, "scope": "layer"}, "unstructured pruning only"),
        ({"kind": "unstructured", "amount": 0.5, "scope": "net"}, "prune scope"),
    ],
)
def test_api_construction_is_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        PruneSpec(**kwargs)


def test_report_to_dict_is_json() -> None:
    report = PruneReport("structured", 0.5, 100, 50, [{"layer": "c1", "channels_before": 8}])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["params_after"] == 50 and data["layers"][0]["layer"] == "c1"
    assert data["skipped"] == [] and data["sparsity"] is None
