"""Reading and writing volumes with their geometry: NIfTI (SimpleITK) and DICOM CT series."""

from __future__ import annotations

import os
from pathlib import Path

from cervicontour.io.atomic import atomic_path, file_sha256, write_text_atomic
from cervicontour.io.nifti import (
    NIFTI_SUFFIXES,
    image_to_volume,
    is_nifti,
    read_nifti,
    read_nifti_information,
    strip_nifti_suffix,
    volume_to_image,
    write_nifti,
)
from cervicontour.volume import Volume

__all__ = [
    "atomic_path",
    "file_sha256",
    "write_text_atomic",
    "NIFTI_SUFFIXES",
    "image_to_volume",
    "is_nifti",
    "read_nifti",
    "read_nifti_information",
    "read_volume",
    "strip_nifti_suffix",
    "volume_to_image",
    "write_nifti",
]


def read_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read a NIfTI file, or a folder holding one DICOM CT series (HU, geometry checked)."""
    path = Path(path)
    if path.is_dir():
        from cervicontour.io.dicom import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid)
    return read_nifti(path)
