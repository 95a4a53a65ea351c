"""Moment metrics in world coordinates, on LPS, RAS, flipped, oblique and mismatched grids."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cervicontour.metrics import centroid_distance_mm, moments
from cervicontour.metrics.moments import axis_length_differences_mm
from cervicontour.volume import Volume


def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
    return m


def rotation(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), rotation((1, 2, 3), 0.4)])
def test_centroid_distance_of_a_shifted_box(axis, direction):
    spacing = (0.98, 1.3, 2.5)
    lo, hi = [2, 3, 4], [6, 7, 8]
    ref = Volume(box((12, 12, 12), lo, hi), spacing, (10.0, -20.0, 30.0), direction)
    lo[axis] += 3
    hi[axis] += 3
    pred = ref.with_array(box((12, 12, 12), lo, hi))
    assert centroid_distance_mm(ref, pred) == pytest.approx(3 * spacing[axis], rel=1e-12)


def test_centroid_distance_across_different_grids():
    # Reference on an LPS grid; the same voxels stored flipped on a RAS grid: distance 0.
    spacing = (0.8, 0.9, 2.5)
    array = box((10, 11, 6), (2, 3, 1), (5, 9, 4))
    ref = Volume(array, spacing, (-100.0, 50.0, 7.0))
    corner = ref.index_to_world(np.array([9, 10, 0]))
    ras = Volume(array[::-1, ::-1, :], spacing, tuple(corner), np.diag([-1.0, -1.0, 1.0]))
    assert ras.index_to_world(np.array([9, 10, 0])) == pytest.approx(ref.index_to_world(np.array([0, 0, 0])))
    assert centroid_distance_mm(ref, ras) == pytest.approx(0.0, abs=1e-9)
    # A coarser grid whose 2 mm voxels tile the same 4 mm cube as 1 mm voxels: same centroid.
    fine = Volume(box((8, 8, 8), (2, 2, 2), (6, 6, 6)), (1.0, 1.0, 1.0))
    coarse = Volume(box((4, 4, 4), (1, 1, 1), (3, 3, 3)), (2.0, 2.0, 2.0), (0.5, 0.5, 0.5))
    assert centroid_distance_mm(fine, coarse) == pytest.approx(0.0, abs=1e-12)
    shifted = Volume(coarse.array, (2.0, 2.0, 2.0), (0.5, 0.5, 4.5))
    assert centroid_distance_mm(fine, shifted) == pytest.approx(4.0, rel=1e-12)


def test_principal_axis_lengths_of_a_rod():
    # n voxel centres along x at spacing s: variance s²(n² - 1)/12, so the equivalent
    # ellipsoid axis is 2·sqrt(5·s²(n² - 1)/12); the other axes are 0.
    n, s = 9, 1.5
    rod = Volume(box((12, 3, 3), (1, 1, 1), (1 + n, 2, 2)), (s, 0.7, 3.0))
    lengths = moments(rod).principal_axis_lengths_mm()
    assert lengths[0] == pytest.approx(2 * math.sqrt(5 * s * s * (n * n - 1) / 12), rel=1e-12)
    assert lengths[1] == pytest.approx(0.0, abs=1e-9) and lengths[2] == pytest.approx(0.0, abs=1e-9)
    longer = Volume(box((12, 3, 3), (1, 1, 1), (2 + n, 2, 2)), (s, 0.7, 3.0))
    diffs = axis_length_differences_mm(moments(rod), moments(longer))
    expected = 2 * math.sqrt(5 * s * s * ((n + 1) ** 2 - 1) / 12) - lengths[0]
    assert diffs[0] == pytest.approx(expected, rel=1e-12)


def test_empty_masks_have_no_centroid():
    empty = Volume(np.zeros((4, 4, 4), np.uint8), (1.0, 1.0, 1.0))
    full = empty.with_array(box((4, 4, 4), (1, 1, 1), (2, 2, 2)))
    assert math.isnan(centroid_distance_mm(empty, full))
    assert math.isnan(centroid_distance_mm(full, empty))
    assert np.isnan(axis_length_differences_mm(moments(empty), moments(full))).all()
    assert moments(full).centroid_mm == pytest.approx([1.0, 1.0, 1.0])
