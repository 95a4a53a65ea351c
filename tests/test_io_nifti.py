"""NIfTI round trips on LPS, RAS, flipped, permuted and oblique grids; the `Volume` it carries.

Independent checks use nibabel, which reports affines in RAS: for any file,
``nibabel affine == diag(-1, -1, 1, 1) @ Volume.affine_lps``.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cervicontour.errors import InputError
from cervicontour.io import read_nifti, read_volume, strip_nifti_suffix, write_nifti
from cervicontour.volume import Volume, is_oblique, orientation_code
from dicom_factory import rotation  # noqa: E402  (tests/ is on sys.path)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LAI": np.diag([1.0, -1.0, -1.0]),
    "PLI": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
    "LPI-left-handed": np.diag([1.0, 1.0, -1.0]),
    "oblique": rotation("z", 20.0) @ rotation("x", 20.0),
}
SHAPE = (7, 6, 5)
SPACING = (0.98, 0.77, 2.5)
ORIGIN = (-123.4, 56.7, -89.1)


def sample_array(dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.normal(0.0, 300.0, SHAPE).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, SHAPE, endpoint=True).astype(dtype)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def as_float32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


# ------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_round_trip_keeps_geometry_and_values(tmp_path, name, dtype, suffix):
    direction = DIRECTIONS[name]
    array = sample_array(dtype)
    volume = Volume(array, SPACING, ORIGIN, direction)
    untouched = array.copy()

    first = read_nifti(write_nifti(volume, tmp_path / f"a{suffix}"))

    assert np.array_equal(array, untouched)  # the input is never modified
    assert first.dtype == dtype
    assert np.array_equal(first.array, array)
    # NIfTI stores pixdim, sform and quaternion as float32.
    np.testing.assert_allclose(first.spacing_mm, as_float32(SPACING), rtol=1e-7, atol=0)
    np.testing.assert_allclose(first.origin_mm, as_float32(ORIGIN), rtol=1e-7, atol=0)
    np.testing.assert_allclose(first.direction, direction, atol=1e-6)
    assert first.orientation == orientation_code(direction)

    second = read_nifti(write_nifti(first, tmp_path / f"b{suffix}"))  # idempotent, bit-exact
    assert second.spacing_mm == first.spacing_mm
    assert second.origin_mm == first.origin_mm
    if is_oblique(direction):  # oblique: < 1e-7 drift per cycle (see the drift test below)
        np.testing.assert_allclose(second.direction, first.direction, rtol=0, atol=1e-7)
    else:
        assert np.array_equal(second.direction, first.direction)
    assert np.array_equal(second.array, first.array) and second.dtype == first.dtype

    image = nib.load(tmp_path / f"a{suffix}")  # independent reader, RAS world
    np.testing.assert_allclose(image.affine, LPS_TO_RAS @ first.affine_lps, atol=1e-5)
    assert image.shape == SHAPE
    assert image.get_data_dtype() == dtype
    assert np.array_equal(np.asanyarray(image.dataobj), array)


def test_oblique_round_trip_drifts_below_1e7_per_cycle(tmp_path):
    volume = Volume(sample_array(np.int16), SPACING, ORIGIN, DIRECTIONS["oblique"])
    current = read_nifti(write_nifti(volume, tmp_path / "a.nii"))
    for cycle in range(3):
        nxt = read_nifti(write_nifti(current, tmp_path / f"c{cycle}.nii"))
        assert np.abs(nxt.direction - current.direction).max() < 1e-7
        current = nxt


@pytest.mark.parametrize("name", ["RAS", "LAI", "oblique", "LPI-left-handed"])
def test_files_written_by_nibabel_read_with_the_same_geometry(tmp_path, name):
    ras_affine = LPS_TO_RAS @ Volume(np.zeros(SHAPE), SPACING, ORIGIN, DIRECTIONS[name]).affine_lps
    array = sample_array(np.int16, seed=3)
    nib.save(nib.Nifti1Image(array, ras_affine), tmp_path / "nib.nii.gz")

    volume = read_nifti(tmp_path / "nib.nii.gz")

    np.testing.assert_allclose(LPS_TO_RAS @ volume.affine_lps, ras_affine, atol=1e-4)
    assert volume.orientation == orientation_code(DIRECTIONS[name])
    assert np.array_equal(volume.array, array)


def test_compression_follows_the_suffix(tmp_path):
    volume = Volume(sample_array(np.uint8), SPACING)
    assert write_nifti(volume, tmp_path / "x.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert write_nifti(volume, tmp_path / "x.nii").read_bytes()[:2] != b"\x1f\x8b"


def test_boolean_masks_are_written_as_uint8(tmp_path):
    mask = sample_array(np.uint8) > 128
    back = read_nifti(write_nifti(Volume(mask, SPACING), tmp_path / "mask.nii.gz"))
    assert back.dtype == np.uint8
    assert np.array_equal(back.array, mask.astype(np.uint8))


def test_read_volume_dispatches_files_to_nifti(tmp_path):
    array = sample_array(np.int16)
    path = write_nifti(Volume(array, SPACING, ORIGIN), tmp_path / "ct.nii.gz")
    assert np.array_equal(read_volume(path).array, array)
    assert read_volume(path).metadata["source"] == str(path)


def test_strip_nifti_suffix():
    assert strip_nifti_suffix("Bladder.nii.gz") == "Bladder"
    assert strip_nifti_suffix("CTVn.NII") == "CTVn"
    assert strip_nifti_suffix("notes.txt") == "notes.txt"


# ------------------------------------------------------------------------ refusals
def test_four_dimensional_file_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 2), np.int16), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="expected a 3-D single-channel image"):
        read_nifti(tmp_path / "4d.nii.gz")


def test_file_cut_inside_the_header_is_refused(tmp_path):
    path = write_nifti(Volume(sample_array(np.float32), SPACING), tmp_path / "ct.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[:40])
    with pytest.raises(InputError, match="cannot be read as NIfTI"):
        read_nifti(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_file_cut_inside_the_data_is_refused(tmp_path, suffix):
    path = write_nifti(Volume(sample_array(np.float32), SPACING), tmp_path / f"ct{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    if suffix == ".nii.gz":
        with pytest.raises(EOFError):
            gzip.decompress(path.read_bytes())  # the fixture really is a cut-off gzip stream
    with pytest.raises(InputError, match="cannot be read as NIfTI"):
        read_nifti(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_nifti(tmp_path / "absent.nii.gz")


def test_non_nifti_suffix_is_refused(tmp_path):
    path = tmp_path / "ct.mha"
    sitk.WriteImage(sitk.Image(3, 3, 3, sitk.sitkInt16), str(path))
    with pytest.raises(InputError, match=r"expected a \.nii or \.nii\.gz file"):
        read_nifti(path)
    with pytest.raises(InputError, match="must end in .nii or .nii.gz"):
        write_nifti(Volume(np.zeros((2, 2, 2)), SPACING), tmp_path / "out.mha")


# ------------------------------------------------------------------------ atomic writes, untouched sources
def test_write_leaves_no_temporary_files_and_replaces_destination(tmp_path):
    path = tmp_path / "ct.nii.gz"
    write_nifti(Volume(np.zeros(SHAPE, np.int16), SPACING), path)
    newer = sample_array(np.int16, seed=5)
    write_nifti(Volume(newer, SPACING), path)
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]
    assert np.array_equal(read_nifti(path).array, newer)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = write_nifti(Volume(sample_array(np.int16), SPACING), tmp_path / "ct.nii.gz")
    before = sha256(path)

    def fail_half_way(self, image):
        Path(self.GetFileName()).write_bytes(b"partial")  # a crash mid-write
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", fail_half_way)
    with pytest.raises(RuntimeError, match="disk full"):
        write_nifti(Volume(sample_array(np.int16, seed=9), SPACING), path)
    assert sha256(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]


def test_reading_never_modifies_the_source(tmp_path):
    path = write_nifti(Volume(sample_array(np.float32), SPACING, ORIGIN), tmp_path / "ct.nii")
    before, mtime = sha256(path), path.stat().st_mtime_ns
    read_nifti(path)
    assert sha256(path) == before and path.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------ Volume
def test_repr_shows_shape_spacing_and_orientation():
    text = repr(Volume(np.zeros((4, 5, 6), np.int16), (0.98, 0.98, 2.5)))
    assert "shape=(4, 5, 6)" in text
    assert "spacing_mm=(0.98, 0.98, 2.5)" in text
    assert "orientation=LPS" in text and "int16" in text and "oblique" not in text
    oblique = Volume(np.zeros((2, 2, 2)), (1, 1, 1), direction=DIRECTIONS["oblique"])
    assert "oblique" in repr(oblique)


@pytest.mark.parametrize(
    "name, code, oblique",
    [("LPS", "LPS", False), ("RAS", "RAS", False), ("LAI", "LAI", False),
     ("PLI", "PLI", False), ("LPI-left-handed", "LPI", False), ("oblique", "LPS", True)],
)
def test_orientation_codes(name, code, oblique):
    volume = Volume(np.zeros((2, 2, 2)), (1, 1, 1), direction=DIRECTIONS[name])
    assert volume.orientation == code
    assert is_oblique(volume.direction) is oblique


def test_index_to_world_by_hand_and_inverse():
    ras = Volume(np.zeros((3, 3, 3)), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0), np.diag([-1.0, -1.0, 1.0]))
    # origin + direction @ (spacing * ijk) with ijk = (1, 1, 1): (10 - 2, 20 - 3, 30 + 4)
    np.testing.assert_allclose(ras.index_to_world([1, 1, 1]), [8.0, 17.0, 34.0])
    np.testing.assert_allclose(ras.world_to_index([8.0, 17.0, 34.0]), [1.0, 1.0, 1.0])

    oblique = Volume(np.zeros((3, 3, 3)), SPACING, ORIGIN, DIRECTIONS["oblique"])
    ijk = np.random.default_rng(0).uniform(-5, 50, (10, 4, 3))
    world = oblique.index_to_world(ijk)
    assert world.shape == ijk.shape
    np.testing.assert_allclose(oblique.world_to_index(world), ijk, atol=1e-9)
    homogeneous = np.concatenate([ijk, np.ones((10, 4, 1))], axis=-1)
    np.testing.assert_allclose((homogeneous @ oblique.affine_lps.T)[..., :3], world, atol=1e-9)


def test_affine_voxel_volume_and_extent():
    volume = Volume(np.zeros((10, 20, 5)), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0), np.diag([1.0, -1.0, -1.0]))
    expected = np.array([[1, 0, 0, 1], [0, -2, 0, 2], [0, 0, -5, 3], [0, 0, 0, 1]], float)
    np.testing.assert_array_equal(volume.affine_lps, expected)
    assert volume.voxel_volume_cc == pytest.approx(0.01)  # 10 mm³
    assert volume.extent_mm == pytest.approx((10.0, 40.0, 25.0))


def test_same_grid_and_grid_differences():
    base = Volume(np.zeros((4, 5, 6)), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0))
    assert base.same_grid(Volume(np.ones((4, 5, 6)), (1.0, 1.0, 2.5), (0.0, 0.0, 0.0005)))
    assert base.grid_differences(base) == []
    other = Volume(np.zeros((4, 5, 7)), (1.0, 1.0, 3.0), (0.0, 0.0, 1.0), np.diag([-1.0, -1.0, 1.0]))
    differences = base.grid_differences(other)
    assert len(differences) == 4
    assert differences[0] == "shape (4, 5, 7) != (4, 5, 6)"
    assert "spacing_mm (1, 1, 3) != (1, 1, 2.5)" in differences
    assert "origin_mm (0, 0, 1) != (0, 0, 0)" in differences
    assert "direction RAS != LPS" in differences
    assert not base.same_grid(other)


def test_with_array_keeps_the_grid():
    base = Volume(np.zeros((2, 3, 4)), SPACING, ORIGIN, DIRECTIONS["RAS"], {"source": "x"})
    mask = base.with_array(np.ones((2, 3, 4), bool), structure="Bladder")
    assert mask.same_grid(base) and mask.metadata == {"structure": "Bladder"}
    with pytest.raises(ValueError, match="does not match grid shape"):
        base.with_array(np.ones((3, 3, 3)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"array": np.zeros((3, 3))}, "3-D array"),
        ({"array": np.zeros((3, 3, 3, 2))}, "3-D array"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, -1.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, float("nan"), 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, 1.0)}, "spacing_mm"),
        ({"origin_mm": (0.0, float("inf"), 0.0)}, "origin_mm"),
        ({"direction": np.diag([1.0, 2.0, 1.0])}, "orthonormal"),
        ({"direction": np.ones((3, 3))}, "orthonormal"),
    ],
)
def test_invalid_volumes_are_refused(kwargs, match):
    arguments = {"array": np.zeros((2, 2, 2)), "spacing_mm": (1.0, 1.0, 1.0)} | kwargs
    with pytest.raises(ValueError, match=match):
        Volume(**arguments)


def test_direction_is_read_only():
    volume = Volume(np.zeros((2, 2, 2)), (1, 1, 1))
    with pytest.raises(ValueError):
        volume.direction[0, 0] = -1.0


@pytest.mark.parametrize("order", ["C", "F"])
def test_blocked_transpose_matches_numpy(order):
    from cervicontour.io.nifti import _to_zyx

    array = np.asarray(np.random.default_rng(1).integers(0, 255, (37, 5, 9)), dtype=np.uint8, order=order)
    flipped = array[::-1, ::-1, :]
    for candidate in (array, flipped):
        out = _to_zyx(candidate, block=4)
        assert out.flags.c_contiguous
        assert np.array_equal(out, candidate.transpose(2, 1, 0))
