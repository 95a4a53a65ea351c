"""The real console script: a phantom case → feet-first DICOM CT → RTSTRUCT → new cohort case, and back.

The CT series is written feet-first (rows to the patient's right, slices running inferior) while
the masks stay in their LPS NIfTI files, so the export must map every mask onto the series by
world position. The import is then compared with the original masks voxel by voxel in LPS.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

from dicom_factory import write_ct_series  # noqa: E402

from cervicontour.cohort import load_cohort  # noqa: E402
from cervicontour.export.rtstruct import write_rtstruct  # noqa: E402
from cervicontour.structures import PRIMARY  # noqa: E402
from cervicontour.volume import to_lps  # noqa: E402

SCRIPT = str(Path(sys.executable).with_name("cervicontour"))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def phantom(small_cohort, tmp_path_factory):
    """One phantom patient and its CT written as a feet-first DICOM series with the same voxel centres."""
    case = load_cohort(small_cohort)["SYN001"]
    image = case.load_image()
    assert image.orientation == "LPS"
    root = tmp_path_factory.mktemp("rtcli")
    ni, nj, nk = image.shape
    sx, sy, sz = image.spacing_mm
    stored = np.clip(image.array.astype(np.int32) + 1024, 0, 65535).astype(np.uint16)[::-1, :, ::-1]
    corner = np.asarray(image.origin_mm) + [(ni - 1) * sx, 0.0, (nk - 1) * sz]  # patient's left, anterior, top
    series = root / "SYN001" / "CT"
    write_ct_series(series, stored, origin_mm=tuple(corner), orientation=((-1, 0, 0), (0, 1, 0)),
                    pixel_spacing_mm=(sy, sx), slice_step_mm=sz, clinical_header=True)
    return case, image, series, root


def test_export_then_import_reproduces_the_masks(phantom, tmp_path):
    case, image, series, _ = phantom
    rs = tmp_path / "RS.dcm"
    result = _run("rtstruct", "export", "--series", str(series), "--masks", str(case.image_path.parent / "structures"),
                  "--out", str(rs))
    assert result.returncode == 0, result.stderr
    assert "ROI 1 Bladder (ORGAN)" in result.stdout and "CTVn (CTV)" in result.stdout
    out = tmp_path / "cohort" / "SYN001"
    result = _run("rtstruct", "import", "--series", str(series), "--rtstruct", str(rs), "--out", str(out))
    assert result.returncode == 0, result.stderr
    imported = load_cohort(tmp_path / "cohort")["SYN001"]
    new_image = imported.load_image()
    assert new_image.orientation == "RPI"  # stored as the feet-first series is
    assert (to_lps(new_image).array == image.array).all()
    assert set(PRIMARY) <= set(imported.structure_names)
    for name in case.structure_names:
        if name == "External":
            continue
        original = case.load_structure(name).array.astype(bool)
        back = to_lps(imported.load_structure(name)).array.astype(bool)
        assert (back == original).all(), name
    # every structure was drawn (MANUAL): no prediction.json beside the masks
    import pydicom

    ds = pydicom.dcmread(rs)
    assert {r.ROIGenerationAlgorithm for r in ds.StructureSetROISequence} == {"MANUAL"}


def test_dicom_to_cohort_imports_patients_and_reports_the_failures(phantom, tmp_path):
    case, image, series, root = phantom
    source = tmp_path / "clinic"
    import shutil

    shutil.copytree(series, source / "SYN001" / "CT")
    write_rtstruct(series, {n: case.load_structure(n) for n in ("Bladder", "CTVp")}, source / "SYN001" / "RS" / "RS1.dcm")
    shutil.copytree(series, source / "SYN002" / "CT")  # a CT without a structure set
    result = _run("dicom-to-cohort", str(source), str(tmp_path / "cohort"))
    assert result.returncode == 1
    assert "SYN002: not imported: no RTSTRUCT" in result.stderr
    assert "imported 1 of 2 patients" in result.stdout
    cohort = load_cohort(tmp_path / "cohort")
    assert list(cohort) == ["SYN001"]
    bladder = to_lps(cohort["SYN001"].load_structure("Bladder")).array.astype(bool)
    assert (bladder == case.load_structure("Bladder").array.astype(bool)).all()


def test_bad_inputs_exit_2_with_a_message(phantom, tmp_path):
    from typer.testing import CliRunner

    from cervicontour.cli import app

    case, _, series, _ = phantom
    runner = CliRunner()
    result = runner.invoke(app, ["rtstruct", "export", "--series", str(tmp_path), "--masks", str(case.image_path.parent),
                                 "--out", str(tmp_path / "x.dcm")])
    assert result.exit_code == 2 and "expected DICOM image slices" in result.output
    result = runner.invoke(app, ["rtstruct", "import", "--series", str(series), "--rtstruct", str(case.image_path),
                                 "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "RT Structure Set" in result.output


def test_predict_writes_rtstruct_and_report_for_a_dicom_series(phantom, tmp_path):
    """predict --rtstruct --report on the feet-first series: an AUTOMATIC RTSTRUCT that references it."""
    import json

    import pydicom

    _, _, series, _ = phantom
    out = tmp_path / "pred"
    result = _run("predict", str(series), "--out", str(out), "--rtstruct", "--report")
    assert result.returncode == 0, result.stderr
    (case_dir,) = [p.parent for p in out.glob("*/prediction.json")]
    record = json.loads((case_dir / "prediction.json").read_text())
    rs = pydicom.dcmread(case_dir / "RS.dcm")
    slices = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series.iterdir())]
    assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    referenced = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == slices[0].SeriesInstanceUID
    predicted = {p.name[: -len(".nii.gz")] for p in (case_dir / "structures").glob("*.nii.gz")}
    names = {roi.ROIName for roi in rs.StructureSetROISequence}
    assert predicted <= names
    generation = {str(c.ROIGenerationAlgorithm) for c in rs.StructureSetROISequence}
    assert generation == {"AUTOMATIC"}
    html = (case_dir / "report" / "index.html").read_text()
    assert record["model"]["name"] in html
    assert "not for clinical use" in html.lower()


def test_predict_rtstruct_on_nifti_writes_the_ct_series_it_references(small_cohort, tmp_path):
    """predict --rtstruct on a NIfTI CT: OUT/<case>/CT holds the CT as DICOM (the NIfTI's voxels, read
    by SimpleITK), RS.dcm references it slice by slice, dciodvfy finds no error, and importing both
    gives the predicted masks back."""
    import shutil

    import pydicom
    import SimpleITK as sitk

    image = small_cohort / "SYN002" / "image.nii.gz"
    result = _run("predict", str(image), "--out", str(tmp_path / "p"), "--rtstruct")
    assert result.returncode == 0, result.stderr
    case_dir = tmp_path / "p" / "SYN002"  # the case folder names its image.nii.gz
    assert "references the NIfTI CT written as DICOM" in result.stdout
    series, rs = case_dir / "CT", case_dir / "RS.dcm"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    dicom, nifti = reader.Execute(), sitk.ReadImage(str(image))
    assert load_cohort(small_cohort)["SYN002"].load_image().orientation == "LPS"  # so the arrays line up as stored
    assert np.array_equal(sitk.GetArrayFromImage(dicom), sitk.GetArrayFromImage(nifti))
    assert np.allclose(dicom.GetOrigin(), nifti.GetOrigin(), atol=1e-6) and np.allclose(dicom.GetSpacing(), nifti.GetSpacing(), atol=1e-6)
    slices = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in series.glob("*.dcm")}
    ds = pydicom.dcmread(rs)
    assert ds.PatientID == "SYN002"
    referenced = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert {item.ReferencedSOPInstanceUID for item in referenced.ContourImageSequence} == set(slices)
    if shutil.which("dciodvfy"):
        for path in [rs, *slices.values()]:
            run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            assert not [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")], path.name
    result = _run("rtstruct", "import", "--series", str(series), "--rtstruct", str(rs), "--out", str(tmp_path / "back" / "SYN002"))
    assert result.returncode == 0, result.stderr
    back = load_cohort(tmp_path / "back")["SYN002"]
    for mask in sorted((case_dir / "structures").glob("*.nii.gz")):
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(mask))) > 0
        name = mask.name[: -len(".nii.gz")]
        if predicted.any():
            again = sitk.GetArrayFromImage(sitk.ReadImage(str(back.structure_paths[name]))) > 0
            assert 2 * np.count_nonzero(predicted & again) / (predicted.sum() + again.sum()) >= 0.98, name
