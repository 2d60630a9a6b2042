"""The on-device runtime: load a bundle, pick a backend, run graphs.

Imports neither torch nor the exporters: a device needs numpy, pydantic and
the engine it runs.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .bundle import Bundle
from .errors import (
    BackendUnavailableError,
    InvalidInputError,
    ManifestError,
    UnsupportedTargetError,
)
from .graph import DynamicGraph, Graph, StaticGraph, as_graph, zero_request
from .io_contract import GraphForm, GraphSpec, OutputLevel, TensorSpec
from .manifest import Artifact, Manifest, Precision
from .neighbour_tables import table_input_dtype
from .packing import (
    batch_graphs,
    group_for_buckets,
    pad_graph,
    pad_static,
    pick_bucket,
    table_feeds,
    unbatch_outputs,
    unpad_outputs,
)
from .profiles import DeviceProfile, load_profile
from .runtimes import (
    Backend,
    BackendOptions,
    create_backend,
    known_backends,
    unavailable_reason,
)
from .runtimes.base import CheckedFeeds
from .selection import artifact_plans

if TYPE_CHECKING:
    from .signing import TrustedKeys


class Runtime:
    """A loaded bundle, ready to infer.

    Thread-safe: calls are serialised on the backend (engines are not all
    re-entrant); batching concurrent requests is the serving layer's job.

    Example:
        >>> rt = Runtime.load("out/gcn.bundle")            # doctest: +SKIP
        >>> rt.infer({"x": x, "edge_index": edge_index})    # doctest: +SKIP
        {'logits': array(...)}
    """

    def __init__(
        self, bundle: Bundle, backend: Backend, artifact: Artifact, why: list[str]
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.artifact = artifact
        self._why = why
        self._lock = threading.Lock()
        m = bundle.manifest
        self._spec = m.graph
        self._dynamic = m.graph.form is GraphForm.DYNAMIC
        self._levels = m.output_levels
        self._graph_level = OutputLevel.GRAPH in self._levels.values()
        scaling = m.preprocessing.feature_scaling
        self._scale = (
            (np.asarray(scaling.mean, np.float32), np.asarray(scaling.std, np.float32))
            if scaling
            else None
        )
        first = m.inputs[0].shape[0] if m.inputs and m.inputs[0].shape else None
        compiled = artifact.input_shapes.get("x")
        if compiled:  # a static-shape engine compiled for one batch size
            first = compiled[0]
        #: Fixed batch dim of a static-form model (padded to on static-shape backends).
        self._batch_dim = first if not self._dynamic and isinstance(first, int) else None
        #: Whether validate() implies Backend.check_feeds (then feeds skip it).
        self._prechecked = _validation_implies_specs(m)
        #: The model's inputs (a table model may not read every table input it was given).
        self._inputs = [s.name for s in m.inputs]

    # -- construction -----------------------------------------------------------------
    @classmethod
    def load(
        cls,
        bundle: str | os.PathLike[str] | Bundle,
        profile: str | Path | DeviceProfile = "auto",
        backend: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
        trusted_keys: TrustedKeys | None = None,
    ) -> Runtime:
        """Open and verify a bundle and load the best artifact for this device.

        Args:
            bundle: Bundle directory, ``.tar.gz``, or an opened :class:`Bundle`.
            profile: A shipped profile name, ``host``, a path to a profile
                YAML, or a profile object: the artifacts the export chose for
                it (its declared order if the bundle was not built for it).
                ``"auto"``: the export's choices for the engines installed
                here, in the bundle's profile order, then any engine
                (TensorRT, OpenVINO, LiteRT, ONNX Runtime).
            backend: Force one backend by name (overrides the profile's order).
            threads: Intra-op threads (overrides the profile).
            precision: Force one precision (``fp32``, ``fp16``, ``int8``); by
                default what the export chose, else the profile's order, else
                the smallest artifact first (int8, fp16, fp32).
            trusted_keys: Load only a bundle signed by one of these keys
                (``key_id -> public key``, or ``.pub`` files / directories):
                an unsigned bundle, one whose manifest changed after signing,
                or one signed by another key is refused. ``None``: the
                signature is not checked.

        Returns:
            The runtime.

        Raises:
            ManifestError: The bundle is invalid, tampered or truncated.
            UntrustedBundleError: ``trusted_keys`` given and the signature
                check failed (``reason``: unsigned, mismatch, unknown_key,
                malformed).
            UnsupportedTargetError: No artifact runs on any available backend;
                the message lists why each candidate was skipped.
            BackendUnavailableError: ``backend`` is unknown or not installed.
            ProfileError: The profile is unknown or invalid.
        """
        if isinstance(bundle, Bundle):
            b = bundle
            if trusted_keys is not None:
                b.check_signature(trusted_keys)
        else:
            b = Bundle.open(bundle, trusted_keys=trusted_keys)
        prof = None
        if isinstance(profile, DeviceProfile):
            prof = profile
        elif str(profile) != "auto":
            prof = load_profile(profile)
        if backend:
            unavailable_reason(backend)  # raises on an unknown name
        forced: list[Precision] | None = None
        if precision is not None:
            try:
                forced = [Precision(precision)]
            except ValueError:
                raise UnsupportedTargetError(
                    f"unknown precision {precision!r}; expected one of "
                    f"{', '.join(p.value for p in Precision)}"
                ) from None
        why: list[str] = [f"profile: {prof.name if prof else 'auto'}"]
        tried: set[str] = set()
        for plan in artifact_plans(b.manifest, prof, backend, forced):
            name, artifact = plan.backend, plan.artifact
            if artifact.name in tried:
                continue
            tried.add(artifact.name)
            if name not in known_backends():
                why.append(f"{name}: not supported by this runtime version")
                continue
            reason = unavailable_reason(name)
            if reason:
                why.append(f"{name}: unavailable: {reason}")
                continue
            n_threads = threads if threads is not None else plan.threads
            options = BackendOptions(threads=n_threads, extra=plan.extra or None)
            be = create_backend(name, options)
            try:
                be.load(b.path_of(artifact.path), artifact, b.manifest.inputs, b.manifest.outputs)
            except BackendUnavailableError as exc:
                # e.g. an NPU artifact on a machine without the NPU: try the next one.
                why.append(f"{name}: {artifact.name} did not load: {exc}")
                continue
            why.append(
                f"{name}: chosen, artifact {artifact.name} ({artifact.precision})"
                + (f": {plan.reason}" if plan.reason else "")
            )
            return cls(b, be, artifact, why)
        if len(why) == 1:
            asked = [str(p) for p in forced] if forced else "any precision"
            why.append(f"bundle has no artifact for {backend or 'these backends'} at {asked}")
        raise UnsupportedTargetError(
            "no artifact of this bundle can run here: " + "; ".join(why[1:])
        )

    # -- inference -----------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        """The bundle's manifest."""
        return self.bundle.manifest

    def infer(
        self, graph: Graph | dict[str, Any] | np.ndarray, *, strict: bool = False
    ) -> dict[str, np.ndarray]:
        """Run one request.

        Args:
            graph: A graph container, a mapping of named arrays (``x``,
                ``edge_index``, ``edge_attr``, ``batch``), or for the static
                and learned forms a bare ``[B, N, F]`` / ``[N, F]`` array.
            strict: Refuse the ``[N, F]`` shorthand of the static and learned
                forms (``x`` must be ``[B, N, F]``, as the model's metadata
                says). The HTTP and MQTT ``infer`` protocols pass True.

        Returns:
            Outputs by name. Static forms keep the batch axis B.

        Raises:
            InvalidInputError: The request does not match the model; the
                message names the field. Booleans are refused, never coerced.
        """
        return self._run(as_graph(graph, self._spec, strict=strict))

    def infer_batch(
        self, graphs: Sequence[Graph | dict[str, Any] | np.ndarray], *, strict: bool = False
    ) -> list[dict[str, np.ndarray]]:
        """Run many requests in as few backend calls as exactness allows.

        Dynamic graphs are merged as one disjoint union; static batches are
        stacked along B. Results come back in request order.

        Args:
            graphs: Requests, each as :meth:`infer` takes it.
            strict: As in :meth:`infer`.

        Raises:
            InvalidInputError: Naming the request index and field at fault.
        """
        spec = self._spec
        checked: list[Graph] = []
        for i, item in enumerate(graphs):
            try:
                checked.append(as_graph(item, spec, strict=strict))
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"graphs[{i}].{exc.field}", str(exc).split(": ", 1)[1]
                ) from None
        return self.infer_validated(checked)

    def infer_validated(self, graphs: Sequence[Graph]) -> list[dict[str, np.ndarray]]:
        """:meth:`infer_batch` for graphs that already passed :func:`~edge_sdk.graph.as_graph`.

        For callers that validate each request on arrival (the serving
        layer's batcher, :class:`~edge_sdk.serving.batcher.DynamicBatcher`)
        and must not pay for it twice. Handing in anything else is a bug:
        unvalidated graphs are not re-checked here (the backend still checks
        feeds that validation does not cover). Everyone else calls
        :meth:`infer` or :meth:`infer_batch`.

        Args:
            graphs: Graphs returned by ``as_graph(..., runtime.manifest.graph)``.

        Returns:
            Outputs per graph, in order.
        """
        if not graphs:
            return []
        spec = self._spec
        if self._dynamic:
            dyn = [g for g in graphs if isinstance(g, DynamicGraph)]
            if spec.whole_request_stats or (self._graph_level and not spec.has_batch):
                # Without a batch vector the readout (or a graph-level norm, recorded at
                # export) would take its statistics across requests.
                return [self._run(g) for g in dyn]
            if len(dyn) == 1:
                return [self._run(dyn[0])]
            groups = (
                group_for_buckets(dyn, spec.buckets, spec.has_batch, spec.tables is not None)
                if self.backend.static_shapes
                else [list(range(len(dyn)))]
            )
            results: list[dict[str, np.ndarray]] = []
            for group in groups:
                merged, layout = batch_graphs([dyn[i] for i in group])
                outputs = self._run(merged if spec.has_batch else _drop_batch(merged))
                sizes = {OutputLevel.NODE: layout.nodes, OutputLevel.GRAPH: layout.graphs}
                results.extend(unbatch_outputs(outputs, sizes, self._levels))
            return results
        stat = [g for g in graphs if isinstance(g, StaticGraph)]
        if len(stat) == 1:
            return [self._run(stat[0])]
        outputs = self._run(StaticGraph(np.concatenate([g.x for g in stat])))
        counts = tuple(g.batch_size for g in stat)
        return unbatch_outputs(outputs, {OutputLevel.BATCH: counts}, self._levels)

    def warmup(self, runs: int = 3) -> float:
        """Run a few requests so the first real one does not pay for lazy setup.

        Engines allocate buffers and pick kernels on their first calls; a
        server or node calls this after :meth:`load`, before taking traffic.
        Uses the bundle's canary inputs, or zeros shaped like the input spec
        (one graph) when the bundle has no canary. Results are discarded and
        nothing about later results changes.

        Args:
            runs: How many requests to run (>= 1).

        Returns:
            Median latency of the runs, in milliseconds.

        Raises:
            ValueError: ``runs`` < 1.
        """
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        inputs = self._warmup_inputs()
        times: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.infer(inputs)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def _warmup_inputs(self) -> dict[str, np.ndarray]:
        if self.manifest.canary is not None:
            try:
                return self.bundle.load_canary()[0]
            except (ManifestError, OSError, ValueError):
                pass  # an unreadable canary: zeros warm the engine up just as well
        return zero_request(self._spec)

    def _run(self, g: Graph) -> dict[str, np.ndarray]:
        """Scale, pad, call the backend (serialised), unpad: one validated graph."""
        feeds: dict[str, np.ndarray]
        if isinstance(g, StaticGraph):
            x = g.x
            if self._scale is not None:
                x = (x - self._scale[0]) / self._scale[1]
            fixed = self._batch_dim
            if fixed is not None and x.shape[0] > fixed and self.backend.static_shapes:
                # An engine compiled for batch `fixed` runs a larger batch in slices.
                parts = [self._run_static(x[i : i + fixed]) for i in range(0, x.shape[0], fixed)]
                return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            return self._run_static(x)
        spec = self._spec
        if self._scale is not None:
            mean, std = self._scale
            g = DynamicGraph((g.x - mean) / std, g.edge_index, g.edge_attr, g.batch)
        padding = None
        if spec.tables is not None:  # neighbour tables built here, from edge_index/batch
            built, padding = table_feeds(g, spec, self.backend.static_shapes, self._graph_level)
            raw = {k: built[k] for k in self._inputs}
        else:
            if self.backend.static_shapes:
                bucket = pick_bucket(g, spec.buckets, spec.has_batch)
                g, padding = pad_graph(g, bucket, spec.has_batch, self._graph_level)
            raw = g.feeds(spec)
        feeds = CheckedFeeds(raw) if self._prechecked else raw
        with self._lock:
            out = self.backend.infer(feeds)
        if padding is not None:
            out = unpad_outputs(out, padding, self._levels)
        return out

    def _run_static(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Pad ``x`` to the engine's fixed batch where it has one, run, cut back."""
        real_b = x.shape[0]
        fixed = self._batch_dim
        if fixed is not None and real_b != fixed and self.backend.static_shapes:
            x = pad_static(StaticGraph(x), fixed).x
        # A fixed batch dim the backend does not pad to is left to check_feeds.
        checked = self._prechecked and (fixed is None or x.shape[0] == fixed)
        feeds = CheckedFeeds(x=x) if checked else {"x": x}
        with self._lock:
            out = self.backend.infer(feeds)
        if x.shape[0] != real_b:
            out = {k: v[:real_b] for k, v in out.items()}
        return out

    # -- introspection ---------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Backend, artifact, precision, and why they were chosen."""
        m = self.manifest
        return {
            "model": m.model.name,
            "version": m.model.version,
            "graph_form": str(m.graph.form),
            **self.backend.describe(),
            "artifact_path": self.artifact.path,
            "why": list(self._why),
        }

    def note(self, reason: str) -> None:
        """Add a reason for this choice of engine to ``describe()["why"]`` (a caller that
        chose among loaded runtimes, such as the node timing engines at load)."""
        self._why.append(reason)

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _validation_implies_specs(manifest: Manifest) -> bool:
    """Whether a graph that passed ``validate`` always yields feeds the input specs accept.

    True when the manifest's inputs are exactly the graph contract's (names,
    the canonical dtypes and ranks, and only fixed dims that validation or
    padding guarantees). A manifest that says more keeps the per-call
    :meth:`Backend.check_feeds`.
    """
    spec = manifest.graph
    by_name = {s.name: s for s in manifest.inputs}
    if len(by_name) != len(manifest.inputs):
        return False
    if spec.tables is not None:
        return _tables_implied(spec, by_name)
    if sorted(by_name) != sorted(spec.input_names):
        return False
    if spec.form is not GraphForm.DYNAMIC:
        # Axis 0 (B) may be fixed: the runtime then checks it per call (see _run).
        want: dict[str, tuple[str, list[int | None]]] = {
            "x": ("float32", [None, spec.num_nodes, spec.num_features])
        }
    else:
        want = {
            "x": ("float32", [-1, spec.num_features]),
            "edge_index": ("int64", [2, -1]),
            "edge_attr": ("float32", [-1, spec.edge_dim or -1]),
            "batch": ("int64", [-1]),
        }
    for name, tensor in by_name.items():
        dtype, dims = want[name]
        if tensor.dtype != dtype or len(tensor.shape) != len(dims):
            return False
        for have, guaranteed in zip(tensor.shape, dims, strict=True):
            # None: any fixed value is fine (checked per call); -1: nothing is guaranteed.
            if isinstance(have, int) and guaranteed is not None and have != guaranteed:
                return False
    return True


def _tables_implied(spec: GraphSpec, by_name: dict[str, TensorSpec]) -> bool:
    """:func:`_validation_implies_specs` for a model taking neighbour tables.

    The runtime builds the tables (:func:`~edge_sdk.neighbour_tables.request_tables`):
    their dtypes and ranks are fixed, their sizes follow the graph (or the bucket).
    The model may take a subset of them (inputs it never reads are not exported).
    """
    known = spec.model_input_names
    if not set(by_name) <= set(known) or "x" not in by_name or spec.tables is None:
        return False
    widths, pool_widths = spec.tables.widths, spec.tables.pool_widths
    for name, tensor in by_name.items():
        # Row counts follow each request (or bucket): a fixed one is not guaranteed.
        if tensor.shape and isinstance(tensor.shape[0], int):
            return False
        want: int | None = None  # the fixed second dim validation guarantees, if any
        if name in ("x", "edge_attr"):
            dtype, rank = "float32", 2
            want = spec.num_features if name == "x" else spec.edge_dim
        else:
            dtype = table_input_dtype(name)
            field = name.rsplit(".", 1)[-1]
            rank = 1 if field.startswith(("target", "graph")) else 2
            digits = field.lstrip("abcdefghijklmnopqrstuvwxyz_")
            table_widths = pool_widths if name.startswith("pool.") else widths
            if digits.isdigit() and int(digits) < len(table_widths):
                want = table_widths[int(digits)]
        if tensor.dtype != dtype or len(tensor.shape) != rank:
            return False
        if rank == 2 and isinstance(tensor.shape[1], int) and tensor.shape[1] != want:
            return False
    return True


def _drop_batch(g: DynamicGraph) -> DynamicGraph:
    return DynamicGraph(g.x, g.edge_index, g.edge_attr, None)
