"""Margins: exact ellipsoidal expansion in world mm on anisotropic, non-LPS grids; OAR overlap table."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.contours.compose import read_log
from cervicontour.contours.margin import clipped_at_edge, expand, margin_case, overlap_table, parse_margin
from cervicontour.volume import Volume

# Array axis 0 runs superior, axis 1 to the patient's right, axis 2 anterior: nothing is LPS.
PERMUTED = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def _world(volume: Volume) -> np.ndarray:
    return volume.index_to_world(np.indices(volume.shape).reshape(3, -1).T)


def test_parse_margin():
    assert parse_margin("7") == (7.0, 7.0, 7.0)
    assert parse_margin("10, 10,5") == (10.0, 10.0, 5.0)
    for bad in ("10,5", "a,b,c", "-1,2,3", ""):
        with pytest.raises(InputError, match="left-right, antero-posterior, supero-inferior"):
            parse_margin(bad)


@pytest.mark.parametrize("direction", [np.eye(3), PERMUTED], ids=["LPS", "permuted"])
@pytest.mark.parametrize("radius, margin", [(12.0, 10.0), (6.0, 4.5)])
def test_sphere_grows_to_radius_r_plus_m_within_one_voxel(direction, radius, margin):
    spacing = (0.9, 1.3, 2.5)
    grid = Volume(np.zeros((70, 56, 34), np.uint8), spacing, (-30.0, 20.0, -40.0), direction)
    world = _world(grid)
    centre = world.mean(axis=0) + [0.37, -0.21, 0.55]  # off the lattice
    distance = np.linalg.norm(world - centre, axis=1)
    sphere = grid.with_array((distance <= radius).reshape(grid.shape).astype(np.uint8))
    before = sphere.array.copy()
    out = expand(sphere, (margin, margin, margin)).array.ravel().astype(bool)
    assert (sphere.array == before).all()  # input untouched
    assert distance[out].max() <= radius + margin + 1e-9  # never beyond the sphere of radius r + m
    assert np.all(out[distance <= radius + margin - max(spacing)])  # and fills it to within one voxel
    # exactness: the definition evaluated independently (nearest input voxel centre ≤ m)
    tree = cKDTree(world[sphere.array.ravel().astype(bool)])
    nearest, _ = tree.query(world, distance_upper_bound=margin + 1e-6)
    assert np.array_equal(out, np.isfinite(nearest))


def test_anisotropic_margin_on_a_box_follows_the_patient_axes_not_the_array_axes():
    spacing = (2.0, 1.0, 1.5)  # axis 0 (S) 2 mm, axis 1 (R) 1 mm, axis 2 (A) 1.5 mm
    grid = Volume(np.zeros((20, 60, 40), np.uint8), spacing, (30.0, 30.0, -20.0), PERMUTED)
    world = _world(grid)
    x, y, z = world.T
    box = (np.abs(x) <= 10.0 + 1e-6) & (np.abs(y) <= 6.0 + 1e-6) & (np.abs(z) <= 8.0 + 1e-6)
    assert box.sum() == 21 * 9 * 9  # x: 1 mm steps -10..10, y: 1.5 mm steps -6..6, z: 2 mm steps -8..8
    lr, ap, si = 10.0, 6.0, 4.0
    out = expand(grid.with_array(box.reshape(grid.shape).astype(np.uint8)), (lr, ap, si)).array.ravel().astype(bool)

    def at(px, py, pz):
        hit = np.flatnonzero((np.abs(x - px) < 1e-6) & (np.abs(y - py) < 1e-6) & (np.abs(z - pz) < 1e-6))
        assert hit.size == 1, (px, py, pz)
        return bool(out[hit[0]])

    # straight out from each face: exactly the margin along that axis
    assert at(10 + lr, 0, 0) and not at(10 + lr + 1, 0, 0) and at(-10 - lr, 0, 0)
    assert at(0, 6 + ap, 0) and not at(0, 6 + ap + 1.5, 0) and at(0, -6 - ap, 0)
    assert at(0, 0, 8 + si) and not at(0, 0, 8 + si + 2) and at(0, 0, -8 - si)
    # the extent of the result is the box plus the margin on both sides, per world axis
    assert np.ptp(x[out]) == pytest.approx(20 + 2 * lr) and np.ptp(y[out]) == pytest.approx(12 + 2 * ap)
    assert np.ptp(z[out]) == pytest.approx(16 + 2 * si)
    # the corners are rounded by the ellipsoid: (dx/10)² + (dy/6)² ≤ 1
    assert at(10 + 5, 6 + 3, 0)  # 0.25 + 0.25
    assert not at(10 + 7, 6 + 4.5, 0)  # 0.49 + 0.5625 > 1
    assert not at(10 + lr, 6 + ap, 8 + si)


def test_zero_margin_keeps_the_slices_and_empty_stays_empty():
    grid = Volume(np.zeros((20, 20, 10), np.uint8), (1.0, 1.0, 2.5))
    array = grid.array.copy()
    array[8:12, 8:12, 4:6] = 1
    out = expand(grid.with_array(array), (3.0, 3.0, 0.0)).array
    assert not out[:, :, :4].any() and not out[:, :, 6:].any() and out[:, :, 4].sum() > 16
    assert expand(grid, (5, 5, 5)).array.sum() == 0
    assert (expand(grid.with_array(array), (0, 0, 0)).array == array).all()


def test_oblique_grid_accepts_only_isotropic_margins():
    t = np.radians(20)
    oblique = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    grid = Volume(np.zeros((15, 15, 15), np.uint8), (1.0, 1.0, 1.0), (0, 0, 0), oblique)
    array = grid.array.copy()
    array[7, 7, 7] = 1
    assert int(expand(grid.with_array(array), (1.0, 1.0, 1.0)).array.sum()) == 7  # centre + 6 face neighbours
    with pytest.raises(InputError, match="oblique"):
        expand(grid.with_array(array), (2.0, 2.0, 1.0))


def test_clipped_at_edge():
    grid = Volume(np.zeros((10, 10, 10), np.uint8), (1.0, 1.0, 1.0))
    array = grid.array.copy()
    array[1, 5, 5] = 1
    assert clipped_at_edge(grid.with_array(array), (2, 0, 0)) and not clipped_at_edge(grid.with_array(array), (1, 1, 1))


def test_overlap_table_and_margin_case(tmp_path):
    spacing = (2.0, 2.0, 2.5)
    grid = Volume(np.zeros((30, 30, 20), np.uint8), spacing)
    ctv = grid.array.copy()
    ctv[10:15, 10:15, 8:12] = 1  # 5 × 5 × 4
    bladder = grid.array.copy()
    bladder[10:15, 17:25, 8:12] = 1  # rows 17..24: 3 rows (6 mm) posterior (+y) of the CTV's last row 14
    folder = tmp_path / "p01"
    write_nifti(grid.with_array(ctv), folder / "structures" / "CTVp.nii.gz")
    write_nifti(grid.with_array(bladder), folder / "structures" / "Bladder.nii.gz")
    result = margin_case(folder, source="CTVp", target="PTVp", margin_mm="4,4,0", subtract=["Bladder"], who="dr.x")
    # 4 mm along y = 2 voxels: rows 15 and 16 are added; Bladder starts at 17 -> no overlap.
    assert result.overlaps[0].overlap_cc == 0.0 and result.overlaps[0].structure == "Bladder"
    result = margin_case(folder, source="CTVp", target="PTVp", margin_mm="8,8,0", who="dr.x")
    # 8 mm = 4 voxels along y reaches rows 15..18: bladder rows 17, 18 × 5 columns × 4 slices inside.
    vcc = np.prod(spacing) / 1000
    (row,) = result.overlaps
    assert row.overlap_cc == pytest.approx(2 * 5 * 4 * vcc) and row.oar_cc == pytest.approx(8 * 5 * 4 * vcc)
    assert row.percent == pytest.approx(25.0)
    with_sub = margin_case(folder, source="CTVp", target="PTVp_sub", margin_mm="8,8,0", subtract=["Bladder"], who="dr.x")
    assert with_sub.volume_cc == pytest.approx(result.volume_cc - row.overlap_cc)
    assert read_nifti(folder / "planning" / "PTVp.nii.gz").array.sum() * vcc == pytest.approx(result.volume_cc)
    rows = list(csv.DictReader((folder / "planning" / "PTVp_overlap.csv").open()))
    assert rows[0]["structure"] == "Bladder" and float(rows[0]["inside_PTVp_percent"]) == 25.0
    assert [r["action"] for r in read_log(folder)] == ["margin"] * 3
    assert read_log(folder)[1]["margin_mm"] == {"left-right": 8.0, "antero-posterior": 8.0, "supero-inferior": 0.0}
    with pytest.raises(InputError, match="no Anorectum mask"):
        margin_case(folder, source="CTVp", target="PTVp", margin_mm="5", subtract=["rectum"], who="x")
    with pytest.raises(InputError, match="TG-263"):
        margin_case(folder, source="CTVp", target="PTV p/45", margin_mm="5", who="x")
    assert overlap_table(grid.with_array(ctv), {}) == []
