"""Build small synthetic DICOM CT series with pydicom, with geometry known by construction.

``write_ct_series`` takes stored pixel values indexed ``[i, j, k]`` (column, row, slice) and
writes slice ``k`` at ``origin + k * slice_step_mm * slice_direction``. The expected
:class:`~cervicontour.volume.Volume` follows from those arguments by hand, never from the
reader under test.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # head-first supine: rows → L, columns → P


def make_uid(*entropy: object) -> str:
    """Deterministic UID from ``entropy`` (same inputs, same UID)."""
    return generate_uid(entropy_srcs=[str(e) for e in entropy])


def ct_slice(
    pixels_rc: np.ndarray,
    *,
    position_mm,
    row_cosine,
    column_cosine,
    pixel_spacing_mm=(0.7, 0.8),
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
    instance_number: int = 1,
    description: str = "synthetic CT",
    slice_thickness_mm: float | None = None,
    explicit: bool = True,
    clinical_header: bool = False,
) -> Dataset:
    """One CT Image Storage dataset; ``pixels_rc`` is ``[row, column]`` (uint16 or int16).

    ``clinical_header=True`` adds the type 1/2 study, series and equipment attributes a scanner
    writes (dates, study id, patient sex, patient position...), which RTSTRUCT writers copy.
    """
    pixels_rc = np.ascontiguousarray(pixels_rc)
    if pixels_rc.dtype not in (np.uint16, np.int16):
        raise TypeError(f"pixels must be uint16 or int16, got {pixels_rc.dtype}")
    sop_uid = make_uid(series_uid, instance_number, *position_mm)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.99"

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.PatientID = "SYNTH01"
    ds.PatientName = "Synthetic^Phantom"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position_mm]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_cosine, *column_cosine)]
    ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing_mm]
    if slice_thickness_mm is not None:
        ds.SliceThickness = f"{slice_thickness_mm:.6f}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleType = "HU"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels_rc.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels_rc.dtype == np.int16 else 0
    ds.PixelData = pixels_rc.astype(pixels_rc.dtype.newbyteorder("<")).tobytes()
    if clinical_header:
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientBirthDate = ""
        ds.PatientSex = "F"
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.StudyID = "S1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "cervicontour test factory"
        ds.PositionReferenceIndicator = ""
        ds.KVP = ""
        ds.AcquisitionNumber = 1
        ds.PatientPosition = _patient_position(row_cosine, column_cosine)
    return ds


def _patient_position(row_cosine, column_cosine) -> str:
    """DICOM PatientPosition (HFS, FFS, HFP, FFP) implied by an axial orientation, else ''."""
    row, col = (np.round(np.asarray(v, float)).astype(int) for v in (row_cosine, column_cosine))
    table = {((1, 0, 0), (0, 1, 0)): "HFS", ((-1, 0, 0), (0, 1, 0)): "FFS",
             ((-1, 0, 0), (0, -1, 0)): "HFP", ((1, 0, 0), (0, -1, 0)): "FFP"}
    return table.get((tuple(row), tuple(col)), "")


def write_ct_series(
    folder: Path,
    stored_ijk: np.ndarray,
    *,
    origin_mm=(-20.0, -30.0, 50.0),
    orientation=AXIAL,
    pixel_spacing_mm=(0.7, 0.8),
    slice_step_mm: float = 2.5,
    slice_direction=None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str | None = None,
    description: str = "synthetic CT",
    file_order: str = "sorted",
    name_prefix: str = "slice",
    explicit: bool = True,
    slice_thickness_mm: float | None = None,
    seed: int = 0,
    clinical_header: bool = False,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
) -> list[Path]:
    """Write ``stored_ijk`` (shape ``(columns, rows, slices)``) as one file per slice.

    Args:
        pixel_spacing_mm: DICOM PixelSpacing = (row spacing, column spacing), i.e. the
            spacing along array axis 1, then axis 0.
        slice_direction: unit vector slices advance along; defaults to row × column cosine.
        file_order: ``"sorted"`` (file names and InstanceNumber follow k), ``"reversed"`` or
            ``"shuffled"`` (seeded).

    Returns:
        Paths in slice order k = 0, 1, ….
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row_cosine, column_cosine = (np.asarray(v, float) for v in orientation)
    if slice_direction is None:
        slice_direction = np.cross(row_cosine, column_cosine)
    slice_direction = np.asarray(slice_direction, float)
    series_uid = series_uid or make_uid("series", description, seed)
    n = stored_ijk.shape[2]
    labels = list(range(n))
    if file_order == "reversed":
        labels = labels[::-1]
    elif file_order == "shuffled":
        random.Random(seed).shuffle(labels)
    elif file_order != "sorted":
        raise ValueError(f"file_order must be sorted, reversed or shuffled, got {file_order!r}")
    paths = []
    for k in range(n):
        position = np.asarray(origin_mm, float) + k * slice_step_mm * slice_direction
        ds = ct_slice(
            stored_ijk[:, :, k].T,
            position_mm=tuple(position),
            row_cosine=row_cosine,
            column_cosine=column_cosine,
            pixel_spacing_mm=pixel_spacing_mm,
            slope=slope,
            intercept=intercept,
            series_uid=series_uid,
            instance_number=labels[k] + 1,
            description=description,
            slice_thickness_mm=slice_thickness_mm,
            explicit=explicit,
            clinical_header=clinical_header,
            study_uid=study_uid,
            frame_uid=frame_uid,
        )
        path = folder / f"{name_prefix}{labels[k]:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def rotation(axis: str, degrees: float) -> np.ndarray:
    """Right-handed rotation matrix about world axis ``"x"``, ``"y"`` or ``"z"``."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
