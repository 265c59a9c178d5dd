"""The QC report: robust z-scores and flags by hand, and the page rendered in a real
browser (headless Chromium): every image decoded, a header click sorts the table."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from brain_tf.bids.report import flag_outliers, overlay_png, robust_z, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_robust_z_by_hand():
    z = robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0]))
    # median 3, absolute deviations 2 1 0 1 97: MAD 1
    np.testing.assert_allclose(z, 0.6745 * np.array([-2, -1, 0, 1, 97]))
    assert robust_z(pd.Series([5.0, 5.0, 5.0])).tolist() == [0, 0, 0]


def _table():
    return pd.DataFrame({
        "participant_id": [f"sub-0{i}" for i in range(1, 7)],
        "source": [f"sub-0{i}/anat/sub-0{i}_T1w.nii.gz" for i in range(1, 7)],
        "status": ["ok"] * 5 + ["failed"],
        "age": [30.0, 45.0, 60.0, 75.0, 50.0, 40.0],
        "brain_ml": [1200.0, 1150.0, 1100.0, 1900.0, 1180.0, np.nan],
        "gm_ml": [600.0, 580.0, 540.0, 560.0, 590.0, np.nan],
        "qc_flag": [False, False, True, False, False, np.nan],
    })


def test_outliers_and_flags():
    table = flag_outliers(_table())
    # brain_ml of the finished images: median 1180, MAD 30; 1900 lies at z 16.2
    assert table["outliers"].tolist() == ["", "", "", "brain_ml", "", ""]
    assert table["flagged"].tolist() == [False, False, True, True, False, True]
    few = flag_outliers(_table().iloc[1:])  # four finished images: no outliers looked for
    assert few["outliers"].tolist() == [""] * 5


@pytest.fixture
def report(tmp_path):
    rng = np.random.default_rng(0)
    table = flag_outliers(_table())
    figures = {}
    for source in table["source"][:5]:
        image = rng.normal(size=(20, 24, 22)).astype(np.float32)
        labels = np.zeros(image.shape, np.uint8)
        labels[5:15, 6:18, 5:17] = 2
        path = tmp_path / "sub" / "figures" / source.replace("/", "_").replace(".nii.gz", ".png")
        figures[source] = overlay_png(image, labels, labels > 0, path, spacing=(2, 2, 2))
    return write_report(table, tmp_path, figures), table


def test_overlay_is_a_small_png(report):
    page, _ = report
    pngs = sorted((page.parent / "sub" / "figures").glob("*.png"))
    assert len(pngs) == 5
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 30_000


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                                             "chromium); the report is not rendered")
def test_report_renders_in_headless_chromium(report, tmp_path):
    page, table = report
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri() + "#selftest"],
        capture_output=True, text=True, timeout=120)
    result = re.search(r'<pre id="selftest">(.*?)</pre>', out.stdout, re.S)
    assert result, f"no self-test result in the page; chromium said: {out.stderr[-2000:]}"
    lines = dict(line.split(" ", 1) for line in result.group(1).strip().splitlines())
    # the summary plot and five overlays, every one decoded
    assert lines["images"] == "6 broken 0"
    ok = table["brain_ml"].dropna()
    up = [float(v) for v in lines["ascending"].split(",") if v]
    down = [float(v) for v in lines["descending"].split(",") if v]
    assert up == sorted(ok) and down == sorted(ok, reverse=True)
    assert lines["ascending"].endswith(",")  # the failed image (no value) sorts after
