"""One DICOM slice of :mod:`.dicom`'s series: its header and deferred pixels (:class:`Slice`), the
pixel checks, and Hounsfield units from the stored values (RescaleSlope/Intercept)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cervicontour.errors import InputError

_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class Slice:
    path: Path
    dataset: Any  # pydicom Dataset with PixelData deferred


def check_size(folder: Path, slices: list[Slice], rows: int, cols: int) -> None:
    """Refuse, before the volume is allocated, Rows × Columns no slice file can hold.

    The files' total size times 1032 (deflate's best ratio; RLE and JPEG do worse on CT) bounds
    the pixel bytes they can decode to: a damaged header declaring 65535 × 65535 pixels is refused
    here instead of allocating gigabytes.
    """
    from cervicontour.io.gate import MAX_DEFLATE_RATIO

    if rows < 1 or cols < 1:
        raise InputError(f"{folder}: Rows × Columns is {rows} × {cols}; expected positive image sizes — re-export the series")
    needed = rows * cols * 2 * len(slices)
    room = sum(s.path.stat().st_size for s in slices) * MAX_DEFLATE_RATIO
    if needed > room:
        raise InputError(f"{folder}: the headers declare {len(slices)} slices of {rows} × {cols} pixels ({needed} bytes), more than "
                         f"the files can hold ({room} bytes at most); the headers are damaged — re-export the series")


def hounsfield(folder: Path, slices: list[Slice], rows: int, cols: int) -> np.ndarray:
    """Stack slices as ``[i, j, k]`` and apply each slice's slope/intercept."""
    scales = [(_number(s, "RescaleSlope", 1.0), _number(s, "RescaleIntercept", 0.0)) for s in slices]
    integral = all(slope.is_integer() and intercept.is_integer() for slope, intercept in scales)
    out = np.empty((cols, rows, len(slices)), dtype=np.int16 if integral else np.float32)
    for k, (item, (slope, intercept)) in enumerate(zip(slices, scales)):
        pixels = _pixels(folder, item, rows, cols)
        if out.dtype == np.int16:
            hu = pixels.astype(np.int64) * int(slope) + int(intercept)
            if hu.min() >= _INT16.min and hu.max() <= _INT16.max:
                out[:, :, k] = hu.T
                continue
            out = out.astype(np.float32)  # exact: int16 values are exact in float32
        out[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T
    return out


def _pixels(folder: Path, item: Slice, rows: int, cols: int) -> np.ndarray:
    ds = item.dataset
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise InputError(
            f"{folder / item.path.name}: cannot decode pixel data (transfer syntax "
            f"{syntax}: {exc}); decompress the series (e.g. `gdcmconv --raw`) or install "
            "pylibjpeg/gdcm decoders"
        ) from None
    if pixels.shape != (rows, cols):
        raise InputError(
            f"{folder / item.path.name}: expected one grayscale {rows}x{cols} frame, got a pixel "
            f"array of shape {pixels.shape}; colour or multi-frame images are not CT slices"
        )
    return pixels


def _number(item: Slice, keyword: str, default: float) -> float:
    value = item.dataset.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    must_be_nonzero = keyword == "RescaleSlope"
    if not np.isfinite(number) or (must_be_nonzero and number == 0):
        what = "a finite, non-zero" if must_be_nonzero else "a finite"
        raise InputError(
            f"{item.path}: expected {what} {keyword}, got {value!r}; "
            "the export is damaged — re-export the series"
        )
    return number
