"""Read a NIfTI file for validation, about three times faster than SimpleITK for masks.

Validating a full-size cohort means decompressing ~40 masks of 512 × 512 × 200 voxels per
patient; inflating them dominates the run time. This reader inflates with ISA-L (``isal``,
a dependency; the standard ``gzip`` module when it is missing), parses the header with
:mod:`cervicontour.validate.header` and wraps the bytes as a read-only array *view* (no copy),
while the geometry comes from SimpleITK's header-only ``ReadImageInformation`` — so spacing,
origin and direction are exactly what :func:`cervicontour.io.read_nifti` returns.

Anything unusual (scaled data, datatypes outside :data:`~cervicontour.validate.header.DATATYPES`,
not 3-D, short or corrupt data) goes through :func:`cervicontour.io.read_nifti` instead, which
then either reads it or raises its :class:`~cervicontour.errors.InputError`.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cervicontour.io import read_nifti
from cervicontour.validate.header import DATATYPES, parse_header
from cervicontour.volume import Volume

try:  # ISA-L inflates 2-3x faster than zlib
    from isal import igzip as _gzip
except ImportError:  # pragma: no cover - isal is a dependency; this keeps a broken install working
    _gzip = gzip


def read_for_validation(path: str | os.PathLike) -> Volume:
    """Read a 3-D NIfTI file like :func:`cervicontour.io.read_nifti` (same array, same geometry).

    Args:
        path: ``.nii`` or ``.nii.gz``; never modified.

    Returns:
        A :class:`Volume` whose array may be a read-only view of the decompressed bytes: do not
        write into it.

    Raises:
        cervicontour.errors.InputError: as :func:`cervicontour.io.read_nifti` (missing,
            truncated, not 3-D, ...).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = _gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        header = parse_header(data[:540], source=str(path))
        known = DATATYPES.get(header.datatype)
        shape = tuple(int(d) for d in header.dim[1:4])
        if known is None or header.scaled or header.ndim != 3 or min(shape) < 1:
            return read_nifti(path)
        dtype = np.dtype(known[0]).newbyteorder(header.endian)
        offset = max(int(header.vox_offset), 352 if header.version == 1 else 544)
        count = int(np.prod(shape))
        if len(data) < offset + count * dtype.itemsize:
            return read_nifti(path)  # short data: read_nifti says so
        array = np.frombuffer(data, dtype, count=count, offset=offset).reshape(shape[::-1]).transpose(2, 1, 0)
        reader = sitk.ImageFileReader()
        reader.SetImageIO("NiftiImageIO")
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        if tuple(reader.GetSize()) != shape:
            return read_nifti(path)
        if dtype.byteorder == ">":
            array = array.astype(dtype.newbyteorder("="))
    except Exception:  # noqa: BLE001 - truncated, corrupt, odd: the reference reader decides
        return read_nifti(path)  # raises the canonical InputError, or reads what we would not
    return Volume(
        array,
        reader.GetSpacing(),
        reader.GetOrigin(),
        np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3),
        {"source": str(path)},
    )
