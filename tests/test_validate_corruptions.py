"""Acceptance: on the synthetic cohort validate reports no error; each known corruption of a copy
yields the right finding for the right patient and structure, and nothing else is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from corruptions import (
    add_slices,
    copy_cohort,
    delete_mask,
    draw_ctvn_into_ctvp,
    finding_keys,
    make_4d,
    mask_path,
    rescale_mask,
    set_header_text,
    shift_origin,
    truncate,
)

from cervicontour.validate import validate_cohort


@pytest.fixture(scope="module")
def baseline(small_cohort):
    return validate_cohort(small_cohort)


def test_the_synthetic_cohort_has_no_errors(baseline, small_cohort):
    assert baseline.errors == []
    # the notes explain the scheduled edge cases: "no GTVp", "missing left kidney" are info
    info = {(f.check, f.structure) for f in baseline.findings if f.severity.value == "info"}
    assert ("structure.missing", "GTVp") in info
    assert ("structure.missing", "Kidney_L") in info


def _pick(cohort: Path, *, not_in_note: tuple[str, ...] = ()) -> str:
    """The first labelled patient whose note says none of ``not_in_note``."""
    from cervicontour.cohort import load_cohort

    for case in load_cohort(cohort).labelled():
        if not any(word in case.note for word in not_in_note):
            return case.patient_id
    raise AssertionError("no such patient")


CORRUPTIONS = {
    # name: (corrupt(root) -> (patient, ...), expected finding keys given the patient)
    "shifted mask origin": (lambda r, p: shift_origin(r, p, "CTVp", 5.0), [("grid.mismatch", "CTVp", "error")]),
    "non-binary mask": (lambda r, p: rescale_mask(r, p, "Bladder", 255), [("mask.binary", "Bladder", "error")]),
    "deleted mask": (lambda r, p: delete_mask(r, p, "Anorectum"), [("structure.missing", "Anorectum", "error")]),
    "CTVn drawn into CTVp": (lambda r, p: draw_ctvn_into_ctvp(r, p), [("rules.overlap", "CTVn/CTVp", "error")]),
    "PHI in descrip": (
        lambda r, p: set_header_text(r / p / "image.nii.gz", "descrip", b"Doe^Jane DOB 1961-03-12 MRN 4417321"),
        [("deid.header", None, "error")],
    ),
    "extra slices": (lambda r, p: add_slices(r, p, 0.6), [("cohort.extent", None, "warning")]),
    "4D image": (lambda r, p: make_4d(r, p), [("header.dim", None, "error")]),
    "truncated image": (lambda r, p: truncate(r / p / "image.nii.gz"), [("file.unreadable", None, "error")]),
    "truncated mask": (lambda r, p: truncate(mask_path(r, p, "Parametrium")), [("file.unreadable", "Parametrium", "error")]),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_yields_exactly_its_finding(name, small_cohort, baseline, tmp_path):
    corrupt, expected = CORRUPTIONS[name]
    # "extra slices" needs a patient whose note does not already say so
    patient = _pick(small_cohort, not_in_note=("slices", "scanned")) if name == "extra slices" else _pick(small_cohort)
    root = copy_cohort(small_cohort, tmp_path / "c")
    corrupt(root, patient)
    result = validate_cohort(root)
    new = finding_keys(result.findings) - finding_keys(baseline.findings)
    assert new == {(check, patient, structure, severity) for check, structure, severity in expected}, [
        f for f in result.findings if (f.check, f.patient_id, f.structure, f.severity.value) in new
    ]


def test_findings_say_what_was_expected_and_found(small_cohort, tmp_path):
    root = copy_cohort(small_cohort, tmp_path / "c")
    patient = _pick(small_cohort)
    shared = draw_ctvn_into_ctvp(root, patient)
    shift_origin(root, patient, "CTVp", 5.0)  # CTVp off-grid: the overlap can no longer be checked
    rescale_mask(root, patient, "Bladder", 255)
    result = validate_cohort(root)
    mine = {f.check: f for f in result.for_patient(patient) if f.is_error}
    assert set(mine) == {"grid.mismatch", "mask.binary"}
    assert mine["grid.mismatch"].value == pytest.approx(5.0, abs=1e-3)
    assert "values 0 and 255 (uint8)" in mine["mask.binary"].actual
    assert shared > 0
