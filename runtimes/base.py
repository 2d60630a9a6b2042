"""The backend interface every inference engine implements.

Template methods (after Polygraphy's ``BaseRunner``): the base class owns the
public ``load/infer/describe/close`` and checks every feed against the
manifest's tensor specs, so all backends reject bad input with the same words;
an engine implements only ``_load_impl`` and ``_infer_impl``.

An artifact compiled once per padding bucket (a dynamic-form model with
neighbour-table inputs on a static-shape engine: one file per bucket) lists
its files in ``options["buckets"]``; the base class then loads one engine per
file and sends each call to the one whose fixed input shapes the feeds have
(the runtime padded them to a bucket). Engines need no code for it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge_sdk.errors import BackendUnavailableError, InternalError, InvalidInputError
from edge_sdk.io_contract import TensorSpec
from edge_sdk.manifest import Artifact, Target


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


class CheckedFeeds(dict[str, np.ndarray]):
    """Feeds already proven to match the backend's input specs.

    Only :class:`~edge_sdk.Runtime` builds these: from a graph that passed
    :func:`~edge_sdk.graph.validate`, for a manifest whose input specs that
    validation implies (names, dtypes, ranks, fixed dims; checked once at
    load). :meth:`Backend.infer` then skips :meth:`Backend.check_feeds`,
    which would only repeat the same checks. Anything else is checked.
    """

    __slots__ = ()


class Backend(abc.ABC):
    """One loaded artifact on one engine."""

    #: Registry name, e.g. ``"onnxruntime"``.
    name: ClassVar[str]
    #: Artifact target this backend runs.
    target: ClassVar[Target]
    #: Whether the engine needs every dim fixed (then the runtime pads to buckets).
    static_shapes: bool = False  # a backend may set it per instance (e.g. OpenVINO on an NPU)

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        self.artifact: Artifact | None = None
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        self._input_set: set[str] = set()
        self._output_set: set[str] = set()
        self._checks: list[tuple[str, np.dtype[Any], list[int | str], list[tuple[int, int]]]] = []
        self._loaded = False
        #: Per-bucket engines of a bucketed artifact: (input shapes, backend), smallest first.
        self._buckets: list[tuple[dict[str, tuple[int, ...]], Backend]] = []

    @classmethod
    def runs_here(cls) -> tuple[bool, str]:
        """Whether this machine can run the engine's artifacts, once it is installed.

        Returns:
            (True, what it runs on) or (False, why not): e.g. TensorRT needs a CUDA GPU.
        """
        return True, "installed"

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
        # The per-call checks, precomputed: the hot path only compares.
        self._input_set = {s.name for s in inputs}
        self._output_set = {s.name for s in outputs}
        self._checks = [
            (
                s.name,
                np.dtype(s.dtype),
                list(s.shape),
                [(axis, dim) for axis, dim in enumerate(s.shape) if isinstance(dim, int)],
            )
            for s in inputs
        ]
        try:
            if artifact.options.get("buckets"):
                self._load_buckets(path, artifact)
            else:
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

        :class:`CheckedFeeds` (built by the runtime from a graph it validated
        against the same contract) skip the per-feed check: it would repeat
        what the runtime has just proved.

        Raises:
            InvalidInputError: Missing/unknown input, wrong dtype, rank or fixed dim.
        """
        if not self._loaded:
            raise InternalError(f"{self.name} backend used before load()")
        if type(feeds) is not CheckedFeeds:
            self.check_feeds(feeds)
        out = (
            self._bucket_for(feeds)._infer_impl(feeds) if self._buckets else self._infer_impl(feeds)
        )
        if not out.keys() >= self._output_set:
            missing = [o.name for o in self.outputs if o.name not in out]
            raise InternalError(f"{self.name} returned no output(s) {missing}")
        return out

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Check names, dtypes, ranks and fixed dims of the feeds."""
        if feeds.keys() != self._input_set:
            expected = [s.name for s in self.inputs]
            for name in feeds:
                if name not in self._input_set:
                    raise InvalidInputError(name, f"unknown input; the model takes {expected}")
            for spec in self.inputs:
                if spec.name not in feeds:
                    raise InvalidInputError(spec.name, f"missing input {spec.dtype}{spec.shape}")
        for name, dtype, shape, fixed in self._checks:
            arr = feeds[name]
            if arr.dtype != dtype:
                raise InvalidInputError(name, f"expected dtype {dtype}, received {arr.dtype}")
            if arr.ndim != len(shape):
                raise InvalidInputError(
                    name, f"expected rank {len(shape)} {shape}, received {list(arr.shape)}"
                )
            for axis, want in fixed:
                if arr.shape[axis] != want:
                    raise InvalidInputError(
                        name,
                        f"expected size {want} on axis {axis} of {shape}, "
                        f"received {arr.shape[axis]}",
                    )

    def describe(self) -> dict[str, Any]:
        """What is loaded and how."""
        return {
            "backend": self.name,
            "artifact": self.artifact.name if self.artifact else None,
            "precision": str(self.artifact.precision) if self.artifact else None,
            "threads": self.options.threads,
            **(self._buckets[-1][1]._describe_impl() if self._buckets else self._describe_impl()),
            **({"buckets": len(self._buckets)} if self._buckets else {}),
        }

    def close(self) -> None:
        """Release the engine's resources."""
        if self._buckets:
            for _, backend in self._buckets:
                backend.close()
            self._buckets = []
        else:
            self._close_impl()
        self._loaded = False

    # -- bucketed artifacts: one file per padding bucket -------------------------
    def _load_buckets(self, path: Path, artifact: Artifact) -> None:
        """Load one engine per ``options["buckets"]`` entry (files beside ``path``).

        Each entry holds ``file`` (a name in ``path``'s folder), ``input_shapes``
        and the engine options of that file (e.g. LiteRT's tensor name map),
        which replace the artifact's for that engine.
        """
        base = {k: v for k, v in artifact.options.items() if k != "buckets"}
        for entry in artifact.options["buckets"]:
            one = artifact.model_copy(
                update={
                    "path": str(Path(artifact.path).parent / entry["file"]),
                    "input_shapes": entry["input_shapes"],
                    "options": {**base, **entry.get("options", {})},
                }
            )
            backend = type(self)(self.options)
            backend.load(path.parent / entry["file"], one, self.inputs, self.outputs)
            shapes = {k: tuple(v) for k, v in entry["input_shapes"].items()}
            self._buckets.append((shapes, backend))
        self.static_shapes = True

    def _bucket_for(self, feeds: dict[str, np.ndarray]) -> Backend:
        """The per-bucket engine compiled for the feeds' shapes."""
        for shapes, backend in self._buckets:
            if all(feeds[k].shape == s for k, s in shapes.items() if k in feeds):
                return backend
        have = {k: list(v.shape) for k, v in feeds.items()}
        compiled = [{k: list(s) for k, s in shapes.items()} for shapes, _ in self._buckets]
        raise InvalidInputError(
            "x",
            f"input shapes {have} match none of the buckets this artifact was compiled for "
            f"({compiled}); pad the request to a bucket (Runtime does)",
        )

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
