"""The input gate (cervicontour.io.gate) and the out-of-scope flag (cervicontour.validate.scope).

Images are built by hand; expected values follow from their construction.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import real_data

from cervicontour.errors import InputError
from cervicontour.io.gate import ct_problems, require_ct
from cervicontour.validate.scope import BONE_MIN_CM2, out_of_scope, pelvic_bone_extent_mm
from cervicontour.volume import Volume


def _ct(array, spacing=(2.0, 2.0, 3.0), **metadata) -> Volume:
    return Volume(np.asarray(array), spacing, (0.0, 0.0, 0.0), np.eye(3), metadata)


def _body(shape=(40, 40, 12)) -> np.ndarray:
    ct = np.full(shape, -1000, np.int16)
    ct[5:35, 8:32, :] = 40
    return ct


def test_a_plausible_ct_passes():
    assert ct_problems(_ct(_body())) == []
    assert require_ct(_ct(_body()), source="x") == []


@pytest.mark.parametrize("array, check", [
    (np.full((40, 40, 12), -1024, np.int16), "body"),
    (np.full((40, 40, 12), 0, np.int16), "hu"),
    (np.where(_body() > 0, 900, 0).astype(np.int16), "hu"),  # MR-like: no negative values
    (_body()[:, :, :3], "slices"),
    (_body()[:1, :1, :1], "slices"),
])
def test_implausible_images_are_named(array, check):
    assert check in [p.check for p in ct_problems(_ct(array))]


def test_non_finite_values_are_refused_even_with_force():
    array = _body().astype(np.float32)
    array[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite"):
        require_ct(_ct(array), source="ct.nii.gz", force=True)


def test_force_lets_the_plausibility_checks_through_and_returns_them():
    mr = _ct(_body(), Modality="MR")
    with pytest.raises(InputError, match=r"Modality MR.*--force predicts anyway"):
        require_ct(mr, source="series")
    (problem,) = require_ct(mr, source="series", force=True)
    assert problem.check == "modality"
    assert out_of_scope(mr, {}, forced=[problem])[0].startswith("input gate overridden with --force: expected a CT series")


def test_pelvic_bone_extent_counts_slices_with_bone_on_both_sides():
    """Two 4 × 4 cm bone blocks 10 cm either side of the midline on 10 of 20 slices at 3 mm: 30 mm."""
    ct = np.full((100, 60, 20), -1000, np.int16)
    ct[10:90, 10:50, :] = 40  # body, 20 cm wide, centred
    ct[10:30, 20:40, 5:15] = 700  # right: 20 × 20 px of 2 mm = 16 cm² ≥ BONE_MIN_CM2
    ct[70:90, 20:40, 5:15] = 700  # left
    assert 16.0 >= BONE_MIN_CM2
    assert pelvic_bone_extent_mm(_ct(ct)) == pytest.approx(30.0)
    ct[70:90, 20:40, 5:15] = 40  # one side only: not a pelvis
    assert pelvic_bone_extent_mm(_ct(ct)) == 0.0


def test_no_pelvis_and_no_uterus_are_flagged():
    ct = _ct(_body())
    mask = np.zeros(ct.shape, np.uint8)
    mask[10:20, 10:20, 2:6] = 1  # 400 voxels of 12 mm³ = 4.8 cc
    (reason,) = out_of_scope(ct, {"CTVp": ct.with_array(mask)})
    assert reason.startswith("no pelvis in the field of view: bilateral pelvic bone over 0 mm")


def test_the_real_ct_is_predicted_and_flagged_out_of_scope(tmp_path):
    """The TotalSegmentator example CT is a male abdomen-pelvis: predicted (exit 0) and flagged."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from cervicontour.cli import app

    ct = real_data("totalsegmentator", "example_ct.nii.gz")
    result = CliRunner().invoke(app, ["predict", str(ct), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "example_ct" / "prediction.json").read_text())
    assert any(r.startswith("no uterus-like CTVp") for r in record["out_of_scope"]), record["out_of_scope"]
    assert "outside what this model was made for" in result.output


def test_the_real_ct_cut_to_the_upper_abdomen_is_flagged_without_a_pelvis(tmp_path):
    """Slices 50 and up of the real CT (lung bases to about L3): predicted, and 'no pelvis in the field of view'."""
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from cervicontour.cli import app
    from cervicontour.io import read_nifti, write_nifti

    ct = read_nifti(real_data("totalsegmentator", "example_ct.nii.gz"))
    assert ct.orientation == "RAS"  # axis 2 runs superior
    upper = Volume(np.ascontiguousarray(ct.array[:, :, 50:]), ct.spacing_mm, tuple(ct.index_to_world(np.array([0, 0, 50]))), ct.direction)
    path = write_nifti(upper, tmp_path / "upper.nii.gz")
    result = CliRunner().invoke(app, ["predict", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "upper" / "prediction.json").read_text())
    assert record["out_of_scope"] and record["out_of_scope"][0].startswith("no pelvis in the field of view"), record["out_of_scope"]


def test_validate_reports_what_the_gate_would_refuse(tmp_path):
    """validate (findings, not refusal): an all-air image (image.body) and a 3-slice one (image.slices)."""
    from cervicontour.cohort import write_case
    from cervicontour.validate import validate_cohort

    air = np.full((40, 40, 12), -1000, np.int16)
    air[::7, ::5, :] = -980  # noise, not a constant: image.hu stays quiet
    write_case(tmp_path / "c", "P1", _ct(air), {})
    write_case(tmp_path / "c", "P2", _ct(_body()[:, :, :3]), {})
    write_case(tmp_path / "c", "P3", _ct(_body()), {})
    found = {(f.patient_id, f.check) for f in validate_cohort(tmp_path / "c").findings if f.check.startswith("image.")}
    assert ("P1", "image.body") in found and ("P2", "image.slices") in found
    assert not any(pid == "P3" for pid, _ in found)
