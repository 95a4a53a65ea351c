"""NIfTI read/write through SimpleITK, geometry-exact, atomic.

NIfTI stores pixdim, quaternion and sform in float32, so a value written from float64 comes
back rounded to float32 precision (e.g. 0.98 → 0.98000001907...). For axis-aligned grids (LPS,
RAS, flipped, permuted) reading what we wrote and writing it again is then bit-exact. Oblique
directions are re-derived from the float32 quaternion on each read and move by < 1e-7 per
write/read cycle; tests check both.

SimpleITK silently zero-fills a file cut inside its voxel data, so :func:`read_nifti` checks
the data length itself (see :func:`_check_complete`).
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
    return Volume(
        array,
        image.GetSpacing(),
        image.GetOrigin(),
        np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
        {"source": source},
    )


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


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a 3-D NIfTI file (``.nii`` or ``.nii.gz``).

    Args:
        path: file to read. It is never modified.

    Returns:
        A :class:`Volume` whose array keeps the file's data type (int16, float32, uint8, ...)
        after SimpleITK applies ``scl_slope``/``scl_inter``.

    Raises:
        InputError: missing, unreadable, truncated, or not 3-D.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; expected a NIfTI image (.nii or .nii.gz)")
    if not is_nifti(path):
        raise InputError(f"{path}: expected a .nii or .nii.gz file; use `read_dicom_series` for DICOM")
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise InputError(
            f"{path}: cannot be read as NIfTI ({first}); the file may be truncated or not NIfTI — "
            "re-export it from the source system"
        ) from None
    _check_complete(path)
    return image_to_volume(image, source=str(path))


def _expected_nbytes(header: bytes) -> int | None:
    """vox_offset + voxels × bytes from a NIfTI-1 header (None if not NIfTI-1)."""
    for order in "<>":
        if struct.unpack(f"{order}i", header[:4])[0] == 348:
            dims = struct.unpack(f"{order}8h", header[40:56])
            bitpix = struct.unpack(f"{order}h", header[72:74])[0]
            vox_offset = struct.unpack(f"{order}f", header[108:112])[0]
            n = 1
            for d in dims[1 : 1 + max(dims[0], 0)]:
                n *= max(d, 1)
            return int(vox_offset) + n * bitpix // 8
    return None


def _check_complete(path: Path) -> None:
    """Refuse a file whose voxel data is shorter than its header says (a cut-off copy).

    ``.nii``: compares the file size. ``.nii.gz``: compares the gzip trailer's ISIZE (the
    uncompressed length mod 2**32); only when that disagrees is the stream decompressed to be
    sure, so intact files cost one small read.
    """
    gz = str(path).lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else path.open("rb")) as handle:
            expected = _expected_nbytes(handle.read(348))
    except (OSError, EOFError, struct.error):
        expected = None
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
