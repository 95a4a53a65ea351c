"""The HTML validation report: grouped by patient, the note beside, thumbnails for geometry problems."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from box_cohort import ORIGIN, SPACING, as_volume, primary_arrays
from test_validate_cohort import write_box_cohort

from cervicontour.cohort import write_notes
from cervicontour.io import write_nifti
from cervicontour.report.validation_report import sample_axial, write_validation_report
from cervicontour.validate import validate_cohort
from cervicontour.volume import Volume


def test_report_groups_by_patient_with_note_and_thumbnails(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=3)
    ctvn = primary_arrays()["CTVn"]
    ctvn[9:18, 18:22, 8:10] = 1  # drawn into CTVp (P01, LPS)
    write_nifti(as_volume(ctvn), root / "P01" / "structures" / "CTVn.nii.gz")
    write_nifti(Volume(primary_arrays()["Bladder"] * np.uint8(3), SPACING, ORIGIN), root / "P03" / "structures" / "Bladder.nii.gz")
    write_notes(root, {"P01": "CTVn drawn by the <registrar> & checked", "P02": "nothing special"})
    result = validate_cohort(root)
    path = write_validation_report(list(result.findings), tmp_path / "qa" / "report.html", cohort_root=root, patients=list(result.patients))
    page = path.read_text()
    assert page.index("<section id='P01'>") < page.index("<section id='P03'>")
    assert "CTVn drawn by the &lt;registrar&gt; &amp; checked" in page  # the note, escaped
    assert "rules.overlap" in page and "mask.binary" in page
    assert "No findings</h2><p>P02</p>" in page
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(images) == 1  # one geometry problem (the overlap); mask.binary is not geometric
    assert base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page  # self-contained, static


def test_thumbnail_budget(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=2)
    ctvn = primary_arrays()["CTVn"]
    ctvn[9:18, 18:22, 8:10] = 1
    write_nifti(as_volume(ctvn), root / "P01" / "structures" / "CTVn.nii.gz")
    result = validate_cohort(root)
    path = write_validation_report(list(result.findings), tmp_path / "r.html", cohort_root=root, max_thumbnails=0)
    assert "data:image/png" not in path.read_text()


@pytest.mark.parametrize("orientation", ["LPS", "RAS"])
def test_axial_sampling_is_radiological_whatever_the_storage(orientation):
    # a marker voxel at index (30, 5, 10): patient left (x > 0) and anterior (y < 0) of the centre
    a = np.zeros((40, 40, 20), np.uint8)
    a[30, 5, 10] = 1
    vol = as_volume(a, orientation)
    centre = (ORIGIN[0] + 3 * 20, ORIGIN[1] + 3 * 20, ORIGIN[2] + 3 * 10)  # the centre voxel
    plane = sample_axial(vol, centre, half_width_mm=60.0, step_mm=3.0)
    row, col = np.argwhere(plane == 1)[0]
    assert col > plane.shape[1] / 2  # patient left on the image right
    assert row < plane.shape[0] / 2  # anterior at the top
