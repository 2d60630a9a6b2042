"""A synthetic plant in the Braatz file layout, for machines without the TEP data.

**This is NOT the Tennessee Eastman process.** It is a small stochastic toy
written so that ``make demo`` can run end to end where the benchmark files are
absent. Numbers measured on it say nothing about any model on TEP; every place
that uses it must say "synthetic" (the folder carries a ``SYNTHETIC.txt``
marker, see :func:`is_synthetic`).

The toy plant:

- 7 latent process factors, each an AR(1) process (coefficients 0.55..0.9,
  unit stationary variance), the plant's hidden "state";
- 52 sensors, each a random linear mix of one to three factors plus its own
  white sensor noise, then given its own mean (from 0.03 to ~4000) and scale
  (like TEP's mixed units), so that standardising the variables matters;
- 21 fault types of varied kinds and strengths, fixed in kind and size, with
  the sensors and factors they touch drawn from the seed (see :data:`FAULTS`):
  steps, ramps, drifts, sensor-noise increases, oscillations, stuck sensors,
  intermittent offsets, changed sensor-to-factor coupling, changed factor
  dynamics. Faults 3, 9 and 15 are deliberately near-invisible (tiny effects),
  as the real benchmark's 3, 9 and 15 are; the others range from easy to hard.

Files follow the Braatz layout that ``data.py`` reads: ``d00.dat`` (normal,
500 samples, stored transposed as 52 rows x 500 columns), ``dNN.dat`` (480
samples with fault NN established from the first row: it "started" an hour,
20 samples, before the recording), ``d00_te.dat`` and ``dNN_te.dat`` (960
samples, the fault switched on at row 160 of one continuous run). Values are
whitespace-separated ``%.6e``. Everything is a pure function of the seed.

numpy only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MARKER = "SYNTHETIC.txt"
NUM_SENSORS = 52
NUM_LATENT = 7
NUM_FAULTS = 21
TRAIN_ROWS_NORMAL = 500
TRAIN_ROWS_FAULT = 480
TEST_ROWS = 960
TEST_ONSET = 160
#: Samples a training file's fault has been active before its first row (one hour).
TRAIN_FAULT_AGE = 20
#: Samples simulated and dropped before each run so it starts in a steady state.
_BURN_IN = 200
#: The faults the sample reports apart (as TEP's undetectable 3, 9, 15).
HARD_FAULTS = (3, 9, 15)


@dataclass(frozen=True)
class FaultSpec:
    """What one synthetic fault does (its sensors and factor are drawn from the seed).

    Attributes:
        kind: The mechanism (``step``, ``ramp``, ``noise``, ``oscillation``, ``stuck``,
            ``intermittent``, ``mixing``, ``coupling``, ``latent_step``, ``latent_ramp``,
            ``latent_oscillation``, ``latent_variance``).
        size: Strength, in units of the touched sensor's (or latent factor's) normal
            standard deviation; a factor for ``noise``, ``latent_variance`` and
            ``mixing``; the coupling gain for ``coupling``; for ramps, the drift per
            400 samples.
        what: One line for people.
        group: Sensors it touches (0 for the latent faults).
        period: Oscillation period in samples.
    """

    kind: str
    size: float
    what: str
    group: int = 0
    period: float = 0.0


# Strengths are fixed (not drawn) so every seed gives the same easy/hard contrast.
FAULTS: dict[int, FaultSpec] = {
    1: FaultSpec("step", 3.0, "step offset on 6 sensors (3 sd)", group=6),
    2: FaultSpec("step", 1.6, "step offset on 3 sensors (1.6 sd)", group=3),
    3: FaultSpec("step", 0.06, "tiny step on 3 sensors (0.06 sd)", group=3),
    4: FaultSpec("ramp", 4.0, "ramp on 4 sensors (+4 sd per 400 samples)", group=4),
    5: FaultSpec("noise", 4.0, "sensor noise x4 on 8 sensors", group=8),
    6: FaultSpec("latent_step", 5.0, "step of 5 sd in one latent factor"),
    7: FaultSpec("oscillation", 2.0, "oscillation on 5 sensors (2 sd, period 30 samples)", 5, 30.0),
    8: FaultSpec("latent_variance", 2.5, "latent disturbances x2.5 (all factors)"),
    9: FaultSpec("noise", 1.06, "tiny sensor noise increase on 5 sensors (x1.06)", group=5),
    10: FaultSpec("stuck", 1.5, "one sensor stuck at a constant (+1.5 sd)", group=1),
    11: FaultSpec("mixing", -1.0, "changed sensor coupling: 6 sensors' loadings reversed", 6),
    12: FaultSpec("coupling", 1.5, "changed latent coupling: one factor drives another (1.5)"),
    13: FaultSpec("latent_ramp", 5.0, "slow drift of one latent factor (+5 sd per 400 samples)"),
    14: FaultSpec(
        "latent_oscillation", 6.0, "oscillation in one latent factor (6 sd, period 12)", 0, 12.0
    ),
    15: FaultSpec("oscillation", 0.06, "tiny oscillation on 4 sensors (0.06 sd)", 4, 25.0),
    16: FaultSpec(
        "intermittent", 3.0, "intermittent offset on 4 sensors (3 sd, on ~2/3 of the time)", 4
    ),
    17: FaultSpec("noise", 1.8, "sensor noise x1.8 on 4 sensors", group=4),
    18: FaultSpec("ramp", 8.0, "fast ramp on 10 sensors (+8 sd per 400 samples)", group=10),
    19: FaultSpec("stuck", 1.5, "4 sensors stuck at +1.5 sd", group=4),
    20: FaultSpec("step", 2.5, "bias on one sensor (2.5 sd)", group=1),
    21: FaultSpec("ramp", 1.5, "slow drift of one sensor (+1.5 sd per 400 samples)", group=1),
}


@dataclass(frozen=True)
class _Fault:
    """One fault, resolved against a plant: which sensors and factors it touches."""

    fault: int
    kind: str
    size: float
    sensors: np.ndarray
    factor: int
    other: int
    period: float
    phase: float


@dataclass(frozen=True)
class _Plant:
    """The toy plant's parameters (all drawn from the seed)."""

    phi: np.ndarray  # [k] AR(1) coefficients of the latent factors
    mixing: np.ndarray  # [52, k] sensor loadings on the factors
    noise: np.ndarray  # [52] sensor noise sd (in the sensor's normalised units)
    mean: np.ndarray  # [52] engineering-unit offsets
    scale: np.ndarray  # [52] engineering-unit scales
    sd: np.ndarray  # [52] normal sd of each normalised sensor signal
    faults: dict[int, _Fault] = field(default_factory=dict)


def _make_plant(seed: int) -> _Plant:
    rng = np.random.default_rng([seed, 7_000])
    k = NUM_LATENT
    phi = rng.uniform(0.55, 0.9, k)
    mixing = np.zeros((NUM_SENSORS, k))
    for i in range(NUM_SENSORS):
        # Every factor is seen by several sensors (so PCA finds it), each sensor by 1-3 factors.
        main = i % k
        mixing[i, main] = rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.3)
        for j in rng.choice(k, size=int(rng.integers(0, 3)), replace=False):
            if j != main:
                mixing[i, j] = rng.normal(0.0, 0.5)
    noise = rng.uniform(0.2, 0.4, NUM_SENSORS)
    mean = 10.0 ** rng.uniform(-1.5, 3.6, NUM_SENSORS)
    scale = mean * 10.0 ** rng.uniform(-3.0, -1.0, NUM_SENSORS)
    sd = np.sqrt((mixing**2).sum(axis=1) + noise**2)
    faults: dict[int, _Fault] = {}
    for fault, spec in FAULTS.items():
        sensors = np.sort(rng.choice(NUM_SENSORS, size=spec.group, replace=False))
        factor, other = (int(v) for v in rng.choice(k, size=2, replace=False))
        faults[fault] = _Fault(
            fault=fault,
            kind=spec.kind,
            size=spec.size,
            sensors=sensors.astype(np.int64),
            factor=factor,
            other=other,
            period=spec.period,
            phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        )
    return _Plant(phi, mixing, noise, mean, scale, sd, faults)


def _simulate(
    plant: _Plant, fault: _Fault | None, rows: int, onset: int, age: int, rng: np.random.Generator
) -> np.ndarray:
    """One run ``[rows, 52]`` in engineering units; the fault is active from row ``onset``.

    ``age`` is how long the fault has been active at ``onset`` (ramps and drifts
    have grown that far already), 0 for a fault switched on inside the run.
    """
    k = NUM_LATENT
    total = _BURN_IN + rows
    start = _BURN_IN + onset  # first faulty step of the whole simulation
    active = np.zeros(total, dtype=bool)
    if fault is not None:
        active[start:] = True
    # time since the fault began, in samples (0 before it)
    tau = np.where(active, np.arange(total) - start + age, 0).astype(np.float64)

    innov = rng.standard_normal((total, k)) * np.sqrt(1.0 - plant.phi**2)
    sensor_noise = rng.standard_normal((total, NUM_SENSORS)) * plant.noise
    kind = fault.kind if fault is not None else ""

    # -- latent dynamics ------------------------------------------------------------------
    if kind == "latent_variance":
        assert fault is not None
        innov[active] *= fault.size
    a_normal = np.diag(plant.phi)
    a_fault = a_normal.copy()
    if kind == "coupling":
        assert fault is not None
        a_fault[fault.other, fault.factor] = fault.size
        # keep the driven factor stable and its own variance near 1 so the change is
        # mostly in the correlation between factors, not a plain variance jump
        a_fault[fault.other, fault.other] *= 0.5
    z = np.zeros((total, k))
    state = rng.standard_normal(k)
    for t in range(total):
        state = (a_fault if active[t] else a_normal) @ state + innov[t]
        z[t] = state
    if kind == "latent_step":
        assert fault is not None
        z[active, fault.factor] += fault.size
    elif kind == "latent_ramp":
        assert fault is not None
        z[:, fault.factor] += fault.size * tau / 400.0
    elif kind == "latent_oscillation":
        assert fault is not None
        wave = fault.size * np.sin(2.0 * np.pi * tau / fault.period + fault.phase)
        z[active, fault.factor] += wave[active]

    # -- sensors --------------------------------------------------------------------------
    if kind == "noise":
        assert fault is not None
        sensor_noise[np.ix_(active, fault.sensors)] *= fault.size
    signal = z @ plant.mixing.T
    if kind == "mixing":
        assert fault is not None
        changed = plant.mixing.copy()
        changed[fault.sensors] *= fault.size
        signal[active] = z[active] @ changed.T
    s = signal + sensor_noise
    if fault is not None and fault.sensors.size:
        g, sd = fault.sensors, plant.sd[fault.sensors]
        rows_on = np.flatnonzero(active)
        if kind == "step":
            s[np.ix_(rows_on, g)] += fault.size * sd
        elif kind == "ramp":
            s[np.ix_(rows_on, g)] += np.outer(tau[rows_on] / 400.0, fault.size * sd)
        elif kind == "oscillation":
            wave = fault.size * np.sin(2.0 * np.pi * tau[rows_on] / fault.period + fault.phase)
            s[np.ix_(rows_on, g)] += np.outer(wave, sd)
        elif kind == "stuck":
            s[np.ix_(rows_on, g)] = fault.size * sd
        elif kind == "intermittent":
            # on/off segments of random length (on 10..50, off 5..25 samples), as a
            # valve that sticks at times
            on = np.zeros(total, dtype=bool)
            t, state_on = 0, bool(rng.integers(0, 2))
            while t < total:
                length = int(rng.integers(10, 51) if state_on else rng.integers(5, 26))
                on[t : t + length] = state_on
                t, state_on = t + length, not state_on
            hit = np.flatnonzero(active & on)
            s[np.ix_(hit, g)] += fault.size * sd
    return (plant.mean + plant.scale * s[_BURN_IN:]).astype(np.float64)


_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
_FIELD = 14  # " -1.234567e+03": a separator, the sign (or a space), 12 characters of %.6e


def _format_e6(matrix: np.ndarray) -> bytes:
    """``matrix`` as lines of ``%.6e`` fields, each padded to 14 characters.

    Vectorised digit by digit: Python's per-value ``%`` formatting took two thirds
    of a second for a whole plant (1.6 million numbers), this a tenth of that.
    The text is what ``"%.6e"`` gives (a last digit may differ where the value
    sits within ~1e-10 of a rounding tie), plus the padding the Braatz files
    also have.
    """
    rows, cols = matrix.shape
    x = matrix.ravel().astype(np.float64)
    a = np.abs(x)
    nonzero = a > 0
    exp = np.zeros(x.size, dtype=np.int64)
    exp[nonzero] = np.floor(np.log10(a[nonzero])).astype(np.int64)
    mant = np.rint(a / 10.0**exp * 1e6).astype(np.int64)  # 7 significant digits
    # log10 near a power of ten can land one off either way: renormalise
    over = mant >= 10_000_000
    exp[over] += 1
    under = nonzero & (mant < 1_000_000)
    exp[under] -= 1
    fix = over | under
    mant[fix] = np.rint(a[fix] / 10.0 ** exp[fix] * 1e6).astype(np.int64)
    if np.abs(exp).max(initial=0) > 99:
        raise ValueError("values beyond 1e±99 do not fit the two-digit exponent")
    out = np.full((x.size, _FIELD), ord(" "), dtype=np.uint8)
    out[x < 0, 1] = ord("-")
    for k in range(7):  # digit k of the mantissa goes to column 2 (k=0) or 4..9
        out[:, 2 if k == 0 else 3 + k] = _DIGITS[(mant // 10 ** (6 - k)) % 10]
    out[:, 3] = ord(".")
    out[:, 10] = ord("e")
    out[:, 11] = np.where(exp < 0, ord("-"), ord("+"))
    out[:, 12] = _DIGITS[np.abs(exp) // 10]
    out[:, 13] = _DIGITS[np.abs(exp) % 10]
    text = np.full((rows, cols * _FIELD + 1), ord("\n"), dtype=np.uint8)
    text[:, :-1] = out.reshape(rows, cols * _FIELD)
    return text.tobytes()


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    path.write_bytes(_format_e6(matrix))


def _marker_text(seed: int) -> str:
    faults = "\n".join(
        f"  {f:2d}{'*' if f in HARD_FAULTS else ' '} {spec.what}" for f, spec in FAULTS.items()
    )
    return (
        "SYNTHETIC DATA - this is NOT the Tennessee Eastman process.\n\n"
        "Written by samples/tep/synthetic.py (seed "
        f"{seed}) so the TEP sample can run where the Braatz\n"
        "benchmark files are absent. Same file layout as the benchmark (d00.dat stored\n"
        "transposed, dNN.dat faulty from the first row, dNN_te.dat faulty from row 161),\n"
        "but the plant is a toy: 7 latent AR(1) factors mixed into 52 sensors plus noise.\n"
        "Results measured on these files say nothing about any model on TEP.\n\n"
        "Faults (* = deliberately near-invisible, reported apart like TEP's 3, 9, 15):\n"
        f"{faults}\n"
    )


def write_plant(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a complete synthetic data set in the Braatz layout into ``folder``.

    Writes ``d00.dat`` (transposed, 52 x 500), ``d01.dat`` .. ``d21.dat``
    (480 x 52, faulty throughout), ``d00_te.dat`` and ``d01_te.dat`` ..
    ``d21_te.dat`` (960 x 52, faulty from row 160), and the ``SYNTHETIC.txt``
    marker. Existing files of those names are overwritten; nothing else in
    the folder is touched.

    Args:
        folder: Where to write (created if missing).
        seed: Seed of the plant, its faults and every run: the same seed
            gives byte-identical files.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plant = _make_plant(seed)
    for fault in range(NUM_FAULTS + 1):
        spec = plant.faults.get(fault)
        for split, code in (("train", 0), ("test", 1)):
            rng = np.random.default_rng([seed, fault, code])
            if split == "train":
                rows = TRAIN_ROWS_NORMAL if fault == 0 else TRAIN_ROWS_FAULT
                run = _simulate(plant, spec, rows, 0, TRAIN_FAULT_AGE, rng)
            else:
                run = _simulate(plant, spec, TEST_ROWS, TEST_ONSET, 0, rng)
            name = f"d{fault:02d}{'_te' if split == 'test' else ''}.dat"
            # d00.dat is stored transposed in the benchmark; keep that quirk so the
            # loader's shape-based detection is exercised on synthetic data too.
            _write_matrix(folder / name, run.T if (fault, split) == (0, "train") else run)
    (folder / MARKER).write_text(_marker_text(seed), encoding="utf-8")
    return folder


def is_synthetic(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a synthetic plant (it has the ``SYNTHETIC.txt`` marker)."""
    return (Path(folder) / MARKER).is_file()


def fault_descriptions() -> dict[int, str]:
    """``{fault: one-line description}`` of the synthetic faults (for reports)."""
    return {f: spec.what for f, spec in FAULTS.items()}
