"""The model's alarm rule and topology in the manifest: export, round trip, validation, CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from cli_run import edge_export
from tiny_models import DETECTOR_LABELS, DETECTOR_SENSORS, tiny_detector, tiny_detector_arrays

from edge_sdk import Bundle, Decision, ManifestError, Topology
from edge_sdk.errors import ExportError
from edge_sdk.manifest import MANIFEST_NAME, SCHEMA_VERSION, parse_manifest

pytest.importorskip("torch", reason="exporting a test bundle needs the [export] extra")

TINY_MODELS = Path(__file__).resolve().parents[1] / "tiny_models.py"
DECISION = Decision(
    output="score",
    threshold=0.5,
    consecutive=3,
    class_output="logits",
    fitted_on="validation runs, 0 false alarms",
)
TOPOLOGY = Topology(
    source="learned", folded=True, num_nodes=DETECTOR_SENSORS, num_edges=8, note="top-2"
)


def _export(out: Path, progress: list[str] | None = None, **cfg: Any) -> Any:
    from edge_sdk.exporters import ExportConfig, export_model, sample_from_arrays

    cfg.setdefault("output_names", ["logits", "score"])
    config = ExportConfig(name="detector", form="static", labels=DETECTOR_LABELS, **cfg)
    say = progress.append if progress is not None else None
    return export_model(
        tiny_detector(), sample_from_arrays(tiny_detector_arrays()), out, config, progress=say
    )


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a decision and a topology. Read-only by contract."""
    out = tmp_path_factory.mktemp("decision") / "detector.bundle"
    return _export(out, decision=DECISION, topology=TOPOLOGY).bundle_dir


def _manifest_doc(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST_NAME).read_text())


def test_decision_and_topology_round_trip_through_the_bundle(detector_bundle: Path) -> None:
    m = Bundle.open(detector_bundle).manifest
    assert m.schema_version == SCHEMA_VERSION == "1.3"
    assert m.decision == DECISION
    assert m.topology == TOPOLOGY
    assert [o.name for o in m.outputs] == ["logits", "score"]
    doc = _manifest_doc(detector_bundle)
    assert doc["decision"] == {
        "output": "score",
        "threshold": 0.5,
        "consecutive": 3,
        "clear_after": None,
        "class_output": "logits",
        "normal_class": 0,
        "fitted_on": "validation runs, 0 false alarms",
    }
    assert parse_manifest(m.to_json()) == m


def test_a_1_2_manifest_without_decision_still_reads(detector_bundle: Path) -> None:
    doc = _manifest_doc(detector_bundle)
    doc["schema_version"] = "1.2"
    del doc["decision"], doc["topology"]
    m = parse_manifest(json.dumps(doc))
    assert m.decision is None and m.topology is None


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda d: d["decision"].update(output="anomaly"),
            "decision.output 'anomaly' is not an output of the model (outputs: logits, score)",
        ),
        (
            lambda d: d["decision"].update(class_output="classes"),
            "decision.class_output 'classes' is not an output of the model "
            "(outputs: logits, score)",
        ),
        (
            lambda d: d["decision"].update(output="logits"),
            "must give one score per window (shape [B] or [B, 1]); it has shape ['batch_size', 5]",
        ),
        (
            lambda d: d["decision"].update(normal_class=5),
            "decision.normal_class 5 is not a class of 'logits' (5 classes)",
        ),
        (lambda d: d["decision"].update(consecutive=0), "greater than or equal to 1"),
        (lambda d: d["topology"].update(num_nodes=7), "topology has 7 nodes but the graph"),
        (lambda d: d["topology"].update(source="guessed"), "'given' or 'learned'"),
    ],
)
def test_invalid_decision_or_topology_is_refused_naming_the_field(
    detector_bundle: Path, edit: Any, words: str
) -> None:
    doc = _manifest_doc(detector_bundle)
    edit(doc)
    with pytest.raises(ManifestError) as err:
        parse_manifest(json.dumps(doc))
    assert words in str(err.value)


def test_unknown_decision_output_fails_before_the_slow_work(tmp_path: Path) -> None:
    from edge_sdk.exporters import ExportConfig

    bad = Decision(output="anomaly", threshold=0.5)
    # Output names given: the config itself refuses, nothing is traced.
    with pytest.raises(ExportError, match=r"'anomaly' is not an output.*\['logits', 'score'\]"):
        ExportConfig(output_names=["logits", "score"], decision=bad)
    # Default names (out0, out1) are known once the model has run once: still before ONNX.
    steps: list[str] = []
    with pytest.raises(ExportError, match=r"'anomaly' is not an output.*\['out0', 'out1'\]"):
        _export(tmp_path / "b", steps, output_names=None, decision=bad)
    assert steps == ["preparing model"]
    assert not (tmp_path / "b").exists()


def test_wrong_score_shape_fails_the_export(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="must give one score per window"):
        _export(tmp_path / "b", decision=Decision(output="logits", threshold=0.5))
    assert not (tmp_path / "b").exists()


def test_topology_must_match_the_graph(tmp_path: Path) -> None:
    wrong = Topology(source="given", folded=True, num_nodes=DETECTOR_SENSORS + 1)
    with pytest.raises(ExportError, match=r"topology\.num_nodes is 5 but the model's graph has 4"):
        _export(tmp_path / "b", topology=wrong)


# -- edge-export ---------------------------------------------------------------------------


_cli = functools.partial(edge_export, columns=250)


def test_inspect_shows_decision_and_topology(detector_bundle: Path) -> None:
    out = _cli("inspect", str(detector_bundle)).stdout
    assert (
        "score > 0.5 for 3 windows in a row raises, as many at or below clear; fault named by "
        "argmax of logits (normal class 0); fitted on validation runs, 0 false alarms"
    ) in out
    assert "learned, folded into the model: 4 nodes, 8 edges; top-2" in out
    assert "1.3" in out


def test_export_alert_flags_write_the_decision(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "windows.npz", **tiny_detector_arrays())
    common = [
        "export",
        "--model",
        f"{TINY_MODELS}:tiny_detector",
        "-s",
        str(tmp_path / "windows.npz"),
        "--form",
        "static",
        "--output-name",
        "logits",
        "--output-name",
        "score",
    ]
    # Usage errors come before any work (exit 2).
    half = _cli(*common, "--alert-output", "score", "-o", str(tmp_path / "x"), check=2)
    assert "--alert-output and --alert-threshold go together" in half.stderr
    orphan = _cli(*common, "--alert-consecutive", "2", "-o", str(tmp_path / "x"), check=2)
    assert "add --alert-output NAME and --alert-threshold X" in orphan.stderr
    _cli(
        *common,
        *("--alert-output", "score", "--alert-threshold", "-0.25"),
        *("--alert-consecutive", "4", "--alert-clear-after", "2"),
        *("--alert-class-output", "logits", "-o", str(tmp_path / "b"), "--json"),
    )
    m = Bundle.open(tmp_path / "b").manifest
    assert m.decision == Decision(
        output="score", threshold=-0.25, consecutive=4, clear_after=2, class_output="logits"
    )
    assert m.topology is None
