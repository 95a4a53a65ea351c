"""A CTVn extended to the para-aortic nodes is a clinical choice, not a cohort outlier."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cervicontour.validate.case import CaseFeatures
from cervicontour.validate.choices import para_aortic_patients
from cervicontour.validate.notes import read_note
from cervicontour.validate.options import ValidateOptions
from cervicontour.validate.outliers import cohort_outliers

PELVIC = {"a": 60.0, "b": 62.0, "c": 58.0, "d": 61.0, "e": 59.0}  # CTVn centroid, mm above the reference point


def _ctvn(pid, z, *, cc=300.0, low=0.0, high=None, gap=0.0, paraaortic_cc=None):
    """A patient whose CTVn centroid is ``z`` mm up; it spans ``low``..``high`` mm (default 2 z)."""
    volumes = {"CTVn": cc, **({"LN_ParaAortic": paraaortic_cc} if paraaortic_cc else {})}
    return CaseFeatures(pid, volumes_cc=volumes, offsets_mm={"CTVn": (0.0, 0.0, z)},
                        extents_mm={"CTVn": (low, 2 * z if high is None else high)}, gaps_mm={"CTVn": gap})  # fmt: skip


def _pelvic():
    return [_ctvn(p, z) for p, z in PELVIC.items()]


def _checks(found):
    return sorted((f.check, f.patient_id, f.severity.value) for f in found)


def test_without_the_choice_a_ctvn_reaching_far_up_is_a_centroid_outlier():
    # x's CTVn starts 40 mm lower too (a shifted contour, not an extension): others 58-62, median 60,
    # MAD 1 -> z = 0.6745 * 50 / 1
    found = cohort_outliers([*_pelvic(), _ctvn("x", 110.0, low=-40.0, high=260.0)], ValidateOptions())
    assert _checks(found) == [("cohort.centroid", "x", "warning")]
    assert found[0].value == pytest.approx(0.6745 * 50)


def test_the_note_makes_it_a_clinical_choice_compared_with_the_other_para_aortic_patients():
    features = [*_pelvic(), _ctvn("x", 110.0, cc=450.0), _ctvn("y", 112.0, cc=460.0)]
    notes = {p: read_note("no GTVp. para-aortic nodes included") for p in ("x", "y")}
    found = cohort_outliers(features, ValidateOptions(), notes)
    assert _checks(found) == [("cohort.clinical_choice", None, "info")]
    assert found[0].structure == "CTVn" and found[0].value == 2
    assert "for 2 of 7 patients: x (note); y (note)" in found[0].actual
    assert "not compared (fewer than 3 other such patients)" in found[0].hint


def test_a_para_aortic_ctvn_unlike_the_other_para_aortic_ones_is_still_an_outlier():
    pa = {"w": 110.0, "x": 111.0, "y": 109.0, "z": 112.0, "v": 170.0}
    features = [*_pelvic(), *(_ctvn(p, z, paraaortic_cc=80.0) for p, z in pa.items())]
    found = cohort_outliers(features, ValidateOptions())
    assert _checks(found) == [("cohort.centroid", "v", "warning"), ("cohort.clinical_choice", None, "info")]
    # compared with w, x, y, z only: median 110.5, MAD 1 -> z = 0.6745 * 59.5
    assert found[0].value == pytest.approx(0.6745 * 59.5) or found[1].value == pytest.approx(0.6745 * 59.5)
    choice = next(f for f in found if f.check == "cohort.clinical_choice")
    assert "(LN_ParaAortic contour)" in choice.actual and "compared with each other's only" in choice.hint


def test_geometry_alone_a_contiguous_extension_from_the_same_inferior_end():
    options = ValidateOptions()
    extended = _ctvn("x", 100.0, low=0.0, high=250.0)
    assert para_aortic_patients([*_pelvic(), extended], options) == {
        # others' superior ends 116-124 (2 z), median 120
        "x": "geometry: CTVn reaches +250 mm vs the others' median +120 mm (+130 mm further up, from the same inferior end)"
    }
    found = cohort_outliers([*_pelvic(), extended], options)
    assert _checks(found) == [("cohort.clinical_choice", None, "info")]
    assert "say 'para-aortic nodes included' in notes.csv" in found[0].hint


@pytest.mark.parametrize(
    "why, patient",
    [
        ("an empty slice on the way: a piece drawn elsewhere", _ctvn("x", 100.0, high=250.0, gap=30.0)),
        ("its inferior end moved up too: a shifted contour", _ctvn("x", 100.0, low=60.0, high=250.0)),
        ("the note says no para-aortic nodes", _ctvn("x", 100.0, high=250.0)),
    ],
)
def test_geometry_does_not_excuse(why, patient):
    notes = {"x": read_note("no para-aortic nodes")}
    assert para_aortic_patients([*_pelvic(), patient], ValidateOptions(), notes) == {}, why
    found = cohort_outliers([*_pelvic(), patient], ValidateOptions(), notes)
    assert ("cohort.centroid", "x", "warning") in _checks(found)


# --------------------------------------------------------------------------- a five-label phantom cohort
@pytest.fixture(scope="module")
def five_labels(tmp_path_factory):
    """14 phantom patients (seed 7272), each patient's structures/sub/ deleted: the five compound masks.
    SYN002, SYN009, SYN010, SYN011 and SYN012 include the para-aortic nodes (notes); SYN010's scan is
    long, so its CTVn reaches far up."""
    from cervicontour.synth import synthesize_cohort

    root = synthesize_cohort(tmp_path_factory.mktemp("pa") / "c", patients=14, seed=7272, size="small", phantom=2)
    for sub in root.glob("*/structures/sub"):
        shutil.rmtree(sub)
    return root


def _ctvn_height_offsets(root):
    """CTVn centroid minus the median of the five primary centroids, world z (mm), read here."""
    from cervicontour.cohort import load_cohort
    from cervicontour.structures import PRIMARY

    out = {}
    for case in load_cohort(root).labelled():
        cents = {}
        for name in PRIMARY:
            mask = case.load_structure(name)
            cents[name] = mask.index_to_world(np.argwhere(mask.array > 0).mean(axis=0))
        out[case.patient_id] = cents["CTVn"][2] - np.median(np.stack(list(cents.values())), axis=0)[2]
    return out


def test_five_label_cohort_reports_the_choice_not_the_centroid(five_labels):
    from cervicontour.validate import validate_cohort

    # the false positive this replaces: SYN010's CTVn against the 13 others, robust z > 3.5 and > 20 mm
    heights = _ctvn_height_offsets(five_labels)
    others = np.array([h for p, h in heights.items() if p != "SYN010"])
    median = np.median(others)
    z = 0.6745 * (heights["SYN010"] - median) / np.median(np.abs(others - median))
    assert z > 3.5 and heights["SYN010"] - median > 20

    result = validate_cohort(five_labels)
    ctvn = [(f.check, f.patient_id) for f in result.findings if f.structure == "CTVn" and f.check.startswith("cohort.")]
    assert ctvn == [("cohort.clinical_choice", None)]
    choice = result.findings[[f.check for f in result.findings].index("cohort.clinical_choice")]
    assert choice.severity.value == "info"
    assert "for 5 of 14 patients: SYN002 (note); SYN009 (note); SYN010 (note); SYN011 (note); SYN012 (note)" in choice.actual
    assert "compared with each other's only" in choice.hint


def test_five_label_cohort_without_notes_finds_the_long_extension_from_the_geometry(five_labels, tmp_path):
    from cervicontour.cohort import read_notes, write_notes
    from cervicontour.validate import validate_cohort

    root = tmp_path / "c"
    shutil.copytree(five_labels, root)
    write_notes(root, {p: "" for p in read_notes(root / "notes.csv")})
    result = validate_cohort(root)
    ctvn = [(f.check, f.patient_id) for f in result.findings if f.structure == "CTVn" and f.check.startswith("cohort.")]
    assert ctvn == [("cohort.clinical_choice", None)]
    choice = next(f for f in result.findings if f.check == "cohort.clinical_choice")
    # the other four's scans end at most 25 mm above the aortic bifurcation: their CTVns look like the others'
    assert "for 1 of 14 patients: SYN010 (geometry: CTVn reaches" in choice.actual
