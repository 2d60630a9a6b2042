"""The TEP sample's foundations: Braatz file loader, windows, scaling, PCA monitor, GNN model.

Needs the shared TEP files (``../shared/datasets/tep`` beside the repository)
for the data tests; each test copies only the files it reads into a temporary
folder (the shared folder is read-only). The model tests run on random data.
"""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
from sample_scripts import tep_module

REPO = Path(__file__).resolve().parents[2]
TEP_DIR = REPO / "samples" / "tep"
TEP_DATA = REPO.parent / "shared" / "datasets" / "tep"


data = tep_module("data")
pca = tep_module("pca")

needs_tep = pytest.mark.skipif(
    not (TEP_DATA / "d00.dat").is_file(),
    reason=f"TEP data not found at {TEP_DATA} (shared datasets are absent here)",
)


def _copy(tmp: Path, *names: str) -> Path:
    for name in names:
        shutil.copy(TEP_DATA / name, tmp / name)
    return tmp


# -- loader --------------------------------------------------------------------------------


@needs_tep
def test_d00_transposition_is_detected(tmp_path: Path) -> None:
    _copy(tmp_path, "d00.dat", "d01.dat", "d01_te.dat")
    stored = np.loadtxt(tmp_path / "d00.dat")
    assert stored.shape == (52, 500)  # the file really is transposed
    normal = data.load_run(tmp_path, 0, "train")
    assert normal.data.shape == (500, 52)
    np.testing.assert_array_equal(normal.data, stored.T)
    # Detection by shape, not by name: a d00.dat stored the usual way reads the same.
    np.savetxt(tmp_path / "d00.dat", stored.T)
    np.testing.assert_allclose(data.load_run(tmp_path, 0, "train").data, stored.T)
    fault = data.load_run(tmp_path, 1, "train")
    assert fault.data.shape == (480, 52) and fault.onset == 0
    assert set(fault.labels) == {1}
    test = data.load_run(tmp_path, 1, "test")
    assert test.data.shape == (960, 52) and test.onset == 160
    assert (test.labels[:160] == 0).all() and (test.labels[160:] == 1).all()


def test_missing_folder_names_path_and_env_var(tmp_path: Path) -> None:
    with pytest.raises(data.TepNotFoundError) as info:
        data.load_run(tmp_path / "nowhere", 0, "train")
    assert str(tmp_path / "nowhere") in str(info.value)
    assert data.ENV_VAR in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(data.TepNotFoundError) as info:
        data.load_run(tmp_path, 5, "test")
    assert info.value.path == tmp_path / "d05_te.dat"
    assert "d05_te.dat" in str(info.value)


@needs_tep
def test_truncated_file_is_refused(tmp_path: Path) -> None:
    lines = (TEP_DATA / "d02_te.dat").read_text().splitlines()
    (tmp_path / "d02_te.dat").write_text("\n".join(lines[:700]) + "\n")
    with pytest.raises(data.TepDataError, match=r"short: expected 960 samples, got 700") as info:
        data.load_run(tmp_path, 2, "test")
    assert info.value.path == tmp_path / "d02_te.dat"


@needs_tep
def test_file_cut_mid_line_is_refused(tmp_path: Path) -> None:
    lines = (TEP_DATA / "d02.dat").read_text().splitlines()
    partial = "\n".join(lines[:240]) + "\n" + lines[240][:40]  # a write interrupted mid-line
    (tmp_path / "d02.dat").write_text(partial)
    with pytest.raises(data.TepDataError, match=r"d02\.dat: line 241 has 3 values, line 1 has 52"):
        data.load_run(tmp_path, 2, "train")


@needs_tep
def test_non_numeric_value_is_located(tmp_path: Path) -> None:
    lines = (TEP_DATA / "d03.dat").read_text().splitlines()
    tokens = lines[9].split()
    tokens[4] = "abc"
    lines[9] = "  ".join(tokens)
    (tmp_path / "d03.dat").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        data.TepDataError, match=r"d03\.dat: line 10, column 5: 'abc' is not a number"
    ):
        data.load_run(tmp_path, 3, "train")


@needs_tep
def test_nan_is_refused(tmp_path: Path) -> None:
    arr = np.loadtxt(TEP_DATA / "d04_te.dat")
    arr[300, 7] = np.nan
    np.savetxt(tmp_path / "d04_te.dat", arr)
    with pytest.raises(
        data.TepDataError,
        match=r"d04_te\.dat: 1 non-finite values \(first: sample 301, variable 8\)",
    ):
        data.load_run(tmp_path, 4, "test")


@needs_tep
def test_wrong_column_count_is_refused(tmp_path: Path) -> None:
    arr = np.loadtxt(TEP_DATA / "d04_te.dat")
    np.savetxt(tmp_path / "d04_te.dat", arr[:, :50])
    with pytest.raises(data.TepDataError, match=r"expected 52 values per sample .* 960x50"):
        data.load_run(tmp_path, 4, "test")


def test_empty_and_binary_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d00_te.dat").write_text("\n \n")
    with pytest.raises(data.TepDataError, match="empty file"):
        data.load_run(tmp_path, 0, "test")
    (tmp_path / "d00_te.dat").write_bytes(b"\x89PNG\xff\x00")
    with pytest.raises(data.TepDataError, match="not a text file"):
        data.load_run(tmp_path, 0, "test")


@needs_tep
def test_data_folder_is_only_read(tmp_path: Path) -> None:
    _copy(tmp_path, "d00.dat", "d01.dat", "d00_te.dat", "d01_te.dat")
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    tmp_path.chmod(0o555)  # a read-only folder, like shared/ in CI
    try:
        splits = data.load_splits(tmp_path, faults=[1])
    finally:
        tmp_path.chmod(0o755)
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    assert set(splits.test) == {0, 1}


# -- windows, splits, scaling --------------------------------------------------------------


def _synthetic_run(fault: int, split: str, rows: int) -> object:
    rng = np.random.default_rng(fault)
    return data.Run(
        fault, split, rng.standard_normal((rows, 52)), data.run_onset(fault, split, rows)
    )


def test_window_labels_follow_the_onset() -> None:
    run = _synthetic_run(7, "test", 960)
    w = data.make_windows(run, window=20, stride=1)
    assert w.x.shape == (941, 52, 20) and w.x.dtype == np.float32
    # window i covers samples i..i+19 (sensors first)
    np.testing.assert_allclose(w.x[5], run.data[5:25].T.astype(np.float32))
    assert w.end[0] == 19 and w.end[-1] == 959
    # faulty exactly when the last sample is at or after sample index 160
    assert (w.y[w.end < 160] == 0).all() and (w.y[w.end >= 160] == 7).all()
    assert int((w.y == 7).sum()) == 800  # one window per post-onset sample
    strided = data.make_windows(run, window=10, stride=7)
    assert strided.end.tolist() == list(range(9, 960, 7))
    assert (strided.y == np.where(strided.end >= 160, 7, 0)).all()


def test_train_validation_split_is_contiguous_in_time() -> None:
    run = _synthetic_run(2, "train", 480)
    train, val = data.split_run(run, 0.2)
    assert len(train.data) == 384 and len(val.data) == 96
    assert val.start == 384 and (val.labels == 2).all()
    wt, wv = data.make_windows(train, 20), data.make_windows(val, 20)
    # no validation window shares a sample with a training window
    assert wt.end.max() < wv.end.min() - 19 + 1
    normal_test = _synthetic_run(0, "test", 960)
    first, second = data.split_run(normal_test, 0.5)
    assert first.onset == 480 and second.onset == 480  # normal: no onset inside either part


def test_scaler_accepts_normal_training_data_only() -> None:
    normal = _synthetic_run(0, "train", 500)
    scaler = data.Scaler.fit(normal)
    scaled = scaler.apply(normal).data
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(0), 1, atol=1e-4)
    for other in (_synthetic_run(1, "train", 480), _synthetic_run(0, "test", 960)):
        with pytest.raises(ValueError, match="normal training data only"):
            data.Scaler.fit(other)


@needs_tep
def test_splits_scale_with_d00_train_segment_only(tmp_path: Path) -> None:
    _copy(tmp_path, "d00.dat", "d01.dat", "d00_te.dat", "d01_te.dat")
    splits = data.load_splits(tmp_path, faults=[1], val_fraction=0.2)
    raw = data.load_run(tmp_path, 0, "train").data
    np.testing.assert_allclose(splits.scaler.mean, raw[:400].mean(0))
    np.testing.assert_allclose(splits.scaler.std, raw[:400].std(0))
    assert {f: len(r.data) for f, r in splits.train.items()} == {0: 400, 1: 384}
    assert {f: len(r.data) for f, r in splits.val.items()} == {0: 100, 1: 96}
    w = splits.windows("test", 20)
    assert len(w) == 2 * 941 and set(np.unique(w.y)) == {0, 1}


# -- PCA monitor ---------------------------------------------------------------------------


def test_pca_fit_takes_normal_training_data_only() -> None:
    params = list(inspect.signature(pca.PcaMonitor.fit).parameters)
    assert params == ["normal_train", "variance", "alpha", "limits", "normal_val"]
    with pytest.raises(ValueError, match="normal_val"):
        pca.PcaMonitor.fit(np.random.default_rng(0).standard_normal((200, 5)), limits="empirical")


def test_pca_limits_on_gaussian_data_hold_their_level() -> None:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((8, 8))
    train = rng.standard_normal((2000, 8)) @ mix
    fresh = rng.standard_normal((20000, 8)) @ mix
    monitor = pca.PcaMonitor.fit(train, variance=0.8, alpha=0.01)
    assert 1 <= monitor.n_components < 8
    t2, spe = monitor.alarms(fresh)
    assert 0.005 <= t2.mean() <= 0.02 and 0.005 <= spe.mean() <= 0.02
    empirical = pca.PcaMonitor.fit(train, variance=0.8, limits="empirical", normal_val=fresh[:5000])
    assert abs(empirical.alarms(fresh[5000:])[0].mean() - 0.01) < 0.005


def test_score_run_rates_and_delay() -> None:
    idx = np.arange(100)
    alarms = np.zeros(100, bool)
    alarms[[3, 50, 52, 53, 54, 70]] = True
    s = pca.score_run(alarms, idx, onset=50, fault=4)
    assert s.false_alarm_rate == pytest.approx(1 / 50)
    assert s.detection_rate == pytest.approx(5 / 50)
    assert s.delay_samples == 0 and s.delay_minutes == 0.0
    s3 = pca.score_run(alarms, idx, onset=50, fault=4, consecutive=3)
    assert s3.delay_samples == 4 and s3.delay_minutes == 12.0  # 52,53,54 complete at 54
    normal = pca.score_run(alarms, idx, onset=100, fault=0)
    assert normal.false_alarm_rate == pytest.approx(0.06) and normal.delay_samples is None


@needs_tep
def test_pca_on_real_data_detects_fault_1_with_few_false_alarms(tmp_path: Path) -> None:
    _copy(tmp_path, "d00.dat", "d01.dat", "d04.dat", "d00_te.dat", "d01_te.dat", "d04_te.dat")
    splits = data.load_splits(tmp_path, faults=[1, 4])
    monitor = pca.PcaMonitor.fit(splits.train[0].data, variance=0.9)
    idx = np.arange(960)
    t2 = {
        f: pca.score_run(monitor.alarms(r.data)[0], idx, r.onset, f) for f, r in splits.test.items()
    }
    spe = {
        f: pca.score_run(monitor.alarms(r.data)[1], idx, r.onset, f) for f, r in splits.test.items()
    }
    assert t2[0].false_alarm_rate <= 0.05  # nominal 1 %
    assert t2[1].detection_rate >= 0.9 and t2[1].delay_samples is not None
    assert t2[1].delay_samples <= 10
    assert spe[4].detection_rate >= 0.9  # fault 4 shows in the residual (Chiang et al.)
    summary = pca.summarize(t2)
    assert summary.far_normal == t2[0].false_alarm_rate
    assert summary.mean_detection == pytest.approx(
        (t2[1].detection_rate + t2[4].detection_rate) / 2
    )


# -- model ---------------------------------------------------------------------------------


torch = pytest.importorskip("torch")
gnn = tep_module("model")


def test_model_shapes_and_sparse_adjacency() -> None:
    torch.manual_seed(0)
    model = gnn.AdaptiveGraphGNN(window=20, top_k=10, embed_dim=12).eval()
    logits, score = model(torch.randn(5, 52, 20))
    assert logits.shape == (5, 22) and score.shape == (5,)
    # the fault margin: best fault logit minus the normal logit (log-odds, unbounded)
    expected = logits[:, 1:].max(1).values - logits[:, 0]
    np.testing.assert_allclose(score.detach(), expected.detach(), atol=1e-6)
    adj = model.adjacency()
    assert adj.shape == (52, 52)
    assert ((adj > 0).sum(1) == 10).all()
    np.testing.assert_allclose(adj.sum(1), np.ones(52), atol=1e-6)


def test_static_copy_folds_the_adjacency() -> None:
    torch.manual_seed(1)
    model = gnn.AdaptiveGraphGNN(top_k=8).eval()
    static = model.static()
    assert static.fixed_adjacency is not None and model.fixed_adjacency is None
    x = torch.randn(3, 52, 20)
    with torch.no_grad():
        for a, b in zip(model(x), static(x), strict=True):
            torch.testing.assert_close(a, b)
        static.e1.add_(1.0)  # the folded copy no longer reads the embeddings for A
        torch.testing.assert_close(static.adjacency(), model.adjacency())


def test_short_training_reduces_the_loss() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 240)
    x = rng.standard_normal((240, 52, 20)).astype(np.float32)
    x[:, :5, :] += y[:, None, None] * 1.5  # class-dependent shift on a few sensors
    model = gnn.AdaptiveGraphGNN(hidden=16)
    report = gnn.train(model, x, y, x[:60], y[:60], epochs=4, batch_size=32, seed=0)
    assert report.losses[-1] < 0.7 * report.losses[0], report.losses
    assert report.val_losses and report.best_epoch >= 1 and not model.training
    weights = gnn.class_weights(np.array([0, 0, 0, 1]), classes=3)
    np.testing.assert_allclose(weights.numpy(), [2 / 3, 2.0, 0.0])
    threshold = gnn.score_threshold(np.linspace(0, 1, 101), 0.99)
    assert threshold == pytest.approx(0.99)
    assert gnn.score_threshold(np.array([0.3, 2.5, 1.0])) == 2.5  # default: the maximum


def test_alarm_states_raise_and_clear_after_consecutive_windows() -> None:
    scores = np.array([0, 5, 5, 0, 5, 5, 5, 0, 5, 0, 0, 0, 5], dtype=float)
    states = gnn.alarm_states(scores, threshold=1.0, consecutive=3)
    # raised on the 3rd abnormal window in a row; isolated dips do not clear it;
    # cleared on the 3rd normal window in a row
    assert states.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert gnn.alarm_states(scores, 1.0, 1).tolist() == (scores > 1.0).tolist()
    with pytest.raises(ValueError, match="consecutive"):
        gnn.alarm_states(scores, 1.0, 0)


def test_raw_sensor_wrapper_applies_the_plant_scaler() -> None:
    torch.manual_seed(2)
    model = gnn.AdaptiveGraphGNN().eval()
    mean, std = np.linspace(10, 60, 52), np.linspace(0.5, 3, 52)
    wrapped = gnn.RawSensors(model.static(), mean, std)
    z = torch.randn(4, 52, 20)
    x_raw = z * torch.tensor(std, dtype=torch.float32).view(1, -1, 1) + torch.tensor(
        mean, dtype=torch.float32
    ).view(1, -1, 1)
    with torch.no_grad():
        for a, b in zip(wrapped(x_raw), model(z), strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="static"):
        gnn.RawSensors(model, mean, std)
