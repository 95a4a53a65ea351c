"""A clinic's DICOM export (one folder per patient: a CT series and its RTSTRUCT) → a cohort.

Each patient folder is searched recursively. Every RT Structure Set found is matched to the CT
series it references (RT Referenced Series Sequence, else the Frame of Reference); the newest
structure set (Structure Set Date/Time) of a patient is imported, the others are listed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cervicontour.errors import InputError


@dataclass(frozen=True)
class PatientImport:
    """One patient folder's outcome: the written case, or why none was written."""

    patient_id: str
    case: object | None  # CaseImport
    problem: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CohortImport:
    """What :func:`dicom_to_cohort` did for each patient folder."""

    root: Path
    patients: tuple[PatientImport, ...] = field(default_factory=tuple)

    @property
    def imported(self) -> list[PatientImport]:
        return [p for p in self.patients if p.case is not None]

    @property
    def failed(self) -> list[PatientImport]:
        return [p for p in self.patients if p.case is None]


@dataclass(frozen=True)
class _Found:
    path: Path
    modality: str
    series_uid: str
    frame_uid: str
    referenced_series: tuple[str, ...]
    when: str


def _scan(pydicom, folder: Path) -> list[_Found]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            modality = str(ds.get("Modality", ""))
        except Exception:  # noqa: BLE001 - not DICOM
            continue
        if not modality:
            continue
        referenced = []
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []) if modality == "RTSTRUCT" else []:
            for study in frame.get("RTReferencedStudySequence", []):
                referenced += [str(s.get("SeriesInstanceUID", "")) for s in study.get("RTReferencedSeriesSequence", [])]
        frame_uid = str(ds.get("FrameOfReferenceUID", ""))
        if modality == "RTSTRUCT" and not frame_uid:
            frames = [str(f.get("FrameOfReferenceUID", "")) for f in ds.get("ReferencedFrameOfReferenceSequence", [])]
            frame_uid = next((f for f in frames if f), "")
        when = f"{ds.get('StructureSetDate', '')}{ds.get('StructureSetTime', '')}"
        found.append(_Found(path, modality, str(ds.get("SeriesInstanceUID", "")), frame_uid, tuple(referenced), when))
    return found


def dicom_to_cohort(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    on_patient: Callable[[str], None] | None = None,
) -> CohortImport:
    """Import every patient folder of ``source`` into the cohort folder ``out``.

    Args:
        source: folder with one sub-folder per patient (the sub-folder name becomes the
            patient id; DICOM patient names and ids are not used as folder names).
        out: cohort folder to write (created); a patient already present in it is refused.
        on_patient: called with each patient id when done (progress bars).

    Returns:
        :class:`CohortImport`; a patient without a CT series or an RTSTRUCT, or whose import
        fails, has ``case=None`` and the reason — the other patients are still imported.

    Raises:
        InputError: ``source`` is missing or holds no patient folders.
    """
    from cervicontour.export.rtstruct_import import import_rtstruct_case
    from cervicontour.io.dicom import _import_pydicom

    pydicom = _import_pydicom()
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputError(f"{source}: no such folder; expected a folder with one sub-folder per patient")
    folders = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise InputError(f"{source}: no patient sub-folders; expected {source}/<patient_id>/ holding a CT series and an RTSTRUCT")
    results = []
    for folder in folders:
        results.append(_patient(pydicom, folder, out, import_rtstruct_case))
        if on_patient:
            on_patient(folder.name)
    return CohortImport(out, tuple(results))


def _patient(pydicom, folder: Path, out: Path, import_case) -> PatientImport:
    pid = folder.name
    found = _scan(pydicom, folder)
    structure_sets = sorted((f for f in found if f.modality == "RTSTRUCT"), key=lambda f: f.when, reverse=True)
    images = [f for f in found if f.modality not in ("RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG")]
    if not structure_sets:
        return PatientImport(pid, None, f"no RTSTRUCT in {folder}")
    if not images:
        return PatientImport(pid, None, f"no CT series in {folder}")
    notes = [f"also found {s.path.relative_to(folder)} (older or unmatched structure set): not imported" for s in structure_sets[1:]]
    chosen = structure_sets[0]
    series = [f for f in images if f.series_uid in chosen.referenced_series]
    if not series:
        series = [f for f in images if chosen.frame_uid and f.frame_uid == chosen.frame_uid]
        if series:
            notes.append("the RTSTRUCT names no image series it references: matched the CT by Frame of Reference")
    if not series:
        return PatientImport(pid, None, f"{chosen.path.name}: no CT series in {folder} that it references", tuple(notes))
    series_uid = series[0].series_uid
    series_dirs = sorted({f.path.parent for f in series})
    if len(series_dirs) > 1:
        return PatientImport(pid, None, f"series {series_uid} is split over folders {', '.join(map(str, series_dirs))}; put its slices in one folder")
    try:
        case = import_case(series_dirs[0], chosen.path, out / pid, series_uid=series_uid)
    except InputError as exc:
        return PatientImport(pid, None, str(exc), tuple(notes))
    return PatientImport(pid, case, "", tuple(notes) + tuple(case.notes))
