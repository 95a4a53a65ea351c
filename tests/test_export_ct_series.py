"""export-dicom: a NIfTI CT case → DICOM CT series → RTSTRUCT → re-import, on LPS, RAS, flipped and oblique grids.

One phantom case (the box around its masks, every second voxel along axis 1 so that the in-plane
spacings differ and a swapped PixelSpacing shows) is stored four ways with the same voxels in the world. Expected values come
from SimpleITK (its NIfTI reader and its DICOM ImageSeriesReader) and numpy, never from our own
output: the series must hold the NIfTI's voxels exactly, on the same world positions, and the
RTSTRUCT drawn on it must give the masks back (Dice, centroids within half a voxel).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
sitk = pytest.importorskip("SimpleITK")

from typer.testing import CliRunner  # noqa: E402

from cervicontour.cli import app  # noqa: E402
from cervicontour.errors import InputError  # noqa: E402
from cervicontour.volume import Volume  # noqa: E402

MASKS = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")
runner = CliRunner()


def _rotation(degrees_z: float, degrees_x: float) -> np.ndarray:
    z, x = np.deg2rad([degrees_z, degrees_x])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return rz @ rx


def _flip_slices(v: Volume) -> Volume:
    """The same voxels stored with the slice axis running inferior (a left-handed NIfTI)."""
    top = v.index_to_world(np.array([0, 0, v.shape[2] - 1]))
    return Volume(v.array[:, :, ::-1], v.spacing_mm, tuple(top), v.direction @ np.diag([1.0, 1.0, -1.0]))


def _ras(v: Volume) -> Volume:
    corner = v.index_to_world(np.array([v.shape[0] - 1, v.shape[1] - 1, 0]))
    return Volume(v.array[::-1, ::-1, :], v.spacing_mm, tuple(corner), v.direction @ np.diag([-1.0, -1.0, 1.0]))


VARIANTS = {
    "LPS": lambda v: v,
    "RAS": _ras,
    "flipped": _flip_slices,
    "oblique": lambda v: Volume(v.array, v.spacing_mm, v.origin_mm, _rotation(8.0, 5.0)),
}


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per variant: the NIfTI case, its series (export-dicom), RS.dcm (rtstruct export), and the re-import (rtstruct import)."""
    from cervicontour.cohort import load_cohort, write_case
    from cervicontour.synth import synthesize_cohort

    root = tmp_path_factory.mktemp("export_dicom")
    case = load_cohort(synthesize_cohort(root / "src", patients=1, seed=5, size="small"))["SYN001"]
    image = case.load_image()
    assert image.orientation == "LPS"

    masks = {n: case.load_structure(n) for n in MASKS}
    union = np.any([m.array > 0 for m in masks.values()], axis=0)
    lo = np.maximum(np.argwhere(union).min(axis=0) - 3, 0)
    hi = np.argwhere(union).max(axis=0) + 4

    def small(v: Volume) -> Volume:  # the box around the masks, every second voxel along axis 1 (centres stay, spacing doubles)
        box = v.array[lo[0] : hi[0], lo[1] : hi[1] : 2, lo[2] : hi[2]].copy()
        return Volume(box, (v.spacing_mm[0], 2 * v.spacing_mm[1], v.spacing_mm[2]), tuple(v.index_to_world(lo)), v.direction)

    base, masks = small(image), {n: small(m) for n, m in masks.items()}
    out, seconds = {}, {}
    for name, variant in VARIANTS.items():
        write_case(root / "cohort", name, variant(base), {n: variant(m) for n, m in masks.items()})
        before = _tree_hashes(root / "cohort" / name)
        series, rs = root / "dicom" / name / "CT", root / "dicom" / name / "RS.dcm"
        t0 = time.perf_counter()
        result = runner.invoke(app, ["export-dicom", str(root / "cohort" / name), "--out", str(series)])
        seconds[name] = time.perf_counter() - t0
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["rtstruct", "export", "--series", str(series), "--masks", str(root / "cohort" / name), "--out", str(rs)])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["rtstruct", "import", "--series", str(series), "--rtstruct", str(rs), "--out", str(root / "back" / name)])
        assert result.exit_code == 0, result.output
        assert _tree_hashes(root / "cohort" / name) == before  # the source is only read
        out[name] = (root / "cohort" / name, series, rs, root / "back" / name)
    print("export-dicom seconds per variant:", {k: round(v, 2) for k, v in seconds.items()}, "shape", base.shape)
    return out


def _affine(image) -> np.ndarray:
    """4×4 index → LPS mm of a SimpleITK image."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None, :]
    a[:3, 3] = image.GetOrigin()
    return a


def _read_series(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _ijk(image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _onto(target, source) -> np.ndarray:
    """``source``'s voxels re-indexed onto ``target``'s lattice (SimpleITK images), asserting that
    the two lattices are one: a signed permutation of axes with whole-voxel offsets covering the same voxels."""
    m = np.linalg.inv(_affine(source)) @ _affine(target)  # target index → source index
    r, t = m[:3, :3], m[:3, 3]
    assert np.allclose(r, np.round(r), atol=1e-5) and np.allclose(t, np.round(t), atol=1e-4), (r, t)
    r, t = np.round(r).astype(int), np.round(t).astype(int)
    axes = [int(np.flatnonzero(r[:, a])[0]) for a in range(3)]  # the source axis target axis a runs along
    assert sorted(axes) == [0, 1, 2]
    array = np.transpose(_ijk(source), axes)
    flips = [a for a in range(3) if r[axes[a], a] < 0]
    array = np.flip(array, flips) if flips else array
    assert array.shape == tuple(target.GetSize())
    assert all(t[axes[a]] == (array.shape[a] - 1 if a in flips else 0) for a in range(3)), t
    return array


@pytest.mark.parametrize("name", VARIANTS)
def test_series_holds_the_nifti_voxels_on_their_world_positions_by_simpleitk(exported, name):
    case, series, _, _ = exported[name]
    nifti, dicom = sitk.ReadImage(str(case / "image.nii.gz")), _read_series(series)
    assert np.array_equal(_ijk(dicom), _onto(dicom, nifti))  # HU voxel-exact, lattice the same
    assert sorted(dicom.GetSpacing()) == pytest.approx(sorted(nifti.GetSpacing()), abs=1e-6)
    direction = np.asarray(dicom.GetDirection()).reshape(3, 3)
    if name == "oblique":  # the rotation kept, axes in their own order (already L, P, S-most)
        assert direction == pytest.approx(_rotation(8.0, 5.0), abs=1e-6)
    else:  # an axial series displayed the radiological way: rows to the patient's left, columns posterior
        assert direction == pytest.approx(np.eye(3), abs=1e-9)
        corners = np.array([[i, j, k] for i in (0, nifti.GetSize()[0] - 1) for j in (0, nifti.GetSize()[1] - 1) for k in (0, nifti.GetSize()[2] - 1)])
        world = (_affine(nifti) @ np.c_[corners, np.ones(8)].T).T[:, :3]
        assert dicom.GetOrigin() == pytest.approx(world.min(axis=0), abs=1e-6)


@pytest.mark.parametrize("name", VARIANTS)
def test_our_reader_reads_the_series_as_simpleitk_does(exported, name):
    from cervicontour.io.dicom import read_dicom_series

    case, series, _, _ = exported[name]
    ours, theirs = read_dicom_series(series), _read_series(series)
    assert ours.dtype == np.int16
    assert np.array_equal(ours.array, _onto(theirs, sitk.ReadImage(str(case / "image.nii.gz"))))
    assert ours.spacing_mm == pytest.approx(theirs.GetSpacing(), abs=1e-6)
    assert ours.origin_mm == pytest.approx(theirs.GetOrigin(), abs=1e-6)
    assert ours.direction == pytest.approx(np.asarray(theirs.GetDirection()).reshape(3, 3), abs=1e-6)


@pytest.mark.parametrize("name", ["LPS", "flipped"])
def test_slice_headers_by_hand(exported, name):
    """Spacing, thickness, orientation, positions and rescale of each file, against the phantom's grid."""
    case, series, _, _ = exported[name]
    nifti = sitk.ReadImage(str(case / "image.nii.gz"))
    sx, sy, sz = nifti.GetSpacing()
    files = [pydicom.dcmread(p) for p in sorted(series.glob("*.dcm"))]
    assert len(files) == nifti.GetSize()[2]
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in files)
    assert np.diff(z) == pytest.approx(np.full(len(z) - 1, sz), abs=1e-5)
    for ds in files:
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([sy, sx], abs=1e-6)  # row spacing (along y) first
        assert float(ds.SliceThickness) == pytest.approx(sz, abs=1e-6) and float(ds.SpacingBetweenSlices) == pytest.approx(sz, abs=1e-6)
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert (ds.Rows, ds.Columns) == (nifti.GetSize()[1], nifti.GetSize()[0])
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.PixelRepresentation, ds.BitsStored) == (1.0, 0.0, 1, 16)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert ds.PatientID == name and str(ds.PatientName) == name  # the case id


@pytest.mark.parametrize("name", VARIANTS)
def test_dciodvfy_reports_no_errors_on_every_slice_and_the_rtstruct(exported, name):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian: apt-get install dicom3tools)")
    _, series, rs, _ = exported[name]
    for path in [*sorted(series.glob("*.dcm")), rs]:
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert not errors, (path.name, errors)


@pytest.mark.parametrize("name", VARIANTS)
def test_rtstruct_on_the_series_gives_the_masks_back(exported, name):
    """Re-imported masks vs the originals, both read by SimpleITK: Dice ≥ 0.98, centroids within half a voxel."""
    case, series, rs, back = exported[name]
    ds = pydicom.dcmread(rs)
    first = pydicom.dcmread(next(series.glob("*.dcm")), stop_before_pixels=True)
    referenced = ds.ReferencedFrameOfReferenceSequence[0]
    assert referenced.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert referenced.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert ds.PatientID == first.PatientID and ds.StudyInstanceUID == first.StudyInstanceUID
    for mask in MASKS:
        original = sitk.ReadImage(str(case / "structures" / f"{mask}.nii.gz"))
        imported = sitk.ReadImage(str(back / "structures" / f"{mask}.nii.gz"))
        a, b = _onto(imported, original) > 0, _ijk(imported) > 0
        dice = 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
        # centroids in the original's voxel units
        to_original = np.linalg.inv(_affine(original)) @ _affine(imported)
        ca, cb = (np.c_[np.argwhere(m).mean(axis=0)[None], 1] @ to_original.T for m in (a, b))
        print(f"{name} {mask}: Dice {dice:.4f}, centroid shift {np.abs(ca - cb)[0, :3].max():.4f} voxel")
        assert dice >= 0.98
        assert np.abs(ca - cb)[0, :3].max() <= 0.5


def _uids(folder: Path) -> list[tuple[str, str, str, str]]:
    files = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]
    return [(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.SOPInstanceUID) for ds in files]


def test_same_case_same_uids_and_files_other_patient_other_uids(exported, tmp_path):
    from cervicontour.export.ct_series import export_dicom

    case, series, _, _ = exported["LPS"]
    again = export_dicom(case, tmp_path / "again")
    assert _uids(again.folder) == _uids(series)
    assert _tree_hashes(again.folder) == _tree_hashes(series)  # no dates: byte-identical
    first = _uids(series)
    assert len({u[3] for u in first}) == len(first) and len({u[:3] for u in first}) == 1
    other = _uids(export_dicom(case, tmp_path / "other", patient_id="P0001").folder)
    assert not {u for row in other for u in row} & {u for row in first for u in row}
    ras = _uids(exported["RAS"][1])
    assert ras[0][0] != first[0][0]  # another image: another study


def test_patient_id_and_name_from_the_flags_or_the_file_name(exported, tmp_path):
    case, _, _, _ = exported["RAS"]
    out = tmp_path / "flags"
    result = runner.invoke(app, ["export-dicom", str(case), "--out", str(out), "--patient-id", "AB123", "--patient-name", "Doe^Jane",
                                 "--patient-position", "HFS"])
    assert result.exit_code == 0, result.output
    ds = pydicom.dcmread(next(out.glob("*.dcm")), stop_before_pixels=True)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientPosition) == ("AB123", "Doe^Jane", "HFS")
    single = tmp_path / "ct_0042.nii.gz"
    shutil.copy(case / "image.nii.gz", single)
    result = runner.invoke(app, ["export-dicom", str(single), "--out", str(tmp_path / "single")])
    assert result.exit_code == 0, result.output
    assert pydicom.dcmread(next((tmp_path / "single").glob("*.dcm")), stop_before_pixels=True).PatientID == "ct_0042"


def _phantom_hu(exported) -> Volume:
    from cervicontour.io import read_nifti

    return read_nifti(exported["LPS"][0] / "image.nii.gz")


def test_hu_beyond_int16_shift_the_intercept_and_come_back_exactly(exported, tmp_path):
    from cervicontour.export.ct_series import write_ct_series
    from cervicontour.io.dicom import read_dicom_series

    image = _phantom_hu(exported)
    hu = image.array.astype(np.int32)
    hu[10:12, 10:12, 5] = 35_000  # extended-range metal
    written = write_ct_series(image.with_array(hu), tmp_path / "metal", patient_id="metal")
    assert written.rescale_intercept == int(hu.min()) + 32768  # the lowest value stored as -32768
    assert np.array_equal(read_dicom_series(tmp_path / "metal").array, hu)
    assert np.array_equal(_ijk(_read_series(tmp_path / "metal")), hu)


def test_non_integer_hu_are_rounded_and_the_change_reported(exported, tmp_path):
    from cervicontour.export.ct_series import write_ct_series
    from cervicontour.io.dicom import read_dicom_series

    image = _phantom_hu(exported)
    written = write_ct_series(image.with_array(image.array.astype(np.float32) + 0.25), tmp_path / "float", patient_id="float")
    assert written.rounded_hu == pytest.approx(0.25)
    assert np.array_equal(read_dicom_series(tmp_path / "float").array, image.array)
    exact = write_ct_series(image.with_array(image.array.astype(np.float32)), tmp_path / "whole", patient_id="whole")
    assert exact.rounded_hu == 0.0


@pytest.mark.parametrize("values, message", [((-40_000, 30_000), "span more than 16 bits"), ((np.nan, 0), "NaN")])
def test_values_a_series_cannot_hold_are_refused(exported, tmp_path, values, message):
    from cervicontour.export.ct_series import write_ct_series

    image = _phantom_hu(exported)
    bad = image.array.astype(np.float32)
    bad[0, 0, 0], bad[1, 1, 1] = values
    with pytest.raises(InputError, match=message):
        write_ct_series(image.with_array(bad), tmp_path / "bad" / "CT", patient_id="bad")
    assert not (tmp_path / "bad").exists()


def test_bad_input_exits_2_with_what_to_do_and_writes_nothing(exported, tmp_path):
    case, series, _, _ = exported["LPS"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep")
    (tmp_path / "notes.txt").write_text("not a CT")
    cases = [
        ([str(tmp_path / "missing")], "no such file or folder"),
        ([str(tmp_path / "notes.txt")], "not a NIfTI file"),
        ([str(case / "structures" / "Bladder.nii.gz")], "not a usable CT"),
        ([str(series)], "already a DICOM series"),
        ([str(case.parent)], "a cohort folder"),
        ([str(case), "--patient-position", "SUPINE"], "DICOM PatientPosition"),
        ([str(case), "--patient-id", "A\\B"], "without a backslash"),
    ]
    for args, message in cases:
        out = tmp_path / "new" / "CT"
        result = runner.invoke(app, ["export-dicom", *args, "--out", str(out)])
        assert result.exit_code == 2 and message in result.output and "expected" in result.output, (args, result.output)
        assert not (tmp_path / "new").exists()
    result = runner.invoke(app, ["export-dicom", str(case), "--out", str(full)])
    assert result.exit_code == 2 and "expected a new or empty folder" in result.output
    result = runner.invoke(app, ["export-dicom", str(case), "--out", str(full), "--overwrite"])
    assert result.exit_code == 2 and "not a DICOM slice file" in result.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in full.iterdir()] == ["notes.txt"]


def test_a_failed_write_leaves_nothing_and_a_failed_overwrite_keeps_the_old_series(exported, tmp_path, monkeypatch):
    import cervicontour.export.rtstruct as rtstruct
    from cervicontour.export.ct_series import export_dicom

    case = exported["LPS"][0]
    save, calls = rtstruct._save, []

    def failing(pydicom_module, ds, path):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("disk full")
        save(pydicom_module, ds, path)

    monkeypatch.setattr(rtstruct, "_save", failing)
    with pytest.raises(OSError, match="disk full"):
        export_dicom(case, tmp_path / "a" / "b" / "CT")
    assert list(tmp_path.iterdir()) == []  # no series, no staging folder, no parents made for it
    monkeypatch.setattr(rtstruct, "_save", save)
    old = export_dicom(case, tmp_path / "CT").folder
    before = _tree_hashes(old)
    monkeypatch.setattr(rtstruct, "_save", failing)
    calls.clear()
    with pytest.raises(OSError):
        export_dicom(case, old, patient_id="other", overwrite=True)
    assert _tree_hashes(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["CT"]
    monkeypatch.setattr(rtstruct, "_save", save)
    replaced = export_dicom(case, old, patient_id="other", overwrite=True)
    assert pydicom.dcmread(next(replaced.folder.glob("*.dcm")), stop_before_pixels=True).PatientID == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT"]
