"""ExportConfig: groups and flat keywords say the same, and the CLI's defaults are the API's."""

from __future__ import annotations

import dataclasses

import pytest

from edge_sdk.errors import ExportError
from edge_sdk.export_config import (
    ExportConfig,
    PruneOptions,
    QuantOptions,
    cli_fields,
    config_from_flags,
)


def test_flat_keywords_fill_the_groups() -> None:
    flat = ExportConfig(int8=True, calibration=8, prune="structured:0.5", form="static")
    grouped = ExportConfig(
        quant=QuantOptions(enabled=True, calibration=8),
        pruning=PruneOptions(spec="structured:0.5"),
        graph=dataclasses.replace(ExportConfig().graph, form="static"),
    )
    assert flat == grouped
    assert flat.int8 is True and flat.prune == "structured:0.5" and flat.calibration == 8


def test_flat_attributes_write_through_and_replace_keeps_the_rest() -> None:
    cfg = ExportConfig(name="m", int8=True)
    cfg.max_accuracy_drop = 0.02
    assert cfg.quant.max_accuracy_drop == 0.02
    other = dataclasses.replace(cfg, profiles=["generic-x86", "generic-x86"])
    assert other.targets.profiles == ["generic-x86", "generic-x86"]
    assert other.model.name == "m" and other.int8 is True
    assert cfg.targets.profiles == ["generic-x86"]  # the original is untouched


def test_each_group_checks_its_values() -> None:
    with pytest.raises(ExportError, match="form"):
        ExportConfig(form="sparse")
    with pytest.raises(ExportError, match="add --prune"):
        ExportConfig(fine_tune_epochs=3)
    with pytest.raises(ExportError, match="calib_method"):
        ExportConfig(calib_method="mse")
    with pytest.raises(ExportError, match=r"calib_percentile in \(0, 100\]"):
        ExportConfig(calib_method="percentile", calib_percentile=0.0)
    assert ExportConfig(calib_percentile=99.9).quant.calib_percentile == 99.9
    with pytest.raises(TypeError, match="bogus"):
        ExportConfig(bogus=1)


def test_cli_defaults_are_the_api_defaults() -> None:
    fields = list(cli_fields())
    assert len({f.param for f in fields}) == len(fields)
    assert config_from_flags({f.param: f.default for f in fields}) == ExportConfig()


def test_cli_values_are_converted_to_the_config() -> None:
    values = {f.param: f.default for f in cli_fields()}
    values |= {"labels": "a, b", "max_accuracy_drop": 1.5, "profile": [], "int8": True}
    cfg = config_from_flags(values)
    assert cfg.model.labels == ["a", "b"]
    assert cfg.quant.max_accuracy_drop == pytest.approx(0.015)
    assert cfg.targets.profiles == ["generic-x86"]
    assert cfg.quant.enabled is True
