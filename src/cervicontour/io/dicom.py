"""Read one DICOM CT series from a folder into a :class:`Volume` in Hounsfield units.

Geometry is taken from the slices themselves and checked before any pixel is trusted:

* every slice has the same ``ImageOrientationPatient`` (within ``1e-4``), ``Rows``/``Columns``
  and ``PixelSpacing`` (within ``1e-4`` mm);
* slices are sorted by the projection of ``ImagePositionPatient`` on the slice normal
  ``n = row cosine × column cosine`` (not by file name or ``InstanceNumber``);
* two slices closer than ``0.01`` mm are duplicates; a gap larger than 1.5× the median slice
  spacing is a missing slice; any other step differing from the median by more than
  ``max(0.01 mm, 1 %)`` is non-uniform spacing; slice positions drifting in-plane by more
  than 0.1 pixel (gantry tilt, sheared stacks) are refused. Each is an :class:`InputError`
  naming the files involved — this module never resamples.

Axis conventions of the result (see :mod:`cervicontour.volume`): axis 0 runs along the
image rows (the DICOM column index, direction = row cosine), axis 1 down the columns
(direction = column cosine), axis 2 along ``+n`` in increasing slice position. The direction
matrix is therefore ``[row cosine, column cosine, n]`` and always right-handed;
``spacing_mm = (PixelSpacing[1], PixelSpacing[0], slice spacing)`` where the slice spacing
is ``(last − first position) / (N − 1)``, as ITK computes it.

pydicom is an optional dependency (``pip install "cervicontour[dicom]"``), imported lazily.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.io.dicom_slices import Slice, check_size, hounsfield
from cervicontour.volume import Volume

ORIENTATION_TOLERANCE = 1e-4
PIXEL_SPACING_TOLERANCE_MM = 1e-4
DUPLICATE_TOLERANCE_MM = 0.01
GAP_FACTOR = 1.5
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_FRACTION = 0.01
IN_PLANE_DRIFT_FRACTION = 0.1  # of the smaller pixel spacing

def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise InputError(
            "reading DICOM needs pydicom, which is not installed; "
            'install the extra: pip install "cervicontour[dicom]"'
        ) from None
    return pydicom


def read_dicom_series(folder: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read one CT series from ``folder`` (not its subfolders) as Hounsfield units.

    Args:
        folder: folder holding the slice files, one file per slice (any file names). Files
            that are not DICOM, or DICOM without pixel data (RTSTRUCT, RTPLAN, DICOMDIR) or
            multi-frame (RTDOSE, enhanced CT) are skipped. Nothing is modified.
        series_uid: ``SeriesInstanceUID`` to read when the folder holds several series.

    Returns:
        A :class:`Volume` of shape ``(Columns, Rows, number of slices)``; int16 when every
        ``RescaleSlope``/``RescaleIntercept`` is an integer and all HU values fit int16,
        float32 otherwise. Slope/intercept are applied per slice. ``metadata`` holds
        ``source``, ``SeriesInstanceUID``, ``Modality``, ``SeriesDescription``,
        ``StudyInstanceUID``, ``FrameOfReferenceUID`` and ``SOPInstanceUIDs`` (one per slice,
        in axis-2 order). A single-slice series takes its slice spacing from
        ``SliceThickness``; without it, it is refused.

    Raises:
        InputError: pydicom missing; folder missing or without DICOM images; several series
            and no ``series_uid``; inconsistent orientation, size or pixel spacing; duplicate
            or missing slices; non-uniform spacing; gantry tilt; undecodable pixel data.

    Example:
        >>> ct = read_dicom_series("patient01/CT")  # doctest: +SKIP
        >>> ct.orientation, ct.dtype  # doctest: +SKIP
        ('LPS', dtype('int16'))
    """
    pydicom = _import_pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; expected a folder of DICOM CT slice files")
    series, skipped = _scan(pydicom, folder)
    if not series:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = (
            f"; it has subfolders {subfolders[:5]} — pass the folder that holds the slices"
            if subfolders
            else "; pass the folder that holds the CT slice files"
        )
        detail = f" ({_summarise(skipped)})" if skipped else " (it holds no files)"
        raise InputError(f"{folder}: expected DICOM image slices, found none{detail}{hint}")
    slices = _choose_series(folder, series, series_uid)
    return _build_volume(folder, slices)


def read_patient_id(folder: str | os.PathLike) -> str:
    """The ``PatientID`` of the first image slice in ``folder`` (headers only; ``""`` when the
    slices carry none or the folder holds no DICOM image).

    Example:
        >>> read_patient_id("patient01/CT")  # doctest: +SKIP
        'AB123456'
    """
    pydicom = _import_pydicom()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        ds = _read_header(pydicom, path)
        try:
            if ds is not None and "PixelData" in ds:
                return str(ds.get("PatientID", "") or "").strip()
        except Exception:  # noqa: BLE001 - a damaged file: the series reader names it later
            continue
    return ""


# ------------------------------------------------------------------------------ scanning
def _scan(pydicom, folder: Path) -> tuple[dict[str, list[Slice]], dict[str, list[str]]]:
    """Group single-frame image files by SeriesInstanceUID; note why others were skipped."""
    series: dict[str, list[Slice]] = defaultdict(list)
    skipped: dict[str, list[str]] = defaultdict(list)
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        ds = _read_header(pydicom, path)
        if ds is None:
            skipped["not DICOM"].append(path.name)
            continue
        try:  # elements are parsed lazily: a damaged file fails here, not at open
            has_pixels = "PixelData" in ds
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            uid = str(ds.get("SeriesInstanceUID", ""))
        except Exception:  # noqa: BLE001
            skipped["not DICOM"].append(path.name)
            continue
        if not has_pixels:
            skipped["no pixel data"].append(path.name)
        elif frames > 1:
            skipped["multi-frame"].append(path.name)
        else:
            series[uid].append(Slice(path, ds))
    return dict(series), dict(skipped)


def _read_header(pydicom, path: Path):
    """Dataset with PixelData deferred, or None when ``path`` is not DICOM.

    Files without the 128-byte preamble (old exports) are retried with ``force=True`` and
    kept only when they parse to something with a SOPClassUID.
    """
    try:
        return pydicom.dcmread(path, defer_size="1 KB")
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a slice
        pass
    try:
        ds = pydicom.dcmread(path, defer_size="1 KB", force=True)
        return ds if "SOPClassUID" in ds else None
    except Exception:  # noqa: BLE001
        return None


def _summarise(skipped: dict[str, list[str]]) -> str:
    return "; ".join(f"{len(names)} file(s) skipped as {why}" for why, names in skipped.items())


def _choose_series(folder: Path, series: dict[str, list[Slice]], uid: str | None) -> list[Slice]:
    if uid is not None:
        if uid in series:
            return series[uid]
        raise InputError(
            f"{folder}: no series with SeriesInstanceUID {uid!r}; "
            f"the folder holds:\n{_describe(series)}\npass one of these as series_uid"
        )
    if len(series) == 1:
        return next(iter(series.values()))
    raise InputError(
        f"{folder}: expected one DICOM series, found {len(series)}:\n{_describe(series)}\n"
        "pass the SeriesInstanceUID of the one to read as series_uid"
    )


def _describe(series: dict[str, list[Slice]]) -> str:
    lines = []
    for uid, slices in sorted(series.items()):
        ds = slices[0].dataset
        description = str(ds.get("SeriesDescription", "") or "no description")
        modality = str(ds.get("Modality", "") or "?")
        lines.append(f"  {uid or '<no SeriesInstanceUID>'}  {modality}  "
                     f"'{description}'  {len(slices)} slice(s)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ geometry
def _required(folder: Path, item: Slice, keyword: str, count: int) -> np.ndarray:
    value = item.dataset.get(keyword)
    try:
        values = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        values = np.zeros(0)
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise InputError(
            f"{folder / item.path.name}: expected {keyword} with {count} numbers, got {value!r}; "
            "a CT slice needs ImagePositionPatient, ImageOrientationPatient and PixelSpacing — "
            "is this a secondary capture or a damaged export?"
        )
    return values


def _check_same(folder: Path, slices: list[Slice], values: list[np.ndarray], name: str,
                tolerance: float, hint: str) -> np.ndarray:
    reference = values[0]
    for item, value in zip(slices, values):
        if not np.allclose(value, reference, atol=tolerance, rtol=0):
            raise InputError(
                f"{folder}: expected the same {name} on every slice, but {item.path.name} has "
                f"{_fmt(value)} and {slices[0].path.name} has {_fmt(reference)}; {hint}"
            )
    return reference


def _orientation(folder: Path, slices: list[Slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iops = [_required(folder, s, "ImageOrientationPatient", 6) for s in slices]
    iop = _check_same(
        folder, slices, iops, "ImageOrientationPatient", ORIENTATION_TOLERANCE,
        "the series mixes image planes (a localizer/scout inside the series?) — "
        "remove the odd files or export the axial series alone",
    )
    row, col = iop[:3], iop[3:]
    if not (abs(np.linalg.norm(row) - 1) < 1e-3 and abs(np.linalg.norm(col) - 1) < 1e-3
            and abs(row @ col) < 1e-3):
        raise InputError(
            f"{folder}: ImageOrientationPatient {_fmt(iop)} is not two orthogonal unit vectors "
            "(tolerance 1e-3); the export is damaged — re-export the series"
        )
    row = row / np.linalg.norm(row)
    col = col - (col @ row) * row
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal


def _build_volume(folder: Path, slices: list[Slice]) -> Volume:
    row, col, normal = _orientation(folder, slices)
    sizes = [np.asarray([int(s.dataset.get("Rows", 0)), int(s.dataset.get("Columns", 0))])
             for s in slices]
    rows, cols = _check_same(folder, slices, sizes, "Rows/Columns", 0, "export one image size per series")
    pixel = _check_same(
        folder, slices, [_required(folder, s, "PixelSpacing", 2) for s in slices], "PixelSpacing",
        PIXEL_SPACING_TOLERANCE_MM, "the series mixes reconstructions — export one of them alone",
    )
    if np.any(pixel <= 0):
        raise InputError(f"{folder}: PixelSpacing must be positive, got {_fmt(pixel)}")

    positions = np.stack([_required(folder, s, "ImagePositionPatient", 3) for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    positions, along = positions[order], along[order]
    slice_mm = _slice_spacing(folder, slices, positions, along, row, col, pixel)

    check_size(folder, slices, int(rows), int(cols))
    array = hounsfield(folder, slices, int(rows), int(cols))
    first = slices[0].dataset
    metadata = {
        "source": str(folder),
        "SeriesInstanceUID": str(first.get("SeriesInstanceUID", "")),
        "Modality": str(first.get("Modality", "")),
        "SeriesDescription": str(first.get("SeriesDescription", "") or ""),
        "StudyInstanceUID": str(first.get("StudyInstanceUID", "")),
        "FrameOfReferenceUID": str(first.get("FrameOfReferenceUID", "")),
        "SOPInstanceUIDs": tuple(str(s.dataset.get("SOPInstanceUID", "")) for s in slices),
    }
    return Volume(
        array,
        (float(pixel[1]), float(pixel[0]), slice_mm),
        tuple(float(v) for v in positions[0]),
        np.column_stack([row, col, normal]),
        metadata,
    )


def _slice_spacing(folder: Path, slices: list[Slice], positions: np.ndarray, along: np.ndarray,
                   row: np.ndarray, col: np.ndarray, pixel: np.ndarray) -> float:
    names = [s.path.name for s in slices]
    if len(slices) == 1:
        thickness = slices[0].dataset.get("SliceThickness")
        try:
            thickness = float(thickness)
        except (TypeError, ValueError):
            thickness = float("nan")
        if not (np.isfinite(thickness) and thickness > 0):
            raise InputError(
                f"{folder}: a single-slice series needs SliceThickness to give the slice spacing, "
                f"but {names[0]} has {slices[0].dataset.get('SliceThickness')!r}; "
                "export the whole series, not one slice"
            )
        return thickness

    steps = np.diff(along)
    for k in np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM):
        raise InputError(
            f"{folder}: duplicate slice position {along[k]:.3f} mm along the slice normal in "
            f"{names[k]} and {names[k + 1]} (closer than {DUPLICATE_TOLERANCE_MM} mm); "
            "the series may hold two reconstructions or a repeated file — remove the duplicates"
        )
    median = float(np.median(steps))
    for k in np.flatnonzero(steps > GAP_FACTOR * median):
        missing = int(round(steps[k] / median)) - 1
        raise InputError(
            f"{folder}: missing slice(s): gap of {steps[k]:.3f} mm between {names[k]} "
            f"(at {along[k]:.3f} mm) and {names[k + 1]} (at {along[k + 1]:.3f} mm) along the slice "
            f"normal, but the median spacing is {median:.3f} mm (about {max(missing, 1)} slice(s) "
            f"missing); re-export the complete series"
        )
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * median)
    uneven = np.flatnonzero(np.abs(steps - median) > tolerance)
    if uneven.size:
        shown = ", ".join(f"{steps[k]:.4f} mm after {names[k]}" for k in uneven[:3])
        raise InputError(
            f"{folder}: expected uniform slice spacing (median {median:.4f} mm, tolerance "
            f"{tolerance:.4f} mm), got {shown}{' …' if uneven.size > 3 else ''}; "
            "resample the series to uniform spacing before importing"
        )
    offsets = positions - positions[0]
    drift = np.abs(np.column_stack([offsets @ row, offsets @ col])).max()
    limit = IN_PLANE_DRIFT_FRACTION * float(pixel.min())
    if drift > limit:
        raise InputError(
            f"{folder}: slice positions drift {drift:.3f} mm in-plane (limit {limit:.3f} mm), "
            "i.e. the stack is sheared (gantry tilt); expected slices stacked along the normal "
            "of ImageOrientationPatient — resample the series first"
        )
    return float((along[-1] - along[0]) / (len(slices) - 1))

def _fmt(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in np.ravel(values)) + ")"
