"""The backend interface every inference engine implements.

Template methods (after Polygraphy's ``BaseRunner``): the base class owns the
public ``load/infer/describe/close`` and checks every feed against the
manifest's tensor specs, so all backends reject bad input with the same words;
an engine implements only ``_load_impl`` and ``_infer_impl``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import BackendUnavailableError, InternalError, InvalidInputError
from edge_sdk.manifest import Artifact, Target
from edge_sdk.signature import TensorSpec


@dataclass(frozen=True)
class BackendOptions:
    """Engine-independent knobs, usually taken from a device profile.

    Attributes:
        threads: Intra-op threads (None: the engine's default).
        cache_dir: Where an engine may cache compiled models.
        extra: Engine-specific options, passed through.
    """

    threads: int | None = None
    cache_dir: Path | None = None
    extra: dict[str, Any] | None = None


class Backend(abc.ABC):
    """One loaded artifact on one engine."""

    #: Registry name, e.g. ``"onnxruntime"``.
    name: ClassVar[str]
    #: Artifact target this backend runs.
    target: ClassVar[Target]
    #: Whether the engine needs every dim fixed (then the runtime pads to buckets).
    static_shapes: ClassVar[bool] = False

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.artifact: Artifact | None = None
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self._loaded = False

    # -- public template methods ------------------------------------------------
    def load(
        self, path: Path, artifact: Artifact, inputs: list[TensorSpec], outputs: list[TensorSpec]
    ) -> None:
        """Load ``artifact`` from ``path``.

        Raises:
            BackendUnavailableError: The engine is missing or refuses the file.
        """
        if artifact.target != self.target:
            raise InternalError(f"{self.name} cannot load a {artifact.target} artifact")
        self.artifact, self.inputs, self.outputs = artifact, inputs, outputs
        try:
            self._load_impl(path)
        except BackendUnavailableError:
            raise
        except Exception as exc:
            raise BackendUnavailableError(
                f"{self.name} failed to load {artifact.path}: {type(exc).__name__}: {exc}"
            ) from exc
        self._loaded = True

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one call. Feeds are checked against the input specs first.

        Raises:
            InvalidInputError: Missing/unknown input, wrong dtype, rank or fixed dim.
        """
        if not self._loaded:
            raise InternalError(f"{self.name} backend used before load()")
        self.check_feeds(feeds)
        out = self._infer_impl(feeds)
        missing = [o.name for o in self.outputs if o.name not in out]
        if missing:
            raise InternalError(f"{self.name} returned no output(s) {missing}")
        return out

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Check names, dtypes, ranks and fixed dims of the feeds."""
        expected = {s.name: s for s in self.inputs}
        for name in feeds:
            if name not in expected:
                raise InvalidInputError(name, f"unknown input; the model takes {list(expected)}")
        for spec in self.inputs:
            if spec.name not in feeds:
                raise InvalidInputError(spec.name, f"missing input {spec.dtype}{spec.shape}")
            arr = feeds[spec.name]
            if arr.dtype != np.dtype(spec.dtype):
                raise InvalidInputError(
                    spec.name, f"expected dtype {spec.dtype}, received {arr.dtype}"
                )
            if arr.ndim != len(spec.shape):
                raise InvalidInputError(
                    spec.name,
                    f"expected rank {len(spec.shape)} {spec.shape}, received {list(arr.shape)}",
                )
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise InvalidInputError(
                        spec.name,
                        f"expected size {want} on axis {axis} of {spec.shape}, received {got}",
                    )

    def describe(self) -> dict[str, Any]:
        """What is loaded and how."""
        return {
            "backend": self.name,
            "artifact": self.artifact.name if self.artifact else None,
            "precision": str(self.artifact.precision) if self.artifact else None,
            "threads": self.options.threads,
            **self._describe_impl(),
        }

    def close(self) -> None:
        """Release the engine's resources."""
        self._close_impl()
        self._loaded = False

    # -- what an engine implements ------------------------------------------------
    @abc.abstractmethod
    def _load_impl(self, path: Path) -> None:
        """Load the artifact file."""

    @abc.abstractmethod
    def _infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked feeds; return outputs by name."""

    def _describe_impl(self) -> dict[str, Any]:
        return {}

    def _close_impl(self) -> None:  # noqa: B027 - optional hook
        """Release resources (optional)."""
