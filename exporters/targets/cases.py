"""The inputs every artifact is checked on, at export and later on a device.

Besides the user's samples, a dynamic-form model is also checked on a graph
with duplicated edges (PyG sums each copy; a lowering that deduplicates
would pass the plain samples and still be wrong), and a static-shape engine
pads whatever it gets, so padding is exercised on every case it runs. The
cases are written to ``verify.npz`` with their reference outputs, so that
``edge-export verify`` can repeat the check where the engines are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_sdk.bundle import file_digest, save_npz
from edge_sdk.export_config import ParityOptions, QuantOptions
from edge_sdk.io_contract import GraphForm
from edge_sdk.manifest import Verification
from edge_sdk.parity import ParityCase

from ..intake import Sample
from ..prepare import Prepared

VERIFY_FILE = "verify.npz"


def parity_case(prepared: Prepared, sample: Sample, names: list[str]) -> ParityCase:
    """One sample's feeds, PyTorch reference outputs and labels."""
    feeds = prepared.feeds(sample)
    expected = dict(zip(names, prepared.run_reference(feeds), strict=True))
    return ParityCase(feeds, expected, sample.labels, sample.mask)


def target_cases(
    prepared: Prepared,
    samples: Sequence[Sample],
    names: list[str],
    base: Sequence[ParityCase] | None = None,
) -> list[ParityCase]:
    """The samples' cases (``base`` when already computed), plus a duplicate-edge graph
    for the dynamic form."""
    cases = list(base) if base is not None else [parity_case(prepared, s, names) for s in samples]
    if prepared.form is GraphForm.DYNAMIC:
        feeds = dict(cases[0].feeds)
        ei = feeds["edge_index"]
        dup = ei[:, : max(1, min(16, ei.shape[1]))]
        feeds["edge_index"] = np.concatenate([ei, dup], axis=1)
        if "edge_attr" in feeds:
            feeds["edge_attr"] = np.concatenate(
                [feeds["edge_attr"], feeds["edge_attr"][: dup.shape[1]]]
            )
        expected = dict(zip(names, prepared.run_reference(feeds), strict=True))
        cases.append(ParityCase(feeds, expected))
    return cases


def write_verification(
    out: Path,
    cases: Sequence[ParityCase],
    samples: int,
    parity: ParityOptions,
    gate: QuantOptions,
) -> Verification:
    """Write ``verify.npz`` (inputs, reference outputs, labels) and describe it.

    Args:
        out: Bundle directory.
        cases: :func:`target_cases` of the export.
        samples: How many of them are the user's samples (the rest are derived).
        parity: The export's FP32 tolerances (recorded).
        gate: The export's accuracy gate (recorded).
    """
    arrays: dict[str, np.ndarray] = {}
    for i, case in enumerate(cases):
        arrays |= {f"{i}/in/{k}": v for k, v in case.feeds.items()}
        arrays |= {f"{i}/out/{k}": v for k, v in case.expected.items()}
        if case.labels is not None:
            arrays[f"{i}/labels"] = case.labels
        if case.mask is not None:
            arrays[f"{i}/mask"] = case.mask
    path = out / VERIFY_FILE
    save_npz(path, arrays)
    size, sha = file_digest(path)
    return Verification(
        path=VERIFY_FILE,
        sha256=sha,
        size_bytes=size,
        cases=len(cases),
        atol=parity.atol,
        rtol=parity.rtol,
        # A negative bound is a test's "impossible gate" (with allow_accuracy_drop).
        max_accuracy_drop=max(0.0, gate.max_accuracy_drop),
        max_rel_error=max(0.0, gate.max_rel_error),
        description=f"{samples} sample(s)"
        + (" + a duplicate-edge graph" if len(cases) > samples else ""),
    )
