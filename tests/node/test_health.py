"""Canary health check: passes on a good bundle, names the output or limit that failed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import Bundle, Runtime
from edge_sdk.bundle import file_digest, save_npz
from edge_sdk.manifest import MANIFEST_NAME
from edge_sdk.node.health import NO_CANARY, CanaryResult, run_canary

pytestmark = pytest.mark.requires_backend("onnxruntime")


def rewrite_canary(bundle_dir: Path, edit: Any) -> None:
    """Apply ``edit`` to the canary arrays; update the manifest so the bundle still verifies."""
    bundle = Bundle.open(bundle_dir)
    assert bundle.manifest.canary is not None
    path = bundle_dir / bundle.manifest.canary.path
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    save_npz(path, arrays)
    size, sha = file_digest(path)
    raw = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    raw["canary"].update(size_bytes=size, sha256=sha)
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def check(bundle_dir: Path, **kwargs: Any) -> CanaryResult:
    bundle = Bundle.open(bundle_dir)  # the tampered bundle itself must still verify
    with Runtime.load(bundle, backend="onnxruntime") as rt:
        return run_canary(rt, bundle, **kwargs)


def test_passes_on_the_exported_bundle(tiny_gcn_bundle: Path) -> None:
    result = check(tiny_gcn_bundle, latency_budget_ms=10_000.0, repeats=3)
    assert result.passed, result.reason
    assert result.reason == ""
    bundle = Bundle.open(tiny_gcn_bundle)
    assert bundle.manifest.canary is not None
    assert 0.0 <= result.max_abs_err <= bundle.manifest.canary.atol
    assert 0.0 < result.latency_ms < 10_000.0


def test_altered_expected_output_fails(bundle_copy: Path) -> None:
    def shift(arrays: dict[str, np.ndarray]) -> None:
        out = arrays["out/out"].copy()
        out[3, 1] += 0.5
        arrays["out/out"] = out

    rewrite_canary(bundle_copy, shift)
    result = check(bundle_copy)
    assert not result.passed
    assert 0.49 < result.max_abs_err < 0.51
    assert "output 'out' differs from the canary" in result.reason
    assert "1 of 60 values out of tolerance" in result.reason
    assert "atol 0.0001" in result.reason


def test_small_drift_within_tolerance_passes(bundle_copy: Path) -> None:
    def nudge(arrays: dict[str, np.ndarray]) -> None:
        arrays["out/out"] = arrays["out/out"] + np.float32(2e-5)

    rewrite_canary(bundle_copy, nudge)
    result = check(bundle_copy)
    assert result.passed, result.reason
    assert 1e-5 < result.max_abs_err < 1e-4


def test_wrong_expected_shape_fails(bundle_copy: Path) -> None:
    def crop(arrays: dict[str, np.ndarray]) -> None:
        arrays["out/out"] = arrays["out/out"][:, :2]

    rewrite_canary(bundle_copy, crop)
    result = check(bundle_copy)
    assert not result.passed
    assert math.isinf(result.max_abs_err)
    assert "output 'out' has shape [20, 3], canary expects [20, 2]" in result.reason


def test_missing_output_fails(bundle_copy: Path) -> None:
    def rename(arrays: dict[str, np.ndarray]) -> None:
        arrays["out/scores"] = arrays.pop("out/out")

    rewrite_canary(bundle_copy, rename)
    result = check(bundle_copy)
    assert not result.passed
    assert "output 'scores' missing" in result.reason


def test_latency_budget(tiny_gcn_bundle: Path) -> None:
    result = check(tiny_gcn_bundle, latency_budget_ms=0.000001)
    assert not result.passed
    assert "median latency" in result.reason
    assert "over the budget of 1e-06 ms" in result.reason
    assert result.latency_ms > 0.000001
    assert result.max_abs_err <= 1e-4  # the outputs themselves were fine


def test_inference_error_is_reported(bundle_copy: Path) -> None:
    def widen(arrays: dict[str, np.ndarray]) -> None:
        arrays["in/x"] = np.zeros((20, 5), np.float32)  # the model takes 8 features

    rewrite_canary(bundle_copy, widen)
    result = check(bundle_copy)
    assert not result.passed
    assert result.reason.startswith("canary inference failed: InvalidInputError: x:")
    assert math.isnan(result.latency_ms)


def test_bundle_without_canary_fails(bundle_copy: Path, tiny_gcn_bundle: Path) -> None:
    raw = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    del raw["canary"]
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(raw))
    bundle = Bundle.open(bundle_copy)
    with Runtime.load(bundle, backend="onnxruntime") as rt:
        result = run_canary(rt, bundle)
    assert result == CanaryResult(False, result.max_abs_err, result.latency_ms, NO_CANARY)
    assert "refuses updates it cannot health-check" in result.reason


def test_repeats_must_be_positive(tiny_gcn_bundle: Path) -> None:
    with pytest.raises(ValueError, match="repeats"):
        check(tiny_gcn_bundle, repeats=0)
