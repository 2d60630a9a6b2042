"""Calibration data for ONNX Runtime's static quantiser."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from .config import CalibMethod

#: Our method names -> ONNX Runtime's calibrators.
ORT_METHODS = {
    CalibMethod.MINMAX: CalibrationMethod.MinMax,
    CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
    CalibMethod.ENTROPY: CalibrationMethod.Entropy,
}


class FeedsReader(CalibrationDataReader):
    """Hands ONNX Runtime's calibrator one feed dict per call, then ``None``.

    Supports ``set_range`` so the calibrator can collect one graph at a time
    (``CalibStridedMinMax``): ORT's histogram calibrators stack the outputs of
    one collection pass, which fails when graphs differ in size.

    Args:
        feeds: Calibration graphs as model feeds (already limited in number).
        input_names: The model's inputs; other keys are dropped.
    """

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], input_names: Sequence[str]) -> None:
        self._items = [{k: f[k] for k in input_names if k in f} for f in feeds]
        self._next, self._end = 0, len(self._items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next feed dict, or ``None`` when all were given."""
        if self._next >= self._end:
            return None
        self._next += 1
        return self._items[self._next - 1]

    def __len__(self) -> int:
        return len(self._items)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve only graphs ``start_index`` to ``end_index - 1`` next."""
        self._next, self._end = start_index, min(end_index, len(self._items))


def graph_size(feeds: dict[str, np.ndarray]) -> int:
    """Node count of one calibration item: rows of ``x`` (times the batch if stacked)."""
    x = feeds["x"] if "x" in feeds else next(iter(feeds.values()))
    return int(np.prod(x.shape[:-1])) if x.ndim > 1 else int(x.shape[0])
