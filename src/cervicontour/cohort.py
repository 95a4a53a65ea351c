"""Cohort layout and lazy loader.

Canonical layout (what ``synth`` and ``clean`` write)::

    COHORT/
      notes.csv                                  patient_id,comment
      <patient_id>/image.nii.gz
      <patient_id>/structures/<Name>.nii.gz      one binary uint8 mask per structure
      <patient_id>/structures/sub/<Name>.nii.gz  optional sub-structures and anatomy

A patient without masks is a hold-out case. The loader also reads

* per-patient folders whose mask files use synonyms or other cases (``rectum.nii.gz``,
  ``CTV_N.nii``), placed in ``structures/``, ``structures/sub/`` or beside the image;
* an nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``,
  ``labelsTr/<case>.nii.gz``, ``imagesTs/``), splitting label maps into binary masks.

Nothing is read until asked: a :class:`Case` holds paths, and ``load_image``/``load_structure``
read one file at a time, so a cohort of 100 full CTs never sits in memory.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cervicontour.errors import InputError
from cervicontour.io import is_nifti, read_nifti, strip_nifti_suffix, write_nifti
from cervicontour.structures import PRIMARY, canonical_name, try_canonical_name
from cervicontour.volume import Volume

if TYPE_CHECKING:  # the loader does not import the structure-set module at run time unless asked
    from cervicontour.structure_set import StructureSet

IMAGE_STEMS = ("image", "ct", "img", "imaging")
NOTES_FILE = "notes.csv"


@dataclass(frozen=True)
class LabelMapSource:
    """Masks stored as one integer label map (nnU-Net raw): structure name → label value."""

    path: Path
    labels: Mapping[str, int]


@dataclass(frozen=True)
class Case:
    """One patient: paths only, read on demand.

    Attributes:
        patient_id: folder name (or nnU-Net case identifier).
        image_path: the CT (NIfTI file or DICOM folder); ``None`` if missing.
        structure_paths: canonical name → mask file.
        label_map: set for nnU-Net raw cases instead of ``structure_paths``.
        unmatched: NIfTI files that look like masks but match no vocabulary name.
        note: the clinician's free-text comment from ``notes.csv`` ("" if none).
    """

    patient_id: str
    image_path: Path | None
    structure_paths: Mapping[str, Path] = field(default_factory=dict)
    label_map: LabelMapSource | None = None
    unmatched: tuple[Path, ...] = ()
    note: str = ""

    @property
    def structure_names(self) -> list[str]:
        """Canonical names of the structures this case has, primary five first."""
        names = list(self.label_map.labels) if self.label_map else list(self.structure_paths)
        return sorted(names, key=lambda n: (n not in PRIMARY, PRIMARY.index(n) if n in PRIMARY else 0, n))

    @property
    def is_holdout(self) -> bool:
        """True when the case has no masks (an unlabelled hold-out CT)."""
        return not self.structure_names

    def has(self, name: str) -> bool:
        return canonical_name(name) in self.structure_names

    def load_image(self) -> Volume:
        if self.image_path is None:
            raise InputError(
                f"patient {self.patient_id!r} has no image: expected {self.patient_id}/image.nii.gz"
            )
        from cervicontour.io import read_volume

        return read_volume(self.image_path)

    def load_structure(self, name: str) -> Volume:
        """Read one mask as a uint8 volume (values as stored: not binarised here)."""
        canonical = canonical_name(name)
        if self.label_map is not None:
            if canonical not in self.label_map.labels:
                raise InputError(self._missing(canonical))
            label_map = read_nifti(self.label_map.path)
            mask = (label_map.array == self.label_map.labels[canonical]).astype(np.uint8)
            return label_map.with_array(mask, source=str(self.label_map.path), structure=canonical)
        if canonical not in self.structure_paths:
            raise InputError(self._missing(canonical))
        return read_nifti(self.structure_paths[canonical])

    def load_structures(self, names: list[str] | None = None) -> dict[str, Volume]:
        """Read several masks (default: all). Prefer :meth:`load_structure` in loops."""
        return {n: self.load_structure(n) for n in (names or self.structure_names)}

    def load_structure_set(self, names: list[str] | None = None) -> "StructureSet":
        """Read several masks (default: all) as a :class:`StructureSet` (same-grid checked)."""
        from cervicontour.structure_set import StructureSet

        return StructureSet(self.load_structures(names))

    def _missing(self, name: str) -> str:
        have = ", ".join(self.structure_names) or "none"
        return f"patient {self.patient_id!r} has no {name!r} mask (has: {have})"


class Cohort(Mapping[str, Case]):
    """A read-only, ordered mapping ``patient_id → Case``.

    Example:
        >>> cohort = load_cohort("out/c")        # doctest: +SKIP
        >>> [c.patient_id for c in cohort.labelled()]   # doctest: +SKIP
    """

    def __init__(self, root: Path, cases: list[Case], layout: str) -> None:
        self.root = root
        self.layout = layout
        self._cases = {c.patient_id: c for c in cases}

    def __getitem__(self, patient_id: str) -> Case:
        try:
            return self._cases[patient_id]
        except KeyError:
            raise KeyError(f"no patient {patient_id!r} in {self.root}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._cases)

    def __len__(self) -> int:
        return len(self._cases)

    def cases(self) -> list[Case]:
        return list(self._cases.values())

    def labelled(self) -> list[Case]:
        return [c for c in self._cases.values() if not c.is_holdout]

    def holdout(self) -> list[Case]:
        return [c for c in self._cases.values() if c.is_holdout]

    def __repr__(self) -> str:
        return (
            f"Cohort({str(self.root)!r}, layout={self.layout}, patients={len(self)}, "
            f"labelled={len(self.labelled())}, holdout={len(self.holdout())})"
        )


# --------------------------------------------------------------------------- loading
def load_cohort(root: str | os.PathLike) -> Cohort:
    """Index a cohort folder (canonical/synonym layout or nnU-Net raw). Reads no images.

    Raises:
        InputError: the folder does not exist, holds no patients, or a patient has two files
            for the same structure (e.g. ``Rectum.nii.gz`` and ``Anorectum.nii.gz``).
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise InputError(f"{root}: {what}; expected a cohort folder (see `cervicontour synth`)")
    if (root / "dataset.json").is_file():
        return _load_nnunet_raw(root)
    notes = read_notes(root / NOTES_FILE)
    cases = [
        _index_patient(d, notes.get(d.name, ""))
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    ]
    cases = [c for c in cases if c is not None]
    if not cases:
        raise InputError(
            f"{root}: no patient folders found; expected {root}/<patient_id>/image.nii.gz "
            "or an nnU-Net raw dataset with dataset.json"
        )
    return Cohort(root, cases, layout="folders")


def read_notes(path: Path) -> dict[str, str]:
    """``notes.csv`` → ``{patient_id: comment}`` (empty if the file is absent)."""
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"patient_id", "comment"} <= set(reader.fieldnames):
            raise InputError(
                f"{path}: expected a header 'patient_id,comment', got {reader.fieldnames}"
            )
        return {row["patient_id"].strip(): (row["comment"] or "").strip() for row in reader}


def find_image(folder: str | os.PathLike) -> Path | None:
    """A case folder's CT: its ``image.nii.gz`` (or ``ct``/``img``/``imaging`` stem), else its
    ``dicom/`` series folder, else ``None``."""
    folder = Path(folder)
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and is_nifti(entry) and strip_nifti_suffix(entry.name).lower() in IMAGE_STEMS:
            return entry
    dicom = folder / "dicom"
    if dicom.is_dir():
        return dicom
    return None


def case_id(image_path: str | os.PathLike) -> str:
    """The case a single CT file names: its stem (``ct_0042.nii.gz`` → ``ct_0042``), or, for a file
    the layouts name by its role, the case it belongs to: ``P01/image.nii.gz`` → ``P01``,
    ``imagesTs/P01_0000.nii.gz`` → ``P01``.

    Example:
        >>> case_id("cohort/SYN004/image.nii.gz"), case_id("ct_0042.nii.gz"), case_id("raw/imagesTr/P7_0000.nii.gz")
        ('SYN004', 'ct_0042', 'P7')
    """
    path = Path(image_path).absolute()
    stem = strip_nifti_suffix(path.name)
    if stem.lower() in IMAGE_STEMS and path.parent.name:
        return path.parent.name
    if path.parent.name in ("imagesTr", "imagesTs") and stem.endswith("_0000"):
        return stem[: -len("_0000")]
    return stem


def _index_patient(folder: Path, note: str) -> Case | None:
    image = find_image(folder)
    candidates: list[Path] = []
    for sub in (folder, folder / "structures", folder / "structures" / "sub"):
        if sub.is_dir():
            candidates += [p for p in sorted(sub.iterdir()) if p.is_file() and is_nifti(p) and p != image]
    if image is None and not candidates:
        return None
    paths: dict[str, Path] = {}
    unmatched: list[Path] = []
    for path in candidates:
        name = try_canonical_name(strip_nifti_suffix(path.name))
        if name is None:
            unmatched.append(path)
            continue
        if name in paths:
            raise InputError(
                f"patient {folder.name!r}: two files for {name!r}: {paths[name].name} and "
                f"{path.relative_to(folder)}; keep one (they are synonyms)"
            )
        paths[name] = path
    return Case(folder.name, image, paths, None, tuple(unmatched), note)


def _load_nnunet_raw(root: Path) -> Cohort:
    try:
        meta = json.loads((root / "dataset.json").read_text())
        raw_labels = meta["labels"]
        ending = meta.get("file_ending", ".nii.gz")
    except (json.JSONDecodeError, KeyError) as exc:
        raise InputError(f"{root}/dataset.json: not an nnU-Net v2 dataset.json ({exc})") from None
    labels: dict[str, int] = {}
    for name, value in raw_labels.items():
        if name.lower() == "background":
            continue
        if not isinstance(value, int):
            raise InputError(
                f"{root}/dataset.json: label {name!r} is a region ({value}); only plain integer labels are supported"
            )
        labels[canonical_name(name)] = value
    notes = read_notes(root / NOTES_FILE)
    cases: list[Case] = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", None)):
        folder = root / images_dir
        if not folder.is_dir():
            continue
        for image in sorted(folder.glob(f"*_0000{ending}")):
            case_id = image.name[: -len(f"_0000{ending}")]
            label_path = root / labels_dir / f"{case_id}{ending}" if labels_dir else None
            source = LabelMapSource(label_path, labels) if label_path and label_path.is_file() else None
            cases.append(Case(case_id, image, {}, source, (), notes.get(case_id, "")))
    if not cases:
        raise InputError(f"{root}: dataset.json found but no imagesTr/*_0000{ending} files")
    return Cohort(root, cases, layout="nnunet_raw")


# --------------------------------------------------------------------------- writing
def write_case(
    root: str | os.PathLike,
    patient_id: str,
    image: Volume | None,
    structures: Mapping[str, Volume] | None = None,
) -> Path:
    """Write one patient in the canonical layout (each file atomically).

    Primary structures go to ``structures/``, all others to ``structures/sub/``. Masks must be
    on the image grid and are written as binary uint8.
    """
    from concurrent.futures import ThreadPoolExecutor

    folder = Path(root) / patient_id
    jobs: list[tuple[Volume, Path]] = []
    for name, mask in (structures or {}).items():
        canonical = canonical_name(name)
        if image is not None and not image.same_grid(mask):
            raise InputError(
                f"patient {patient_id!r}: mask {canonical!r} is not on the image grid "
                f"({'; '.join(image.grid_differences(mask))})"
            )
        sub = folder / "structures" if canonical in PRIMARY else folder / "structures" / "sub"
        binary = mask.array if mask.array.dtype == bool else mask.array > 0
        jobs.append((mask.with_array(binary.view(np.uint8)), sub / f"{canonical}.nii.gz"))
    if image is not None:
        jobs.insert(0, (image, folder / "image.nii.gz"))
    # SimpleITK releases the GIL while compressing: two threads keep both cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in pool.map(lambda job: write_nifti(*job), jobs):
            pass
    return folder


def write_notes(root: str | os.PathLike, notes: Mapping[str, str]) -> Path:
    """Write ``notes.csv`` atomically."""
    from cervicontour.io.atomic import atomic_path

    path = Path(root) / NOTES_FILE
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "comment"])
        for patient_id, comment in notes.items():
            writer.writerow([patient_id, comment])
    return path
