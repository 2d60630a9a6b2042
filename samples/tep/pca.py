"""PCA process monitoring (Hotelling T² and SPE/Q) and the TEP evaluation protocol.

The classic baseline for the Tennessee Eastman benchmark (e.g. Chiang, Russell
& Braatz, *Fault Detection and Diagnosis in Industrial Systems*, 2001):

- fit PCA on scaled **normal training** samples; keep the fewest components
  whose cumulative explained variance reaches ``variance`` (90 % by default);
- Hotelling T² in the principal subspace, ``T² = Σ t_i² / λ_i``;
- squared prediction error in the residual subspace, ``SPE = ‖x − P Pᵀ x‖²``.

Control limits (significance ``alpha``, 1 % by default, i.e. 99 % limits) use the
standard approximations, computed from the training data alone:

- T²: ``a (n−1)(n+1) / (n (n−a)) · F_{1−α}(a, n−a)`` (n training samples, a
  components; Tracy, Young & Mason 1992);
- SPE: Jackson & Mudholkar (1979) from the residual eigenvalues θ_k = Σ_{j>a} λ_j^k.

``limits="empirical"`` instead takes the ``1−α`` quantile of each statistic on a
separate set of normal samples the caller passes (e.g. a validation segment of
``d00.dat``). Neither path ever needs test data: :meth:`PcaMonitor.fit` takes
normal training (and optionally validation) samples and nothing else.

numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

SAMPLE_MINUTES = 3.0
HARD_FAULTS = (3, 9, 15)


@dataclass(frozen=True)
class PcaMonitor:
    """A fitted PCA monitoring model.

    Attributes:
        mean: ``[m]`` centre of the training samples.
        components: ``[m, a]`` loadings of the kept components.
        eigenvalues: ``[m]`` all covariance eigenvalues, descending.
        n_train: Training samples the model was fitted on.
        t2_limit: Control limit of T².
        spe_limit: Control limit of SPE.
        alpha: Significance of the limits.
        limits: ``"theoretical"`` or ``"empirical"``.
    """

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    n_train: int
    t2_limit: float
    spe_limit: float
    alpha: float
    limits: str

    @property
    def n_components(self) -> int:
        """Principal components kept (``a``)."""
        return int(self.components.shape[1])

    @classmethod
    def fit(
        cls,
        normal_train: np.ndarray,
        variance: float = 0.9,
        alpha: float = 0.01,
        limits: str = "theoretical",
        normal_val: np.ndarray | None = None,
    ) -> PcaMonitor:
        """Fit PCA and its control limits on normal operation only.

        Args:
            normal_train: ``[n, m]`` scaled normal training samples (d00.dat).
            variance: Cumulative explained variance the kept components reach.
            alpha: Significance level of the limits (0.01 → 99 % limits).
            limits: ``"theoretical"`` (F distribution for T², Jackson–Mudholkar
                for SPE) or ``"empirical"`` (``1−alpha`` quantiles on ``normal_val``).
            normal_val: ``[k, m]`` scaled normal samples for empirical limits.

        Raises:
            ValueError: Bad arguments, or empirical limits without ``normal_val``.
        """
        x = np.asarray(normal_train, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] <= x.shape[1]:
            raise ValueError(f"need [n, m] training samples with n > m, got shape {x.shape}")
        if not 0.0 < variance <= 1.0 or not 0.0 < alpha < 1.0:
            raise ValueError(f"variance must be in (0, 1] and alpha in (0, 1): {variance}, {alpha}")
        if limits not in ("theoretical", "empirical"):
            raise ValueError(f"limits must be 'theoretical' or 'empirical', got {limits!r}")
        n, m = x.shape
        mean = x.mean(axis=0)
        cov = np.cov(x - mean, rowvar=False)
        eigenvalues, vectors = np.linalg.eigh(cov)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.clip(eigenvalues[order], 0.0, None)
        vectors = vectors[:, order]
        ratio = np.cumsum(eigenvalues) / eigenvalues.sum()
        a = int(np.searchsorted(ratio, variance - 1e-12) + 1)
        a = min(a, m - 1)  # keep a residual subspace so SPE is defined
        monitor = cls(mean, vectors[:, :a], eigenvalues, n, np.inf, np.inf, alpha, limits)
        if limits == "theoretical":
            t2_lim = t2_limit(a, n, alpha)
            spe_lim = spe_limit(eigenvalues[a:], alpha)
        else:
            if normal_val is None:
                raise ValueError("empirical limits need normal_val (normal validation samples)")
            t2_val, spe_val = monitor.statistics(normal_val)
            t2_lim = float(np.quantile(t2_val, 1 - alpha))
            spe_lim = float(np.quantile(spe_val, 1 - alpha))
        return cls(mean, vectors[:, :a], eigenvalues, n, t2_lim, spe_lim, alpha, limits)

    def statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T² and SPE of each sample of ``x`` ``[k, m]`` (scaled like the training data)."""
        xc = np.asarray(x, dtype=np.float64) - self.mean
        scores = xc @ self.components
        t2 = np.sum(scores**2 / self.eigenvalues[: self.n_components], axis=1)
        residual = xc - scores @ self.components.T
        return t2, np.sum(residual**2, axis=1)

    def alarms(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean alarms ``(T² > limit, SPE > limit)`` per sample."""
        t2, spe = self.statistics(x)
        return t2 > self.t2_limit, spe > self.spe_limit


def t2_limit(a: int, n: int, alpha: float) -> float:
    """Hotelling T² limit for ``a`` components fitted on ``n`` samples (F approximation)."""
    return float(a * (n - 1) * (n + 1) / (n * (n - a)) * stats.f.ppf(1 - alpha, a, n - a))


def spe_limit(residual_eigenvalues: np.ndarray, alpha: float) -> float:
    """Jackson–Mudholkar SPE (Q) limit from the eigenvalues left out of the model."""
    lam = np.asarray(residual_eigenvalues, dtype=np.float64)
    theta1, theta2, theta3 = (float(np.sum(lam**k)) for k in (1, 2, 3))
    if theta1 <= 0.0:
        return 0.0
    h0 = 1.0 - 2.0 * theta1 * theta3 / (3.0 * theta2**2)
    c = float(stats.norm.ppf(1 - alpha))
    inner = c * np.sqrt(2.0 * theta2 * h0**2) / theta1 + 1.0 + theta2 * h0 * (h0 - 1.0) / theta1**2
    return float(theta1 * inner ** (1.0 / h0))


# -- the evaluation protocol ----------------------------------------------------------------


@dataclass(frozen=True)
class RunScore:
    """Detection results of one monitored run.

    Attributes:
        fault: The run's fault id (0 for a normal run).
        detection_rate: Share of faulty samples (at or after the onset) alarmed;
            NaN for a normal run.
        false_alarm_rate: Share of normal samples (before the onset) alarmed.
        delay_samples: Samples from the onset to the first detection (0: at the
            first faulty sample); None when never detected or normal.
        n_faulty: Faulty samples evaluated.
        n_normal: Normal samples evaluated.
    """

    fault: int
    detection_rate: float
    false_alarm_rate: float
    delay_samples: int | None
    n_faulty: int
    n_normal: int

    @property
    def delay_minutes(self) -> float | None:
        """The detection delay in minutes (one sample every 3 minutes)."""
        return None if self.delay_samples is None else self.delay_samples * SAMPLE_MINUTES


def score_run(
    alarms: np.ndarray,
    index: np.ndarray,
    onset: int,
    fault: int,
    consecutive: int = 1,
) -> RunScore:
    """Score one run's alarms against its onset.

    Args:
        alarms: ``[k]`` booleans, one per evaluated sample (or window).
        index: ``[k]`` the sample each alarm refers to (a window's last sample).
        onset: Index of the first faulty sample (the run's length for a normal run).
        fault: The run's fault id (0 for normal).
        consecutive: Alarms in a row that count as a detection for the delay
            (1 = the first alarm; some studies use 6 to ignore isolated false alarms).

    Returns:
        Detection rate after the onset, false-alarm rate before it, delay.
    """
    alarms = np.asarray(alarms, dtype=bool)
    index = np.asarray(index)
    if alarms.shape != index.shape:
        raise ValueError(f"alarms {alarms.shape} and index {index.shape} differ in shape")
    faulty = index >= onset
    normal = ~faulty
    n_faulty, n_normal = int(faulty.sum()), int(normal.sum())
    detection = float(alarms[faulty].mean()) if n_faulty else float("nan")
    far = float(alarms[normal].mean()) if n_normal else float("nan")
    delay = None
    if n_faulty and fault != 0:
        after = alarms[faulty]
        run = np.convolve(after.astype(np.int64), np.ones(consecutive, dtype=np.int64))
        hits = np.flatnonzero(run[: len(after)] >= consecutive)
        if hits.size:
            # the first sample completing `consecutive` alarms, minus the onset
            delay = int(index[faulty][hits[0]] - onset)
    return RunScore(fault, detection, far, delay, n_faulty, n_normal)


@dataclass(frozen=True)
class Summary:
    """Averages over faults of one method.

    Attributes:
        mean_detection: Mean detection rate over the faults not in ``hard``.
        mean_detection_hard: Mean over the ``hard`` faults (3, 9, 15), reported apart.
        far_normal: False-alarm rate on the normal test run (``d00_te.dat``).
        far_pre_onset: False-alarm rate over the pre-onset parts of the fault test runs.
        mean_delay_samples: Mean delay over detected faults not in ``hard``.
    """

    mean_detection: float
    mean_detection_hard: float
    far_normal: float
    far_pre_onset: float
    mean_delay_samples: float


def score_runs(monitor: PcaMonitor, runs: Mapping[int, Any]) -> dict[str, dict[int, RunScore]]:
    """T² and SPE scores of each test run: ``{"t2": {fault: RunScore}, "spe": {...}}``.

    Args:
        monitor: The fitted monitor.
        runs: Scaled test runs by fault id (``data.Run``: ``data``, ``onset``).
    """
    out: dict[str, dict[int, RunScore]] = {"t2": {}, "spe": {}}
    for fault, run in runs.items():
        t2_alarm, spe_alarm = monitor.alarms(run.data)
        idx = np.arange(len(run.data))
        out["t2"][fault] = score_run(t2_alarm, idx, run.onset, fault)
        out["spe"][fault] = score_run(spe_alarm, idx, run.onset, fault)
    return out


def summarize(scores: Mapping[int, RunScore], hard: Sequence[int] = HARD_FAULTS) -> Summary:
    """Average per-fault scores; ``scores[0]`` is the normal test run when present."""
    faults = [f for f in scores if f != 0]
    easy = [f for f in faults if f not in hard]
    hard_present = [f for f in faults if f in hard]

    def _mean(values: Sequence[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    pre_alarms = sum(scores[f].false_alarm_rate * scores[f].n_normal for f in faults)
    pre_total = sum(scores[f].n_normal for f in faults)
    delays = [float(d) for f in easy if (d := scores[f].delay_samples) is not None]
    return Summary(
        mean_detection=_mean([scores[f].detection_rate for f in easy]),
        mean_detection_hard=_mean([scores[f].detection_rate for f in hard_present]),
        far_normal=scores[0].false_alarm_rate if 0 in scores else float("nan"),
        far_pre_onset=pre_alarms / pre_total if pre_total else float("nan"),
        mean_delay_samples=_mean(delays),
    )
