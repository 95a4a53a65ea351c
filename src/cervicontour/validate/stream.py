"""Scan a binary uint8 mask without holding it in memory: its maximum, bounding box and crop.

Most of validation's time goes into inflating masks that are almost all zeros. Inflating into one
58 MB buffer spends most of that time in page faults; inflating 1 MB at a time into memory the
allocator reuses, and keeping only the slices that hold the structure, is about 2.5× faster and
needs a few MB. Only the common case is streamed — gzip-compressed, uint8, unscaled, 3-D, on
the expected grid; anything else goes to :func:`cervicontour.validate.fastread.read_for_validation`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.validate.header import NiftiHeader

try:
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - isal is a dependency
    import zlib as _zlib

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class MaskScan:
    """What a streamed mask holds.

    Attributes:
        max_value: largest voxel value (0 for an empty mask).
        lo: index ``[i, j, k]`` of the crop's first voxel (``None`` if empty).
        crop: boolean crop ``[i, j, k]`` of the non-zero voxels (``None`` if empty).
    """

    max_value: int
    lo: tuple[int, int, int] | None
    crop: np.ndarray | None


def streamable(header: NiftiHeader) -> bool:
    """True for the files :func:`scan_mask` reads: NIfTI-1, uint8, unscaled, 3-D."""
    return header.version == 1 and header.datatype == 2 and not header.scaled and header.ndim == 3


def scan_mask(path: str | os.PathLike, header: NiftiHeader) -> MaskScan | None:
    """Stream a ``.nii.gz`` uint8 mask; ``None`` if it cannot be streamed (read it whole instead).

    Args:
        path: the file (never modified).
        header: its parsed header (:func:`cervicontour.validate.header.read_header`).

    Returns:
        A :class:`MaskScan`, or ``None`` for a file that is not gzip, not :func:`streamable`,
        ends early or has several gzip members — the full reader then reports or reads it.
    """
    path = Path(path)
    if not streamable(header):
        return None
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return None
    nx, ny, nz = (int(d) for d in header.dim[1:4])
    slice_bytes = nx * ny
    per = max(1, CHUNK_BYTES // max(slice_bytes, 1))
    inflater = _zlib.decompressobj(31)
    pending = [raw]

    def take(n: int) -> bytes | None:
        parts, got = [], 0
        while got < n:
            if not pending[0] and got < n:
                return None
            chunk = inflater.decompress(pending[0], n - got)
            pending[0] = inflater.unconsumed_tail
            if not chunk:
                return None
            parts.append(chunk)
            got += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    try:
        if take(max(int(header.vox_offset), 352)) is None:
            return None
        kept: list[np.ndarray] = []
        first = last = None
        top = 0
        k = 0
        while k < nz:
            n = min(per, nz - k)
            buf = take(n * slice_bytes)
            if buf is None:
                return None
            block = np.frombuffer(buf, np.uint8).reshape(n, ny, nx)  # [z, y, x]
            slice_max = block.reshape(n, -1).max(axis=1)
            top = max(top, int(slice_max.max()))
            hit = np.flatnonzero(slice_max)
            if hit.size:
                if first is None:
                    first = k + int(hit[0])
                last = k + int(hit[-1])
            if first is not None:  # keep every slice from the structure's first one on
                kept.append(block[first - k :] if first >= k else block)
            k += n
    except _zlib.error:
        return None
    if first is None:
        return MaskScan(top, None, None)
    slab = np.concatenate(kept, axis=0) if len(kept) > 1 else kept[0]
    slab = slab[: last - first + 1]  # [z, y, x] from the first to the last slice with voxels
    ys = np.flatnonzero(np.any(slab, axis=(0, 2)))
    xs = np.flatnonzero(np.any(slab[:, ys[0] : ys[-1] + 1, :], axis=(0, 1)))
    crop = slab[:, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    crop_ijk = np.ascontiguousarray(crop.transpose(2, 1, 0)) != 0
    return MaskScan(top, (int(xs[0]), int(ys[0]), first), crop_ijk)
