"""Check one patient: headers, image, masks against the image grid, presence, rules, de-identification.

One pass per file: each mask is read once, checked, cropped to its bounding box and handed to the
rules engine; the numbers the cohort comparison needs (`CaseFeatures`) come out of the same pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cervicontour.cohort import IMAGE_STEMS, Case
from cervicontour.errors import InputError
from cervicontour.io import strip_nifti_suffix
from cervicontour.rules import Finding, Rules, Severity, check
from cervicontour.boxes import box_slices
from cervicontour.rules.masks import centroid_index, crop_volume
from cervicontour.structures import PRIMARY, unknown_message
from cervicontour.validate import deid
from cervicontour.validate.fastread import read_for_validation
from cervicontour.validate.grid import mask_on_image_grid
from cervicontour.validate.header import NiftiHeader, read_header
from cervicontour.validate.header_checks import check_header, unusable
from cervicontour.validate.image import check_gate, check_hu, image_features
from cervicontour.validate.mask_values import binarise, mask_values
from cervicontour.validate.options import ValidateOptions
from cervicontour.validate.stream import scan_mask, streamable
from cervicontour.volume import Volume


@dataclass
class CaseFeatures:
    """Per-patient numbers compared across the cohort (missing keys: not measurable)."""

    patient_id: str
    image: dict[str, float] = field(default_factory=dict)
    volumes_cc: dict[str, float] = field(default_factory=dict)
    centroids_mm: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    offsets_mm: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    #: primary structure → (inferior, superior) end along the patient's axis, mm, relative to the
    #: same reference point as ``offsets_mm`` (+ is superior)
    extents_mm: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: primary structure → the longest run of empty slices inside it along the slice axis, mm (0: none)
    gaps_mm: dict[str, float] = field(default_factory=dict)


@dataclass
class CaseReport:
    patient_id: str
    findings: list[Finding]
    features: CaseFeatures


def inspect_case(case: Case, *, root: Path, rules: Rules, options: ValidateOptions) -> CaseReport:
    """All per-patient checks of ``validate``.

    Returns:
        The patient's findings (cohort comparisons and notes are applied later) and features.
    """
    pid = case.patient_id
    findings: list[Finding] = []
    features = CaseFeatures(pid)
    rel = lambda p: _relative(p, root)  # noqa: E731

    findings += deid.check_name(pid, what="patient folder", patient_id=pid, file=pid)
    image = _load_image(case, rel, findings)
    if image is not None:
        findings += check_hu(image, patient_id=pid, file=rel(case.image_path), options=options)
        findings += check_gate(image, patient_id=pid, file=rel(case.image_path))
        features.image = image_features(image)
    if case.is_holdout:
        return CaseReport(pid, findings, features)

    masks = _load_masks(case, image, rel, findings, options)
    for path in case.unmatched:
        stem = strip_nifti_suffix(path.name)
        findings.append(
            Finding(
                "structure.unknown", pid, None, Severity.WARNING,
                "mask files named with vocabulary names or synonyms", f"{rel(path)}: {unknown_message(stem)}",
                "rename the file to a vocabulary name (`cervicontour structures` lists them); it is ignored until then",
                file=rel(path),
            )
        )
        findings += deid.check_name(stem, what="file", patient_id=pid, file=rel(path))
    present = case.structure_names
    if case.label_map is not None:  # a label map "has" every label of dataset.json: count those drawn
        label_file = rel(case.label_map.path)
        if not any(f.is_error and f.file == label_file for f in findings):
            present = list(masks)
    for name, why in rules.presence.missing(present):
        findings.append(
            Finding(
                "structure.missing", pid, name, rules.presence.severity,
                f"a {name} mask ({why})", "no file",
                f"draw {name}, or say why it is absent in notes.csv (e.g. 'no {name}')",
            )
        )
    if masks:
        masks = _one_lattice(masks)
        findings += check(masks, rules=rules, patient_id=pid)
        _mask_features(masks, features)
    return CaseReport(pid, findings, features)


# --------------------------------------------------------------------------- image
def _load_image(case: Case, rel, findings: list[Finding]) -> Volume | None:
    pid = case.patient_id
    path = case.image_path
    if path is None:
        findings.append(
            Finding("image.missing", pid, None, Severity.ERROR, f"{pid}/image.nii.gz", "no image file",
                    "add the planning CT as image.nii.gz (or a dicom/ folder)")
        )
        return None
    if path.is_dir():
        findings += deid.check_dicom_folder(path, patient_id=pid, file=rel(path))
        try:
            return case.load_image()
        except (InputError, ImportError, ValueError) as exc:
            findings.append(_unreadable(pid, None, rel(path), exc))
            return None
    stem = strip_nifti_suffix(path.name)
    if stem.lower() not in IMAGE_STEMS:
        findings += deid.check_name(stem, what="file", patient_id=pid, file=rel(path))
    if _check_file_header(path, "image", pid, None, rel, findings) is None:
        return None
    try:
        return read_for_validation(path)
    except (InputError, ValueError) as exc:  # ValueError: geometry a Volume refuses (non-orthonormal)
        findings.append(_unreadable(pid, None, rel(path), exc))
        return None


# --------------------------------------------------------------------------- masks
def _load_masks(case: Case, image: Volume | None, rel, findings: list[Finding], options: ValidateOptions) -> dict[str, Volume]:
    """Read, check and crop every mask; returns the usable ones (cropped, boolean)."""
    pid = case.patient_id
    out: dict[str, Volume] = {}
    if case.label_map is not None:
        path = case.label_map.path
        if _check_file_header(path, "mask", pid, None, rel, findings) is None:
            return out
        try:
            label_map = read_for_validation(path)
        except (InputError, ValueError) as exc:
            findings.append(_unreadable(pid, None, rel(path), exc))
            return out
        if image is not None:
            array = mask_on_image_grid(image, label_map, label_map.array, pid, None, rel(path), findings, options)
            if array is None:
                return out
            label_map = image.with_array(array)
        for name, value in case.label_map.labels.items():
            if np.any(label_map.array == value):
                out[name] = crop_volume(label_map.with_array(label_map.array == value))
        return out
    for name, path in case.structure_paths.items():
        header = _check_file_header(path, "mask", pid, name, rel, findings)
        if header is None:
            continue
        if image is not None and streamable(header) and _header_on_grid(path, image, options):
            scan = scan_mask(path, header)  # the common case, streamed: binary uint8 on the image grid
            if scan is not None and scan.max_value <= 1:
                if scan.crop is None:
                    findings.append(_empty(pid, name, rel(path)))
                else:
                    out[name] = Volume(scan.crop, image.spacing_mm, tuple(image.index_to_world(np.asarray(scan.lo, float))), image.direction)
                continue
        try:
            mask = read_for_validation(path)
        except (InputError, ValueError) as exc:
            findings.append(_unreadable(pid, name, rel(path), exc))
            continue
        values = mask_values(mask.array)
        inside = binarise(mask.array, values)
        if not values.binary:
            findings.append(
                Finding(
                    "mask.binary", pid, name, Severity.ERROR, "mask values 0 and 1 only", values.found,
                    f"`cervicontour clean` binarises it ({values.rule})" if values.rule
                    else "cannot be binarised safely (several labels or negative values): re-export the mask",
                    file=rel(path),
                )
            )
        elif mask.array.dtype != np.uint8:
            findings.append(
                Finding(
                    "mask.dtype", pid, name, Severity.INFO, "uint8 mask", f"{mask.array.dtype} with values 0 and 1",
                    "fine as it is; `cervicontour clean` stores it as uint8", file=rel(path),
                )
            )
        box = box_slices(inside)
        if box is None:
            findings.append(_empty(pid, name, rel(path)))
            continue
        grid = mask
        if image is not None:
            inside = mask_on_image_grid(image, mask, inside, pid, name, rel(path), findings, options)
            if inside is None:
                continue
            grid = image  # carry on in the image's geometry
            box = box_slices(inside)
        crop = np.ascontiguousarray(inside[box])
        out[name] = Volume(crop, grid.spacing_mm, tuple(grid.index_to_world(np.array([s.start for s in box], float))), grid.direction)
    return out


def _one_lattice(masks: dict[str, Volume]) -> dict[str, Volume]:
    """Masks that share spacing/direction/lattice with the largest group (all, when on the image grid)."""
    groups: dict[tuple, dict[str, Volume]] = {}
    for name, m in masks.items():
        key = (tuple(np.round(m.spacing_mm, 3)), tuple(np.round(m.direction.ravel(), 4)))
        groups.setdefault(key, {})[name] = m
    best = max(groups.values(), key=len)
    ref = next(iter(best.values()))
    keep = {}
    for name, m in best.items():
        shift = ref.world_to_index(np.asarray(m.origin_mm))
        if np.allclose(shift, np.round(shift), atol=1e-3):
            keep[name] = m
    return keep


def _mask_features(masks: dict[str, Volume], features: CaseFeatures) -> None:
    for name, m in masks.items():
        voxels = int(np.count_nonzero(m.array))
        if voxels == 0:
            continue
        features.volumes_cc[name] = voxels * m.voxel_volume_cc
        features.centroids_mm[name] = tuple(float(x) for x in m.index_to_world(centroid_index(m.array)))
    # Positions are compared relative to the median centroid of the five primary structures;
    # a patient missing one would get a different reference point, so is not compared.
    primary = [np.asarray(features.centroids_mm[n]) for n in PRIMARY if n in features.centroids_mm]
    if len(primary) == len(PRIMARY):
        centre = np.median(np.stack(primary), axis=0)
        for name, c in features.centroids_mm.items():
            features.offsets_mm[name] = tuple(float(x) for x in np.asarray(c) - centre)
        for name in PRIMARY:
            low, high, gap = _superior_extent(masks[name])
            features.extents_mm[name] = (low - float(centre[2]), high - float(centre[2]))
            features.gaps_mm[name] = gap


def _superior_extent(mask: Volume) -> tuple[float, float, float]:
    """``(inferior z, superior z, largest gap)`` in mm of a cropped mask along its slice axis (the
    array axis closest to the patient's inferior-superior axis), slice centres at the crop's
    in-plane centre; the gap is the longest run of empty slices between occupied ones."""
    axis = int(np.argmax(np.abs(mask.direction[2])))
    others = tuple(a for a in range(3) if a != axis)
    planes = np.flatnonzero(np.any(mask.array, axis=others))
    index = np.array([(n - 1) / 2 for n in mask.shape], float)
    z = []
    for k in (planes[0], planes[-1]):
        index[axis] = k
        z.append(float(mask.index_to_world(index)[2]))
    gap = float(np.max(np.diff(planes)) - 1) * mask.spacing_mm[axis] if planes.size > 1 else 0.0
    return min(z), max(z), gap


# --------------------------------------------------------------------------- helpers
def _check_file_header(path: Path, role: str, pid: str, structure: str | None, rel, findings: list[Finding]) -> NiftiHeader | None:
    """Header and header-text checks; the header, or ``None`` when the data cannot be used."""
    try:
        header = read_header(path)
    except InputError as exc:
        findings.append(_unreadable(pid, structure, rel(path), exc))
        return None
    found = check_header(header, role=role, patient_id=pid, structure=structure, file=rel(path))
    found += deid.check_header_text(header.text, patient_id=pid, structure=structure, file=rel(path))
    findings += found
    return None if unusable(found) else header


def _header_on_grid(path: Path, image: Volume, options: ValidateOptions) -> bool:
    """True when the file's geometry (as SimpleITK reads it) is the image grid within tolerance."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    if tuple(reader.GetSize()) != image.shape:
        return False
    tol = options.grid_tolerance_mm
    return (
        np.allclose(reader.GetSpacing(), image.spacing_mm, atol=tol, rtol=0)
        and np.allclose(reader.GetOrigin(), image.origin_mm, atol=tol, rtol=0)
        and np.allclose(np.reshape(reader.GetDirection(), (3, 3)), image.direction, atol=1e-5, rtol=0)
    )


def _empty(pid: str, name: str, file: str) -> Finding:
    return Finding(
        "mask.empty", pid, name, Severity.ERROR, f"at least one voxel of {name}", "0 voxels",
        f"draw {name}, or delete the file and say why in notes.csv (e.g. 'no {name}')", file=file,
    )


def _unreadable(pid: str, structure: str | None, file: str, exc: Exception) -> Finding:
    return Finding(
        "file.unreadable", pid, structure, Severity.ERROR, "a readable 3-D NIfTI file",
        str(exc).split(": ", 1)[-1],
        "re-export the file from the source system (a truncated download or an interrupted copy does this)",
        file=file,
    )


def _relative(path: Path | None, root: Path) -> str | None:
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return os.fspath(path)
