"""Write a NIfTI CT as a DICOM CT Image Storage series, so that an RTSTRUCT drawn on it can reach a
planning system.

An RTSTRUCT references the SOP instances of the CT it was drawn on, and a NIfTI cohort has none.
:func:`write_ct_series` writes them:

* **Geometry exact.** The volume is re-indexed to L, P, S axes (:func:`~cervicontour.volume.to_lps`:
  axis permutations and flips, never resampling), so the series is axial and displays the
  radiological way whatever the NIfTI's storage order (RAS, flipped slices); a grid more than 45°
  oblique is written in its own order. Slice ``k`` lies at the world position of voxel ``(0, 0, k)``
  (ImagePositionPatient); ImageOrientationPatient is the first two direction columns; PixelSpacing
  is the spacing along axis 1, then axis 0; SliceThickness and SpacingBetweenSlices are the slice
  spacing (a NIfTI does not record the reconstructed thickness). Decimal strings of at most 16
  bytes (:func:`~cervicontour.export.contours.format_ds`, 6 decimals): positions within 5e-7 mm.
* **Hounsfield units exact.** int16 stored values, RescaleSlope 1, RescaleIntercept 0 unless the
  values need a shift to fit 16 bits (a range of at most 65 535 HU). A floating-point CT holding
  non-integer values is rounded to whole HU, and the largest change is reported.
* **UIDs stable per case.** Study, Series and Frame of Reference UIDs and every slice's SOP Instance
  UID are :func:`pydicom.uid.generate_uid` hashes of the patient id and name and of the image's
  voxels and geometry (:func:`~cervicontour.volume.image_sha256`): exporting the same case again
  gives the same UIDs (and byte-identical files: no dates are written), another image or another
  patient never shares them.
* **Patient** id and name from the case id, or as given. PatientPosition is left empty (type 2)
  unless given: a NIfTI does not record how the patient lay on the table.

The series appears at once or not at all: it is written to a hidden folder beside ``out`` and
renamed (:func:`cervicontour.io.atomic.staged_folder`). Sources are only read.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.export.contours import format_ds
from cervicontour.volume import Volume, to_lps

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: DICOM PS3.3 C.7.3.1.1.2 Patient Position values.
PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL", "LFP", "LFS", "RFP", "RFS", "AFDR", "AFDL", "PFDR", "PFDL")
#: What the UIDs hash besides the case: a new value here gives every exported case new UIDs.
UID_NAMESPACE = "cervicontour export-dicom 1"
_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class SeriesWritten:
    """What :func:`write_ct_series` wrote.

    Attributes:
        folder: the series folder (one ``CT_<nnnn>.dcm`` per slice).
        orientation: the axis code of the series as written (``"LPS"`` unless very oblique).
        rescale_intercept: HU = stored value + this (RescaleSlope is 1).
        rounded_hu: the largest change made by rounding to whole HU (0.0: the values were whole).
    """

    folder: Path
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    frame_uid: str
    slices: int
    orientation: str
    rescale_intercept: int
    rounded_hu: float = 0.0


def write_ct_series(
    image: Volume,
    out: str | os.PathLike,
    *,
    patient_id: str,
    patient_name: str | None = None,
    patient_position: str = "",
    overwrite: bool = False,
    description: str = "CT from NIfTI (cervicontour)",
    sha256: str | None = None,
) -> SeriesWritten:
    """Write ``image`` (a CT in HU) as a DICOM CT Image Storage series in the new folder ``out``.

    Args:
        image: the CT; any orientation, any numeric dtype. Never modified.
        out: the series folder to create; an existing empty folder is fine, one holding anything
            is refused unless ``overwrite`` and it holds only ``.dcm`` files (a series written before).
        patient_id: DICOM PatientID (≤ 64 characters, no backslash).
        patient_name: DICOM PatientName (default: ``patient_id``), e.g. ``Doe^Jane``.
        patient_position: DICOM PatientPosition (``HFS``, ``FFS``, ...; default empty).
        description: SeriesDescription.
        sha256: the image's :func:`~cervicontour.volume.image_sha256` when the caller has it
            (computed here otherwise).

    Returns:
        :class:`SeriesWritten`.

    Raises:
        InputError: pydicom missing; a bad id, name or position; non-finite values or a value range
            wider than 16 bits; an ``out`` that cannot be written. Nothing is written then.

    Example:
        >>> write_ct_series(read_nifti("ct_0042.nii.gz"), "dicom/ct_0042/CT", patient_id="ct_0042")  # doctest: +SKIP
    """
    from pydicom.uid import generate_uid

    from cervicontour.export.rtstruct import _save
    from cervicontour.io.atomic import staged_folder
    from cervicontour.io.dicom import _import_pydicom
    from cervicontour.volume import image_sha256

    pydicom = _import_pydicom()
    patient_name = patient_id if patient_name is None else patient_name
    _check_identity(patient_id, patient_name, patient_position)
    intercept = _intercept(image.array)
    out = Path(out)
    _check_out(out, overwrite)
    root = _uid_root(sha256 or image_sha256(image), patient_id, patient_name)
    uids = {what: _uid(root, what) for what in ("study", "series", "frame")}
    try:
        series = to_lps(image)
    except ValueError:  # more than 45° oblique: written in its own axis order
        series = image
    normal = np.cross(series.direction[:, 0], series.direction[:, 1])
    header = _series_header(pydicom, series, uids, patient_id, patient_name, patient_position, intercept, description)
    rounded = 0.0
    with staged_folder(out, replace=True) as stage:  # a failure leaves out as it was, and no folder made for it
        for k in range(series.shape[2]):
            position = series.index_to_world(np.array([0.0, 0.0, float(k)]))
            ds, change = _slice(pydicom, header, series.array[:, :, k], k, position, float(position @ normal), intercept,
                                generate_uid(entropy_srcs=[*root, "slice", str(k)]))
            rounded = max(rounded, change)
            _save(pydicom, ds, stage / f"CT_{k + 1:04d}.dcm")
    return SeriesWritten(out, patient_id, patient_name, uids["study"], uids["series"], uids["frame"], series.shape[2],
                         series.orientation, intercept, rounded)


def _uid_root(image_sha256: str, patient_id: str, patient_name: str) -> list[str]:
    """What every UID of a series written by :func:`write_ct_series` hashes (then + what it names)."""
    return [UID_NAMESPACE, patient_id, patient_name, image_sha256]


def _check_identity(patient_id: str, patient_name: str, position: str) -> None:
    for what, value, limit in (("patient id", patient_id, 64), ("patient name", patient_name, 64 * 5)):
        if not value.strip() or len(value) > limit or "\\" in value or any(ord(c) < 32 for c in value):
            raise InputError(f"{what} {value!r}: expected 1 to {limit} characters without a backslash or control characters — "
                             f"pass another --{what.replace(' ', '-')}")
    if position and position not in PATIENT_POSITIONS:
        raise InputError(f"patient position {position!r}: expected one of {', '.join(PATIENT_POSITIONS)} (DICOM PatientPosition), or none")


def _check_out(out: Path, overwrite: bool) -> None:
    from cervicontour.io.atomic import check_writable

    check_writable(out, folder=True)
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        raise InputError(f"{out}: exists and holds {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({entries[0].name}, ...); "
                         "expected a new or empty folder for the series — choose another --out, or --overwrite to replace a series written before")
    foreign = [p.name for p in entries if not (p.is_file() and p.suffix.lower() == ".dcm")]
    if foreign:
        raise InputError(f"{out}: holds {', '.join(foreign[:3])}, which is not a DICOM slice file; --overwrite replaces only a folder of "
                         ".dcm files (a series written before) — choose another --out")


def _intercept(array: np.ndarray) -> int:
    """RescaleIntercept that fits the whole-HU values in int16: 0 when they fit as they are."""
    if array.dtype.kind not in "iuf":
        raise InputError(f"voxels of type {array.dtype}; expected a numeric CT in Hounsfield units")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{int(np.count_nonzero(~np.isfinite(array)))} NaN or infinite voxel(s); expected finite Hounsfield units — "
                         "re-export the CT from the source")
    low, high = (int(np.rint(v)) for v in (array.min(), array.max()))
    if high - low > _INT16.max - _INT16.min:
        raise InputError(f"values from {low} to {high} HU span more than 16 bits (65 535 HU); expected a CT in Hounsfield units "
                         "(an unscaled or normalised image?)")
    return 0 if low >= _INT16.min and high <= _INT16.max else low - _INT16.min


def _series_header(pydicom, series: Volume, uids: dict[str, str], patient_id: str, patient_name: str, position: str,
                   intercept: int, description: str):
    """The attributes every slice shares (PS3.3 A.3 CT Image IOD)."""
    from pydicom.dataset import Dataset

    from cervicontour import __version__

    ds = Dataset()
    if not (patient_id + patient_name).isascii():
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ds.ReferringPhysicianName = ds.StudyID = ""
    ds.Modality = "CT"
    ds.Manufacturer = "cervicontour"
    ds.StudyDescription = "cervicontour DICOM export"
    ds.SeriesDescription = description[:64]
    ds.DerivationDescription = "converted from NIfTI by cervicontour: voxels and geometry unchanged"
    ds.PatientName, ds.PatientID = patient_name, patient_id
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.SliceThickness = ds.SpacingBetweenSlices = format_ds(series.spacing_mm[2])
    ds.KVP = ""
    ds.SoftwareVersions = f"cervicontour {__version__}"
    ds.PatientPosition = position
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids["study"], uids["series"], uids["frame"]
    ds.SeriesNumber = 1
    ds.Laterality = ""  # type 2C: dciodvfy asks for it (a pelvis is not a paired structure)
    ds.AcquisitionNumber = ""
    ds.ImageOrientationPatient = [format_ds(v) for v in (*series.direction[:, 0], *series.direction[:, 1])]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = series.shape[1], series.shape[0]
    ds.PixelSpacing = [format_ds(series.spacing_mm[1]), format_ds(series.spacing_mm[0])]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(intercept), "1", "HU"
    ds.LossyImageCompression = "00"
    return ds


def _slice(pydicom, header, values: np.ndarray, k: int, position: np.ndarray, location: float, intercept: int, sop_uid: str):
    """One slice's dataset (``values`` indexed ``[column, row]``) and the largest change rounding made."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    change = 0.0
    if values.dtype.kind == "f":
        whole = np.rint(values)
        change = float(np.abs(values - whole).max(initial=0.0))
        values = whole
    stored = np.asarray(values, np.int64) - intercept
    ds = copy.deepcopy(header)  # Dataset.copy() shares the elements
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [format_ds(v) for v in position]
    ds.SliceLocation = format_ds(location)
    ds.PixelData = np.ascontiguousarray(stored.T.astype("<i2")).tobytes()
    return ds, change


def export_dicom(
    case: str | os.PathLike,
    out: str | os.PathLike,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    patient_position: str = "",
    force: bool = False,
    overwrite: bool = False,
) -> SeriesWritten:
    """``cervicontour export-dicom``: a cohort case folder's NIfTI CT, or a NIfTI CT file, as a DICOM series.

    The patient id defaults to the case id (:func:`cervicontour.cohort.case_id`: the case folder's
    name, or the file's stem). The CT passes the input gate first
    (:func:`cervicontour.io.gate.require_ct`; ``force`` lets its plausibility checks pass).

    Raises:
        InputError: no such case, a case whose CT is already DICOM, a file that is not NIfTI, an
            image the gate refuses, or see :func:`write_ct_series`. Nothing is written then.
    """
    from cervicontour.cohort import case_id
    from cervicontour.io import read_nifti
    from cervicontour.io.gate import require_ct

    source = case_image(case)
    image = read_nifti(source)
    require_ct(image, source=source, force=force)
    return write_ct_series(image, out, patient_id=patient_id or case_id(source), patient_name=patient_name,
                           patient_position=patient_position, overwrite=overwrite)


def case_image(case: str | os.PathLike) -> Path:
    """The NIfTI CT of ``case``: the file itself, or a case folder's ``image.nii.gz``.

    Raises:
        InputError: what arrived instead (nothing there, another file type, a DICOM series, a
            cohort folder) and what to pass.
    """
    from cervicontour.cohort import find_image
    from cervicontour.io import is_nifti

    path = Path(case)
    expected = "expected a NIfTI CT (.nii/.nii.gz) or a cohort case folder holding image.nii.gz"
    if path.is_file():
        if not is_nifti(path):
            raise InputError(f"{path}: not a NIfTI file; {expected}")
        return path
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder; {expected}")
    image = find_image(path)
    if image is not None and image.is_file():
        return image
    if image is not None or any(p.is_file() and p.suffix.lower() == ".dcm" for p in path.iterdir()):
        raise InputError(f"{path}: its CT is already a DICOM series ({image or path}); {expected} — an RTSTRUCT can reference "
                         "the series as it is (`cervicontour rtstruct export --series ...`)")
    if any(find_image(p) for p in path.iterdir() if p.is_dir()):
        raise InputError(f"{path}: a cohort folder; {expected} — pass one case, e.g. {next(p for p in sorted(path.iterdir()) if p.is_dir())}")
    raise InputError(f"{path}: no image.nii.gz in it; {expected}")


def prediction_rtstruct(case_dir: str | os.PathLike):
    """``predict --rtstruct``: ``CASE_DIR/RS.dcm`` for a predict output case, against the series the
    planning system receives with it (:func:`case_series`).

    Returns:
        ``(ExportResult, SeriesWritten | None)``: the RTSTRUCT, and the series written (None for
        DICOM input, or a ``CASE_DIR/CT`` written before for this CT).

    Raises:
        InputError: no ``prediction.json``, or its input is gone or has changed since the prediction.
    """
    from cervicontour.export.rtstruct import export_case

    case_dir = Path(case_dir)
    folder, series = case_series(case_dir)
    return export_case(folder, case_dir, case_dir / "RS.dcm"), series


#: Where :func:`case_series` puts a NIfTI case's CT as DICOM: ``CASE_DIR/CT``.
CASE_SERIES_FOLDER = "CT"


def case_series(case_dir: str | os.PathLike, source: str | os.PathLike | None = None) -> tuple[Path, SeriesWritten | None]:
    """The DICOM CT series that an RTSTRUCT of a case's masks references.

    A DICOM input series is used where it is. A NIfTI CT is written as a series in ``CASE_DIR/CT``
    (:func:`write_ct_series`, patient id = ``prediction.json``'s, else the folder's name), unless
    the series there is already this CT's: its SeriesInstanceUID is the one the CT and patient id
    give (the UIDs are stable per case), so ``predict --rtstruct`` and the review page's export
    share one series and a planning system receives one CT.

    Args:
        case_dir: a predict output case (``prediction.json``), or a case folder holding its CT.
        source: the CT: a NIfTI file or a DICOM series folder (default: the input ``prediction.json``
            records). When it is the recorded input, its hash must still be the recorded one.

    Returns:
        ``(series folder, SeriesWritten | None)``: the series written now, else None.

    Raises:
        InputError: no ``source`` and no ``prediction.json``; a CT that is gone, or that changed
            since the prediction (hash); see :func:`write_ct_series`.

    Example:
        >>> folder, written = case_series("pred/ct_0042")  # doctest: +SKIP
    """
    from cervicontour.export.provenance import read_prediction_record
    from cervicontour.io import read_volume
    from cervicontour.volume import image_sha256

    case_dir = Path(case_dir)
    info = read_prediction_record(case_dir)
    recorded = Path(info.input.path) if info is not None and info.input.path else None
    if source is None:
        if recorded is None:
            raise InputError(f"{case_dir}: no prediction.json; expected a `cervicontour predict` output case folder")
        source = recorded
    source = Path(source)
    if source.is_dir():
        return source, None
    if not source.is_file():
        raise InputError(f"{source}: the predicted CT is gone; an RTSTRUCT needs it — put it back, or predict again")
    image = read_volume(source)
    sha = image_sha256(image)
    if recorded is not None and recorded.is_file() and recorded.samefile(source) and sha != info.input.sha256:
        raise InputError(f"{source}: differs from the CT that was predicted (its hash changed); predict it again")
    patient_id = (info.patient_id if info is not None else "") or case_dir.name
    folder = case_dir / CASE_SERIES_FOLDER
    if _series_uid(folder) == _uid(_uid_root(sha, patient_id, patient_id), "series"):
        return folder, None
    return folder, write_ct_series(image, folder, patient_id=patient_id, overwrite=True, sha256=sha)


def _uid(root: list[str], what: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[*root, what])


def _series_uid(folder: Path) -> str | None:
    """The SeriesInstanceUID of the first slice file in ``folder`` (None: no readable slice)."""
    from pydicom.errors import InvalidDicomError

    from cervicontour.io.dicom import _import_pydicom

    first = next(iter(sorted(folder.glob("*.dcm"))), None) if folder.is_dir() else None
    if first is None:
        return None
    try:
        return str(_import_pydicom().dcmread(first, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
    except (OSError, AttributeError, ValueError, InvalidDicomError):  # unreadable, or no UID: written anew
        return None
