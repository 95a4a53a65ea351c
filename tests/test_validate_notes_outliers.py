"""Notes that explain findings, and the leave-one-out robust z-score (values by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cervicontour.rules import Finding, Severity
from cervicontour.validate.case import CaseFeatures
from cervicontour.validate.notes import apply_notes, read_note
from cervicontour.validate.options import ValidateOptions
from cervicontour.validate.outliers import cohort_outliers, robust_z


@pytest.mark.parametrize(
    "note, absent, mentioned, extent",
    [
        ("no GTVp", {"GTVp"}, {"GTVp"}, False),
        ("missing left kidney", {"Kidney_L"}, {"Kidney_L"}, False),
        ("only scanned bottom of kidneys. missing left kidney", {"Kidney_L"}, {"Kidney_L", "Kidney_R"}, True),
        ("extra slices", set(), set(), True),
        ("small parametrium and low uterus", set(), {"Parametrium", "Uterus"}, False),
        ("para-aortic nodes included. GTVn left external iliac", set(), {"LN_ParaAortic", "GTVn"}, False),
        ("no contrast - hard to see LNs", set(), set(), False),
        ("post hysterectomy", {"Uterus", "Cervix"}, {"Uterus", "Cervix"}, False),
        ("right nephrectomy", {"Kidney_R"}, {"Kidney_R"}, False),
        ("Rectum not contoured; bladder full", {"Anorectum"}, {"Anorectum", "Bladder"}, False),
        ("", set(), set(), False),
    ],
)
def test_read_note(note, absent, mentioned, extent):
    ctx = read_note(note)
    assert set(ctx.absent) == absent
    assert set(ctx.mentioned) == mentioned
    assert ctx.extent is extent


def _f(check, structure, severity=Severity.ERROR, patient="p1"):
    return Finding(check, patient, structure, severity, "e", "a", "h")


def test_notes_turn_explained_findings_into_info_and_nothing_else():
    findings = [
        _f("structure.missing", "GTVp"),
        _f("structure.missing", "CTVn"),
        _f("rules.overlap", "CTVn/CTVp"),
        _f("cohort.extent", None, Severity.WARNING),
        _f("structure.missing", "GTVp", patient="p2"),
    ]
    out = apply_notes(findings, {"p1": "no GTVp. extra slices", "p2": ""})
    assert [f.severity.value for f in out] == ["info", "error", "error", "info", "error"]
    assert "explained by the note: 'no GTVp. extra slices'" in out[0].hint
    assert out[1] == findings[1]


def test_robust_z_by_hand():
    # others 1, 2, 3: median 2, MAD 1 → z = 0.6745 × (10 − 2) / 1
    z, median = robust_z(10.0, np.array([1.0, 2.0, 3.0]))
    assert median == 2.0 and z == pytest.approx(0.6745 * 8)
    assert robust_z(5.0, np.array([5.0, 5.0, 5.0])) == (0.0, 5.0)
    assert robust_z(6.0, np.array([5.0, 5.0, 5.0]))[0] == math.inf


def _image_features(pid, length, spacing=3.0, fov=400.0):
    return CaseFeatures(pid, image={"slice_spacing_mm": spacing, "n_slices": length / spacing, "scan_length_mm": length, "fov_mm": fov})


def test_extent_outlier_against_the_other_patients():
    options = ValidateOptions()
    features = [_image_features("a", 300.0), _image_features("b", 303.0), _image_features("c", 297.0), _image_features("d", 450.0)]
    found = cohort_outliers(features, options)
    assert [(f.check, f.patient_id) for f in found] == [("cohort.extent", "d")]
    # others 300, 303, 297: median 300, MAD 3 → z = 0.6745 × 150 / 3
    assert found[0].value == pytest.approx(0.6745 * 150 / 3)
    assert "median 300 mm" in found[0].expected and "150 slices" in found[0].actual
    # 10 % longer is not an outlier (floor 20 %), however tight the others are
    features[3] = _image_features("d", 330.0)
    assert cohort_outliers(features, options) == []
    # three patients: only two others, too few to compare
    assert cohort_outliers([_image_features("a", 300.0), _image_features("b", 303.0), _image_features("d", 900.0)], options) == []


def test_patients_explained_by_notes_leave_the_reference():
    from cervicontour.validate.notes import read_note

    options = ValidateOptions()
    features = [_image_features(p, 300.0) for p in "abc"] + [_image_features("x", 600.0), _image_features("y", 600.0)]
    notes = {"x": read_note("extra slices"), "y": read_note("extra slices")}
    found = cohort_outliers(features, options, notes)
    # x and y are still compared (to a, b, c) but are no one's reference
    assert sorted(f.patient_id for f in found) == ["x", "y"]


def test_volume_outliers_on_a_log_scale_for_model_structures_only():
    options = ValidateOptions()
    features = []
    for pid, cc in (("a", 100.0), ("b", 110.0), ("c", 90.0), ("d", 25.0), ("e", 105.0)):
        features.append(CaseFeatures(pid, volumes_cc={"Bladder": cc, "Bone_Pelvic": cc}))
    found = cohort_outliers(features, options)
    assert [(f.check, f.patient_id, f.structure) for f in found] == [("cohort.volume", "d", "Bladder")]
    assert "×0.24 the median" in found[0].actual  # 25 / median(100, 110, 90, 105) = 25 / 102.5
