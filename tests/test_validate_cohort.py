"""`validate_cohort` on hand-made box cohorts: each problem gives the finding derived by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from box_cohort import ORIGIN, SPACING, as_volume, ct_array, primary_arrays

from cervicontour.cohort import write_case, write_notes
from cervicontour.errors import InputError
from cervicontour.io import write_nifti
from cervicontour.validate import validate_cohort
from cervicontour.volume import Volume


def write_box_cohort(root: Path, n: int = 4, *, orientations=("LPS", "RAS"), holdout: int = 0, notes=None) -> Path:
    """``n`` identical box patients P01.. stored alternately in ``orientations``, plus hold-outs H01.."""
    arrays = primary_arrays()
    for i in range(n):
        o = orientations[i % len(orientations)]
        write_case(root, f"P{i + 1:02d}", as_volume(ct_array(), o), {k: as_volume(a, o) for k, a in arrays.items()})
    for i in range(holdout):
        write_case(root, f"H{i + 1:02d}", as_volume(ct_array()), {})
    write_notes(root, notes or {})
    return root


def orientation(pid: str, orientations=("LPS", "RAS")) -> str:
    """How :func:`write_box_cohort` stored patient ``pid`` (P01 LPS, P02 RAS, ...)."""
    return orientations[(int(pid[1:]) - 1) % len(orientations)]


def keys(result):
    return sorted((f.check, f.patient_id, f.structure, f.severity.value) for f in result.findings)


@pytest.fixture
def cohort(tmp_path) -> Path:
    return write_box_cohort(tmp_path / "c", holdout=1)


def test_a_clean_box_cohort_has_no_findings(cohort):
    result = validate_cohort(cohort)
    assert result.findings == ()
    assert result.ok and result.patients == ("H01", "P01", "P02", "P03", "P04")
    assert len(result.rules_sha256) == 64


def _mask_path(root, pid, name):
    return root / pid / "structures" / f"{name}.nii.gz"


def test_mask_moved_5_mm_is_a_grid_error_not_fixable(cohort):
    a = primary_arrays()["CTVp"]
    write_nifti(Volume(a, SPACING, (ORIGIN[0] + 5.0, ORIGIN[1], ORIGIN[2])), _mask_path(cohort, "P01", "CTVp"))
    result = validate_cohort(cohort)
    assert keys(result) == [("grid.mismatch", "P01", "CTVp", "error")]
    f = result.findings[0]
    assert f.value == pytest.approx(5.0)
    assert "origin_mm" in f.actual and "re-export" in f.hint
    assert f.file == "P01/structures/CTVp.nii.gz"


def test_floating_point_level_shift_is_an_error_clean_can_fix(cohort):
    a = primary_arrays()["CTVp"]
    write_nifti(Volume(a, SPACING, (ORIGIN[0] + 0.004, ORIGIN[1], ORIGIN[2])), _mask_path(cohort, "P02", "CTVp"))
    result = validate_cohort(cohort)
    assert keys(result) == [("grid.mismatch", "P02", "CTVp", "error")]
    assert result.findings[0].value == pytest.approx(0.004, abs=1e-4)
    assert "`cervicontour clean` puts the mask on the image grid" in result.findings[0].hint


def test_mask_stored_in_another_orientation_is_an_error_clean_can_fix(cohort):
    # P02's image is stored RAS; its CTVp file is rewritten LPS: same voxels, other index order.
    write_nifti(as_volume(primary_arrays()["CTVp"], "LPS"), _mask_path(cohort, "P02", "CTVp"))
    result = validate_cohort(cohort)
    assert keys(result) == [("grid.mismatch", "P02", "CTVp", "error")]
    assert result.findings[0].value == pytest.approx(0.0, abs=1e-4)
    assert "another order" in result.findings[0].hint


@pytest.mark.parametrize(
    "values, dtype, fixable",
    [((0, 255), np.uint8, "value != 0"), ((0, 2), np.int16, "value != 0"), ((0.0, 0.3, 0.8), np.float32, ">= 0.5"), ((0, 1, 2), np.uint8, None)],
)
def test_non_binary_masks(cohort, values, dtype, fixable):
    a = primary_arrays()["Bladder"].astype(dtype) * values[-1]
    if len(values) == 3:
        a[15:17, 5:12, 4:11] = values[1]  # a second non-zero value on two columns of voxels
    write_nifti(as_volume(a), _mask_path(cohort, "P03", "Bladder"))
    result = validate_cohort(cohort)
    assert keys(result) == [("mask.binary", "P03", "Bladder", "error")]
    hint = result.findings[0].hint
    if fixable:
        assert fixable in hint and "`cervicontour clean` binarises it" in hint
    else:
        assert "cannot be binarised safely" in hint


def test_binary_float_mask_is_info_only(cohort):
    write_nifti(as_volume(primary_arrays()["Bladder"].astype(np.float32)), _mask_path(cohort, "P03", "Bladder"))
    assert keys(validate_cohort(cohort)) == [("mask.dtype", "P03", "Bladder", "info")]


def test_empty_and_missing_masks_and_notes_that_explain_them(cohort):
    write_nifti(as_volume(np.zeros((40, 40, 20), np.uint8)), _mask_path(cohort, "P01", "CTVn"))
    _mask_path(cohort, "P02", "CTVp").unlink()
    result = validate_cohort(cohort)
    assert keys(result) == [("mask.empty", "P01", "CTVn", "error"), ("structure.missing", "P02", "CTVp", "error")]
    write_notes(cohort, {"P01": "no CTVn (no nodal target)", "P02": "CTVp not contoured"})
    result = validate_cohort(cohort)
    assert keys(result) == [("mask.empty", "P01", "CTVn", "info"), ("structure.missing", "P02", "CTVp", "info")]
    assert result.ok


def test_sub_structures_expected_together(cohort):
    # P01 gets CTVp = Cervix ∪ Uterus ∪ Vagina but no GTVp: GTVp is expected (its siblings are drawn)
    ctvp = primary_arrays()["CTVp"]
    cervix, uterus, vagina = (np.zeros_like(ctvp) for _ in range(3))
    cervix[15:24, 15:25, 5:8] = 1
    uterus[15:24, 15:25, 8:13] = 1
    vagina[15:24, 15:25, 5:6] = 1
    write_case(cohort, "P01", None, {"Cervix": as_volume(cervix), "Uterus": as_volume(uterus), "Vagina": as_volume(vagina)})
    assert keys(validate_cohort(cohort)) == [("structure.missing", "P01", "GTVp", "error")]
    write_notes(cohort, {"P01": "no GTVp"})
    assert keys(validate_cohort(cohort)) == [("structure.missing", "P01", "GTVp", "info")]


def test_rules_run_per_patient(cohort):
    ctvn = primary_arrays()["CTVn"]
    ctvn[9:18, 18:22, 8:10] = 1  # drawn into CTVp: 24 voxels = 0.648 cc (see test_rules_check)
    write_nifti(as_volume(ctvn, orientation("P04")), _mask_path(cohort, "P04", "CTVn"))
    result = validate_cohort(cohort)
    assert keys(result) == [("rules.overlap", "P04", "CTVn/CTVp", "error")]
    assert result.findings[0].value == pytest.approx(0.648)


def test_unknown_file_names_are_a_warning_with_a_suggestion(cohort):
    shutil.copyfile(_mask_path(cohort, "P01", "Bladder"), cohort / "P01" / "structures" / "Bladdder.nii.gz")
    result = validate_cohort(cohort)
    assert keys(result) == [("structure.unknown", "P01", None, "warning")]
    assert "Did you mean 'Bladder'" in result.findings[0].actual


def test_synonym_file_names_are_accepted(cohort):
    _mask_path(cohort, "P01", "Anorectum").rename(cohort / "P01" / "rectum.nii.gz")
    assert validate_cohort(cohort).findings == ()


def test_unrescaled_ct_is_a_hu_warning(cohort):
    unrescaled = (ct_array().astype(np.int32) + 1024).astype(np.int16)
    write_nifti(as_volume(unrescaled, orientation("P02")), cohort / "P02" / "image.nii.gz")
    assert keys(validate_cohort(cohort)) == [("image.hu", "P02", None, "warning")]


def test_phi_in_a_mask_header_and_in_a_folder_name(cohort):
    path = _mask_path(cohort, "P01", "Bladder")
    _set_descrip(path, b"Doe^Jane 1961-03-12")
    (cohort / "P02").rename(cohort / "Smith_19610312")
    found = keys(validate_cohort(cohort))
    assert found == [("deid.filename", "Smith_19610312", None, "error"), ("deid.header", "P01", "Bladder", "error")]


def _set_descrip(path: Path, text: bytes) -> None:
    import gzip

    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[148 : 148 + 80] = text.ljust(80, b"\0")
    path.write_bytes(gzip.compress(bytes(raw)))


def test_extra_slices_against_identical_patients(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=4)
    arrays = primary_arrays()
    pad = lambda a, fill: np.concatenate([a, np.full((40, 40, 10), fill, a.dtype)], axis=2)  # noqa: E731
    write_case(root, "P02", as_volume(pad(ct_array(), -1000)), {k: as_volume(pad(a, 0)) for k, a in arrays.items()})
    result = validate_cohort(root)
    assert keys(result) == [("cohort.extent", "P02", None, "warning")]
    assert "30 slices × 3.00 mm = 90 mm" in result.findings[0].actual
    assert "median 60 mm" in result.findings[0].expected
    write_notes(root, {"P02": "extra slices"})
    assert keys(validate_cohort(root)) == [("cohort.extent", "P02", None, "info")]


def test_nnunet_raw_layout(tmp_path):
    root = tmp_path / "raw"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label = np.zeros((40, 40, 20), np.uint8)
    labels = {"background": 0, "Bladder": 1, "Anorectum": 2, "CTVn": 3, "CTVp": 4, "Parametrium": 5}
    for name, a in primary_arrays().items():
        label[a > 0] = labels[name]
    for case in ("c1", "c2"):
        write_nifti(as_volume(ct_array()), root / "imagesTr" / f"{case}_0000.nii.gz")
        write_nifti(as_volume(label), root / "labelsTr" / f"{case}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz", "channel_names": {"0": "CT"}}))
    assert validate_cohort(root).findings == ()
    label[label == 4] = 0  # no CTVp in c2
    write_nifti(as_volume(label), root / "labelsTr" / "c2.nii.gz")
    assert keys(validate_cohort(root)) == [("structure.missing", "c2", "CTVp", "error")]


def test_not_a_cohort_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        validate_cohort(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        validate_cohort(tmp_path / "empty")


def test_validation_never_writes_into_the_cohort(cohort):
    before = {p: p.read_bytes() for p in cohort.rglob("*") if p.is_file()}
    validate_cohort(cohort)
    after = {p: p.read_bytes() for p in cohort.rglob("*") if p.is_file()}
    assert before == after


def test_dicom_image_lists_basic_profile_attributes(cohort):
    pytest.importorskip("pydicom")
    from dicom_factory import write_ct_series

    # P01's CT as a DICOM series on the same grid (stored = HU + 1024, intercept -1024)
    (cohort / "P01" / "image.nii.gz").unlink()
    stored = (ct_array().astype(np.int32) + 1024).astype(np.uint16)
    write_ct_series(cohort / "P01" / "dicom", stored, origin_mm=ORIGIN, pixel_spacing_mm=(3.0, 3.0), slice_step_mm=3.0)
    result = validate_cohort(cohort)
    assert keys(result) == [("deid.dicom", "P01", None, "error")]
    actual = result.findings[0].actual
    assert "PatientName (20/20 files)" in actual and "PatientID (20/20 files)" in actual
    assert "Synthetic" not in actual  # names the attributes, never their values


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
REAL_CT = REAL / "totalsegmentator" / "example_ct.nii.gz"
REAL_SEG = REAL / "totalsegmentator" / "example_seg_fast_force_split.nii.gz"


@pytest.mark.skipif(not REAL_SEG.is_file(), reason=f"real TotalSegmentator data not present at {REAL_SEG}")
def test_real_ct_with_its_totalsegmentator_bladder(tmp_path):
    from cervicontour.io import read_nifti

    patient = tmp_path / "c" / "TS01"
    (patient / "structures").mkdir(parents=True)
    (patient / "image.nii.gz").symlink_to(REAL_CT)
    seg = read_nifti(REAL_SEG)
    write_nifti(seg.with_array((seg.array == 21).astype(np.uint8)), patient / "structures" / "Bladder.nii.gz")  # urinary_bladder
    result = validate_cohort(tmp_path / "c")
    # the header, HU and grid checks pass on the real CT (its xyzt_units = 0 is reported as info)
    assert [f for f in result.findings if f.check.split(".")[0] in ("header", "image", "grid", "file", "mask")] == [
        f for f in result.findings if f.check == "header.units"
    ]
    assert {f.severity.value for f in result.findings if f.check == "header.units"} == {"info"}
    # only the structures TotalSegmentator does not draw are missing; the bladder's volume is plausible
    assert {(f.check, f.structure) for f in result.errors} == {("structure.missing", n) for n in ("Anorectum", "CTVn", "CTVp", "Parametrium")}
    assert not [f for f in result.findings if f.check.startswith("rules.")]
