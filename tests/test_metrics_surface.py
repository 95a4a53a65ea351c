"""Surface metrics against values derived by hand (no recorded outputs)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from cervicontour.metrics import ToleranceBelowSpacingWarning, surface_distances
from cervicontour.metrics.boundary import surfel_area_table

MODELS = ("voxel6", "surfel")


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def quiet_surface_distances(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning or anything else may escape
        return surface_distances(*args, **kwargs)


@pytest.mark.parametrize("boundary", MODELS)
@pytest.mark.parametrize("spacing", [(2.5, 0.98, 0.98), (3.0, 1.0, 0.5)])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_box_shifted_by_k_voxels_has_hd_k_times_spacing(boundary, spacing, axis, k):
    ref = box((16, 16, 16), (4, 5, 3), (9, 10, 8))
    lo, hi = [4, 5, 3], [9, 10, 8]
    lo[axis] += k
    hi[axis] += k
    pred = box((16, 16, 16), lo, hi)
    d = quiet_surface_distances(ref, pred, spacing, boundary=boundary)
    assert d.hausdorff_mm() == k * spacing[axis]
    assert d.hd95_mm() <= k * spacing[axis]


@pytest.mark.parametrize("boundary", MODELS)
def test_identical_masks_give_zero_distances_and_full_surface_dice(boundary):
    rng = np.random.default_rng(3)
    mask = rng.random((12, 11, 10)) > 0.4
    d = quiet_surface_distances(mask, mask.copy(), (0.98, 0.98, 2.5), boundary=boundary)
    assert (d.hausdorff_mm(), d.hd95_mm(), d.hd95_pooled_mm(), d.assd_mm(), d.masd_mm()) == (0, 0, 0, 0, 0)
    assert d.surface_dice(2.5) == 1.0


@pytest.mark.parametrize("boundary", MODELS)
def test_concentric_spheres_distances_bracket_the_radius_difference(boundary):
    # Digital balls |x - c| <= r at 1 mm: a voxel6 boundary voxel has a face neighbour outside,
    # so its radius lies in (r - 1, r]; surfel points sit half a voxel further out at most.
    # With r = 6 and 9 every distance is >= 9 - 1 - 6 = 2 and <= 9 + 1 - (6 - 1) = 5.
    n = 25
    grid = np.indices((n, n, n)) - n // 2
    radius = np.sqrt((grid**2).sum(axis=0))
    inner, outer = radius <= 6, radius <= 9
    d = quiet_surface_distances(inner, outer, (1.0, 1.0, 1.0), boundary=boundary)
    for value in (d.hausdorff_mm(), d.hd95_mm(), d.hd95_pooled_mm(), d.assd_mm(), d.masd_mm()):
        assert 2.0 <= value <= 5.0
    assert d.surface_dice(1.5) == 0.0
    assert d.surface_dice(5.0) == 1.0


def test_far_island_separates_hd_from_hd95_voxel6():
    spacing = (2.5, 0.98, 0.98)
    ref = box((30, 16, 16), (4, 4, 4), (9, 9, 9))  # 5×5×5: 125 voxels, 125 - 27 = 98 on the boundary
    pred = ref.copy()
    pred[25, 6, 6] = True  # 17 voxels beyond the face at x = 8
    d = quiet_surface_distances(ref, pred, spacing)
    assert d.hausdorff_mm() == 17 * 2.5
    assert d.hd95_mm() == 0.0  # 1 of 99 predicted boundary voxels is off: below the 95th percentile
    assert d.hd95_pooled_mm() == 0.0
    assert d.assd_mm() == pytest.approx(42.5 / (98 + 99), rel=1e-12)
    assert d.masd_mm() == pytest.approx((0 + 42.5 / 99) / 2, rel=1e-12)
    assert d.surface_dice(3.0) == pytest.approx(196 / 197, rel=1e-12)


def test_far_island_separates_hd_from_hd95_surfel():
    spacing = (2.5, 0.98, 0.98)
    ref = box((30, 16, 16), (4, 4, 4), (9, 9, 9))
    pred = ref.copy()
    pred[25, 6, 6] = True
    d = quiet_surface_distances(ref, pred, spacing, boundary="surfel")
    # Surfels sit on cube corners, half a voxel out: the island's far corners (x = 25.5) are
    # 17 voxels from the box's far face (x = 8.5).
    assert d.hausdorff_mm() == 17 * 2.5
    assert d.hd95_mm() == 0.0
    assert d.hausdorff_mm() != d.hd95_mm()


@pytest.mark.parametrize("boundary,expected_hd", [("voxel6", 2 * 1.5), ("surfel", 3 * 1.5)])
def test_hollow_box_measures_the_inner_surface(boundary, expected_hd):
    # Outer box 12³ with a 6³ cavity (shell 3 voxels thick) against the filled box, at 1.5 mm.
    shape = (16, 16, 16)
    filled = box(shape, (2, 2, 2), (14, 14, 14))
    hollow = filled & ~box(shape, (5, 5, 5), (11, 11, 11))
    d = quiet_surface_distances(hollow, filled, (1.5, 1.5, 1.5), boundary=boundary)
    assert d.hausdorff_mm() == expected_hd
    assert d.hd95_mm() == expected_hd
    if boundary == "voxel6":
        # the cavity's face neighbours (6 faces × 6² = 216 voxels) lie 2 voxels inside the
        # outer layer of 12³ - 10³ = 728 voxels, the boundary of both masks
        assert np.count_nonzero(d.reference_to_prediction_mm) == 216
        assert set(d.reference_to_prediction_mm) == {0.0, 3.0}
        assert not d.prediction_to_reference_mm.any()
        assert d.assd_mm() == pytest.approx(216 * 3.0 / (944 + 728), rel=1e-12)
        assert d.masd_mm() == pytest.approx(216 * 3.0 / 944 / 2, rel=1e-12)


def test_single_voxels_voxel6():
    a = box((10, 10, 12), (5, 5, 5), (6, 6, 6))
    b = box((10, 10, 12), (5, 5, 8), (6, 6, 9))
    d = quiet_surface_distances(a, b, (1.0, 1.0, 2.5))
    assert d.hausdorff_mm() == d.hd95_mm() == d.assd_mm() == d.masd_mm() == 7.5
    assert d.surface_dice(7.0) == 0.0
    assert d.surface_dice(7.5) == 1.0
    same = quiet_surface_distances(a, a, (1.0, 1.0, 2.5))
    assert same.hausdorff_mm() == 0.0 and same.surface_dice(2.5) == 1.0


def test_single_voxels_surfel():
    # Each voxel is 8 equal corner surfels; corners at z = 5.5 are 2 slices from z = 7.5, those
    # at z = 4.5 are 3 slices away.
    a = box((10, 10, 12), (5, 5, 5), (6, 6, 6))
    b = box((10, 10, 12), (5, 5, 8), (6, 6, 9))
    d = quiet_surface_distances(a, b, (1.0, 1.0, 2.5), boundary="surfel")
    assert d.hausdorff_mm() == 7.5
    assert d.hd95_mm() == 7.5
    assert d.assd_mm() == pytest.approx(6.25, rel=1e-12)
    assert d.masd_mm() == pytest.approx(6.25, rel=1e-12)
    assert d.surface_dice(5.0) == pytest.approx(0.5, rel=1e-12)
    np.testing.assert_allclose(d.reference_weights, surfel_area_table((1.0, 1.0, 2.5))[1])


@pytest.mark.parametrize("boundary", MODELS)
def test_masks_touching_the_field_of_view_edge(boundary):
    spacing = (0.7, 1.0, 2.0)
    ref = box((8, 10, 10), (0, 3, 3), (5, 8, 8))  # touches the x = 0 edge
    pred = box((8, 10, 10), (0, 3, 3), (4, 8, 8))
    d = quiet_surface_distances(ref, pred, spacing, boundary=boundary)
    assert d.hausdorff_mm() == 0.7
    # Outside the field of view is background: the same masks with a background slab added
    # before x = 0 give identical distances.
    pad = ((1, 0), (0, 0), (0, 0))
    padded = quiet_surface_distances(np.pad(ref, pad), np.pad(pred, pad), spacing, boundary=boundary)
    np.testing.assert_array_equal(np.sort(d.reference_to_prediction_mm), np.sort(padded.reference_to_prediction_mm))
    np.testing.assert_array_equal(np.sort(d.prediction_to_reference_mm), np.sort(padded.prediction_to_reference_mm))
    full = box((8, 10, 10), (0, 0, 0), (8, 10, 10))  # fills the field of view: all faces on the edge
    assert quiet_surface_distances(full, full, spacing, boundary=boundary).surface_dice(2.0) == 1.0


@pytest.mark.parametrize("boundary", MODELS)
def test_empty_masks_policy(boundary):
    empty = np.zeros((6, 6, 6), bool)
    mask = box((6, 6, 6), (1, 1, 1), (3, 3, 3))
    both = quiet_surface_distances(empty, empty, (1.0, 1.0, 1.0), boundary=boundary)
    for value in (both.hausdorff_mm(), both.hd95_mm(), both.hd95_pooled_mm(), both.assd_mm(), both.masd_mm()):
        assert math.isnan(value)
    assert math.isnan(both.surface_dice(1.0))
    for ref, pred in ((mask, empty), (empty, mask)):
        one = quiet_surface_distances(ref, pred, (1.0, 1.0, 1.0), boundary=boundary)
        for value in (one.hausdorff_mm(), one.hd95_mm(), one.hd95_pooled_mm(), one.assd_mm(), one.masd_mm()):
            assert value == math.inf
        assert one.surface_dice(1.0) == 0.0


def test_tolerance_below_slice_spacing_warns():
    mask = box((6, 6, 6), (1, 1, 1), (4, 4, 4))
    d = surface_distances(mask, mask, (0.98, 0.98, 2.5))
    with pytest.warns(ToleranceBelowSpacingWarning, match="below the slice spacing 2.5 mm"):
        d.surface_dice(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.surface_dice(2.5)


def test_spacing_is_required_and_checked():
    mask = box((4, 4, 4), (1, 1, 1), (3, 3, 3))
    with pytest.raises(TypeError):
        surface_distances(mask, mask)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="spacing_mm must be 3 positive"):
        surface_distances(mask, mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing_mm must be 3 positive"):
        surface_distances(mask, mask, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="same grid"):
        surface_distances(mask, mask[:3], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="'voxel6' reproduces MONAI"):
        surface_distances(mask, mask, (1.0, 1.0, 1.0), boundary="mesh")


@pytest.mark.parametrize("boundary", MODELS)
def test_flipping_or_transposing_the_grid_changes_nothing(boundary):
    rng = np.random.default_rng(5)
    ref = rng.random((14, 12, 9)) > 0.55
    pred = rng.random((14, 12, 9)) > 0.55
    spacing = (0.8, 1.1, 2.5)
    base = quiet_surface_distances(ref, pred, spacing, boundary=boundary)
    flipped = quiet_surface_distances(ref[::-1, :, ::-1], pred[::-1, :, ::-1], spacing, boundary=boundary)
    moved = quiet_surface_distances(ref.transpose(2, 0, 1), pred.transpose(2, 0, 1), (2.5, 0.8, 1.1), boundary=boundary)
    fortran = quiet_surface_distances(np.asfortranarray(ref), np.asfortranarray(pred), spacing, boundary=boundary)
    for other in (flipped, moved, fortran):
        assert other.hausdorff_mm() == pytest.approx(base.hausdorff_mm(), rel=1e-12)
        assert other.hd95_mm() == pytest.approx(base.hd95_mm(), rel=1e-12)
        assert other.assd_mm() == pytest.approx(base.assd_mm(), rel=1e-12)
        assert other.surface_dice(2.5) == pytest.approx(base.surface_dice(2.5), rel=1e-12)


def test_uint8_masks_with_any_nonzero_value_are_inside():
    ref = box((8, 8, 8), (2, 2, 2), (5, 5, 5)).astype(np.uint8) * 255
    pred = box((8, 8, 8), (2, 2, 3), (5, 5, 6)).astype(np.uint8)
    d = quiet_surface_distances(ref, pred, (1.0, 1.0, 2.0))
    assert d.hausdorff_mm() == 2.0
    assert ref.max() == 255  # inputs untouched
