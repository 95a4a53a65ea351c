"""Estimated-editing metrics (APL, FNPL, FNV, FPV) against values derived by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cervicontour.metrics import added_path_length_mm, confusion_counts, false_negative_path_length_mm, slice_axis_of
from cervicontour.metrics.editing import slice_contours
from cervicontour.volume import Volume

SPACING = (0.98, 0.98, 2.5)


def square_prism(first_slice: int, last_slice: int, shift_u: int = 0) -> np.ndarray:
    m = np.zeros((50, 50, 24), bool)
    m[5 + shift_u : 45 + shift_u, 5:45, first_slice : last_slice + 1] = True  # 40×40 pixels
    return m


def test_square_contour_has_156_pixels():
    contour = slice_contours(np.pad(square_prism(5, 5), 1), slice_axis=2)
    assert int(contour.sum()) == 4 * 40 - 4 == 156


def test_apl_square_shifted_by_two_slices():
    ref = square_prism(5, 14)
    pred = square_prism(7, 16)
    # slices 5 and 6 have no predicted contour: 2 × 156 pixels of 0.98 mm to draw
    assert added_path_length_mm(ref, pred, SPACING, tolerance_mm=0.0) == pytest.approx(2 * 156 * 0.98, rel=1e-12)
    assert 2 * 156 * 0.98 == pytest.approx(305.76, rel=1e-12)
    assert false_negative_path_length_mm(ref, pred, SPACING) == pytest.approx(305.76, rel=1e-12)
    counts = confusion_counts(ref, pred, SPACING)
    voxel_cc = 0.98 * 0.98 * 2.5 / 1000
    assert counts.false_negative_volume_cc() == pytest.approx(2 * 1600 * voxel_cc, rel=1e-12)
    assert counts.false_positive_volume_cc() == pytest.approx(2 * 1600 * voxel_cc, rel=1e-12)


def test_apl_tolerance_is_in_plane_euclidean():
    ref = square_prism(5, 14)
    pred = square_prism(5, 14, shift_u=1)  # one pixel (0.98 mm) across
    # Per slice: the column u = 5 (40 px) has no predicted contour under it, the column u = 44
    # (38 px between the corners) lies inside the prediction: 78 px to draw, ×10 slices.
    assert added_path_length_mm(ref, pred, SPACING) == pytest.approx(78 * 10 * 0.98, rel=1e-12)
    assert added_path_length_mm(ref, pred, SPACING, tolerance_mm=0.5) == pytest.approx(78 * 10 * 0.98, rel=1e-12)
    assert added_path_length_mm(ref, pred, SPACING, tolerance_mm=0.98) == 0.0
    # only the 40 px of column u = 5 lie outside the prediction
    assert false_negative_path_length_mm(ref, pred, SPACING) == pytest.approx(40 * 10 * 0.98, rel=1e-12)


def test_apl_tolerance_never_matches_across_slices():
    ref = square_prism(5, 5)
    pred = square_prism(6, 6)  # same square one slice (2.5 mm) up
    assert added_path_length_mm(ref, pred, SPACING, tolerance_mm=10.0) == pytest.approx(156 * 0.98, rel=1e-12)


def test_slice_axis_follows_the_head_foot_direction():
    ref = square_prism(5, 14)
    pred = square_prism(7, 16)
    moved = added_path_length_mm(
        np.moveaxis(ref, 2, 0), np.moveaxis(pred, 2, 0), (2.5, 0.98, 0.98), slice_axis=0
    )
    assert moved == pytest.approx(305.76, rel=1e-12)
    sagittal_first = np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])  # columns = axes: axis 0 runs S
    assert slice_axis_of(Volume(np.zeros((2, 2, 2)), (1, 1, 1), direction=sagittal_first)) == 0
    assert slice_axis_of(Volume(np.zeros((2, 2, 2)), (1, 1, 1), direction=np.diag([-1.0, -1.0, 1.0]))) == 2


def test_non_square_pixels_use_the_geometric_mean_length():
    ref = square_prism(5, 5)
    assert added_path_length_mm(ref, np.zeros_like(ref), (0.5, 2.0, 3.0)) == pytest.approx(156 * 1.0, rel=1e-12)


def test_empty_mask_policy():
    ref = square_prism(5, 6)
    empty = np.zeros_like(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert added_path_length_mm(ref, empty, SPACING) == pytest.approx(2 * 156 * 0.98, rel=1e-12)
        assert added_path_length_mm(ref, empty, SPACING, tolerance_mm=3.0) == pytest.approx(2 * 156 * 0.98, rel=1e-12)
        assert false_negative_path_length_mm(ref, empty, SPACING) == pytest.approx(2 * 156 * 0.98, rel=1e-12)
        assert added_path_length_mm(empty, ref, SPACING) == 0.0
        assert false_negative_path_length_mm(empty, ref, SPACING) == 0.0
        assert added_path_length_mm(empty, empty, SPACING, tolerance_mm=1.0) == 0.0


def test_contour_at_the_field_of_view_edge():
    m = np.zeros((10, 10, 3), bool)
    m[0:4, 0:4, 1] = True  # touches two edges: the edge pixels are contour (outside is background)
    assert added_path_length_mm(m, np.zeros_like(m), (1.0, 1.0, 1.0)) == 12.0
