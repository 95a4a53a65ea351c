"""Read a DICOM RT Structure Set and rasterise every ROI onto its CT grid.

Each ``CLOSED_PLANAR`` contour is mapped from world (LPS mm) to CT voxel indices with the CT
:class:`~cervicontour.volume.Volume` geometry, assigned to the CT slice whose plane it lies on,
and filled with the even-odd rule over all contours of that ROI on that slice (nested contours
are holes, see :mod:`cervicontour.export.contours`). ``POINT`` ROIs (markers, isocentres) and
open contours have no inside: they are listed, never rasterised, never an error. An ROI whose
closed contours all fall outside the image (another series, another frame of reference) is an
error naming it, unless the caller allows empty ROIs (then it is listed, not written); a
non-finite coordinate is always an error naming its ROI.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.export.contours import fill_slice
from cervicontour.structures import try_canonical_name
from cervicontour.volume import Volume

#: A contour whose points lie further than this (in slices) from a CT plane is reported.
PLANE_TOLERANCE_SLICES = 0.1


@dataclass(frozen=True)
class ImportedRoi:
    """One ROI of the structure set as read.

    Attributes:
        number: ROI Number.
        name: ROI Name as written in the file.
        canonical: vocabulary name, or ``None`` for a name the vocabulary does not know.
        geometry: contour geometric types seen (``"CLOSED_PLANAR"``, ``"POINT"``, ...).
        mask: boolean mask on the CT grid (``None`` for an ROI without closed contours).
        notes: what was odd about it, in words.
    """

    number: int
    name: str
    canonical: str | None
    geometry: tuple[str, ...]
    mask: np.ndarray | None
    notes: tuple[str, ...] = ()

    @property
    def voxels(self) -> int:
        return int(self.mask.sum()) if self.mask is not None else 0


@dataclass(frozen=True)
class StructureSet:
    """An RTSTRUCT rasterised onto a CT: the ROIs in file order and file-level notes."""

    rois: tuple[ImportedRoi, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    frame_of_reference_uid: str = ""


def read_rtstruct(path: str | os.PathLike, ct: Volume) -> StructureSet:
    """Rasterise every ROI of the RTSTRUCT at ``path`` onto the grid of ``ct``.

    Args:
        path: RT Structure Set file (files without the DICOM preamble are read too).
        ct: the CT the structure set was drawn on (e.g. from
            :func:`cervicontour.io.dicom.read_dicom_series`); only its geometry is used, and
            its ``FrameOfReferenceUID`` metadata when present.

    Returns:
        :class:`StructureSet`; masks are boolean arrays of ``ct.shape``. An ROI whose contours
        all lie off the CT (other slices, other planes) gets an empty mask and a note.

    Raises:
        InputError: not readable, not an RTSTRUCT, or drawn on another Frame of Reference.

    Example:
        >>> ct = read_dicom_series("p01/CT")                    # doctest: +SKIP
        >>> [r.name for r in read_rtstruct("p01/RS.dcm", ct).rois]   # doctest: +SKIP
    """
    from cervicontour.io.dicom import _import_pydicom

    pydicom = _import_pydicom()
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, force=True)
        modality = str(ds.get("Modality", ""))
        has_rois = "StructureSetROISequence" in ds
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for damaged files
        raise InputError(f"{path}: cannot be read as DICOM ({exc}); expected an RT Structure Set file") from None
    if modality != "RTSTRUCT" and not has_rois:
        raise InputError(f"{path}: expected an RT Structure Set (Modality RTSTRUCT), got Modality {modality or 'missing'!r}")
    frames = {str(item.get("FrameOfReferenceUID", "")) for item in ds.get("ReferencedFrameOfReferenceSequence", [])}
    frames.discard("")
    ct_frame = str(ct.metadata.get("FrameOfReferenceUID", ""))
    notes: list[str] = []
    if ct_frame and frames and ct_frame not in frames:
        raise InputError(
            f"{path}: drawn on Frame of Reference {', '.join(sorted(frames))}, but the CT has {ct_frame}; "
            "expected the structure set of this CT — export the CT series it references"
        )
    if not frames:
        notes.append("no Referenced Frame of Reference in the file: assumed to be the CT's")

    contours_by_roi: dict[int, list] = defaultdict(list)
    for item in ds.get("ROIContourSequence", []):
        number = int(item.get("ReferencedROINumber", -1))
        contours_by_roi[number].extend(item.get("ContourSequence", []))
    rois = []
    for item in ds.get("StructureSetROISequence", []):
        number = int(item.get("ROINumber", -1))
        name = str(item.get("ROIName", "") or f"ROI_{number}")
        rois.append(_rasterise(number, name, contours_by_roi.get(number, []), ct))
    if not rois:
        notes.append("the structure set holds no ROIs")
    return StructureSet(tuple(rois), tuple(notes), next(iter(sorted(frames)), ""))


def _rasterise(number: int, name: str, contours, ct: Volume) -> ImportedRoi:
    ni, nj, nk = ct.shape
    polygons: dict[int, list[np.ndarray]] = defaultdict(list)
    geometry: list[str] = []
    notes: list[str] = []
    off_plane = off_grid = 0
    point_positions = []
    for contour in contours:
        kind = str(contour.get("ContourGeometricType", "") or "CLOSED_PLANAR")
        if kind not in geometry:
            geometry.append(kind)
        data = np.asarray([float(v) for v in contour.get("ContourData", [])], float)
        if not np.all(np.isfinite(data)):
            raise InputError(f"ROI {name!r}: a contour holds non-finite coordinates ({int(np.count_nonzero(~np.isfinite(data)))} NaN or inf); "
                             "the structure set is damaged — re-export it from the planning system")
        if data.size < 3 or data.size % 3:
            notes.append(f"a contour with {data.size} coordinates (not a multiple of 3) was skipped")
            continue
        points = data.reshape(-1, 3)
        if kind == "POINT":
            point_positions.append(points[0])
            continue
        if kind != "CLOSED_PLANAR":
            notes.append(f"{kind} contour ({len(points)} points) has no inside: not rasterised")
            continue
        index = ct.world_to_index(points)
        k = float(np.mean(index[:, 2]))
        slice_k = int(round(k))
        if np.max(np.abs(index[:, 2] - slice_k)) > PLANE_TOLERANCE_SLICES:
            off_plane += 1
        if not 0 <= slice_k < nk:
            off_grid += 1
            continue
        polygons[slice_k].append(index[:, :2])
    if point_positions:
        where = "; ".join("(" + ", ".join(f"{v:.1f}" for v in p) + ") mm" for p in point_positions[:3])
        notes.append(f"POINT ROI: {len(point_positions)} point(s) at {where} (LPS) — a marker, not a volume: not rasterised")
    if off_plane:
        notes.append(f"{off_plane} contour(s) lie more than {PLANE_TOLERANCE_SLICES} slice from a CT image plane: put on the nearest slice")
    if off_grid:
        notes.append(f"{off_grid} contour(s) lie outside the CT's slices: skipped")
    if not contours:
        notes.append("no contour data")
    mask = None
    if polygons:
        mask = np.zeros(ct.shape, bool)
        for k, items in polygons.items():
            mask[:, :, k] = fill_slice(items, (ni, nj))
    if (mask is None or not mask.any()) and "CLOSED_PLANAR" in geometry:
        mask = None
        notes.append("its closed contours cover no voxel of the CT (outside the image: another series or frame of reference?)")
    return ImportedRoi(number, name, try_canonical_name(name), tuple(geometry), mask, tuple(notes))


# ------------------------------------------------------------------------------ case writing
@dataclass(frozen=True)
class CaseImport:
    """What :func:`import_rtstruct_case` wrote: the case folder, structures, kept-aside names, notes."""

    folder: Path
    structures: dict[str, str]  # canonical name → ROI name in the file
    other: dict[str, str]  # file stem under structures/other/ → ROI name (unknown names, duplicates)
    not_rasterised: dict[str, str]  # ROI name → why (points, no contours)
    notes: tuple[str, ...] = ()


def safe_stem(name: str) -> str:
    """A file stem for an arbitrary ROI name: letters, digits, ``_``, ``-`` and ``.`` kept.

    Example:
        >>> safe_stem("PTV 45/25 (old)")
        'PTV_45_25_old'
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "ROI"
    return stem[:64]


def import_rtstruct_case(
    series_dir: str | os.PathLike,
    rtstruct: str | os.PathLike,
    out: str | os.PathLike,
    *,
    series_uid: str | None = None,
    allow_empty: bool = False,
) -> CaseImport:
    """Make one cohort case from a CT series and its RTSTRUCT.

    Writes ``out/image.nii.gz``, vocabulary structures in the canonical layout (primary five in
    ``structures/``, others in ``structures/sub/``), ROIs whose names the vocabulary does not
    know (or a second ROI for a name already taken) in ``structures/other/`` — which the cohort
    loader does not read, so they never reach training unnoticed — and ``import.json`` listing
    the name mapping and every note. ROIs without an inside (points) are only listed. All or
    nothing: the case is written to a staging folder and moved to ``out`` at the end.

    Args:
        allow_empty: list an ROI whose closed contours cover no voxel of the CT (a warning in
            ``not_rasterised`` and the notes) instead of refusing the import.

    Raises:
        InputError: see :func:`read_rtstruct` and :func:`cervicontour.io.dicom.read_dicom_series`;
            an ROI whose contours lie outside the image (without ``allow_empty``), naming it; an
            ``out`` that exists and is not empty.
    """
    import json

    from cervicontour.cohort import write_case
    from cervicontour.io import write_nifti
    from cervicontour.io.dicom import read_dicom_series

    from cervicontour.io.atomic import staged_folder, write_text_atomic

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "already holds a case (image.nii.gz)" if (out / "image.nii.gz").exists() else "exists and is not an empty folder"
        raise InputError(f"{out}: {what}; expected a new folder — remove it or choose another")
    ct = read_dicom_series(series_dir, series_uid=series_uid)
    structure_set = read_rtstruct(rtstruct, ct)
    empty = [roi for roi in structure_set.rois if roi.mask is None and "CLOSED_PLANAR" in roi.geometry]
    if empty and not allow_empty:
        raise InputError(f"{rtstruct}: ROI {', '.join(repr(r.name) for r in empty)}: the contours cover no voxel of the CT in {series_dir} "
                         "(outside the image: drawn on another series or frame of reference?); import it with the CT series it was "
                         "drawn on, or pass --allow-empty to import the other ROIs and list these")
    structures: dict[str, Volume] = {}
    mapping: dict[str, str] = {}
    other: dict[str, str] = {}
    not_rasterised: dict[str, str] = {}
    notes = list(structure_set.notes)
    other_masks: dict[str, np.ndarray] = {}
    for roi in structure_set.rois:
        for note in roi.notes:
            notes.append(f"ROI {roi.name!r}: {note}")
        if roi.mask is None:
            not_rasterised[roi.name] = "; ".join(roi.notes) or "no closed contours"
            continue
        if roi.canonical is not None and roi.canonical not in structures:
            structures[roi.canonical] = ct.with_array(roi.mask.astype(np.uint8))
            mapping[roi.canonical] = roi.name
            continue
        stem = safe_stem(roi.name)
        while stem in other_masks:
            stem = f"{stem}_{roi.number}"
        if roi.canonical is not None:
            notes.append(f"ROI {roi.name!r}: a second ROI for {roi.canonical} (first: {mapping[roi.canonical]!r}) — kept as other/{stem}")
        else:
            notes.append(f"ROI {roi.name!r}: not a vocabulary name — kept as other/{stem} (see `cervicontour structures`)")
        other_masks[stem] = roi.mask
        other[stem] = roi.name
    image = ct.with_array(ct.array, source=str(series_dir))
    record = {
        "series": str(series_dir),
        "rtstruct": str(rtstruct),
        "frame_of_reference_uid": structure_set.frame_of_reference_uid,
        "structures": mapping,
        "other": other,
        "not_rasterised": not_rasterised,
        "notes": notes,
    }
    with staged_folder(out.parent) as stage:
        write_case(stage, out.name, image, structures)
        for stem, mask in other_masks.items():
            write_nifti(ct.with_array(mask.astype(np.uint8)), stage / out.name / "structures" / "other" / f"{stem}.nii.gz")
        write_text_atomic(stage / out.name / "import.json", json.dumps(record, indent=2))
    return CaseImport(out, mapping, other, not_rasterised, tuple(notes))
