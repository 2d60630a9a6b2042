"""Per-target compilation: OpenVINO, LiteRT and TensorRT artifacts from the exported ONNX.

:mod:`.compile` runs the compiler each profile target names, checks every
candidate for parity through the on-device runtime, picks the precision (and
layout) each profile ships, and records why. The engines are imported only
inside the compilers.
"""

from .base import Candidate, TargetJob, TargetNotSupported

__all__ = ["Candidate", "TargetJob", "TargetNotSupported"]
