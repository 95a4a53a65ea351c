"""NIfTI read/write through SimpleITK, geometry-exact, atomic.

NIfTI stores pixdim, quaternion and sform in float32, so a value written from float64 comes
back rounded to float32 precision (e.g. 0.98 → 0.98000001907...). For axis-aligned grids (LPS,
RAS, flipped, permuted) reading what we wrote and writing it again is then bit-exact. Oblique
directions are re-derived from the float32 quaternion on each read and move by < 1e-7 per
write/read cycle; tests check both.

SimpleITK silently zero-fills a file cut inside its voxel data, and allocates whatever a header
declares before it reads a byte of it, so :func:`read_nifti` checks the header against the file's
size first (:func:`cervicontour.io.gate.check_nifti_layout`) and the data length after (see
:func:`_check_complete`).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cervicontour.errors import InputError
from cervicontour.io.atomic import atomic_path
from cervicontour.io.gate import check_nifti_layout, count_nonfinite
from cervicontour.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"Bladder.nii.gz"`` → ``"Bladder"``."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def image_to_volume(image: sitk.Image, *, source: str = "<memory>") -> Volume:
    """Convert a 3-D SimpleITK image to a :class:`Volume` (array in ITK index order)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{source}: expected a 3-D single-channel image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) and size {image.GetSize()}; "
            "split 4-D or multi-channel files into one 3-D volume per file"
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # [z,y,x] -> [i,j,k]
    try:
        return Volume(
            array,
            image.GetSpacing(),
            image.GetOrigin(),
            np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
            {"source": source},
        )
    except ValueError as exc:  # a damaged header: non-orthonormal direction, NaN origin, ...
        raise InputError(f"{source}: the image's geometry is unusable ({exc}); re-export the image") from None


def _to_zyx(array: np.ndarray, block: int = 16) -> np.ndarray:
    """C-contiguous ``array.transpose(2, 1, 0)`` (what SimpleITK needs), copied in blocks.

    Our own blocked copy, because NumPy's one-shot strided transpose is cache-hostile: measured
    here on a 512×512×248 uint8 mask, 0.62 s one-shot vs 0.14 s in 16-slab blocks (same bytes).
    """
    transposed = array.transpose(2, 1, 0)
    if transposed.flags.c_contiguous:
        return transposed
    out = np.empty(transposed.shape, array.dtype)
    for start in range(0, array.shape[0], block):
        out[:, :, start : start + block] = array[start : start + block].transpose(2, 1, 0)
    return out


def volume_to_image(volume: Volume) -> sitk.Image:
    """Convert a :class:`Volume` to a SimpleITK image with the same geometry."""
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(_to_zyx(array))
    image.SetSpacing(volume.spacing_mm)
    image.SetOrigin(volume.origin_mm)
    image.SetDirection(tuple(float(v) for v in volume.direction.ravel()))
    return image


def _checked_path(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a NIfTI image (.nii or .nii.gz)")
    if not is_nifti(path):
        raise InputError(f"{path}: expected a .nii or .nii.gz file; use `read_dicom_series` for DICOM")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); expected a NIfTI image — copy or re-export it again")
    return path


def _sitk_error(path: Path, exc: RuntimeError) -> InputError:
    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
    return InputError(f"{path}: cannot be read as NIfTI ({first}); the file may be truncated or not NIfTI — re-export it from the source system")


def read_nifti_information(path: str | os.PathLike) -> tuple[tuple[int, ...], tuple[float, ...], np.ndarray]:
    """``(size, spacing_mm, direction)`` of a 3-D NIfTI file from its header (no voxel data read).

    Raises:
        InputError: as :func:`read_nifti` for what the header shows (missing, empty, not NIfTI,
            dimensions the file cannot hold, zero spacing, not 3-D).
    """
    path = _checked_path(Path(path))
    check_nifti_layout(path)
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _sitk_error(path, exc) from None
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: expected a 3-D single-channel image, got {reader.GetDimension()}-D with {reader.GetNumberOfComponents()} "
                         f"component(s) and size {reader.GetSize()}; split 4-D or multi-channel files into one 3-D volume per file")
    if not np.all(np.isfinite(reader.GetOrigin())):
        raise InputError(f"{path}: the header's origin is {reader.GetOrigin()}; expected finite numbers — the header is damaged: re-export the image")
    return reader.GetSize(), reader.GetSpacing(), np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a 3-D NIfTI file (``.nii`` or ``.nii.gz``).

    Args:
        path: file to read. It is never modified.

    Returns:
        A :class:`Volume` whose array keeps the file's data type (int16, float32, uint8, ...)
        after SimpleITK applies ``scl_slope``/``scl_inter``.

    Raises:
        InputError: missing, empty, unreadable, truncated, not 3-D, or a header that declares
            more voxels than the file can hold or a zero/non-finite spacing (refused before
            anything is allocated).
    """
    path = _checked_path(Path(path))
    layout = check_nifti_layout(path)
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _sitk_error(path, exc) from None
    _check_complete(path, layout.nbytes if layout else None)
    bad = count_nonfinite(path, layout) if layout else 0
    if bad:
        raise InputError(f"{path}: {bad} voxel value(s) are NaN or infinite; expected finite values — "
                         "re-export the image from the source (a reconstruction or conversion failed)")
    return image_to_volume(image, source=str(path))


def _check_complete(path: Path, expected: int | None) -> None:
    """Refuse a file whose voxel data is shorter than its header says (a cut-off copy).

    ``.nii``: compares the file size. ``.nii.gz``: compares the gzip trailer's ISIZE (the
    uncompressed length mod 2**32); only when that disagrees is the stream decompressed to be
    sure, so intact files cost one small read.
    """
    gz = str(path).lower().endswith(".gz")
    if expected is None:
        return
    if not gz:
        actual = path.stat().st_size
    else:
        with path.open("rb") as handle:
            handle.seek(-4, os.SEEK_END)
            isize = struct.unpack("<I", handle.read(4))[0]
        if isize == expected % 2**32:
            return
        try:
            with gzip.open(path, "rb") as handle:
                actual = sum(len(chunk) for chunk in iter(lambda: handle.read(1 << 22), b""))
        except (EOFError, OSError, zlib.error):
            actual = -1
    if actual < expected:
        raise InputError(
            f"{path}: cannot be read as NIfTI (the voxel data is incomplete: header promises "
            f"{expected} bytes, the file holds {'a cut-off gzip stream' if actual < 0 else actual}); "
            "the copy is truncated — copy or re-export it again"
        )


def write_nifti(volume: Volume, path: str | os.PathLike, *, compress: bool | None = None) -> Path:
    """Write a :class:`Volume` atomically (temporary file in the same folder, then rename).

    Args:
        volume: what to write; boolean arrays are written as uint8.
        path: destination ending in ``.nii`` or ``.nii.gz``; parent folders are created.
        compress: defaults to ``True`` for ``.nii.gz``.

    Returns:
        The destination path.
    """
    path = Path(path)
    if not is_nifti(path):
        raise InputError(f"{path}: NIfTI output must end in .nii or .nii.gz")
    if compress is None:
        compress = str(path).lower().endswith(".nii.gz")
    with atomic_path(path) as tmp:
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("NiftiImageIO")
        writer.SetFileName(str(tmp))
        writer.SetUseCompression(compress)
        writer.Execute(volume_to_image(volume))
    return path
