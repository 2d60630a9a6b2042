"""INT8: a MatMul whose input no calibration graph filled stays float, and NaN fails the gate.

Neighbour-table models have one MatMul per table width; a width that none of
the calibration graphs needed (no node of that degree) is empty in every
calibration run, ONNX Runtime writes an infinite scale for it, and its
Quantize/Dequantize pair turns the values of the high-degree nodes into NaN
(seen on ``GAT(heads=8)``, #18).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_sdk.exporters.quantize import EvalCase, QuantConfig, quantize_int8
from edge_sdk.exporters.quantize.evaluate import Scores, passes
from edge_sdk.exporters.quantize.int8 import UNSEEN

F, K = 8, 4


def _two_branch_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``out = concat(a @ w1, b @ w2)``: ``b`` plays the high-degree table."""
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((F, K)).astype(np.float32) for _ in range(2))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["a", "w1"], ["ha"], name="small_degrees"),
            helper.make_node("MatMul", ["b", "w2"], ["hb"], name="high_degrees"),
            helper.make_node("Concat", ["ha", "hb"], ["out"], axis=0, name="cat"),
        ],
        "two_branch",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", F]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["m", F]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["rows", K])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return w1, w2


def test_never_calibrated_matmul_stays_float(tmp_path: Path) -> None:
    w1, w2 = _two_branch_model(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(1)
    calib = [
        {"a": rng.standard_normal((16, F)).astype(np.float32), "b": np.zeros((0, F), np.float32)}
        for _ in range(3)
    ]
    a, b = (rng.standard_normal((n, F)).astype(np.float32) for n in (16, 5))
    case = EvalCase({"a": a, "b": b}, {"out": np.concatenate([a @ w1, b @ w2])})
    report = quantize_int8(
        tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calib, [case], ["out"], QuantConfig()
    )
    assert report.quantized_ops == ["small_degrees"]
    reasons = {s["node"]: s["reason"] for s in report.stayed_float}
    assert reasons["high_degrees"] == UNSEEN
    (out,) = ort.InferenceSession(str(tmp_path / "int8.onnx")).run(None, {"a": a, "b": b})
    assert np.isfinite(out).all()
    assert np.abs(out[16:] - b @ w2).max() < 1e-4  # the float branch is exact


@pytest.mark.parametrize("labelled", [True, False])
def test_nan_outputs_fail_the_gate(labelled: bool) -> None:
    scores = Scores(0.9 if labelled else None, None, {"out": 0.001}, nonfinite=3)
    assert not passes(scores, 0.9 if labelled else None, QuantConfig())
    assert passes(Scores(0.9, None, {"out": 0.001}), 0.9, QuantConfig())
