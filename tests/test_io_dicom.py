"""DICOM CT series reading: geometry by construction, HU conversion, refusals, SimpleITK check."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cervicontour.errors import InputError
from cervicontour.io import read_volume
from cervicontour.io.dicom import read_dicom_series
from dicom_factory import AXIAL, ct_slice, make_uid, rotation, write_ct_series

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
CT_SMALL = REAL / "pydicom" / "CT_small.dcm"

SHAPE = (5, 4, 6)  # columns, rows, slices: all different so a transposition cannot pass
PIXEL_SPACING = (0.7, 0.8)  # DICOM (row spacing, column spacing) → spacing_mm (0.8, 0.7, ·)
ORIGIN = (-20.0, -30.0, 50.0)


def stored_values(shape=SHAPE, seed=0, high=3000, dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def world_of(i, j, k, *, origin=ORIGIN, orientation=AXIAL, step=2.5, slice_direction=None):
    """LPS position of stored pixel (column i, row j) of written slice k, by the DICOM definition."""
    row, col = (np.asarray(v, float) for v in orientation)
    normal = np.cross(row, col) if slice_direction is None else np.asarray(slice_direction, float)
    return (np.asarray(origin) + k * step * normal
            + i * PIXEL_SPACING[1] * row + j * PIXEL_SPACING[0] * col)


def assert_voxels_land(volume, stored, hu, **geometry):
    """Every written pixel's world position maps to an integer index holding its HU value."""
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in stored.shape), indexing="ij")
    world = world_of(ii[..., None], jj[..., None], kk[..., None], **geometry)
    index = volume.world_to_index(world)
    np.testing.assert_allclose(index, np.round(index), atol=1e-4)
    index = np.round(index).astype(int)
    assert np.array_equal(volume.array[index[..., 0], index[..., 1], index[..., 2]], hu)


def sitk_read(folder: Path, series_uid: str | None = None) -> sitk.Image:
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or "")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def assert_matches_sitk(volume, folder, series_uid=None):
    image = sitk_read(folder, series_uid)
    np.testing.assert_allclose(volume.spacing_mm, image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(volume.origin_mm, image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(volume.direction.ravel(), image.GetDirection(), atol=1e-5)
    expected = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # [z,y,x] -> [i,j,k]
    assert np.array_equal(volume.array.astype(np.float64), expected.astype(np.float64))


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def edit_slice(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


# ------------------------------------------------------------------------ geometry
def test_axial_lps_series_geometry_values_and_metadata(tmp_path):
    stored = stored_values()
    paths = write_ct_series(tmp_path, stored, series_uid="1.2.3.4.5", description="pelvis 2.5mm")
    before = file_hashes(tmp_path)

    ct = read_dicom_series(tmp_path)

    assert ct.shape == SHAPE
    assert ct.spacing_mm == pytest.approx((0.8, 0.7, 2.5), abs=1e-6)
    assert ct.origin_mm == pytest.approx(ORIGIN, abs=1e-6)
    np.testing.assert_allclose(ct.direction, np.eye(3), atol=1e-12)
    assert ct.orientation == "LPS"
    assert ct.dtype == np.int16
    assert np.array_equal(ct.array, stored.astype(np.int32) - 1024)
    assert_voxels_land(ct, stored, stored.astype(np.int32) - 1024)
    assert ct.metadata["SeriesInstanceUID"] == "1.2.3.4.5"
    assert ct.metadata["Modality"] == "CT"
    assert ct.metadata["SeriesDescription"] == "pelvis 2.5mm"
    assert ct.metadata["SOPInstanceUIDs"] == tuple(pydicom.dcmread(p).SOPInstanceUID for p in paths)
    assert file_hashes(tmp_path) == before  # the source files are never touched
    assert_matches_sitk(ct, tmp_path)


@pytest.mark.parametrize("file_order", ["reversed", "shuffled"])
@pytest.mark.parametrize("explicit", [True, False])
def test_file_names_and_instance_numbers_do_not_decide_slice_order(tmp_path, file_order, explicit):
    stored = stored_values(seed=1)
    write_ct_series(tmp_path, stored, file_order=file_order, explicit=explicit, seed=3)
    ct = read_dicom_series(tmp_path)
    assert ct.origin_mm == pytest.approx(ORIGIN, abs=1e-6)
    assert np.array_equal(ct.array, stored.astype(np.int32) - 1024)
    assert_matches_sitk(ct, tmp_path)


def test_slices_written_against_the_normal_are_reversed_onto_increasing_positions(tmp_path):
    stored = stored_values(seed=2)
    down = (0.0, 0.0, -1.0)  # written top to bottom; the normal of AXIAL points up (+z, S)
    write_ct_series(tmp_path, stored, slice_direction=down)
    ct = read_dicom_series(tmp_path)
    last = SHAPE[2] - 1
    assert ct.origin_mm == pytest.approx((-20.0, -30.0, 50.0 - 2.5 * last), abs=1e-6)
    np.testing.assert_allclose(ct.direction, np.eye(3), atol=1e-12)
    assert np.array_equal(ct.array, stored[:, :, ::-1].astype(np.int32) - 1024)
    assert_voxels_land(ct, stored, stored.astype(np.int32) - 1024, slice_direction=down)
    assert_matches_sitk(ct, tmp_path)


def test_feet_first_series_has_negative_z_slice_axis(tmp_path):
    # Feet-first supine: image rows run to patient right, so the normal row × column is -z.
    feet_first = ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    stored = stored_values(seed=3)
    up = (0.0, 0.0, 1.0)  # table moves so positions climb in z file by file
    write_ct_series(tmp_path, stored, orientation=feet_first, slice_direction=up)
    ct = read_dicom_series(tmp_path)
    np.testing.assert_allclose(ct.direction, np.diag([-1.0, 1.0, -1.0]), atol=1e-12)
    assert ct.orientation == "RPI"
    assert np.linalg.det(ct.direction) == pytest.approx(1.0)
    top = SHAPE[2] - 1
    assert ct.origin_mm == pytest.approx((-20.0, -30.0, 50.0 + 2.5 * top), abs=1e-6)
    assert ct.spacing_mm == pytest.approx((0.8, 0.7, 2.5), abs=1e-6)
    assert np.array_equal(ct.array, stored[:, :, ::-1].astype(np.int32) - 1024)
    geometry = dict(orientation=feet_first, slice_direction=up)
    assert_voxels_land(ct, stored, stored.astype(np.int32) - 1024, **geometry)
    assert_matches_sitk(ct, tmp_path)


def test_oblique_series(tmp_path):
    turn = rotation("z", 20.0) @ rotation("x", 15.0)
    oblique = (tuple(turn[:, 0]), tuple(turn[:, 1]))
    stored = stored_values(seed=4)
    write_ct_series(tmp_path, stored, orientation=oblique, slice_step_mm=3.0)
    ct = read_dicom_series(tmp_path)
    np.testing.assert_allclose(ct.direction, turn, atol=2e-6)  # IOP is written with 6 decimals
    assert "oblique" in repr(ct)
    assert ct.spacing_mm == pytest.approx((0.8, 0.7, 3.0), abs=1e-5)
    assert_voxels_land(ct, stored, stored.astype(np.int32) - 1024, orientation=oblique, step=3.0)
    assert_matches_sitk(ct, tmp_path)


# ------------------------------------------------------------------------ HU values
def test_float_slope_gives_float32_hounsfield_units(tmp_path):
    stored = stored_values(seed=5)
    write_ct_series(tmp_path, stored, slope=0.5, intercept=-1000.0)
    ct = read_dicom_series(tmp_path)
    assert ct.dtype == np.float32
    assert np.array_equal(ct.array, stored.astype(np.float64) * 0.5 - 1000.0)
    assert_matches_sitk(ct, tmp_path)


def test_signed_stored_values_and_zero_intercept(tmp_path):
    stored = stored_values(seed=6, high=2000, dtype=np.int16) - np.int16(1000)
    write_ct_series(tmp_path, stored.astype(np.int16), intercept=0.0)
    ct = read_dicom_series(tmp_path)
    assert ct.dtype == np.int16
    assert np.array_equal(ct.array, stored)


def test_values_beyond_int16_fall_back_to_float32(tmp_path):
    stored = stored_values(seed=7, high=65535)
    stored[0, 0, 0] = 65000  # 65000 - 0 does not fit int16
    write_ct_series(tmp_path, stored, intercept=0.0)
    ct = read_dicom_series(tmp_path)
    assert ct.dtype == np.float32
    assert np.array_equal(ct.array, stored.astype(np.float64))


def test_rescale_is_applied_per_slice(tmp_path):
    stored = stored_values(seed=8)
    paths = write_ct_series(tmp_path, stored)
    edit_slice(paths[2], RescaleSlope="2", RescaleIntercept="-2048")
    ct = read_dicom_series(tmp_path)
    expected = stored.astype(np.int32) - 1024
    expected[:, :, 2] = stored[:, :, 2].astype(np.int32) * 2 - 2048
    assert ct.dtype == np.int16
    assert np.array_equal(ct.array, expected)


# ------------------------------------------------------------------------ refusals
def test_missing_middle_slice_is_refused_and_located(tmp_path):
    paths = write_ct_series(tmp_path, stored_values())
    paths[3].unlink()
    with pytest.raises(InputError, match="missing slice") as info:
        read_dicom_series(tmp_path)
    message = str(info.value)
    assert "gap of 5.000 mm" in message and "median spacing is 2.500 mm" in message
    assert paths[2].name in message and paths[4].name in message


def test_duplicate_slice_is_refused(tmp_path):
    paths = write_ct_series(tmp_path, stored_values())
    shutil.copy(paths[2], tmp_path / "copy_of_slice.dcm")
    with pytest.raises(InputError, match="duplicate slice position"):
        read_dicom_series(tmp_path)


def test_non_uniform_spacing_is_refused_with_its_tolerance(tmp_path):
    paths = write_ct_series(tmp_path, stored_values())
    edit_slice(paths[3], ImagePositionPatient=["-20", "-30", f"{50 + 3 * 2.5 + 0.3}"])
    with pytest.raises(InputError, match="uniform slice spacing") as info:
        read_dicom_series(tmp_path)
    assert "tolerance 0.0250 mm" in str(info.value)


def test_spacing_within_tolerance_is_accepted(tmp_path):
    paths = write_ct_series(tmp_path, stored_values())
    edit_slice(paths[3], ImagePositionPatient=["-20", "-30", f"{50 + 3 * 2.5 + 0.005}"])
    assert read_dicom_series(tmp_path).spacing_mm[2] == pytest.approx(2.5, abs=1e-6)


def test_inconsistent_orientation_is_refused(tmp_path):
    paths = write_ct_series(tmp_path, stored_values())
    edit_slice(paths[1], ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"])  # a coronal slice
    with pytest.raises(InputError, match="same ImageOrientationPatient") as info:
        read_dicom_series(tmp_path)
    assert paths[1].name in str(info.value)


@pytest.mark.parametrize(
    "attributes, match",
    [
        ({"PixelSpacing": ["0.75", "0.8"]}, "same PixelSpacing"),
        ({"Rows": 3, "PixelData": np.zeros((3, 5), np.uint16).tobytes()}, "same Rows/Columns"),
    ],
)
def test_inconsistent_grid_is_refused(tmp_path, attributes, match):
    paths = write_ct_series(tmp_path, stored_values())
    edit_slice(paths[4], **attributes)
    with pytest.raises(InputError, match=match):
        read_dicom_series(tmp_path)


def test_gantry_tilt_is_refused(tmp_path):
    tilted = (0.0, np.sin(np.deg2rad(10.0)), np.cos(np.deg2rad(10.0)))
    write_ct_series(tmp_path, stored_values(), slice_direction=tilted)
    with pytest.raises(InputError, match="gantry tilt"):
        read_dicom_series(tmp_path)


def test_missing_position_is_refused(tmp_path):
    paths = write_ct_series(tmp_path, stored_values())
    ds = pydicom.dcmread(paths[0])
    del ds.ImagePositionPatient
    ds.save_as(paths[0])
    with pytest.raises(InputError, match="ImagePositionPatient with 3 numbers"):
        read_dicom_series(tmp_path)


# ------------------------------------------------------------------------ folders and series
def test_two_series_need_a_series_uid(tmp_path):
    first, second = make_uid("first"), make_uid("second")
    write_ct_series(tmp_path, stored_values(), series_uid=first, description="thin",
                    name_prefix="a")
    write_ct_series(tmp_path, stored_values(shape=(5, 4, 3), seed=9), series_uid=second,
                    description="thick", name_prefix="b", slice_step_mm=5.0)
    with pytest.raises(InputError, match="found 2") as info:
        read_dicom_series(tmp_path)
    message = str(info.value)
    for expected in (first, second, "'thin'", "'thick'", "6 slice(s)", "3 slice(s)", "series_uid"):
        assert expected in message

    thick = read_dicom_series(tmp_path, series_uid=second)
    assert thick.shape == (5, 4, 3)
    assert thick.spacing_mm[2] == pytest.approx(5.0)
    assert thick.metadata["SeriesInstanceUID"] == second
    assert_matches_sitk(thick, tmp_path, second)
    assert read_dicom_series(tmp_path, series_uid=first).shape == SHAPE

    with pytest.raises(InputError, match="no series with SeriesInstanceUID '9.9.9'"):
        read_dicom_series(tmp_path, series_uid="9.9.9")


def test_non_dicom_files_are_skipped(tmp_path):
    stored = stored_values()
    write_ct_series(tmp_path, stored)
    (tmp_path / "README.txt").write_text("exported by the planning system\n")
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "subfolder").mkdir()
    ct = read_dicom_series(tmp_path)
    assert np.array_equal(ct.array, stored.astype(np.int32) - 1024)


def test_files_without_preamble_are_read(tmp_path):
    stored = stored_values()
    for path in write_ct_series(tmp_path, stored):  # old exports: no 128-byte preamble + "DICM"
        ds = pydicom.dcmread(path)
        ds.preamble = None
        pydicom.dcmwrite(path, ds)
        assert path.read_bytes()[128:132] != b"DICM"
    assert np.array_equal(read_dicom_series(tmp_path).array, stored.astype(np.int32) - 1024)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="found none.*holds no files"):
        read_dicom_series(tmp_path)


def test_folder_without_dicom_is_refused_and_points_to_subfolders(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    (tmp_path / "CT").mkdir()
    with pytest.raises(InputError, match="1 file\\(s\\) skipped as not DICOM") as info:
        read_dicom_series(tmp_path)
    assert "['CT']" in str(info.value)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        read_dicom_series(tmp_path / "absent")


def test_missing_pydicom_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    with pytest.raises(InputError, match=r"cervicontour\[dicom\]"):
        read_dicom_series(tmp_path)


def test_read_volume_dispatches_folders_to_dicom(tmp_path):
    stored = stored_values()
    write_ct_series(tmp_path, stored)
    assert np.array_equal(read_volume(tmp_path).array, stored.astype(np.int32) - 1024)


# ------------------------------------------------------------------------ single slice
def test_single_slice_takes_spacing_from_slice_thickness(tmp_path):
    stored = stored_values(shape=(5, 4, 1))
    write_ct_series(tmp_path, stored, slice_thickness_mm=3.0)
    ct = read_dicom_series(tmp_path)
    assert ct.shape == (5, 4, 1)
    assert ct.spacing_mm == pytest.approx((0.8, 0.7, 3.0), abs=1e-6)


def test_single_slice_without_thickness_is_refused(tmp_path):
    write_ct_series(tmp_path, stored_values(shape=(5, 4, 1)))
    with pytest.raises(InputError, match="single-slice series needs SliceThickness"):
        read_dicom_series(tmp_path)


def test_slice_built_in_memory_round_trips_pixels(tmp_path):
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)  # 3 rows, 4 columns
    ds = ct_slice(pixels, position_mm=(0, 0, 0), row_cosine=(1, 0, 0), column_cosine=(0, 1, 0),
                  series_uid="1.2.3", slice_thickness_mm=1.0, intercept=0.0)
    pydicom.dcmwrite(tmp_path / "one.dcm", ds, enforce_file_format=True)
    ct = read_dicom_series(tmp_path)
    assert ct.shape == (4, 3, 1)
    assert ct.array[3, 0, 0] == 3 and ct.array[0, 2, 0] == 8  # [column, row] = pixels[row, column]


# ------------------------------------------------------------------------ real data
@pytest.mark.skipif(not CT_SMALL.is_file(), reason=f"real data not present at {CT_SMALL}")
def test_real_single_slice_ct_small(tmp_path):
    shutil.copy(CT_SMALL, tmp_path / CT_SMALL.name)
    ct = read_dicom_series(tmp_path)
    ds = pydicom.dcmread(CT_SMALL)
    rows, columns = int(ds.Rows), int(ds.Columns)
    assert ct.shape == (columns, rows, 1)
    assert ct.spacing_mm == pytest.approx(
        (float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), float(ds.SliceThickness))
    )
    assert ct.origin_mm == pytest.approx([float(v) for v in ds.ImagePositionPatient])
    assert ct.orientation == "LPS"
    expected = ds.pixel_array.T.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    assert ct.dtype == np.int16
    assert np.array_equal(ct.array[:, :, 0], expected)

    image = sitk.ReadImage(str(CT_SMALL))  # independent in-plane geometry and HU
    np.testing.assert_allclose(ct.origin_mm, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ct.spacing_mm[:2], image.GetSpacing()[:2], atol=1e-6)
    assert np.array_equal(ct.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))


@pytest.mark.skipif(not CT_SMALL.is_file(), reason=f"real data not present at {CT_SMALL}")
def test_real_folder_skips_rt_objects(tmp_path):
    # The pydicom sample folder mixes CT_small with RTPLAN/RTSTRUCT (no pixels) and a
    # multi-frame RTDOSE: only the CT slice is an image slice.
    folder = CT_SMALL.parent
    before = file_hashes(folder)
    ct = read_dicom_series(folder)
    assert ct.metadata["Modality"] == "CT"
    assert ct.shape[2] == 1
    assert file_hashes(folder) == before
