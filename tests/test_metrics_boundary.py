"""Boundary models: surfel areas derived by hand, voxel6 boundaries counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cervicontour.metrics.boundary import neighbour_codes, surfel_area_table, voxel6_boundary


def code(*corners) -> int:
    """Code of a cube whose listed corners (a, b, c) are inside: bit 4a + 2b + c."""
    return sum(1 << (4 * a + 2 * b + c) for a, b, c in corners)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.98, 0.98, 2.5), (3.0, 1.0, 0.5)])
def test_surfel_areas_of_simple_cubes(spacing):
    s0, s1, s2 = spacing
    table = surfel_area_table(spacing)
    assert table[0] == table[255] == 0.0
    # a face of four corners is cut off by a flat square of the face's size
    assert table[code((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1))] == pytest.approx(s1 * s2, rel=1e-12)
    assert table[code((0, 0, 0), (1, 0, 0), (0, 0, 1), (1, 0, 1))] == pytest.approx(s0 * s2, rel=1e-12)
    # an edge along axis 2: a rectangle s2 long and half a face diagonal wide
    assert table[code((0, 0, 0), (0, 0, 1))] == pytest.approx(s2 * math.hypot(s0, s1) / 2, rel=1e-12)
    # one corner: a triangle on the three edge midpoints, area |(s1 s2, s0 s2, s0 s1)| / 8
    expected = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    assert table[code((1, 1, 1))] == pytest.approx(expected, rel=1e-12)
    # complementary configurations carry the same surface
    assert table[255 - code((1, 1, 1))] == pytest.approx(expected, rel=1e-12)


def test_unit_corner_triangle_is_sqrt3_over_8():
    assert surfel_area_table((1.0, 1.0, 1.0))[1] == pytest.approx(math.sqrt(3) / 8, rel=1e-12)


def test_neighbour_codes_of_a_single_voxel():
    m = np.zeros((3, 3, 3), bool)
    m[1, 1, 1] = True
    codes = neighbour_codes(m)
    assert codes.shape == (2, 2, 2)
    # the voxel is corner (1 - x, 1 - y, 1 - z) of the cube whose first corner is (x, y, z)
    for x, y, z in np.ndindex(2, 2, 2):
        assert codes[x, y, z] == code((1 - x, 1 - y, 1 - z))


def test_voxel6_boundary_of_a_box():
    m = np.zeros((7, 8, 9), bool)
    m[1:6, 1:7, 1:8] = True  # 5×6×7
    assert int(voxel6_boundary(m).sum()) == 5 * 6 * 7 - 3 * 4 * 5
