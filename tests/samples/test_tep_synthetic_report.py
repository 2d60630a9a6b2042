"""The TEP sample's synthetic plant (for machines without the Braatz files) and its report.

The synthetic files are read by the real loader and scored by the real PCA
monitor: the faults must be as (in)visible as the generator claims. The plots
are read back as PNGs and the report's links are followed on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sample_scripts import tep_module

REPO = Path(__file__).resolve().parents[2]
TEP_DIR = REPO / "samples" / "tep"
TEP_DATA = REPO.parent / "shared" / "datasets" / "tep"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


data = tep_module("data")
pca = tep_module("pca")
synthetic = tep_module("synthetic")
report = tep_module("report")

DETECTABLE = [f for f in range(1, 22) if f not in (3, 9, 15)]


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic.write_plant(tmp_path_factory.mktemp("plant") / "tep", seed=0)


@pytest.fixture(scope="module")
def pca_scores(plant: Path) -> dict[str, dict[int, object]]:
    """PCA T² and SPE scores of every synthetic test run (limits from normal training data)."""
    splits = data.load_splits(plant)
    monitor = pca.PcaMonitor.fit(splits.train[0].data, variance=0.9)
    scores = pca.score_runs(monitor, splits.test)
    return {"PCA T²": scores["t2"], "PCA SPE": scores["spe"]}


# -- the synthetic plant -----------------------------------------------------------------


def test_synthetic_plant_has_the_braatz_layout(plant: Path) -> None:
    names = sorted(p.name for p in plant.iterdir())
    expected = [f"d{f:02d}{s}.dat" for f in range(22) for s in ("", "_te")]
    assert names == sorted([*expected, "SYNTHETIC.txt"])
    assert np.loadtxt(plant / "d00.dat").shape == (52, 500)  # stored transposed, like Braatz
    assert np.loadtxt(plant / "d07.dat").shape == (480, 52)
    first = (plant / "d07_te.dat").read_text().splitlines()[0].split()
    assert len(first) == 52 and re.fullmatch(r"-?\d\.\d{6}e[+-]\d\d", first[0])

    splits = data.load_splits(plant)
    assert splits.train[0].data.shape == (400, 52) and splits.val[0].data.shape == (100, 52)
    assert splits.train[5].data.shape == (384, 52) and splits.train[5].onset == 0
    assert splits.test[5].data.shape == (960, 52) and splits.test[5].onset == 160
    assert splits.test[0].onset == 960
    # different means and scales per sensor, so scaling matters
    raw = data.load_run(plant, 0, "train").data
    assert raw.mean(axis=0).max() / raw.mean(axis=0).min() > 100
    assert raw.std(axis=0).max() / raw.std(axis=0).min() > 100
    # correlated sensors: a few principal components carry most of the variance
    eig = np.linalg.eigvalsh(np.corrcoef(raw, rowvar=False))[::-1]
    assert eig[:7].sum() / eig.sum() > 0.7

    assert synthetic.is_synthetic(plant)
    marker = (plant / "SYNTHETIC.txt").read_text()
    assert "NOT the Tennessee Eastman process" in marker


def test_same_seed_same_files_other_seed_other_files(plant: Path, tmp_path: Path) -> None:
    again = synthetic.write_plant(tmp_path / "again", seed=0)
    for name in ("d00.dat", "d04.dat", "d12_te.dat", "d21_te.dat", "SYNTHETIC.txt"):
        assert (again / name).read_bytes() == (plant / name).read_bytes(), name
    other = synthetic.write_plant(tmp_path / "other", seed=1)
    for name in ("d00.dat", "d04.dat", "d12_te.dat"):
        assert (other / name).read_bytes() != (plant / name).read_bytes(), name


def test_is_synthetic_only_with_the_marker(tmp_path: Path) -> None:
    assert not synthetic.is_synthetic(tmp_path)
    assert not synthetic.is_synthetic(tmp_path / "nowhere")
    if (TEP_DATA / "d00.dat").is_file():
        assert not synthetic.is_synthetic(TEP_DATA)


def test_synthetic_faults_are_as_visible_as_claimed(
    pca_scores: dict[str, dict[int, object]],
) -> None:
    t2, spe = pca_scores["PCA T²"], pca_scores["PCA SPE"]
    best = {f: max(t2[f].detection_rate, spe[f].detection_rate) for f in range(1, 22)}
    detected = [f for f in DETECTABLE if best[f] >= 0.5]
    assert len(detected) >= 12, {f: round(best[f], 3) for f in DETECTABLE}
    for f in (3, 9, 15):  # the near-invisible ones, as TEP's 3, 9, 15
        assert best[f] < 0.2, (f, best[f])
    # contrast for the plots: some faults are easy, some detectable ones stay hard
    assert max(best[f] for f in DETECTABLE) > 0.95
    assert min(best[f] for f in DETECTABLE) < 0.5
    assert t2[0].false_alarm_rate <= 0.05 and spe[0].false_alarm_rate <= 0.05


def test_training_files_are_faulty_from_the_first_row(plant: Path) -> None:
    splits = data.load_splits(plant, faults=(1, 11))
    monitor = pca.PcaMonitor.fit(splits.train[0].data, variance=0.9)
    for fault in (1, 11):  # a step and a changed coupling: both SPE-visible at once
        spe = monitor.alarms(splits.train[fault].data)[1]
        assert spe[:20].mean() >= 0.9 and spe.mean() >= 0.9, (fault, spe[:20].mean(), spe.mean())
    assert monitor.alarms(splits.val[0].data)[1].mean() <= 0.05


# -- plots and report --------------------------------------------------------------------


def _score(fault: int, dr: float, far: float, delay: int | None) -> object:
    if fault == 0:
        return pca.RunScore(0, float("nan"), far, None, 0, 960)
    return pca.RunScore(fault, dr, far, delay, 800, 160)


def _hand_scores() -> dict[str, dict[int, object]]:
    gnn = {0: _score(0, 0, 0.025, None)}
    t2 = {0: _score(0, 0, 0.015, None)}
    for f in range(1, 22):
        gnn[f] = _score(f, 0.875 if f == 1 else 0.9, 0.0, 4 if f != 3 else None)
        t2[f] = _score(f, 0.5 if f != 3 else 0.0, 0.015, 10 if f != 3 else None)
    return {"GNN INT8 OpenVINO": gnn, "PCA T²": t2}


def _assert_png(path: Path, min_height: int = 300) -> None:
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.shape[1] == 1200 and pixels.shape[0] >= min_height, pixels.shape
    assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_plots_are_pngs_and_leave_no_figures(
    pca_scores: dict[str, dict[int, object]], tmp_path: Path
) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    scores = {**pca_scores, **_hand_scores()}
    det = report.plot_detection(scores, tmp_path / "det.png", "detection")
    delay = report.plot_delay(scores, tmp_path / "sub" / "delay.png", "delay")
    rng = np.random.default_rng(0)
    traces = {
        f: report.Trace(
            fault=f,
            t=np.arange(19, 960),
            score=rng.gamma(2.0, 1.0, 941) + (np.arange(19, 960) >= 160) * 10 * f,
            threshold=6.0,
            onset=160 if f else None,
            alerts=[200, 400] if f else [],
            label="GNN score",
        )
        for f in (0, 1, 6)
    }
    tr = report.plot_traces(traces, tmp_path / "traces.png", "traces")
    for path in (det, delay, tr):
        _assert_png(path)
    assert plt.get_fignums() == before == []

    too_many = {f"m{i}": pca_scores["PCA T²"] for i in range(7)}
    with pytest.raises(ValueError, match="at most 6"):
        report.plot_detection(too_many, tmp_path / "x.png", "x")
    assert not (tmp_path / "x.png").exists()


def test_method_table_shows_the_scores() -> None:
    scores = _hand_scores()
    summaries = {m: pca.summarize(s) for m, s in scores.items()}
    table = report.method_table(scores, summaries)
    assert table.columns == ["fault (DR %)", "GNN INT8 OpenVINO", "PCA T²"]
    labels = [row[0] for row in table.rows]
    assert labels[:21] == [f"{f}*" if f in (3, 9, 15) else str(f) for f in range(1, 22)]
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["1"] == ["87.5", "50.0"]
    assert rows["3*"] == ["90.0", "0.0"]
    # mean over the 18 faults other than 3, 9, 15: (87.5 + 17 * 90) / 18
    assert rows["avg DR excl. 3, 9, 15"] == ["89.9", "50.0"]
    assert rows["avg DR 3, 9, 15"] == ["90.0", "33.3"]
    assert rows["FAR d00_te"] == ["2.5", "1.5"]
    assert rows["FAR pre-onset"] == ["0.0", "1.5"]
    assert rows["mean delay (min)"] == ["12.0", "30.0"]
    with pytest.raises(ValueError, match="no summary for PCA T²"):
        report.method_table(scores, {"GNN INT8 OpenVINO": summaries["GNN INT8 OpenVINO"]})


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_write_report_banner_table_and_links(tmp_path: Path) -> None:
    scores = _hand_scores()
    summaries = {m: pca.summarize(s) for m, s in scores.items()}
    out = tmp_path / "report"
    det = report.plot_detection(scores, out / "plots" / "detection.png", "detection")
    delay = report.plot_delay(scores, tmp_path / "elsewhere" / "delay.png", "delay")
    sections = [
        report.Section("Detection", "Rates per fault.\n\n- **bold** item", None, [det]),
        report.Section(
            "Comparison",
            "One table.",
            report.method_table(scores, summaries),
            [Path("plots/detection.png"), delay],
        ),
    ]
    md_path = report.write_report(out, title="TEP demo", synthetic=True, sections=sections)
    assert md_path == out / "report.md"
    text = md_path.read_text(encoding="utf-8")
    assert report.BANNER in text
    assert text.index(report.BANNER) < text.index("## Detection")  # the banner comes first
    assert "| 1 | 87.5 | 50.0 |" in text
    links = _links(text)
    assert links == ["plots/detection.png", "plots/detection.png", "../elsewhere/delay.png"]
    for link in links:
        assert (out / link).is_file(), link
    page = (out / "report.html").read_text(encoding="utf-8")
    assert report.BANNER in page and "<td>87.5</td>" in page
    assert "<strong>bold</strong>" in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs == links

    plain = report.write_report(tmp_path / "real", title="TEP", synthetic=False, sections=[])
    assert report.BANNER not in plain.read_text(encoding="utf-8")
    assert "SYNTHETIC" not in (tmp_path / "real" / "report.html").read_text(encoding="utf-8")

    broken = [report.Section("Missing", images=[tmp_path / "nope.png"])]
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        report.write_report(tmp_path / "broken", title="x", synthetic=False, sections=broken)
    assert not (tmp_path / "broken" / "report.md").exists()
