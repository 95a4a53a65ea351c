"""Part-level evaluation (`evaluate` scores the CTV parts apart): hand-made boxes, Dice by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from cervicontour.cli import app
from cervicontour.cohort import write_case
from cervicontour.metrics import EvaluationSettings, evaluate_cohort
from cervicontour.metrics.parts import FALSE_POSITIVE_NOTE
from cervicontour.volume import Volume

SHAPE = (20, 20, 10)
SPACING = (1.0, 1.5, 2.0)  # 3 mm³ a voxel
VOXEL_CC = 3.0 / 1000


def box(lo, hi) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


def _cohorts(root):
    """Reference and prediction of three patients (see the expectations in the tests)."""
    image = Volume(np.zeros(SHAPE, np.int16), SPACING, (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))  # RAS storage
    m = image.with_array
    empty = m(np.zeros(SHAPE, np.uint8))
    cervix, uterus, pelvic = box((2, 2, 2), (6, 6, 6)), box((6, 2, 2), (10, 6, 6)), box((10, 10, 0), (15, 15, 2))
    ctvp = m(cervix | uterus)
    # A: no tumour, no node (GTVp, GTVn absent), CTVn stops below the para-aortic nodes
    write_case(root / "ref", "A", image, {"CTVp": ctvp, "Cervix": m(cervix), "Uterus": m(uterus), "LN_Pelvic": m(pelvic)})
    write_case(root / "pred", "A", None, {
        "CTVp": ctvp,
        "Cervix": m(box((3, 2, 2), (7, 6, 6))),  # one voxel along i: 48 of 64 shared -> Dice 0.75
        "Uterus": m(uterus),  # Dice 1
        "GTVp": m(box((12, 12, 5), (14, 14, 7))),  # 8 voxels the patient has not: a false positive
        "Vagina": m(box((0, 0, 0), (2, 2, 2))),  # not contoured in the reference: not scored
        "LN_Pelvic": m(box((10, 10, 0), (15, 15, 1))),  # half of it: Dice 2·25/(50+25) = 2/3
        "LN_ParaAortic": m(box((0, 15, 0), (3, 18, 3))),  # not contoured (no para-aortic field): not scored
        "GTVn": empty,  # none predicted, none in the reference: agreement, not scored
    })  # fmt: skip
    # B: a tumour; the reference has the compound CTVn only (no nodal groups)
    write_case(root / "ref", "B", image, {"CTVp": ctvp, "Cervix": m(cervix), "GTVp": m(box((3, 3, 3), (5, 5, 5))), "CTVn": m(pelvic)})
    write_case(root / "pred", "B", None, {"Cervix": m(cervix), "LN_Pelvic": m(pelvic), "GTVn": m(box((0, 0, 0), (2, 2, 2)))})
    # C: the prediction has no CTVp parts at all (a model that does not predict them)
    write_case(root / "ref", "C", image, {"CTVp": ctvp, "Cervix": m(cervix), "Uterus": m(uterus)})
    write_case(root / "pred", "C", None, {"CTVp": ctvp})
    return root / "ref", root / "pred"


def test_parts_are_scored_apart_with_their_compound_and_by_the_absence_rules(tmp_path):
    ref, pred = _cohorts(tmp_path)
    result = evaluate_cohort(ref, pred, settings=EvaluationSettings(tolerances_mm=(2.0,)), parts=True)
    # the primary rows are untouched: no part among them
    assert {r["structure"] for r in result.rows} == {"CTVp", "CTVn"}
    got = {(r["patient_id"], r["structure"]): r for r in result.part_rows}
    assert list(got) == [("A", "Cervix"), ("A", "GTVp"), ("A", "Uterus"), ("A", "LN_Pelvic"), ("B", "Cervix")]
    assert {k: r["compound"] for k, r in got.items()} == {
        ("A", "Cervix"): "CTVp", ("A", "GTVp"): "CTVp", ("A", "Uterus"): "CTVp", ("A", "LN_Pelvic"): "CTVn", ("B", "Cervix"): "CTVp"}
    assert got[("A", "Cervix")]["dice"] == pytest.approx(0.75)
    assert got[("A", "Uterus")]["dice"] == 1.0 and got[("B", "Cervix")]["dice"] == 1.0
    assert got[("A", "LN_Pelvic")]["dice"] == pytest.approx(2 / 3)
    assert got[("A", "LN_Pelvic")]["volume_ref_cc"] == pytest.approx(50 * VOXEL_CC)
    # an optional part the patient has not, predicted: a false positive of 8 voxels
    fp = got[("A", "GTVp")]
    assert fp["dice"] == 0.0 and fp["volume_ref_cc"] == 0.0 and fp["note"] == FALSE_POSITIVE_NOTE
    assert fp["fpv_cc"] == pytest.approx(8 * VOXEL_CC) and fp["volume_pred_cc"] == pytest.approx(8 * VOXEL_CC)
    assert all(r["note"] == "" for k, r in got.items() if k != ("A", "GTVp"))
    assert result.part_columns[:4] == ["patient_id", "structure", "compound", "dice"]
    assert set(result.part_notes) == {
        "GTVp (CTVp): in the reference, not in the prediction; not scored (1 patient)",  # B
        "CTVp parts: the prediction has none; not scored (1 patient)",  # C
    }
    # without parts=True nothing changes for the callers that score the five structures
    plain = evaluate_cohort(ref, pred, settings=EvaluationSettings(tolerances_mm=(2.0,)))
    assert plain.part_rows == [] and plain.part_notes == [] and [r["structure"] for r in plain.rows] == [r["structure"] for r in result.rows]


def test_a_part_asked_for_as_a_structure_is_not_scored_twice(tmp_path):
    ref, pred = _cohorts(tmp_path)
    result = evaluate_cohort(ref, pred, structures=["Cervix"], settings=EvaluationSettings(tolerances_mm=(2.0,)), parts=True)
    assert [(r["patient_id"], r["structure"]) for r in result.rows] == [("A", "Cervix"), ("B", "Cervix"), ("C", "Cervix")]
    assert ("A", "Cervix") not in {(r["patient_id"], r["structure"]) for r in result.part_rows}
    assert ("A", "Uterus") in {(r["patient_id"], r["structure"]) for r in result.part_rows}


def test_cli_writes_the_parts_apart(tmp_path):
    ref, pred = _cohorts(tmp_path)
    out = tmp_path / "m" / "metrics.csv"
    result = CliRunner().invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(out), "--tolerance-mm", "2",
                                      "--html", str(tmp_path / "m" / "report.html")])  # fmt: skip
    assert result.exit_code == 0, result.output
    with out.open() as handle:
        assert {r["structure"] for r in csv.DictReader(handle)} == {"CTVp", "CTVn"}
    with (out.parent / "metrics_parts.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["patient_id"], r["structure"], r["compound"]) for r in rows][:2] == [("A", "Cervix", "CTVp"), ("A", "GTVp", "CTVp")]
    assert float(rows[0]["dice"]) == pytest.approx(0.75)
    with (out.parent / "metrics_parts_summary.csv").open() as handle:
        summary = {(s["structure"], s["metric"]): s for s in csv.DictReader(handle)}
    cervix = summary[("Cervix", "dice")]
    assert cervix["compound"] == "CTVp" and cervix["n"] == "2" and float(cervix["mean"]) == pytest.approx((0.75 + 1.0) / 2)
    assert summary[("LN_Pelvic", "dice")]["compound"] == "CTVn"
    assert (out.parent / "report_parts.html").is_file()
    assert "CTVp parts: the prediction has none; not scored (1 patient)" in " ".join(result.output.split())
    again = CliRunner().invoke(app, ["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "n" / "m.csv"), "--no-parts"])
    assert again.exit_code == 0, again.output
    assert not (tmp_path / "n" / "m_parts.csv").exists()
