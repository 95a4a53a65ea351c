"""The working grid: forward and back land on the exact input grid, on LPS, RAS, permuted and oblique grids."""

from __future__ import annotations

import numpy as np
import pytest

from cervicontour.preprocess import Normalization, Plan, prepare_image, to_input_grid, working_grid_of
from cervicontour.preprocess.prepare import masks_to_working
from cervicontour.volume import Volume, to_lps

SPACING = (2.0, 2.5, 4.0)


def _rotation_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def _grids():
    """(name, direction, axis permutation of the LPS array) for the same physical phantom."""
    perm = np.eye(3)[:, [2, 0, 1]]
    return [
        ("LPS", np.eye(3)),
        ("RAS", np.diag([-1.0, -1.0, 1.0])),
        ("permuted+flipped", perm @ np.diag([1.0, -1.0, 1.0])),
        ("oblique", _rotation_z(12.0) @ np.diag([-1.0, 1.0, 1.0])),
    ]


def _phantom(direction: np.ndarray):
    """A body (0 HU) in air with a box-shaped 'organ' mask, on a 30×28×16 grid."""
    shape = (30, 28, 16)
    hu = np.full(shape, -1000, np.int16)
    hu[4:26, 3:25, 1:15] = 0
    hu[10:16, 8:14, 5:9] = 60
    mask = np.zeros(shape, np.uint8)
    mask[10:16, 8:14, 5:9] = 1
    spacing = SPACING
    # when the direction permutes axes, so do the spacings (keep the voxel shape physical)
    origin = (-30.0, 12.5, -7.0)
    return Volume(hu, spacing, origin, direction), Volume(mask, spacing, origin, direction)


def _plan(spacing) -> Plan:
    return Plan(("Bladder",), tuple(spacing), (16, 16, 8), Normalization(-200.0, 200.0, 0.0, 100.0))


@pytest.mark.parametrize("name,direction", _grids(), ids=[g[0] for g in _grids()])
def test_same_spacing_round_trip_is_exact(name, direction):
    image, mask = _phantom(direction)
    lps_spacing = to_lps(image).spacing_mm
    prepared = prepare_image(image, _plan(lps_spacing))
    labels = masks_to_working([mask], prepared.grid, image)
    assert prepared.grid.scale == pytest.approx([1, 1, 1])
    values, box = to_input_grid(labels[0].astype(np.float32), prepared.grid)
    back = np.zeros(image.shape, np.float32)
    back[box] = values
    assert back.shape == image.shape
    np.testing.assert_array_equal(back, mask.array.astype(np.float32))


@pytest.mark.parametrize("name,direction", _grids(), ids=[g[0] for g in _grids()])
def test_working_voxels_keep_their_world_position(name, direction):
    image, _ = _phantom(direction)
    hu = image.array.copy()
    hu[20, 17, 11] = 3000  # one bright voxel inside the body
    image = image.with_array(hu)
    prepared = prepare_image(image, _plan(to_lps(image).spacing_mm))
    o = np.unravel_index(int(np.argmax(prepared.image)), prepared.grid.shape)
    world_working = prepared.grid.volume(prepared.image).index_to_world(np.asarray(o))
    np.testing.assert_allclose(world_working, image.index_to_world(np.array([20, 17, 11])), atol=1e-6)


@pytest.mark.parametrize("name,direction", _grids(), ids=[g[0] for g in _grids()])
def test_coarse_working_grid_preserves_the_organ_in_world_space(name, direction):
    image, mask = _phantom(direction)
    coarse = tuple(2 * s for s in to_lps(image).spacing_mm)  # 2× coarser along every axis
    prepared = prepare_image(image, _plan(coarse))
    labels = masks_to_working([mask], prepared.grid, image)
    ref = mask.array > 0
    working_cc = labels.sum() * np.prod(coarse) / 1000
    ref_cc = ref.sum() * np.prod(SPACING) / 1000
    # the organ is 3 working voxels wide per axis; each face may move by half a working voxel
    assert (2 / 3) ** 3 * ref_cc <= working_cc <= (4 / 3) ** 3 * ref_cc
    values, box = to_input_grid(labels[0].astype(np.float32), prepared.grid)
    back = np.zeros(image.shape, np.float32)
    back[box] = values
    got = back >= 0.5
    centroid = lambda m: image.index_to_world(np.argwhere(m).mean(0))  # noqa: E731
    # a half-voxel shift of one face moves the centroid by at most a quarter of a working voxel
    assert np.linalg.norm(centroid(got) - centroid(ref)) <= 0.5 * max(coarse)
    dice = 2 * np.count_nonzero(got & ref) / (got.sum() + ref.sum())
    assert dice > 0.6  # a 3-voxel-wide box, linearly interpolated back: the faces move by ≤ half a voxel


def test_lps_and_ras_copies_of_one_ct_give_the_same_working_image():
    from cervicontour.synth import to_ras

    image, _ = _phantom(np.eye(3))
    a = prepare_image(image, _plan((3.0, 3.0, 5.0)))
    b = prepare_image(to_ras(image), _plan((3.0, 3.0, 5.0)))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_allclose(a.grid.origin_mm, b.grid.origin_mm, atol=1e-9)


def test_body_crop_excludes_air_and_keeps_a_margin():
    image, _ = _phantom(np.eye(3))
    grid, cropped = working_grid_of(image, SPACING, body_threshold_hu=-500, margin_mm=4.0)
    # body occupies i 4..25, j 3..24, k 1..14; the crop holds it with ≥ 4 mm of margin, inside the image
    lo, hi = np.asarray(grid.crop_start), np.asarray(grid.crop_stop)
    assert np.all(lo <= [4 - 2, 3 - 1, 0]) and np.all(hi >= [26 + 2, 25 + 1, 15])
    assert np.all(lo >= 0) and np.all(hi <= image.shape)


def test_region_restricted_mapping_equals_the_full_mapping_inside_the_box():
    image, mask = _phantom(np.diag([-1.0, -1.0, 1.0]))
    prepared = prepare_image(image, _plan((3.0, 3.0, 6.0)))
    prob = masks_to_working([mask], prepared.grid, image)[0].astype(np.float32)
    full, full_box = to_input_grid(prob, prepared.grid)
    part, part_box = prepared.back_to_input(prob[None])
    a = np.zeros(image.shape, np.float32)
    a[full_box] = full
    b = np.zeros(image.shape, np.float32)
    b[part_box] = part[0]
    np.testing.assert_allclose(b[part_box], a[part_box])
    assert np.all(a[b == 0] < 0.5)  # nothing that would be a voxel of the mask is lost outside the box


def test_separable_linear_interpolation_matches_scipy_map_coordinates():
    from scipy import ndimage

    from cervicontour.preprocess.grid import _lerp_axis

    a = np.random.default_rng(0).random((7, 5, 3)).astype(np.float32)
    pos = np.array([-1.7, -1.0, -0.4, 0.0, 0.25, 3.5, 5.9, 6.0, 6.3, 7.2])  # inside, at and beyond both ends
    got = _lerp_axis(a, pos, 0)
    coords = np.stack(np.meshgrid(pos + 1, np.arange(5), np.arange(3), indexing="ij")).reshape(3, -1)
    ref = ndimage.map_coordinates(np.pad(a, ((1, 1), (0, 0), (0, 0))), coords, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(got, ref.reshape(got.shape), atol=1e-6)


@pytest.mark.parametrize("name,direction", _grids()[1:3])
def test_the_body_crop_is_a_read_only_view_and_prepares_as_a_copy_would(name, direction):
    """The crop reads the input's voxels in place (no full-CT copy); nothing can write through it,
    and the working image equals the one prepared from an LPS copy of the same CT."""
    image, _ = _phantom(direction)
    before = image.array.copy()
    _, cropped = working_grid_of(image, (4.0, 5.0, 8.0), body_threshold_hu=-500.0, margin_mm=4.0)
    assert np.shares_memory(cropped.array, image.array)
    with pytest.raises(ValueError):
        cropped.array[0, 0, 0] = 1
    plan = _plan((4.0, 5.0, 8.0))
    np.testing.assert_array_equal(prepare_image(image, plan).image, prepare_image(to_lps(image), plan).image)
    np.testing.assert_array_equal(image.array, before)
