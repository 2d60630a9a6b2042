"""Backend conformance: what every inference engine behind ``Runtime`` must do.

Shared by the ``tests/runtimes/test_*_backend.py`` files (imported by name).

``BackendConformance`` holds the tests; an engine gets them by subclassing and
naming itself::

    class TestOpenVino(BackendConformance):
        backend = "openvino"
        engine = "openvino"        # import name, checked with find_spec
        profile = "intel-cpu"      # a shipped profile that picks this backend

and, when the default tiny GCN bundle has no artifact for it, overriding the
``bundle`` fixture. The engine is never imported here: each subclass is marked
``requires_backend(engine)`` and skips (``find_spec``) when it is not importable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from edge_sdk import (
    BackendUnavailableError,
    Bundle,
    InternalError,
    InvalidInputError,
    ProfileError,
    Runtime,
    UnsupportedTargetError,
)
from edge_sdk import runtimes as registry
from edge_sdk.profiles import shipped_profiles

Feeds = dict[str, np.ndarray]


class BackendConformance:
    #: Registry name of the backend under test.
    backend: ClassVar[str]
    #: Import name of its engine (defaults to ``backend``).
    engine: ClassVar[str | None] = None
    #: A shipped profile whose first choice is this backend (None: skip that test).
    profile: ClassVar[str | None] = None
    #: Set per subclass by ``__init_subclass__``.
    pytestmark: ClassVar[list[pytest.MarkDecorator]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Skipped by tests/conftest.py before any fixture (e.g. a bundle export) runs.
        cls.pytestmark = [pytest.mark.requires_backend(cls.engine or cls.backend)]

    # -- fixtures -------------------------------------------------------------------------
    @pytest.fixture
    def bundle(self, tiny_gcn_scatter_bundle: Path) -> Path:
        """A bundle with an artifact for this backend (scatter: the tests feed
        ``(x, edge_index)`` to the engine itself)."""
        return tiny_gcn_scatter_bundle

    @pytest.fixture
    def rt(self, bundle: Path) -> Runtime:
        return Runtime.load(bundle, backend=self.backend, threads=1)

    @pytest.fixture
    def canary(self, bundle: Path) -> tuple[Feeds, Feeds]:
        return Bundle.open(bundle).load_canary()

    # -- loading and describing ---------------------------------------------------------------
    def test_describe(self, rt: Runtime) -> None:
        info = rt.describe()
        assert info["backend"] == self.backend
        assert info["artifact"] == rt.artifact.name
        assert registry.backend_for_target(rt.artifact.target) == self.backend
        assert info["precision"] == str(rt.artifact.precision)
        assert info["artifact_path"] == rt.artifact.path
        assert info["threads"] == 1
        assert info["why"][0] == "profile: auto"
        assert any(w.startswith(f"{self.backend}: chosen") for w in info["why"])

    def test_canary_reproduced(self, rt: Runtime, canary: tuple[Feeds, Feeds]) -> None:
        inputs, expected = canary
        spec = rt.manifest.canary
        assert spec is not None
        got = rt.backend.infer(inputs)
        assert set(got) == set(expected)
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, atol=spec.atol, rtol=spec.rtol)

    def test_outputs_match_manifest_specs(self, rt: Runtime, canary: tuple[Feeds, Feeds]) -> None:
        got = rt.backend.infer(canary[0])
        for spec in rt.manifest.outputs:
            value = got[spec.name]
            assert value.dtype == np.dtype(spec.dtype), spec.name
            assert value.ndim == len(spec.shape), spec.name
            for want, have in zip(spec.shape, value.shape, strict=True):
                assert not isinstance(want, int) or want == have, spec.name

    def test_infer_after_close_is_refused(self, rt: Runtime, canary: tuple[Feeds, Feeds]) -> None:
        rt.close()
        with pytest.raises(InternalError, match="before load"):
            rt.backend.infer(canary[0])

    # -- feeds the backend must refuse, naming the input ---------------------------------------
    @staticmethod
    def _wrong_dtype(feeds: Feeds, name: str) -> Feeds:
        other = np.float64 if feeds[name].dtype != np.float64 else np.float32
        return feeds | {name: feeds[name].astype(other)}

    @staticmethod
    def _wrong_rank(feeds: Feeds, name: str) -> Feeds:
        return feeds | {name: feeds[name][None]}

    @staticmethod
    def _missing(feeds: Feeds, name: str) -> Feeds:
        return {k: v for k, v in feeds.items() if k != name}

    @pytest.mark.parametrize(
        ("mutate", "words"),
        [
            (_wrong_dtype, "dtype"),
            (_wrong_rank, "rank"),
            (_missing, "missing input"),
        ],
        ids=["dtype", "rank", "missing"],
    )
    def test_bad_feed_refused(
        self,
        rt: Runtime,
        canary: tuple[Feeds, Feeds],
        mutate: Callable[[Feeds, str], Feeds],
        words: str,
    ) -> None:
        for spec in rt.backend.inputs:
            with pytest.raises(InvalidInputError) as info:
                rt.backend.infer(mutate(canary[0], spec.name))
            assert info.value.field == spec.name
            assert str(info.value).startswith(f"{spec.name}: ")
            assert words in str(info.value)

    def test_unknown_feed_refused(self, rt: Runtime, canary: tuple[Feeds, Feeds]) -> None:
        with pytest.raises(InvalidInputError) as info:
            rt.backend.infer(canary[0] | {"bogus": np.zeros(1, np.float32)})
        assert info.value.field == "bogus"
        assert "unknown input" in str(info.value)

    def test_wrong_fixed_dim_refused(self, rt: Runtime, canary: tuple[Feeds, Feeds]) -> None:
        fixed = [
            (spec.name, axis, dim)
            for spec in rt.backend.inputs
            for axis, dim in enumerate(spec.shape)
            if isinstance(dim, int)
        ]
        assert fixed, "the test bundle should have at least one fixed input dim"
        for name, axis, dim in fixed:
            arr = canary[0][name]
            shape = list(arr.shape)
            shape[axis] = dim + 1
            with pytest.raises(InvalidInputError) as info:
                rt.backend.infer(canary[0] | {name: np.zeros(shape, arr.dtype)})
            assert info.value.field == name
            assert f"axis {axis}" in str(info.value)

    # -- choosing the backend -------------------------------------------------------------------
    def test_unknown_backend(self, bundle: Path) -> None:
        with pytest.raises(BackendUnavailableError) as info:
            Runtime.load(bundle, backend="no-such-engine")
        assert "no-such-engine" in str(info.value)
        for known in registry.known_backends():
            assert known in str(info.value)

    def test_disabled_backend(self, bundle: Path, disable_backends: Callable[..., None]) -> None:
        disable_backends(self.backend)
        with pytest.raises(UnsupportedTargetError) as info:
            Runtime.load(bundle, backend=self.backend)
        assert f"{self.backend}: unavailable: disabled by EDGE_SDK_DISABLE_BACKENDS" in str(
            info.value
        )
        with pytest.raises(BackendUnavailableError, match="disabled"):
            registry.create_backend(self.backend)

    def test_disabling_another_backend_is_harmless(
        self, bundle: Path, disable_backends: Callable[..., None]
    ) -> None:
        disable_backends("some-other-engine")
        assert Runtime.load(bundle, backend=self.backend).describe()["backend"] == self.backend

    # -- profiles -------------------------------------------------------------------------------
    def test_shipped_profile(self, bundle: Path) -> None:
        if self.profile is None:
            pytest.skip(f"no shipped profile chooses {self.backend}")
        info = Runtime.load(bundle, profile=self.profile).describe()
        assert info["backend"] == self.backend
        assert info["why"][0] == f"profile: {self.profile}"

    def test_unknown_profile(self, bundle: Path) -> None:
        with pytest.raises(ProfileError) as info:
            Runtime.load(bundle, profile="no-such-device")
        message = str(info.value)
        assert "no-such-device" in message
        assert shipped_profiles(), "the SDK should ship at least one profile"
        for name in shipped_profiles():
            assert name in message

    @pytest.mark.parametrize(
        ("line", "field"),
        [
            ("colour: red", "colour"),
            ("threads: many", "threads"),
            ("threads: 0", "threads"),
            ("targets: [{backend: onnxruntime, precisions: [fp64]}]", "targets.0.precisions.0"),
            ("targets: [{backend: cuda}]", "targets.0.backend"),
            ("targets: [{use: ort-gpu}]", "targets.0.use"),
            ("targets: [{backend: openvino, device: DLA}]", "targets.0"),
        ],
    )
    def test_invalid_profile_file(
        self, bundle: Path, tmp_path: Path, line: str, field: str
    ) -> None:
        path = tmp_path / "bad.yaml"
        targets = "" if line.startswith("targets") else f"targets: [{{backend: {self.backend}}}]\n"
        path.write_text(f"name: bad\n{targets}{line}\n", encoding="utf-8")
        with pytest.raises(ProfileError) as info:
            Runtime.load(bundle, profile=path)
        assert str(path) in str(info.value)
        assert f"field {field}:" in str(info.value)

    def test_valid_profile_file(self, bundle: Path, tmp_path: Path) -> None:
        path = tmp_path / "mine.yaml"
        path.write_text(
            f"name: mine\ntargets:\n  - backend: {self.backend}\nthreads: 1\n", encoding="utf-8"
        )
        info = Runtime.load(bundle, profile=path).describe()
        assert info["backend"] == self.backend
        assert info["threads"] == 1
        assert info["why"][0] == "profile: mine"
