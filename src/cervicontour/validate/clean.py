"""`clean_cohort`: write a cleaned copy of a cohort; the input is only ever read.

What it fixes, and only when it is safe:

* a mask whose grid differs from its image's only at floating-point level (same shape, every
  voxel centre within ``snap_tolerance_mm``) is resampled onto the image grid by nearest
  neighbour — which keeps every voxel value, so the array is kept and the geometry becomes the
  image's;
* a non-binary mask is binarised by a stated rule: one non-zero value (0/255, 0/2, 0/1.0) →
  ``value != 0``; fractions in [0, 1] → ``value >= 0.5``. Several labels or negative values are
  left alone (a finding);
* a binary mask stored as another type (float32, int16, scaled) is stored as uint8;
* the free-text header fields (``descrip``, ``aux_file``, ``intent_name``, ``db_name``) are
  blanked, in place in the header bytes, so image data are copied bit for bit;
* files are named by the vocabulary: ``rectum.nii.gz`` beside the image becomes
  ``structures/Anorectum.nii.gz``; the image becomes ``image.nii(.gz)``.

Everything else is copied byte for byte. Each change is one row of ``OUT/changes.csv``
(patient_id, file, what, why); values that might identify the patient are never written there.
Cleaning a cleaned cohort changes nothing.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.cohort import NOTES_FILE, Case, load_cohort
from cervicontour.errors import InputError
from cervicontour.io import write_nifti
from cervicontour.rules import Rules, load_rules
from cervicontour.structures import PRIMARY
from cervicontour.validate.mask_values import binarise, mask_values
from cervicontour.validate.fastread import read_for_validation
from cervicontour.validate.grid import lattice_map
from cervicontour.validate.header import blank_text_fields, read_header
from cervicontour.validate.options import ValidateOptions
from cervicontour.validate.runner import ValidationResult, validate_cohort
from cervicontour.volume import Volume

CHANGES_FILE = "changes.csv"
_DEID_WHY = "free-text header fields can identify the patient; cervicontour never needs them"


@dataclass(frozen=True)
class FileChange:
    """One row of ``changes.csv``: ``file`` is relative to the output folder."""

    patient_id: str
    file: str
    what: str
    why: str


@dataclass(frozen=True)
class CleanResult:
    """The output folder, the changes made, and what ``validate`` still finds there."""

    out: Path
    changes: tuple[FileChange, ...]
    remaining: ValidationResult


def clean_cohort(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    rules: Rules | str | os.PathLike | None = None,
    options: ValidateOptions | None = None,
    on_case: Callable[[str], None] | None = None,
) -> CleanResult:
    """Write a cleaned copy of ``cohort`` to ``out`` and validate it.

    Args:
        cohort: input cohort folder (folder layout); never modified.
        out: new folder (must be absent or empty, and not inside ``cohort``).
        rules: for the validation of the result (default: the clinicians' rules).
        options: tolerances (default :class:`ValidateOptions`).
        on_case: called with each patient id when it is written.

    Returns:
        :class:`CleanResult`; ``result.remaining.findings`` is what could not be fixed safely.

    Raises:
        InputError: ``out`` is not empty or lies inside ``cohort``; the input is not a cohort, or
            is an nnU-Net raw dataset (clean works on the folder layout).
    """
    root, out = Path(cohort).resolve(), Path(out).resolve()
    options = options or ValidateOptions()
    rules = rules if isinstance(rules, Rules) else load_rules(rules)
    if out == root or root in out.parents:
        raise InputError(f"{out}: the output folder must lie outside the input cohort {root}")
    if out in root.parents:
        raise InputError(f"{out}: the output folder must not contain the input cohort {root}")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; choose a new folder (clean never overwrites)")
    loaded = load_cohort(root)
    if loaded.layout != "folders":
        raise InputError(
            f"{root}: clean works on the folder layout (<patient>/image.nii.gz, <patient>/structures/); "
            f"this is a {loaded.layout} dataset"
        )
    out.mkdir(parents=True, exist_ok=True)
    changes: list[FileChange] = []
    for case in loaded.cases():
        changes += _clean_case(case, root, out, options)
        if on_case:
            on_case(case.patient_id)
    patients = set(loaded)
    for entry in sorted(root.iterdir()):  # notes.csv, previews, anything else: unchanged
        if entry.is_file() and entry.name != CHANGES_FILE:
            shutil.copyfile(entry, out / entry.name)
        elif entry.is_dir() and entry.name not in patients:
            shutil.copytree(entry, out / entry.name)
    _write_changes(out / CHANGES_FILE, changes)
    remaining = validate_cohort(out, rules=rules, options=options)
    return CleanResult(out, tuple(changes), remaining)


# --------------------------------------------------------------------------- one patient
def _clean_case(case: Case, root: Path, out: Path, options: ValidateOptions) -> list[FileChange]:
    pid = case.patient_id
    src_dir, dst_dir = root / pid, out / pid
    changes: list[FileChange] = []
    written: set[Path] = set()

    def row(dst: Path, what: str, why: str) -> None:
        changes.append(FileChange(pid, str(dst.relative_to(out)), what, why))

    image: Volume | None = None
    if case.image_path is not None and case.image_path.is_dir():  # DICOM: copied as it is
        shutil.copytree(case.image_path, dst_dir / case.image_path.relative_to(src_dir))
        written.add(case.image_path)
        try:
            image = case.load_image()  # its grid, for the masks
        except (InputError, ImportError, ValueError):
            image = None
    elif case.image_path is not None:
        src = case.image_path
        dst = dst_dir / f"image{_suffix(src)}"
        written.add(src)
        blank = _text_to_blank(src)
        _copy_nifti(src, dst, blank)
        if src.relative_to(src_dir) != dst.relative_to(dst_dir):
            row(dst, f"renamed {src.relative_to(root)} to {dst.relative_to(out)}", "canonical layout: <patient>/image.nii.gz")
        for name, length in blank:
            row(dst, f"blanked header field {name} ({length} characters)", _DEID_WHY)
        try:
            image = read_for_validation(src)
        except (InputError, ValueError):
            image = None

    for name, src in case.structure_paths.items():
        folder = dst_dir / "structures" if name in PRIMARY else dst_dir / "structures" / "sub"
        dst = folder / f"{name}{_suffix(src)}"
        written.add(src)
        if src.relative_to(src_dir) != dst.relative_to(dst_dir):
            row(dst, f"renamed {src.relative_to(root)} to {dst.relative_to(out)}",
                f"'{src.name}' is the vocabulary's {name}; canonical layout")
        for what, why in _clean_mask(src, dst, image, options):
            row(dst, what, why)

    done = [p for p in written if p.is_dir()]
    for src in sorted(p for p in src_dir.rglob("*") if p.is_file() and p not in written and not any(d in p.parents for d in done)):
        dst = dst_dir / src.relative_to(src_dir)  # unknown masks, DICOM, anything else: unchanged
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return changes


def _clean_mask(src: Path, dst: Path, image: Volume | None, options: ValidateOptions) -> list[tuple[str, str]]:
    """Write ``dst`` from ``src``; returns ``(what, why)`` for each change (empty: byte copy)."""
    try:
        header = read_header(src)
        mask = read_for_validation(src)
    except (InputError, ValueError):
        _copy_nifti(src, dst, [])
        return []  # unreadable: copied as it is, validate still reports it
    values = mask_values(mask.array)
    rows: list[tuple[str, str]] = []
    array = mask.array
    rewrite = False
    if not values.binary:
        if values.rule is None:  # cannot be binarised safely: stays a finding
            blank = _text_to_blank(src)
            _copy_nifti(src, dst, blank)
            return [(f"blanked header field {n} ({k} characters)", _DEID_WHY) for n, k in blank]
        array = binarise(mask.array, values).astype(np.uint8)
        rows.append((f"binarised: {values.found} → 0/1", values.rule))
        rewrite = True
    elif mask.array.dtype != np.uint8 or header.scaled:
        array = (mask.array != 0).astype(np.uint8)
        stored = f"{mask.array.dtype}" + (f", scl_slope {header.scl_slope:g}, scl_inter {header.scl_inter:g}" if header.scaled else "")
        rows.append((f"stored as uint8 (was {stored}); values unchanged", "masks are binary uint8 in the canonical layout"))
        rewrite = True
    geometry = mask
    if image is not None and image.grid_differences(mask, tolerance_mm=options.grid_tolerance_mm):
        mapping = lattice_map(image, mask, tolerance_mm=options.snap_tolerance_mm)
        if mapping is not None:
            moved, lost = mapping.apply(np.asarray(array), image.shape)
            if lost == 0:
                array, geometry = moved, image
                how = "" if mapping.identity else ", re-indexed to the image's axis order and extent"
                rows.append(
                    (
                        f"resampled onto the image grid (nearest neighbour{how}; voxel centres moved "
                        f"≤ {mapping.residual_mm:.4f} mm; voxel values unchanged)",
                        f"only floating-point-level geometry differed (≤ {options.snap_tolerance_mm:g} mm)",
                    )
                )
                rewrite = True
    if rewrite:
        blanked = [(n, len(v)) for n, v in header.text.items() if v]
        write_nifti(geometry.with_array(np.asarray(array)), dst)
        rows += [(f"blanked header field {n} ({k} characters)", _DEID_WHY) for n, k in blanked]
        return rows
    blank = _text_to_blank(src)
    _copy_nifti(src, dst, blank)
    return [(f"blanked header field {n} ({k} characters)", _DEID_WHY) for n, k in blank]


# --------------------------------------------------------------------------- files
def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"


def _text_to_blank(path: Path) -> list[tuple[str, int]]:
    """``(field, length)`` of the non-empty free-text header fields ([] if unreadable)."""
    try:
        header = read_header(path)
    except InputError:
        return []
    return [(name, len(value)) for name, value in header.text.items() if value]


def _copy_nifti(src: Path, dst: Path, blank: list[tuple[str, int]]) -> None:
    """Copy bytes; with ``blank``, zero those header fields and keep every data byte."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if blank:
        blank_text_fields(src, dst, [name for name, _ in blank])
    else:
        shutil.copyfile(src, dst)


def _write_changes(path: Path, changes: list[FileChange]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "file", "what", "why"])
        for c in changes:
            writer.writerow([c.patient_id, c.file, c.what, c.why])


def read_changes(path: str | os.PathLike) -> list[FileChange]:
    """Read ``changes.csv`` back."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [FileChange(r["patient_id"], r["file"], r["what"], r["why"]) for r in csv.DictReader(handle)]


__all__ = ["CHANGES_FILE", "CleanResult", "FileChange", "NOTES_FILE", "clean_cohort", "read_changes"]
