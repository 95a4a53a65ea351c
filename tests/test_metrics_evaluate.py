"""evaluate_pair / evaluate_cohort / summaries / report, and the real `cervicontour evaluate` CLI."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from cervicontour.cohort import write_case
from cervicontour.errors import InputError
from cervicontour.metrics import (
    EvaluationSettings,
    bootstrap_ci,
    describe,
    evaluate_cohort,
    evaluate_pair,
    metric_columns,
    summarize,
)
from cervicontour.metrics.evaluate import MISSING_PREDICTION_NOTE
from cervicontour.volume import Volume

SPACING = (0.98, 0.98, 2.5)


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, math.cos(0.3), -math.sin(0.3)], [0.0, math.sin(0.3), math.cos(0.3)]]
    )


def test_row_of_a_box_shifted_one_slice():
    ref = Volume(box((20, 20, 12), (5, 5, 3), (15, 15, 8)), SPACING)  # 10×10×5 voxels
    pred = ref.with_array(box((20, 20, 12), (5, 5, 4), (15, 15, 9)))
    row = evaluate_pair(ref, pred, tolerances_mm=[2.5, 3.0])
    assert list(row) == metric_columns([2.5, 3.0])
    assert row["dice"] == 0.8 and row["jaccard"] == 400 / 600
    assert row["hd_mm"] == 2.5 and row["centroid_distance_mm"] == pytest.approx(2.5, rel=1e-12)
    assert row["nsd_2.5mm"] == 1.0
    assert row["apl_mm"] == pytest.approx(36 * 0.98, rel=1e-12)  # slice 3: a 10×10 square, 36 px
    assert row["fnv_cc"] == pytest.approx(100 * 0.98 * 0.98 * 2.5 / 1000, rel=1e-12)
    assert row["volume_diff_cc"] == 0.0 and row["major_axis_diff_mm"] == pytest.approx(0.0, abs=1e-9)


def _geometries(array: np.ndarray):
    """The same voxels on LPS, RAS, flipped-storage and oblique grids."""
    n0, n1, _ = array.shape
    lps = (array, np.eye(3), (-50.0, 20.0, 100.0))
    ras = (array, np.diag([-1.0, -1.0, 1.0]), (50.0, -20.0, 100.0))
    flipped = (array[::-1], np.diag([-1.0, 1.0, 1.0]), (-50.0 + (n0 - 1) * SPACING[0], 20.0, 100.0))
    oblique = (array, rotation(0.5), (3.0, 4.0, 5.0))
    return {"LPS": lps, "RAS": ras, "flipped": flipped, "oblique": oblique}


@pytest.mark.parametrize("boundary", ["voxel6", "surfel"])
def test_every_metric_is_the_same_on_lps_ras_flipped_and_oblique_grids(boundary):
    rng = np.random.default_rng(11)
    ref_array = (rng.random((18, 16, 10)) > 0.5).astype(np.uint8)
    pred_array = (rng.random((18, 16, 10)) > 0.5).astype(np.uint8)
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tolerance below slice spacing
        for name, (ref_a, direction, origin) in _geometries(ref_array).items():
            pred_a = pred_array[::-1] if name == "flipped" else pred_array
            ref = Volume(ref_a, SPACING, origin, direction)
            rows[name] = evaluate_pair(ref, ref.with_array(pred_a), boundary=boundary, apl_tolerance_mm=1.0)
    for name, row in rows.items():
        for column, value in rows["LPS"].items():
            assert row[column] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, column)


def test_grid_mismatch_is_an_input_error():
    ref = Volume(box((6, 6, 6), (1, 1, 1), (3, 3, 3)), SPACING)
    other = Volume(ref.array, (0.98, 0.98, 3.0))
    with pytest.raises(InputError, match=r"spacing_mm .* resample the prediction"):
        evaluate_pair(ref, other)


def test_empty_prediction_row_follows_the_policies():
    ref = Volume(box((10, 10, 6), (2, 2, 1), (6, 6, 4)), SPACING)
    empty = ref.with_array(np.zeros(ref.shape, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = evaluate_pair(ref, empty, tolerances_mm=[3.0])
        both = evaluate_pair(empty, empty, tolerances_mm=[3.0])
    assert row["dice"] == 0.0 and math.isnan(row["precision"]) and row["recall"] == 0.0
    assert row["hd_mm"] == row["hd95_mm"] == row["assd_mm"] == row["masd_mm"] == math.inf
    assert row["nsd_3mm"] == 0.0 and math.isnan(row["centroid_distance_mm"])
    assert row["apl_mm"] == pytest.approx(3 * 12 * 0.98, rel=1e-12)  # 3 slices of a 4×4 square
    assert math.isnan(both["dice"]) and math.isnan(both["hd_mm"]) and math.isnan(both["nsd_3mm"])
    assert both["apl_mm"] == both["fnv_cc"] == both["fpv_cc"] == 0.0


def test_settings_are_checked():
    with pytest.raises(ValueError, match="boundary must be one of"):
        EvaluationSettings(boundary="voxel26")
    with pytest.raises(ValueError, match="tolerances_mm"):
        EvaluationSettings(tolerances_mm=(-1.0,))
    columns = EvaluationSettings(tolerances_mm=[2]).columns
    assert columns[:3] == ["patient_id", "structure", "dice"] and "nsd_2mm" in columns
    assert columns[-3:] == ["minor_axis_diff_mm", "boundary", "note"]


def test_summary_statistics_by_hand():
    d = describe([1.0, 2.0, 3.0, 4.0, 5.0, math.nan, math.inf])
    assert (d["n"], d["n_nan"], d["n_inf"]) == (5, 1, 1)
    assert (d["mean"], d["median"], d["q1"], d["q3"], d["iqr"]) == (3.0, 3.0, 2.0, 4.0, 2.0)
    assert 1.0 <= d["ci95_low"] < 3.0 < d["ci95_high"] <= 5.0
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert bootstrap_ci([1.0, 2.0, 9.0], seed=3) == bootstrap_ci([1.0, 2.0, 9.0], seed=3)
    rows = [
        {"structure": "Bladder", "dice": 0.5},
        {"structure": "Bladder", "dice": 0.7},
        {"structure": "CTVn", "dice": 0.9},
    ]
    summary = summarize(rows, ["dice"])
    assert [(s["structure"], s["n"], s["median"]) for s in summary] == [("Bladder", 2, 0.6), ("CTVn", 1, 0.9)]


# --------------------------------------------------------------------------- cohorts and CLI
def _write_cohorts(root):
    """Reference cohort of 3 patients; predictions as <pid>/structures/ (p2 lacks Anorectum, p3 absent)."""
    shape = (30, 28, 12)
    for index, pid in enumerate(("p0", "p1", "p2", "p3")):
        image = Volume(np.zeros(shape, np.int16), SPACING, (0.0, 0.0, 10.0 * index))
        bladder = box(shape, (5, 5, 2), (15, 15, 8))
        rectum = box(shape, (18, 8, 1), (24, 14, 10))
        reference = {"Bladder": image.with_array(bladder), "Anorectum": image.with_array(rectum)}
        write_case(root / "ref", pid, image, reference)
        if pid == "p3":
            continue
        predicted = {"Bladder": image.with_array(np.roll(bladder, index, axis=0))}  # shifted by `index` voxels
        if pid != "p2":
            predicted["Rectum"] = image.with_array(rectum)
        write_case(root / "pred", pid, None, predicted)
    return root / "ref", root / "pred"


def test_evaluate_cohort_serial_and_parallel_agree(tmp_path):
    ref_dir, pred_dir = _write_cohorts(tmp_path)
    settings = EvaluationSettings(tolerances_mm=(2.5,))
    progress = []
    serial = evaluate_cohort(ref_dir, pred_dir, settings=settings, on_progress=lambda d, t: progress.append((d, t)))
    parallel = evaluate_cohort(ref_dir, pred_dir, settings=settings, workers=2)
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]
    expected = [(pid, s) for pid in ("p0", "p1", "p2") for s in ("Bladder", "Anorectum")]
    assert [(r["patient_id"], r["structure"]) for r in serial.rows] == expected
    for a, b in zip(serial.rows, parallel.rows):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key])
    by_key = {(r["patient_id"], r["structure"]): r for r in serial.rows}
    assert by_key[("p1", "Bladder")]["hd_mm"] == pytest.approx(0.98, rel=1e-6)  # NIfTI stores float32 spacing
    assert by_key[("p2", "Bladder")]["hd_mm"] == pytest.approx(2 * 0.98, rel=1e-6)
    assert by_key[("p2", "Anorectum")]["note"] == MISSING_PREDICTION_NOTE
    assert by_key[("p2", "Anorectum")]["hd_mm"] == math.inf
    assert any("'p3'" in line and "no prediction" in line for line in serial.unmatched)
    only = evaluate_cohort(ref_dir, pred_dir, structures=["rectum", "CTVn"], settings=settings)
    assert {r["structure"] for r in only.rows} == {"Anorectum"}
    assert any("'CTVn'" in line for line in only.unmatched)


def test_cli_evaluate_end_to_end(tmp_path):
    ref_dir, pred_dir = _write_cohorts(tmp_path)
    out = tmp_path / "out" / "metrics.csv"
    html = tmp_path / "out" / "report.html"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "cervicontour.cli", "evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir),
         "--out", str(out), "--tolerance-mm", "1,2.5", "--boundary", "surfel", "--html", str(html), "--workers", "2"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "below the slice spacing" in result.stderr and "'p3'" in result.stderr
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    required = (
        "patient_id structure dice jaccard precision recall specificity volume_ref_cc volume_pred_cc "
        "volume_diff_cc hd_mm hd95_mm hd95_pooled_mm assd_mm masd_mm nsd_1mm nsd_2.5mm apl_mm fnv_cc fpv_cc "
        "centroid_distance_mm"
    )
    assert set(required.split()) <= set(rows[0])
    p1 = next(r for r in rows if r["patient_id"] == "p1" and r["structure"] == "Bladder")
    assert float(p1["hd_mm"]) == pytest.approx(0.98, rel=1e-6) and p1["boundary"] == "surfel"
    missing = next(r for r in rows if r["patient_id"] == "p2" and r["structure"] == "Anorectum")
    assert missing["hd_mm"] == "inf" and missing["precision"] == "nan"
    with (out.parent / "metrics_summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    hd = next(s for s in summary if s["structure"] == "Anorectum" and s["metric"] == "hd_mm")
    assert (hd["n"], hd["n_inf"]) == ("2", "1")
    page = html.read_text()
    assert "Summary per structure" in page and "report_files/dice.png" in page
    assert (html.parent / "report_files" / "hd95_mm.png").stat().st_size > 1000


def test_cli_rejects_bad_options(tmp_path):
    ref_dir, pred_dir = _write_cohorts(tmp_path)
    base = [sys.executable, "-m", "cervicontour.cli", "evaluate", "--pred", str(pred_dir), "--ref", str(ref_dir)]
    bad = subprocess.run(
        [*base, "--out", str(tmp_path / "m.csv"), "--boundary", "mesh"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "boundary must be one of" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "cervicontour.cli", "evaluate", "--pred", str(tmp_path / "nope"), "--ref", str(ref_dir),
         "--out", str(tmp_path / "m.csv")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "no such folder" in missing.stderr


def test_report_counts_non_finite_values_and_survives_all_nan(tmp_path):
    from cervicontour.report.metrics_report import write_metrics_report

    rows = [
        {"patient_id": "a", "structure": "Bladder", "dice": math.nan, "hd_mm": math.inf},
        {"patient_id": "b", "structure": "Bladder", "dice": 0.5, "hd_mm": 2.0},
        {"patient_id": "a", "structure": "CTVn", "dice": math.nan, "hd_mm": math.nan},
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = write_metrics_report(rows, ["dice", "hd_mm"], tmp_path / "r.html").read_text()
    assert "<td>Bladder</td><td>hd (mm)</td><td>1</td><td>0</td><td>1</td><td>2 [2, 2]</td>" in page
    assert (tmp_path / "r_files" / "dice.png").is_file()
