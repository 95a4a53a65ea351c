"""`rules.check` on hand-made boxes (expected values derived by hand) and on real WORD labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from box_cohort import BOXES, ORIGIN, SPACING, VOXEL_CC, as_volume, box, primary_arrays, primary_volumes

from cervicontour.errors import InputError
from cervicontour.rules import check, load_rules
from cervicontour.rules.masks import crop_volume
from cervicontour.volume import Volume

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
WORD = REAL / "word" / "labels"
ORIENTATIONS = ("LPS", "RAS", "oblique")


def _keys(findings):
    return sorted((f.check, f.structure, f.severity.value) for f in findings)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_box_phantom_obeys_every_rule(orientation):
    assert check(primary_volumes(orientation)) == []


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_ctvn_drawn_into_ctvp_is_an_error_with_its_size_and_place(orientation):
    # CTVn's left box grows right along i = 9..18 (j 18..22, k 8..10), into CTVp (i >= 15):
    # 3 × 4 × 2 = 24 shared voxels = 0.648 cc, centred at index (16, 19.5, 8.5).
    ctvn = box(*BOXES["CTVn"], ((9, 18, 8), (18, 22, 10)))
    findings = check(primary_volumes(orientation, CTVn=ctvn), patient_id="p1")
    assert _keys(findings) == [("rules.overlap", "CTVn/CTVp", "error")]
    (f,) = findings
    assert f.patient_id == "p1"
    assert f.value == pytest.approx(24 * VOXEL_CC)
    assert "24 voxels" in f.actual
    if orientation != "oblique":
        assert "z -6.0 to -3.0 mm" in f.actual  # k = 8, 9 → z = -30 + 3k
    expected_where = as_volume(ctvn, orientation).index_to_world(
        np.array([16.0, 19.5, 8.5]) if orientation != "RAS" else np.array([39 - 16.0, 39 - 19.5, 8.5])
    )
    np.testing.assert_allclose(f.where_mm, expected_where, atol=1e-3)
    if orientation != "oblique":
        np.testing.assert_allclose(f.where_mm, np.asarray(ORIGIN) + 3.0 * np.array([16.0, 19.5, 8.5]), atol=1e-3)


def test_allowed_overlaps_are_silent_and_others_warn():
    # Bladder grown posteriorly (j up to 18): 9 × 3 × 6 = 162 voxels inside CTVp (j 15..17, k 5..10).
    bladder = box(((15, 5, 4), (24, 18, 11)))
    f = check(primary_volumes(Bladder=bladder))
    assert _keys(f) == [("rules.overlap", "Bladder/CTVp", "warning")]
    assert f[0].value == pytest.approx(162 * VOXEL_CC)
    # Parametrium over everything: allowed (its 32000 voxels = 864 cc only break the volume range).
    everything = np.ones((40, 40, 20), np.uint8)
    assert _keys(check(primary_volumes(Parametrium=everything))) == [("rules.volume", "Parametrium", "warning")]
    # CTVn bridging both sides through the Bladder (i 9..29, j 6..13, k 6..8): allowed, one component.
    ctvn_over_bladder = box(*BOXES["CTVn"], ((9, 6, 6), (30, 14, 9)))
    assert check(primary_volumes(CTVn=ctvn_over_bladder)) == []


def test_overlap_tolerance_from_rules():
    rules = load_rules()
    from dataclasses import replace

    loose = replace(rules, overlap=replace(rules.overlap, disjoint=tuple(replace(g, tolerance_cc=1.0) for g in rules.overlap.disjoint)))
    ctvn = box(*BOXES["CTVn"], ((9, 18, 8), (18, 22, 10)))  # 0.648 cc of overlap
    assert check(primary_volumes(CTVn=ctvn), rules=loose) == []
    assert len(check(primary_volumes(CTVn=ctvn), rules=rules)) == 1


def test_compound_rule_counts_differing_voxels():
    # CTVp (k 5..13) = Cervix (k 5..9) ∪ Uterus (k 9..13): holds.
    cervix = box(((15, 15, 5), (24, 25, 9)))
    uterus = box(((15, 15, 9), (24, 25, 13)))
    parts = {"Cervix": as_volume(cervix), "Uterus": as_volume(uterus)}
    assert check({**primary_volumes(), **parts}) == []
    # Uterus stops at k = 12: the top slice of CTVp (9 × 10 = 90 voxels) is outside the parts.
    short = box(((15, 15, 9), (24, 25, 12)))
    # ... and the Cervix pokes 1 slice below CTVp (k = 4): 90 voxels of parts outside CTVp.
    low = box(((15, 15, 4), (24, 25, 9)))
    found = check({**primary_volumes(), "Cervix": as_volume(low), "Uterus": as_volume(short)})
    assert _keys(found) == [("rules.compound", "CTVp", "error")]
    f = found[0]
    assert f.value == pytest.approx(180 * VOXEL_CC)
    assert "2.430 cc (90 voxels) of CTVp lie outside its parts" in f.actual
    assert "2.430 cc (90 voxels) of the parts lie outside CTVp" in f.actual
    assert "GTVp, Vagina absent" in f.expected
    # Sub-structures but no parent: the rule is skipped (presence is validate's job).
    assert check({"Cervix": as_volume(cervix), "Uterus": as_volume(uterus)}) == []


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_bladder_posterior_of_anorectum_is_an_error(orientation):
    arrays = primary_arrays()
    swapped = primary_volumes(orientation, Bladder=box(((15, 28, 4), (24, 35, 11))), Anorectum=box(((16, 5, 2), (23, 12, 12))))
    found = check(swapped)
    assert _keys(found) == [("rules.position", "Bladder/Anorectum", "error")]
    # centroids: Bladder j = 31, Anorectum j = 8 → 23 voxels × 3 mm = 69 mm the wrong way.
    # (oblique: the AP axis of the grid is rotated 20°, so 69 · cos 20° along world y)
    expected = 69.0 if orientation != "oblique" else 69.0 * np.cos(np.deg2rad(20.0))
    assert found[0].value == pytest.approx(-expected, abs=0.01)
    assert f"{expected:.1f} mm posterior of Anorectum's" in found[0].actual
    assert arrays["Bladder"].sum() == 441  # inputs untouched


@pytest.mark.parametrize("orientation", ("LPS", "RAS"))
def test_left_and_right_swapped_is_an_error(orientation):
    # Kidney_L drawn at i = 2..6 (patient right, x = -54 mm), Kidney_R at i = 33..37 (x = +45 mm).
    left = as_volume(box(((2, 20, 14), (7, 26, 19))), orientation)
    right = as_volume(box(((33, 20, 14), (38, 26, 19))), orientation)
    found = check({**primary_volumes(orientation), "Kidney_L": left, "Kidney_R": right})
    assert _keys(found) == [("rules.laterality", "Kidney_L/Kidney_R", "error")]
    assert found[0].value == pytest.approx(-(35 - 4) * 3.0)
    assert check({**primary_volumes(orientation), "Kidney_L": right, "Kidney_R": left}) == []


def test_components_and_volume_ranges():
    speck = box(*BOXES["Bladder"], ((30, 2, 2), (31, 3, 3)))
    found = check(primary_volumes(Bladder=speck))
    assert _keys(found) == [("rules.components", "Bladder", "warning")]
    assert found[0].value == 2
    np.testing.assert_allclose(found[0].where_mm, np.asarray(ORIGIN) + 3.0 * np.array([30, 2, 2]))
    tiny = box(((15, 5, 4), (17, 7, 6)))  # 8 voxels = 0.216 cc < 5 cc
    found = check(primary_volumes(Bladder=tiny))
    assert _keys(found) == [("rules.volume", "Bladder", "warning")]
    assert found[0].value == pytest.approx(8 * VOXEL_CC)
    assert found[0].expected == "5 to 1500 cc"


def test_empty_masks_count_as_absent():
    empty = np.zeros((40, 40, 20), np.uint8)
    assert check(primary_volumes(Bladder=empty)) == []


def test_cropped_masks_give_the_same_findings_as_full_ones():
    ctvn = box(*BOXES["CTVn"], ((9, 18, 8), (18, 22, 10)))
    full = primary_volumes(CTVn=ctvn, Bladder=box(*BOXES["Bladder"], ((30, 2, 2), (31, 3, 3))))
    cropped = {n: crop_volume(v) for n, v in full.items()}
    assert [f.to_dict() for f in check(cropped)] == [f.to_dict() for f in check(full)]


def test_masks_off_one_lattice_are_refused():
    masks = primary_volumes()
    masks["Bladder"] = Volume(masks["Bladder"].array, SPACING, (ORIGIN[0] + 1.0, ORIGIN[1], ORIGIN[2]))
    with pytest.raises(InputError, match="not a whole number of voxels"):
        check(masks)
    masks["Bladder"] = Volume(masks["Bladder"].array, (3.0, 3.0, 2.5), ORIGIN)
    with pytest.raises(InputError, match="not on the grid"):
        check(masks)


# --------------------------------------------------------------------------- real data
@pytest.mark.skipif(not WORD.is_dir(), reason=f"real WORD labels not present at {WORD}")
def test_word_labels_bladder_anterior_to_rectum_and_volumes_in_range():
    from cervicontour.io import read_nifti

    files = sorted(WORD.glob("*.nii.gz"))
    assert len(files) >= 1
    for path in files:
        label_map = read_nifti(path)
        masks = {"Bladder": label_map.with_array(label_map.array == 14), "Anorectum": label_map.with_array(label_map.array == 13)}
        found = check(masks, patient_id=path.name)
        assert not [f for f in found if f.check in ("rules.position", "rules.volume", "rules.overlap")], found
        assert not [f for f in found if f.is_error], found
        # the same labels stored RAS (axes 0 and 1 reversed, same world): same verdict
        flipped = {
            n: Volume(v.array[::-1, ::-1, :], v.spacing_mm, tuple(v.index_to_world(np.array([v.shape[0] - 1, v.shape[1] - 1, 0]))),
                      v.direction @ np.diag([-1.0, -1.0, 1.0]))
            for n, v in masks.items()
        }
        assert [f.check for f in check(flipped)] == [f.check for f in found]
