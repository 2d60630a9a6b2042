"""Tennessee Eastman Process (TEP) data: the Braatz files, windows, scaling, splits.

The benchmark's files (Downs & Vogel 1993, as distributed by R. Braatz's group):

- ``d00.dat``: normal operation, training, 500 samples. Stored **transposed**
  (52 rows x 500 columns); :func:`read_matrix` detects that from the shape.
- ``dNN.dat`` (NN = 01..21): fault NN, training, 480 samples, faulty from the
  first row (the fault was introduced an hour before the recording starts).
- ``d00_te.dat``: normal operation, testing, 960 samples.
- ``dNN_te.dat``: fault NN, testing, 960 samples; the fault is introduced after
  sample 160, so rows 161..960 (0-based 160..959) are faulty.

52 variables per sample (XMEAS 1-41, XMV 1-11), one sample every 3 minutes.

The data folder is only ever read. Everything fitted from data (the scaler,
later the PCA model and thresholds) sees normal *training* data only: the
:class:`Scaler` refuses any run but ``d00.dat``, and :func:`split_run` cuts
each training run into contiguous train / validation segments in time, so no
window of the validation part overlaps a training window.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "EDGE_SDK_TEP_DIR"
NUM_SENSORS = 52
NUM_FAULTS = 21
FAULTS = tuple(range(1, NUM_FAULTS + 1))
#: Faults the literature finds (nearly) undetectable from these variables: report separately.
HARD_FAULTS = (3, 9, 15)
#: 0-based index of the first faulty sample in a ``dNN_te.dat`` file ("after sample 160").
TEST_ONSET = 160
SAMPLE_MINUTES = 3.0
#: Rows each file must hold (after undoing d00.dat's transposition).
TRAIN_ROWS = {0: 500}  # d00.dat; every fault's training file holds FAULT_TRAIN_ROWS
FAULT_TRAIN_ROWS = 480
TEST_ROWS = 960
SENSOR_NAMES = tuple([f"XMEAS({i})" for i in range(1, 42)] + [f"XMV({i})" for i in range(1, 12)])

_HERE = Path(__file__).resolve().parent


class TepDataError(ValueError):
    """A TEP file is missing, short or corrupt; ``path`` names it.

    Attributes:
        path: The offending file (or folder).
    """

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {message}")


class TepNotFoundError(TepDataError, FileNotFoundError):
    """A TEP file (or the data folder) does not exist."""


# -- files ---------------------------------------------------------------------------------


def default_root() -> Path:
    """``$EDGE_SDK_TEP_DIR``, else ``../shared/datasets/tep`` beside the repository."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return _HERE.parents[1].parent / "shared" / "datasets" / "tep"


def file_name(fault: int, split: str) -> str:
    """``d00.dat``, ``d07_te.dat``...: the Braatz name of a run.

    Args:
        fault: 0 (normal) or 1..21.
        split: ``"train"`` or ``"test"``.
    """
    if not 0 <= fault <= NUM_FAULTS:
        raise ValueError(f"fault must be 0..{NUM_FAULTS}, got {fault}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return f"d{fault:02d}{'_te' if split == 'test' else ''}.dat"


def expected_rows(fault: int, split: str) -> int:
    """Samples a Braatz file holds: 500 (d00.dat), 480 (dNN.dat) or 960 (``_te``)."""
    if split == "test":
        return TEST_ROWS
    return TRAIN_ROWS.get(fault, FAULT_TRAIN_ROWS)


def read_matrix(
    path: str | os.PathLike[str], rows: int | None = None, columns: int = NUM_SENSORS
) -> np.ndarray:
    """Read one whitespace-separated file as a ``[samples, columns]`` float64 array.

    A file stored as ``columns`` rows of samples (``d00.dat``) is transposed:
    the orientation is read from the shape (the side that equals ``columns``),
    not assumed from the name. A square file is taken as samples x columns.

    Args:
        path: The file.
        rows: Samples the file must hold, or None to accept any number.
        columns: Variables per sample.

    Returns:
        The samples, finite float64.

    Raises:
        TepNotFoundError: The file does not exist.
        TepDataError: Non-numeric text, ragged lines, NaN/inf, a shape with no
            side of ``columns`` or fewer/more samples than ``rows``.
    """
    path = Path(path)
    if not path.is_file():
        raise TepNotFoundError(path, "file not found")
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise TepDataError(
            path, f"not a text file of numbers ({exc.reason} at byte {exc.start})"
        ) from exc
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise TepDataError(path, "empty file (expected whitespace-separated numbers)")
    width = len(lines[0][1])
    for n, tokens in lines:
        if len(tokens) != width:
            raise TepDataError(
                path, f"line {n} has {len(tokens)} values, line {lines[0][0]} has {width}"
            )
    try:
        data = np.array([tokens for _, tokens in lines], dtype=np.float64)
    except ValueError:
        for n, tokens in lines:  # find the first offending value for the message
            for col, token in enumerate(tokens, 1):
                try:
                    float(token)
                except ValueError:
                    raise TepDataError(
                        path, f"line {n}, column {col}: {token[:30]!r} is not a number"
                    ) from None
        raise  # pragma: no cover - np.array failed on something float() accepts
    if data.shape[1] != columns:
        if data.shape[0] == columns:
            data = data.T  # d00.dat: variables in rows, samples in columns
        else:
            raise TepDataError(
                path,
                f"expected {columns} values per sample (rows or columns), got shape "
                f"{data.shape[0]}x{data.shape[1]}",
            )
    bad = ~np.isfinite(data)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise TepDataError(
            path, f"{int(bad.sum())} non-finite values (first: sample {r + 1}, variable {c + 1})"
        )
    if rows is not None and data.shape[0] != rows:
        what = "short" if data.shape[0] < rows else "too long"
        raise TepDataError(path, f"{what}: expected {rows} samples, got {data.shape[0]}")
    return np.ascontiguousarray(data)


# -- runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One simulation run (one file).

    Attributes:
        fault: 0 (normal) or the fault id 1..21.
        split: ``"train"`` or ``"test"``.
        data: Samples ``[T, 52]`` (raw units, float64).
        onset: 0-based index of the first faulty sample; ``T`` for a normal run.
        start: Index of ``data[0]`` in the original file (non-zero for a segment).
    """

    fault: int
    split: str
    data: np.ndarray
    onset: int
    start: int = 0

    @property
    def name(self) -> str:
        """The file the run came from (``d05_te.dat``)."""
        return file_name(self.fault, self.split)

    @property
    def labels(self) -> np.ndarray:
        """Per-sample class ``[T]``: 0 before the onset, the fault id from it on."""
        labels = np.zeros(len(self.data), dtype=np.int64)
        labels[self.onset :] = self.fault
        return labels

    def segment(self, begin: int, end: int) -> Run:
        """Samples ``begin:end`` as a run of its own (onset shifted accordingly)."""
        onset = min(max(self.onset - begin, 0), end - begin)
        return Run(self.fault, self.split, self.data[begin:end], onset, self.start + begin)


def run_onset(fault: int, split: str, rows: int) -> int:
    """Index of the first faulty sample: none (``rows``) for normal runs, 0 in training
    files, :data:`TEST_ONSET` in test files."""
    if fault == 0:
        return rows
    return 0 if split == "train" else TEST_ONSET


def load_run(root: str | os.PathLike[str] | None, fault: int, split: str) -> Run:
    """Read one run from the Braatz folder.

    Args:
        root: The data folder; None for :func:`default_root`.
        fault: 0..21.
        split: ``"train"`` or ``"test"``.

    Raises:
        TepNotFoundError: The folder or the file is missing (the message names
            the path and :data:`ENV_VAR`).
        TepDataError: The file is short or corrupt.
    """
    folder = Path(root) if root is not None else default_root()
    path = folder / file_name(fault, split)
    if not folder.is_dir():
        raise TepNotFoundError(
            folder,
            f"TEP data folder not found (looking for {path.name}); pass the folder "
            f"or set {ENV_VAR} to a folder holding d00.dat .. d21_te.dat",
        )
    rows = expected_rows(fault, split)
    data = read_matrix(path, rows=rows)
    return Run(fault, split, data, run_onset(fault, split, rows))


def load_runs(
    root: str | os.PathLike[str] | None,
    split: str,
    faults: Iterable[int] = (0, *FAULTS),
) -> dict[int, Run]:
    """Read several runs of one split: ``{fault: Run}`` (fault 0 is normal operation)."""
    return {f: load_run(root, f, split) for f in faults}


def split_run(run: Run, val_fraction: float = 0.2) -> tuple[Run, Run]:
    """Cut a training run into a train segment and the validation segment after it.

    Contiguous in time, not random windows: windows are built inside each
    segment, so no validation window shares a sample with a training window
    (random windows over one run would leak near-duplicates into validation).

    Args:
        run: A run (usually a training file).
        val_fraction: Share of the samples, taken from the end, for validation.

    Returns:
        ``(train, validation)`` segments.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = len(run.data) - max(1, round(val_fraction * len(run.data)))
    return run.segment(0, cut), run.segment(cut, len(run.data))


# -- scaling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaler:
    """Per-variable standardisation fitted on normal training data only.

    Attributes:
        mean: ``[52]`` means.
        std: ``[52]`` standard deviations (floored to keep constant variables finite).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, run: Run, min_std: float = 1e-8) -> Scaler:
        """Fit on a normal training run (``d00.dat`` or a segment of it).

        Raises:
            ValueError: ``run`` is a faulty or a test run: scaling statistics
                must come from normal training data alone.
        """
        if run.fault != 0 or run.split != "train":
            raise ValueError(
                f"the scaler is fitted on normal training data only (d00.dat), got {run.name}"
            )
        std = run.data.std(axis=0)
        return cls(run.data.mean(axis=0), np.maximum(std, min_std))

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Scale ``[..., 52]`` samples; returns float32."""
        return ((data - self.mean) / self.std).astype(np.float32)

    def apply(self, run: Run) -> Run:
        """The same run, scaled (float32)."""
        return Run(run.fault, run.split, self.transform(run.data), run.onset, run.start)


# -- windows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """Sliding windows over one or more runs.

    Attributes:
        x: ``[n, 52, window]`` float32, sensors first (the GNN's node layout).
        y: ``[n]`` class of each window: its last sample's label (0 normal, else
            the fault id): a window counts as faulty once its last sample is at
            or after the onset.
        end: ``[n]`` index, in its file, of each window's last sample.
        fault: ``[n]`` the fault id of the run each window came from.
    """

    x: np.ndarray
    y: np.ndarray
    end: np.ndarray
    fault: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def make_windows(run: Run, window: int = 20, stride: int = 1) -> Windows:
    """Sliding windows over one run, labelled by the onset rule.

    Args:
        run: The run (scale it first with :meth:`Scaler.apply`).
        window: Samples per window.
        stride: Samples between window starts.

    Raises:
        ValueError: The run is shorter than one window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    t = len(run.data)
    if t < window:
        raise ValueError(f"{run.name}: {t} samples, fewer than one window of {window}")
    starts = np.arange(0, t - window + 1, stride)
    view = np.lib.stride_tricks.sliding_window_view(run.data, window, axis=0)  # [T-w+1, 52, w]
    x = np.ascontiguousarray(view[starts], dtype=np.float32)
    last = starts + window - 1
    return Windows(
        x=x,
        y=run.labels[last],
        end=last + run.start,
        fault=np.full(len(starts), run.fault, dtype=np.int64),
    )


def concat_windows(parts: Sequence[Windows]) -> Windows:
    """Stack the windows of several runs."""
    if not parts:
        raise ValueError("no windows to concatenate")
    return Windows(
        x=np.concatenate([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        end=np.concatenate([p.end for p in parts]),
        fault=np.concatenate([p.fault for p in parts]),
    )


@dataclass(frozen=True)
class TepSplits:
    """Everything a model needs, scaled by the normal-training scaler.

    Attributes:
        scaler: Fitted on the train segment of ``d00.dat`` only.
        train: Train segments of every training run (scaled).
        val: Validation segments (the last part of each training run, scaled).
        test: The test runs (scaled), when loaded.
    """

    scaler: Scaler
    train: dict[int, Run]
    val: dict[int, Run]
    test: dict[int, Run]

    def windows(self, part: str, window: int = 20, stride: int = 1) -> Windows:
        """Windows over every run of ``part`` (``"train"``, ``"val"`` or ``"test"``)."""
        runs: dict[int, Run] = getattr(self, part)
        return concat_windows([make_windows(r, window, stride) for r in runs.values()])


def load_splits(
    root: str | os.PathLike[str] | None = None,
    faults: Iterable[int] = FAULTS,
    val_fraction: float = 0.2,
    test: bool = True,
) -> TepSplits:
    """Load d00 and the given faults, split training runs, fit the scaler, scale all.

    Args:
        root: The data folder; None for :func:`default_root`.
        faults: Fault ids to load beside normal operation (fault 0 always is).
        val_fraction: End share of each training run kept for validation.
        test: Also load the ``_te`` files (for evaluation only).

    Raises:
        TepNotFoundError, TepDataError: See :func:`load_run`.
    """
    ids = [0, *sorted(set(faults) - {0})]
    raw_train = load_runs(root, "train", ids)
    raw_test = load_runs(root, "test", ids) if test else {}
    parts = {f: split_run(r, val_fraction) for f, r in raw_train.items()}
    scaler = Scaler.fit(parts[0][0])  # the train segment of d00.dat: normal training data only
    return TepSplits(
        scaler=scaler,
        train={f: scaler.apply(p[0]) for f, p in parts.items()},
        val={f: scaler.apply(p[1]) for f, p in parts.items()},
        test={f: scaler.apply(r) for f, r in raw_test.items()},
    )
