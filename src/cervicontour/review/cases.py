"""What the review page shows of one predict output folder: cases, masks, CT, findings, previews.

Every file the server hands out is resolved here, from names this module lists itself — never
from a path the browser sent — so nothing outside ``OUT_DIR`` (except the CT that the case's
``prediction.json`` records as its input) can be served. A case folder, mask or ``image.nii.gz``
that is a symbolic link leading out of its folder is not listed.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.volume import Volume

#: Previews keep at most this many voxels along each in-plane axis and along the slice axis.
PREVIEW_MAX_INPLANE = 128
PREVIEW_MAX_SLICES = 64
#: Where the review page writes its own files inside a case folder (composed masks, RTSTRUCTs).
REVIEW_FOLDER = "review"
REVIEW_LOG = "review.json"


def stamp(when) -> str:
    """The UTC time stamp in the names of the files the page writes (sorts in time order)."""
    return when.strftime("%Y%m%dT%H%M%S%fZ")


@dataclass(frozen=True)
class MaskFile:
    """One mask the page can show: ``id`` is its path relative to the case folder."""

    id: str
    name: str
    path: Path
    kind: str  # "draft" (the model's), "sub" (structures/sub), "composed" or "edited" (written by this page)


def list_cases(out_dir: str | os.PathLike) -> list[str]:
    """Patient ids of ``out_dir``: folders holding ``prediction.json`` or ``structures/``, sorted.

    Raises:
        InputError: ``out_dir`` is not a folder.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such folder; expected a predict output folder (OUT_DIR/<patient_id>/structures/)")
    return sorted(p.name for p in out_dir.iterdir()
                  if p.is_dir() and _inside(p, out_dir) and ((p / "prediction.json").is_file() or (p / "structures").is_dir()))


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (symbolic links followed) to somewhere inside ``folder``."""
    return path.resolve().is_relative_to(Path(folder).resolve())


def case_dir(out_dir: str | os.PathLike, patient_id: str) -> Path:
    """The folder of ``patient_id``, only when it is one of :func:`list_cases` (else ``KeyError``)."""
    if patient_id not in list_cases(out_dir):
        raise KeyError(patient_id)
    return Path(out_dir) / patient_id


def mask_files(case: Path) -> list[MaskFile]:
    """The case's masks: the model's drafts, the sub-structures, then the masks composed and edited here."""
    from cervicontour.io import is_nifti, strip_nifti_suffix
    from cervicontour.structures import try_canonical_name

    found: list[MaskFile] = []
    for folder, kind in ((case / "structures", "draft"), (case / "structures" / "sub", "sub"), (case / REVIEW_FOLDER / "composed", "composed"),
                         (case / REVIEW_FOLDER / "edited", "edited")):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p) and _inside(p, case)):
            stem = strip_nifti_suffix(path.name)
            base = stem.split(f"_{kind}_")[0] if kind in ("composed", "edited") else stem
            name = try_canonical_name(base) or stem
            found.append(MaskFile(path.relative_to(case).as_posix(), name, path, kind))
    return found


def find_mask(case: Path, mask_id: str) -> MaskFile:
    """The listed mask whose id is ``mask_id`` (``KeyError`` otherwise: no path is ever built from it)."""
    for mask in mask_files(case):
        if mask.id == mask_id:
            return mask
    raise KeyError(mask_id)


def ct_source(case: Path) -> Path | None:
    """The case's CT: ``image.nii.gz`` in the folder, else the ``input.path`` of ``prediction.json``."""
    from cervicontour.export.provenance import image_path, read_prediction_record

    own = case / "image.nii.gz"  # a link out of the case is not served; only the recorded input may be outside
    return image_path(case, read_prediction_record(case), own=not own.is_file() or _inside(own, case))


def is_dicom_case(case: Path) -> bool:
    """Whether the CT came from a DICOM series folder (a NIfTI CT goes out as the case's ``CT/`` series)."""
    source = ct_source(case)
    return source is not None and source.is_dir()




def preview_steps(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Integer strides that bring ``shape`` within 128 × 128 × 64 voxels (1 where already small).

    Small enough that a software-rendered browser (no GPU) draws the first view of a 512 × 512 × 200
    CT in about 2.5 s (``benchmarks/review_first_view.py``).

    Example:
        >>> preview_steps((512, 512, 200))
        (4, 4, 4)
    """
    limits = (PREVIEW_MAX_INPLANE, PREVIEW_MAX_INPLANE, PREVIEW_MAX_SLICES)
    return tuple(max(1, math.ceil(n / m)) for n, m in zip(shape, limits))  # type: ignore[return-value]


def downsample(volume: Volume, steps: tuple[int, int, int]) -> Volume:
    """Every ``steps[i]``-th voxel along axis ``i``; voxel [0, 0, 0] keeps its world position.

    The result is a new Volume (``volume`` is not modified) with spacing ``spacing_mm * steps``,
    the same origin and direction, so it overlays the full-resolution grid exactly.
    """
    array = np.ascontiguousarray(volume.array[:: steps[0], :: steps[1], :: steps[2]])
    spacing = tuple(float(s) * k for s, k in zip(volume.spacing_mm, steps))
    return Volume(array, spacing, volume.origin_mm, volume.direction)


def nifti_bytes(volume: Volume, *, compress: bool) -> bytes:
    """``volume`` as the bytes of a NIfTI file (``.nii.gz`` when ``compress``)."""
    from cervicontour.io import write_nifti

    with tempfile.TemporaryDirectory(prefix="cervicontour-review-") as tmp:
        path = write_nifti(volume, Path(tmp) / ("v.nii.gz" if compress else "v.nii"), compress=compress)
        return path.read_bytes()


class VolumeCache:
    """NIfTI bytes the server made (previews, a DICOM CT as NIfTI), keyed by source file and mtime.

    Thread-safe; one lock per key so concurrent requests for one volume build it once.
    """

    def __init__(self) -> None:
        self._data: dict[tuple, bytes] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: tuple, build) -> bytes:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._data:
                self._data[key] = build()
            return self._data[key]


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def ct_bytes(case: Path, cache: VolumeCache, *, preview: bool) -> bytes:
    """The case's CT as NIfTI bytes: the full volume (``.nii.gz``) or its preview (``.nii``).

    Raises:
        InputError: the case has no CT (no ``image.nii.gz`` and no existing ``input.path``).
    """
    from cervicontour.io import read_volume

    source = ct_source(case)
    if source is None:
        raise InputError(f"{case}: no CT (no image.nii.gz, and prediction.json's input.path does not exist)")
    key = ("ct", preview, _stamp(source))
    if preview:
        return cache.get(key, lambda: nifti_bytes(_preview_ct(read_volume(source)), compress=False))
    if source.is_file() and source.name.endswith(".nii.gz"):
        return source.read_bytes()
    return cache.get(key, lambda: nifti_bytes(read_volume(source), compress=True))


def _preview_ct(image: Volume) -> Volume:
    small = downsample(image, preview_steps(image.shape))
    return small.with_array(np.clip(small.array, -32768, 32767).astype(np.int16))


def mask_preview_bytes(mask: MaskFile, cache: VolumeCache) -> bytes:
    """A mask's preview (``.nii``, uint8) on the grid of the CT preview (same strides)."""
    from cervicontour.io import read_nifti

    def build() -> bytes:
        volume = read_nifti(mask.path)
        small = downsample(volume, preview_steps(volume.shape))
        return nifti_bytes(small.with_array((small.array != 0).astype(np.uint8)), compress=False)

    return cache.get(("mask", _stamp(mask.path)), build)
