"""`clean_cohort`: fixes what is safe, leaves the rest as findings, never touches its input."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from box_cohort import ORIGIN, SPACING, as_volume, primary_arrays
from corruptions import (
    copy_cohort,
    draw_ctvn_into_ctvp,
    finding_keys,
    make_4d,
    mask_path,
    multi_label_mask,
    rename_to_synonym,
    reorient_mask,
    rescale_mask,
    set_header_text,
    shift_origin,
    tree_hashes,
    truncate,
)
from test_validate_cohort import write_box_cohort

from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.validate import clean_cohort, validate_cohort
from cervicontour.validate.clean import read_changes
from cervicontour.validate.header import read_header
from cervicontour.volume import Volume


@pytest.fixture(scope="module")
def baseline(small_cohort):
    return validate_cohort(small_cohort)


def _fixable(root):
    """Every fixable corruption, one or two per patient of the small synthetic cohort."""
    rescale_mask(root, "SYN002", "Bladder", 255)  # 0/255 → binarise
    set_header_text(root / "SYN005" / "image.nii.gz", "descrip", b"Doe^Jane DOB 1961-03-12")  # PHI in the image
    set_header_text(mask_path(root, "SYN001", "CTVn"), "aux_file", b"MRN 4417321")  # PHI in a mask
    shift_origin(root, "SYN003", "CTVp", 0.004)  # floating-point-level origin difference
    reorient_mask(root, "SYN002", "CTVp")  # same voxels stored RAS beside an LPS image
    rename_to_synonym(root, "SYN001", "Anorectum", "rectum.nii.gz")  # synonym, beside the image
    rescale_mask(root, "SYN005", "Uterus", 1.0, np.float32)  # binary float mask


def test_clean_fixes_every_fixable_corruption_and_never_touches_the_input(small_cohort, baseline, tmp_path):
    root = copy_cohort(small_cohort, tmp_path / "in")
    _fixable(root)
    dirty = validate_cohort(root)
    assert {(f.check, f.patient_id) for f in dirty.errors} == {
        ("mask.binary", "SYN002"), ("deid.header", "SYN005"), ("deid.header", "SYN001"),
        ("grid.mismatch", "SYN003"), ("grid.mismatch", "SYN002"),
    }
    before = tree_hashes(root)
    result = clean_cohort(root, tmp_path / "out")
    assert tree_hashes(root) == before  # input byte-identical
    assert result.remaining.errors == []
    # nothing else changed: the cleaned cohort reports what the pristine one reports
    assert finding_keys(result.remaining.findings) == finding_keys(baseline.findings)

    rows = read_changes(tmp_path / "out" / "changes.csv")
    assert rows == list(result.changes)
    what = {(r.patient_id, r.file, r.what.split(" (")[0].split(":")[0]) for r in rows}
    assert what == {
        ("SYN002", "SYN002/structures/Bladder.nii.gz", "binarised"),
        ("SYN005", "SYN005/image.nii.gz", "blanked header field descrip"),
        ("SYN001", "SYN001/structures/CTVn.nii.gz", "blanked header field aux_file"),
        ("SYN003", "SYN003/structures/CTVp.nii.gz", "resampled onto the image grid"),
        ("SYN002", "SYN002/structures/CTVp.nii.gz", "resampled onto the image grid"),
        ("SYN001", "SYN001/structures/Anorectum.nii.gz", "renamed SYN001/rectum.nii.gz to SYN001/structures/Anorectum.nii.gz"),
        ("SYN005", "SYN005/structures/sub/Uterus.nii.gz", "stored as uint8"),
    }
    assert all(r.why for r in rows)
    assert not any("Doe" in r.what or "4417321" in r.what for r in rows)  # changes.csv carries no PHI
    out = tmp_path / "out"
    # voxels kept: the binarised Bladder is the original's inside; the CTVp moved by re-indexing only
    assert np.array_equal(read_nifti(mask_path(out, "SYN002", "Bladder")).array, read_nifti(mask_path(small_cohort, "SYN002", "Bladder")).array)
    assert np.array_equal(read_nifti(mask_path(out, "SYN002", "CTVp")).array, read_nifti(mask_path(small_cohort, "SYN002", "CTVp")).array)
    # the image's voxels were copied bit for bit; only its descrip is blank
    assert read_header(out / "SYN005" / "image.nii.gz").text["descrip"] == ""
    assert np.array_equal(read_nifti(out / "SYN005" / "image.nii.gz").array, read_nifti(small_cohort / "SYN005" / "image.nii.gz").array)
    assert (out / "notes.csv").read_bytes() == (small_cohort / "notes.csv").read_bytes()


def test_cleaning_a_cleaned_cohort_changes_nothing(small_cohort, tmp_path):
    root = copy_cohort(small_cohort, tmp_path / "in")
    _fixable(root)
    first = clean_cohort(root, tmp_path / "once")
    second = clean_cohort(tmp_path / "once", tmp_path / "twice")
    assert first.changes and second.changes == ()
    once, twice = tree_hashes(tmp_path / "once"), tree_hashes(tmp_path / "twice")
    once.pop("changes.csv"), twice.pop("changes.csv")
    assert once == twice
    with (tmp_path / "twice" / "changes.csv").open() as handle:
        assert list(csv.reader(handle)) == [["patient_id", "file", "what", "why"]]


def test_what_cannot_be_fixed_safely_stays_a_finding(small_cohort, tmp_path):
    root = copy_cohort(small_cohort, tmp_path / "in")
    shift_origin(root, "SYN001", "CTVp", 5.0)
    multi_label_mask(root, "SYN002", "Bladder")
    draw_ctvn_into_ctvp(root, "SYN003")
    make_4d(root, "SYN005")
    truncate(mask_path(root, "SYN004", "Parametrium"))
    before = tree_hashes(root)
    result = clean_cohort(root, tmp_path / "out")
    assert tree_hashes(root) == before
    assert {(f.check, f.patient_id, f.structure) for f in result.remaining.errors} == {
        ("grid.mismatch", "SYN001", "CTVp"),
        ("mask.binary", "SYN002", "Bladder"),
        ("rules.overlap", "SYN003", "CTVn/CTVp"),
        ("header.dim", "SYN005", None),
        ("file.unreadable", "SYN004", "Parametrium"),
    }
    assert result.changes == ()
    # left as they were (byte copies), for a person to fix
    for rel in ("SYN001/structures/CTVp.nii.gz", "SYN002/structures/Bladder.nii.gz", "SYN005/image.nii.gz"):
        assert tree_hashes(tmp_path / "out")[rel] == before[rel]


def test_clean_box_cohort_rows_by_hand(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=4)
    bladder = primary_arrays()["Bladder"]
    write_nifti(Volume(bladder * np.uint8(255), SPACING, ORIGIN), root / "P01" / "structures" / "Bladder.nii.gz")
    fractions = primary_arrays()["CTVp"].astype(np.float32) * 0.75
    fractions[15, 15, 5] = 0.25  # one voxel below 0.5: outside after binarising
    write_nifti(as_volume(fractions), root / "P03" / "structures" / "CTVp.nii.gz")
    result = clean_cohort(root, tmp_path / "out")
    assert [(c.patient_id, c.what) for c in result.changes] == [
        ("P01", "binarised: values 0 and 255 (uint8) → 0/1"),
        ("P03", "binarised: 2 values in (0, 1] (float32) → 0/1"),
    ]
    assert result.changes[1].why == "rule: inside = value >= 0.5 (fractions in [0, 1])"
    ctvp = read_nifti(tmp_path / "out" / "P03" / "structures" / "CTVp.nii.gz").array
    assert ctvp.dtype == np.uint8 and ctvp.sum() == 720 - 1 and ctvp[15, 15, 5] == 0
    # the lost voxel is a corner of CTVp: nothing else changes
    assert result.remaining.findings == ()


def test_output_folder_rules(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=1)
    with pytest.raises(InputError, match="outside the input"):
        clean_cohort(root, root / "cleaned")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        clean_cohort(root, tmp_path / "busy")
    shutil.rmtree(tmp_path / "busy")
    assert clean_cohort(root, tmp_path / "busy").remaining.ok


def test_clean_loses_nothing(tmp_path):
    root = write_box_cohort(tmp_path / "c", n=2)
    (root / "preview").mkdir()
    (root / "preview" / "P01.png").write_bytes(b"\x89PNG fake")
    (root / "P01" / "readme.txt").write_text("drawn by the registrar")
    (root / "P02" / "structures" / "Bowel_Bag.nii.gz").write_bytes((root / "P02" / "structures" / "CTVp.nii.gz").read_bytes())
    result = clean_cohort(root, tmp_path / "out")
    before, after = tree_hashes(root), tree_hashes(tmp_path / "out")
    after.pop("changes.csv")
    assert before == after  # nothing to fix: every file copied byte for byte, unknown ones too
    assert [f.check for f in result.remaining.findings] == ["structure.unknown"]
