"""RTSTRUCT export and import on synthetic CT series in five orientations, on real data, and dciodvfy.

The structures are defined in the *patient's world* (LPS mm) — the same physical objects for
every series — and sampled at each series' voxel centres. Expected values come from that
definition; the check of the exported contours uses its own geometry (from the DICOM
ImagePositionPatient / ImageOrientationPatient / PixelSpacing of each slice, with matplotlib's
point-in-polygon), never our Volume code or our rasteriser.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from conftest import real_data  # noqa: E402
from dicom_factory import write_ct_series  # noqa: E402

from cervicontour.errors import InputError  # noqa: E402
from cervicontour.export.contours import fill_slice, format_ds, signed_area, trace_slice  # noqa: E402
from cervicontour.export.masks import collect_masks, onto_grid  # noqa: E402
from cervicontour.export.rtstruct import interpreted_type, write_rtstruct  # noqa: E402
from cervicontour.export.rtstruct_import import import_rtstruct_case, read_rtstruct  # noqa: E402
from cervicontour.io.dicom import read_dicom_series  # noqa: E402
from cervicontour.volume import Volume  # noqa: E402

SHAPE = (64, 56, 22)  # columns, rows, slices
PIXEL_MM = (0.8, 0.9)  # DICOM PixelSpacing = (row spacing, column spacing)
SLICE_MM = 2.5
CENTRE = np.array([10.0, -20.0, 40.0])  # LPS mm: where every series is centred
ORIENTATIONS = {
    "HFS": ((1, 0, 0), (0, 1, 0)),  # head-first supine
    "FFS": ((-1, 0, 0), (0, 1, 0)),  # feet-first supine: slices run inferior
    "HFP": ((-1, 0, 0), (0, -1, 0)),  # head-first prone
    "flipped": ((0, 1, 0), (1, 0, 0)),  # rows run posterior, columns left, slices inferior
    "oblique": ((1, 0, 0), (0, np.cos(np.radians(12)), np.sin(np.radians(12)))),
}


def _world_structures(world: np.ndarray) -> dict[str, np.ndarray]:
    """The physical objects, as functions of LPS position (mm)."""
    d = world - CENTRE
    shell = np.linalg.norm(d / [15.0, 12.0, 16.0], axis=-1)
    hole = np.linalg.norm(d / [6.0, 5.0, 7.0], axis=-1)
    left = np.linalg.norm(d - [13.0, 6.0, -10.0], axis=-1)
    right = np.linalg.norm(d - [-13.0, 6.0, -10.0], axis=-1)
    return {
        "Bladder": (shell <= 1) & (hole > 1),  # hollow: a hole on the middle slices
        "CTVn": (left <= 9.5) | (right <= 9.5),  # two islands, 3.6 cc each
        "GTVp": np.linalg.norm(d - [0.0, -14.0, 14.0], axis=-1) <= 4.0,  # 0.27 cc: below the 5 cc criterion
    }


def _series(root: Path, name: str) -> Path:
    row, col = (np.asarray(v, float) for v in ORIENTATIONS[name])
    normal = np.cross(row, col)
    half = (np.array(SHAPE) - 1) / 2 * np.array([PIXEL_MM[1], PIXEL_MM[0], SLICE_MM])
    origin = CENTRE - (row * half[0] + col * half[1] + normal * half[2])
    folder = root / name / "ct"
    write_ct_series(folder, np.full(SHAPE, 1000, np.uint16), origin_mm=tuple(origin), orientation=(row, col),
                    pixel_spacing_mm=PIXEL_MM, slice_step_mm=SLICE_MM, description=name, clinical_header=True,
                    seed=hash(name) % 1000, frame_uid=f"1.2.826.0.1.3680043.8.498.77.{len(name)}")
    return folder


def _masks_on(ct: Volume) -> dict[str, np.ndarray]:
    world = ct.index_to_world(np.indices(ct.shape).reshape(3, -1).T)
    return {n: m.reshape(ct.shape) for n, m in _world_structures(world).items()}


# ---------------------------------------------------------------------- independent reader
def _slice_geometry(series: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float], tuple[int, int]]]:
    """SOPInstanceUID → (position, row cosine, column cosine, (row mm, col mm), (rows, cols)) from the files."""
    out = {}
    for path in series.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        out[ds.SOPInstanceUID] = (np.asarray(ds.ImagePositionPatient, float), iop[:3], iop[3:],
                                  tuple(float(v) for v in ds.PixelSpacing), (int(ds.Rows), int(ds.Columns)))
    return out


def _independent_masks(rs_path: Path, series: Path) -> dict[str, dict[str, np.ndarray]]:
    """ROI name → {SOPInstanceUID: [rows, cols] mask}, by matplotlib point-in-polygon at pixel centres."""
    from matplotlib.path import Path as MplPath

    geometry = _slice_geometry(series)
    ds = pydicom.dcmread(rs_path)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    out: dict[str, dict[str, np.ndarray]] = {}
    for roi in ds.ROIContourSequence:
        slices: dict[str, np.ndarray] = {}
        for contour in roi.ContourSequence:
            uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            position, row, col, (row_mm, col_mm), (rows, cols) = geometry[uid]
            points = np.asarray(contour.ContourData, float).reshape(-1, 3) - position
            normal = np.cross(row, col)
            assert np.abs(points @ normal).max() < 1e-3, "contour not on its image plane"
            c, r = points @ row / col_mm, points @ col / row_mm  # column index along the row cosine
            rr, cc = np.mgrid[:rows, :cols]
            inside = MplPath(np.column_stack([c, r])).contains_points(np.column_stack([cc.ravel(), rr.ravel()]))
            slices[uid] = slices.get(uid, np.zeros((rows, cols), bool)) ^ inside.reshape(rows, cols)
        out[names[int(roi.ReferencedROINumber)]] = slices
    return out


def _world_points_of(masks_by_uid: dict[str, np.ndarray], series: Path) -> np.ndarray:
    geometry = _slice_geometry(series)
    points = []
    for uid, mask in masks_by_uid.items():
        position, row, col, (row_mm, col_mm), _ = geometry[uid]
        r, c = np.nonzero(mask)
        points.append(position + np.outer(c * col_mm, row) + np.outer(r * row_mm, col))
    return np.concatenate(points)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtstruct")
    out = {}
    for name in ORIENTATIONS:
        series = _series(root, name)
        ct = read_dicom_series(series)
        masks = _masks_on(ct)
        rs = root / name / "RS.dcm"
        result = write_rtstruct(series, {n: ct.with_array(m.astype(np.uint8)) for n, m in masks.items()}, rs,
                                model="unit-test-model", model_version="1.2")
        out[name] = (series, ct, masks, rs, result)
    return out


# ---------------------------------------------------------------------- contours (pure)
def test_square_outline_runs_on_pixel_edges_and_has_the_pixel_area():
    mask = np.zeros((5, 4), bool)
    mask[1:4, 1:3] = True
    (polygon,) = trace_slice(mask)
    assert sorted(map(tuple, polygon.tolist())) == sorted([(0.5, 0.5), (3.5, 0.5), (3.5, 2.5), (0.5, 2.5)])
    assert signed_area(polygon) == pytest.approx(6.0)  # 3 × 2 pixels, counter-clockwise


def test_ring_gives_outer_ccw_and_hole_cw_and_fills_back():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    polygons = trace_slice(mask)
    areas = sorted(signed_area(p) for p in polygons)
    assert areas == [pytest.approx(-1.0), pytest.approx(25.0)]
    assert (fill_slice(polygons, mask.shape) == mask).all()


def test_diagonal_pixels_are_two_islands_and_random_masks_round_trip():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = mask[2, 2] = True
    polygons = trace_slice(mask)
    assert [signed_area(p) for p in polygons] == [1.0, 1.0]
    rng = np.random.default_rng(3)
    for _ in range(100):
        shape = tuple(rng.integers(1, 25, 2))
        mask = rng.random(shape) < rng.random()
        polygons = trace_slice(mask)
        assert (fill_slice(polygons, shape) == mask).all()
        assert sum(signed_area(p) for p in polygons) == pytest.approx(mask.sum())


def test_fill_is_even_odd_and_clips():
    big = np.array([[-0.5, -0.5], [5.5, -0.5], [5.5, 5.5], [-0.5, 5.5]])
    small = np.array([[1.5, 1.5], [3.5, 1.5], [3.5, 3.5], [1.5, 3.5]])
    filled = fill_slice([big, small], (6, 6))
    assert filled.sum() == 36 - 4 and not filled[2:4, 2:4].any()
    assert fill_slice([big + 3], (6, 6)).sum() == 9  # only the 3×3 corner lies on the slice


def test_decimal_strings_fit_16_bytes():
    for value in (-123456.78901234, 1e-7, -0.0000004, 987654321.123456, 0.1 + 0.2, -37.25):
        text = format_ds(value)
        assert len(text) <= 16 and abs(float(text) - value) <= 1e-6 * max(1.0, abs(value))
    assert format_ds(-0.0000001) == "0" and format_ds(40.0) == "40"
    with pytest.raises(ValueError):
        format_ds(float("nan"))


def test_interpreted_types():
    assert [interpreted_type(n) for n in ("Bladder", "CTVp", "GTV_P", "Cervix", "External", "PTV_45", "Foo")] == [
        "ORGAN", "CTV", "GTV", "ORGAN", "EXTERNAL", "PTV", ""]


# ---------------------------------------------------------------------- round trip, world geometry
@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_round_trip_dice_and_centroid_in_world_coordinates(exported, name):
    series, ct, masks, rs, result = exported[name]
    assert [r.name for r in result.rois] == ["Bladder", "CTVn", "GTVp"]
    independent = _independent_masks(rs, series)
    half_voxel = 0.5 * min(PIXEL_MM[0], PIXEL_MM[1], SLICE_MM)
    for structure, mask in masks.items():
        volume_cc = mask.sum() * ct.voxel_volume_cc
        truth = ct.index_to_world(np.argwhere(mask))  # voxel centres of the world-defined object
        back = _world_points_of(independent[structure], series)
        # Dice on voxel centres: both point sets lie on the same lattice, compare rounded positions.
        a = {tuple(p) for p in np.round(truth, 3)}
        b = {tuple(p) for p in np.round(back, 3)}
        dice = 2 * len(a & b) / (len(a) + len(b))
        shift = np.linalg.norm(truth.mean(0) - back.mean(0))
        if volume_cc >= 5.0:
            assert dice >= 0.98, (structure, dice)
            assert shift <= half_voxel, (structure, shift)
        assert dice == 1.0 and shift < 1e-3  # edge contours reproduce every voxel (IOP is written to 1e-6)
    # ... and our own importer gives back exactly the masks that were written
    for roi in read_rtstruct(rs, ct).rois:
        assert (roi.mask == masks[roi.name]).all(), roi.name


def test_hollow_bladder_is_written_as_outer_and_inner_contours(exported):
    series, ct, masks, rs, _ = exported["HFS"]
    ds = pydicom.dcmread(rs)
    per_slice: dict[str, int] = {}
    for contour in ds.ROIContourSequence[0].ContourSequence:
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        per_slice[uid] = per_slice.get(uid, 0) + 1
    assert max(per_slice.values()) == 2  # the hole's slices: outer + hole
    islands = {}
    for contour in ds.ROIContourSequence[1].ContourSequence:
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        islands[uid] = islands.get(uid, 0) + 1
    assert max(islands.values()) == 2  # CTVn: left and right island on one slice


def test_references_names_and_draft_identification(exported):
    series, ct, _, rs, _ = exported["FFS"]
    ds = pydicom.dcmread(rs)
    first = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.PatientID == first.PatientID
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID == ds.FrameOfReferenceUID
    ref_series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == first.SeriesInstanceUID
    slice_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ContourImageSequence} == slice_uids
    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in slice_uids
    rois = {r.ROIName: r for r in ds.StructureSetROISequence}
    assert set(rois) == {"Bladder", "CTVn", "GTVp"}
    assert {r.ROIGenerationAlgorithm for r in rois.values()} == {"AUTOMATIC"}
    assert "unit-test-model 1.2" in rois["CTVn"].ROIGenerationDescription
    types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
    assert types[rois["Bladder"].ROINumber] == "ORGAN" and types[rois["GTVp"].ROINumber] == "GTV"
    assert ds.ApprovalStatus == "UNAPPROVED" and "review" in ds.StructureSetDescription
    assert any("unit-test-model" in v for v in ds.SoftwareVersions)
    assert list(ds.ROIContourSequence[0].ROIDisplayColor) == [0xF6, 0xD3, 0x2D]  # the preview's Bladder yellow


def _raw_ds_values(dataset) -> list[bytes]:
    """Every DS value as the bytes stored in the file (read without converting to float)."""
    values = []
    for tag in dataset.keys():
        raw = dataset.get_item(tag)
        if raw.VR == "SQ":
            for item in dataset[tag].value:
                values += _raw_ds_values(item)
        elif raw.VR == "DS" and raw.value:
            data = raw.value if isinstance(raw.value, bytes) else str(raw.value).encode()
            values += data.rstrip(b" ").split(b"\\")
    return values


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_every_ds_value_fits_16_bytes(exported, name):
    values = _raw_ds_values(pydicom.dcmread(exported[name][3]))
    assert len(values) > 1000 and max(len(v) for v in values) <= 16


def test_dciodvfy_reports_no_errors(exported):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian: apt-get install dicom3tools)")
    for name, (_, _, _, rs, _) in exported.items():
        run = subprocess.run(["dciodvfy", str(rs)], capture_output=True, text=True, timeout=60)
        lines = (run.stdout + run.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        # Warnings seen and accepted: none with dicom3tools 1.00 (Debian 12). If one appears it is
        # printed here so the test output lists it; only errors fail.
        warnings = [line for line in lines if line.startswith("Warning")]
        print(name, "dciodvfy warnings:", warnings)
        assert errors == [], (name, errors)


# ---------------------------------------------------------------------- grids and inputs
def test_mask_in_another_storage_orientation_is_reindexed_exactly(exported):
    from cervicontour.volume import to_lps

    series, ct, masks, _, _ = exported["flipped"]
    mask = ct.with_array(masks["Bladder"].astype(np.uint8))
    lps = to_lps(mask)
    assert lps.orientation == "LPS" and not ct.same_grid(lps)
    assert (onto_grid(ct, lps) == masks["Bladder"]).all()
    shifted = Volume(mask.array, mask.spacing_mm, tuple(np.add(mask.origin_mm, 0.3)), mask.direction)
    with pytest.raises(InputError, match="resample it onto the CT"):
        onto_grid(ct, shifted, name="Bladder")


def test_cyclically_permuted_and_cropped_masks_land_on_the_right_voxels():
    from cervicontour.volume import to_lps

    rng = np.random.default_rng(5)
    cycle = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)  # axis 0 → S, axis 1 → L, axis 2 → A
    reference = Volume(rng.random((5, 6, 7)) > 0.5, (1.0, 2.0, 3.0), (3.0, -4.0, 5.0), cycle)
    assert (onto_grid(reference, to_lps(reference)) == reference.array).all()
    lps = to_lps(reference)
    crop = Volume(lps.array[1:4, 2:5, 1:5], lps.spacing_mm, tuple(lps.index_to_world(np.array([1, 2, 1]))), lps.direction)
    # expected by brute force: look every reference voxel centre up in the crop by its world position
    centres = reference.index_to_world(np.indices(reference.shape).reshape(3, -1).T)
    index = np.rint(crop.world_to_index(centres)).astype(int)
    inside = ((index >= 0) & (index < crop.shape)).all(axis=1)
    expected = np.zeros(len(centres), bool)
    expected[inside] = crop.array[tuple(index[inside].T)]
    assert (onto_grid(reference, crop) == expected.reshape(reference.shape)).all() and expected.any()


def test_refuses_empty_input_and_bad_generation(exported, tmp_path):
    series, ct, _, _, _ = exported["HFS"]
    empty = ct.with_array(np.zeros(ct.shape, np.uint8))
    with pytest.raises(InputError, match="no non-empty masks"):
        write_rtstruct(series, {"Bladder": empty}, tmp_path / "x.dcm")
    with pytest.raises(InputError, match="generation must be"):
        write_rtstruct(series, {"Bladder": empty}, tmp_path / "x.dcm", generation="ROBOT")


def test_collect_masks_reads_case_layout(tmp_path):
    from cervicontour.io import write_nifti

    grid = Volume(np.ones((2, 2, 2), np.uint8), (1, 1, 1))
    for rel in ("image.nii.gz", "structures/rectum.nii.gz", "structures/sub/LN_Pelvic.nii.gz", "planning/PTVp.nii.gz"):
        write_nifti(grid, tmp_path / rel)
    assert list(collect_masks(tmp_path)) == ["Anorectum", "LN_Pelvic", "PTVp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no mask files"):
        collect_masks(tmp_path / "empty")
    write_nifti(grid, tmp_path / "structures" / "Anorectum.nii.gz")
    with pytest.raises(InputError, match="two files for 'Anorectum'"):
        collect_masks(tmp_path)


# ---------------------------------------------------------------------- import
def test_import_writes_a_cohort_case_with_unknown_names_kept_aside(exported, tmp_path):
    from cervicontour.cohort import load_cohort

    series, ct, masks, _, _ = exported["HFP"]
    rs = tmp_path / "RS.dcm"
    extra = {"Rectum": masks["GTVp"], "Anorectum": masks["CTVn"], "Spacer 1": masks["GTVp"]}
    write_rtstruct(series, {n: ct.with_array(m.astype(np.uint8)) for n, m in {**masks, **extra}.items() if n != "Anorectum"},
                   tmp_path / "ignored.dcm")
    # ROI names as a clinic writes them: a synonym, a duplicate of it, and an unknown name.
    ds = pydicom.dcmread(tmp_path / "ignored.dcm")
    ds.StructureSetROISequence[3].ROIName = "rectum"
    ds.save_as(rs)
    case = import_rtstruct_case(series, rs, tmp_path / "cohort" / "p01")
    assert case.structures == {"Bladder": "Bladder", "CTVn": "CTVn", "GTVp": "GTVp", "Anorectum": "rectum"}
    assert case.other == {"Spacer_1": "Spacer 1"}
    assert any("not a vocabulary name" in n for n in case.notes)
    loaded = load_cohort(tmp_path / "cohort")["p01"]
    assert loaded.structure_names == ["Bladder", "Anorectum", "CTVn", "GTVp"]
    assert (loaded.load_structure("Anorectum").array.astype(bool) == masks["GTVp"]).all()
    assert (tmp_path / "cohort" / "p01" / "structures" / "other" / "Spacer_1.nii.gz").is_file()
    assert loaded.load_image().same_grid(ct)
    with pytest.raises(InputError, match="already holds a case"):
        import_rtstruct_case(series, rs, tmp_path / "cohort" / "p01")


def test_import_refuses_another_frame_of_reference(exported):
    _, ct, _, _, _ = exported["HFS"]
    _, _, _, rs_other, _ = exported["oblique"]  # another Frame of Reference UID
    with pytest.raises(InputError, match="Frame of Reference"):
        read_rtstruct(rs_other, ct)


def test_real_rtstruct_with_point_rois_is_read(tmp_path):
    path = real_data("pydicom", "rtstruct.dcm")
    # A CT grid covering the 'patient' contours: 5 × 5 mm pixels, slices at z = -200, -190, -180.
    grid = Volume(np.zeros((100, 80, 3), np.int16), (5.0, 5.0, 10.0), (-247.5, -197.5, -200.0),
                  metadata={"FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.2010020400001.2"})
    structure_set = read_rtstruct(path, grid)
    rois = {r.name: r for r in structure_set.rois}
    assert set(rois) == {"patient", "Isocenter 1", "Isocenter 2"}
    # 'patient': a 400 × 300 mm rectangle on three slices → 80 × 60 pixel centres each.
    assert rois["patient"].voxels == 3 * 80 * 60
    assert rois["patient"].voxels * grid.voxel_volume_cc == pytest.approx(400 * 300 * 10 * 3 / 1000)
    for name in ("Isocenter 1", "Isocenter 2"):
        assert rois[name].mask is None and rois[name].geometry == ("POINT",)
        assert any("POINT ROI" in n and "(0.0, -0.0, 0.0)" in n for n in rois[name].notes)


# ---------------------------------------------------------------------- edges (issue 21)
def test_export_refuses_a_series_without_the_uids_a_reference_needs(exported, tmp_path):
    series, ct, masks, _, _ = exported["HFS"]
    for keyword in ("StudyInstanceUID", "SOPInstanceUID"):
        copy = Path(shutil.copytree(series, tmp_path / keyword))
        for path in copy.iterdir():
            ds = pydicom.dcmread(path)
            setattr(ds, keyword, "")
            ds.save_as(path)
        with pytest.raises(InputError, match=f"lacks {keyword}.*write a consistent copy of the series"):
            write_rtstruct(copy, {"Bladder": ct.with_array(masks["Bladder"].astype(np.uint8))}, tmp_path / f"{keyword}.dcm")
        assert not (tmp_path / f"{keyword}.dcm").exists()


def test_export_never_overwrites_unless_asked(exported, tmp_path):
    series, ct, masks, _, _ = exported["HFS"]
    out = tmp_path / "RS.dcm"
    out.write_bytes(b"the clinic's file")
    bladder = {"Bladder": ct.with_array(masks["Bladder"].astype(np.uint8))}
    with pytest.raises(InputError, match="exists.*--overwrite"):
        write_rtstruct(series, bladder, out)
    assert out.read_bytes() == b"the clinic's file"
    write_rtstruct(series, bladder, out, overwrite=True)
    assert pydicom.dcmread(out).Modality == "RTSTRUCT"


def test_a_label_map_is_one_roi_per_label(exported, tmp_path):
    series, ct, masks, _, _ = exported["HFS"]
    labels = np.zeros(ct.shape, np.uint8)
    labels[masks["Bladder"]] = 1
    labels[masks["CTVn"]] = 2
    labels[masks["GTVp"]] = 5
    result = write_rtstruct(series, {"labels": ct.with_array(labels)}, tmp_path / "RS.dcm", label_names={2: "CTVn"})
    assert [r.name for r in result.rois] == ["label_1", "CTVn", "label_5"]
    back = {r.name: r.mask for r in read_rtstruct(tmp_path / "RS.dcm", ct).rois}
    for name, value in (("label_1", 1), ("CTVn", 2), ("label_5", 5)):
        assert (back[name] == (labels == value)).all(), name


def _rs_edited(exported, tmp_path, edit) -> tuple[Path, Path]:
    series, ct, masks, rs, _ = exported["HFS"]
    ds = pydicom.dcmread(rs)
    edit(ds)
    path = tmp_path / "RS_edited.dcm"
    ds.save_as(path)
    return series, path


def test_import_names_the_roi_whose_contours_lie_outside_the_image(exported, tmp_path):
    def shift(ds):  # CTVn's contours 500 mm to the patient's left: another series' coordinates
        roi = next(r for r in ds.ROIContourSequence if int(r.ReferencedROINumber) == 2)
        for contour in roi.ContourSequence:
            data = np.asarray(contour.ContourData, float).reshape(-1, 3)
            data[:, 0] += 500.0
            contour.ContourData = [format_ds(v) for v in data.ravel()]

    series, rs = _rs_edited(exported, tmp_path, shift)
    with pytest.raises(InputError, match="ROI 'CTVn': the contours cover no voxel.*--allow-empty"):
        import_rtstruct_case(series, rs, tmp_path / "cohort" / "p01")
    assert not (tmp_path / "cohort").exists()
    case = import_rtstruct_case(series, rs, tmp_path / "cohort" / "p01", allow_empty=True)
    assert "CTVn" not in case.structures and "CTVn" in case.not_rasterised and "Bladder" in case.structures
    assert not (tmp_path / "cohort" / "p01" / "structures" / "CTVn.nii.gz").exists()


def test_import_names_the_roi_with_a_nan_coordinate(exported, tmp_path):
    def nan(ds):
        contour = ds.ROIContourSequence[0].ContourSequence[0]
        data = list(contour.ContourData)
        data[4] = "NaN"
        contour.ContourData = data

    series, rs = _rs_edited(exported, tmp_path, nan)
    with pytest.raises(InputError, match="ROI 'Bladder': a contour holds non-finite coordinates"):
        import_rtstruct_case(series, rs, tmp_path / "p01")
    assert not (tmp_path / "p01").exists()
