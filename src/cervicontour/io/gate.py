"""The input gate: is this image a CT the model can be run on? One place, every command.

Two halves, both cheap:

* :func:`check_nifti_layout` (called by :func:`cervicontour.io.read_nifti` before SimpleITK sees
  the file): the header's magic, dimensions, voxel size and spacing against the file's own size,
  so a 67-byte ``.nii.gz`` declaring 30000³ voxels is refused in milliseconds, before gigabytes
  are allocated. Deflate never shrinks data more than about 1032:1, so a ``.nii.gz`` of ``n`` bytes
  cannot hold more than ``1032 · n`` bytes of header and voxels. For floating-point files
  :func:`count_nonfinite` scans the stored values, because SimpleITK reads NaN and ±inf as 0.
* :func:`ct_problems` / :func:`require_ct` on the image read: finite values, at least
  :data:`MIN_SLICES` voxels along every axis, Hounsfield units (air or fat below -100 HU, soft
  tissue, nothing above :data:`HU_MAX`), a body (not a constant or all-air image), and
  ``Modality`` CT when the image came from DICOM.

The first half is always enforced (such a file cannot be read). Of the second, the plausibility
checks (:data:`FORCEABLE`: slice count, HU range and body, modality) may be overridden with
``--force`` by a clinician who knows the image is a CT in HU (e.g. a synthetic CT from MR that
the DICOM export labels ``MR``); the prediction then carries them as out-of-scope reasons.
Non-finite values and a missing image are never forced.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError

#: The fewest voxels along any axis of a CT the model is run on (a single slice or a 1×1×1 image is not a CT volume).
MIN_SLICES = 8
#: Above this a value is not a CT number (extended-range scanners reach about 30 000 HU in metal).
HU_MAX = 40_000.0
#: Below this values are padding outside the reconstruction circle (often -2048 or -3024) and ignored.
HU_PADDING = -1500.0
#: Voxels above this are "body" (soft tissue, fat is about -100 HU, lung about -800 HU).
BODY_HU = -500.0
#: A body needs at least this fraction of the voxels above :data:`BODY_HU`.
MIN_BODY_FRACTION = 0.005
#: Deflate's best ratio is about 1032:1; a .nii.gz cannot hold more than this times its size.
MAX_DEFLATE_RATIO = 1032
#: Checks ``--force`` may override (see the module docstring).
FORCEABLE = ("slices", "hu", "body", "modality")


@dataclass(frozen=True)
class Problem:
    """Why an image is not a usable CT: which check, what was expected, what arrived, what to do."""

    check: str
    expected: str
    actual: str
    hint: str

    def __str__(self) -> str:
        return f"expected {self.expected}, got {self.actual}; {self.hint}"


# --------------------------------------------------------------------------- NIfTI header vs file
@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxels are: enough to check and scan them without a reader."""

    sizes: tuple[int, ...]
    datatype: int
    bitpix: int
    vox_offset: int
    endian: str
    gz: bool

    @property
    def nbytes(self) -> int:
        """Header + voxel bytes (``vox_offset`` + voxels × bytes per voxel)."""
        return max(self.vox_offset, 0) + math.prod(self.sizes) * max(self.bitpix, 1) // 8


def _layout(raw: bytes):
    """``(endian, dims, datatype, bitpix, vox_offset, pixdim, magic_ok)`` of a NIfTI-1/2 header, None when neither."""
    if len(raw) < 348:
        return None
    for order in "<>":
        size = struct.unpack(f"{order}i", raw[:4])[0]
        if size == 348:
            return (order, struct.unpack(f"{order}8h", raw[40:56]), struct.unpack(f"{order}h", raw[70:72])[0], struct.unpack(f"{order}h", raw[72:74])[0],
                    struct.unpack(f"{order}f", raw[108:112])[0], struct.unpack(f"{order}8f", raw[76:108]), raw[344:348] == b"n+1\x00")  # fmt: skip
        if size == 540 and len(raw) >= 540:
            return (order, struct.unpack(f"{order}8q", raw[16:80]), struct.unpack(f"{order}h", raw[12:14])[0], struct.unpack(f"{order}h", raw[14:16])[0],
                    struct.unpack(f"{order}q", raw[168:176])[0], struct.unpack(f"{order}8d", raw[104:168]), raw[4:8] == b"n+2\x00")  # fmt: skip
    return None


def check_nifti_layout(path: str | os.PathLike) -> NiftiLayout | None:
    """Refuse a NIfTI file whose header cannot describe its own contents, reading only the header.

    Args:
        path: ``.nii`` or ``.nii.gz`` (never modified); at most 540 bytes are read (inflated).

    Returns:
        where the voxels are (:class:`NiftiLayout`), or None when the file does not start with a
        NIfTI-1/2 header size (the reader then says what it is).

    Raises:
        InputError: a wrong magic (an Analyze 7.5 or damaged header), dimensions that are not 1-7
            positive sizes, a zero or non-finite voxel spacing, or more voxel bytes than the file
            can hold (a ``.nii`` shorter than declared; a ``.nii.gz`` more than 1032 times its size).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            gz = handle.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else path.open("rb")) as handle:
            raw = handle.read(540)
    except (OSError, EOFError, zlib.error):
        return None  # unreadable: the reader reports it
    layout = _layout(raw)
    if layout is None:
        return None
    endian, dims, datatype, bitpix, vox_offset, pixdim, magic_ok = layout
    if not magic_ok:
        raise InputError(f"{path}: the header's magic is not that of a single-file NIfTI (n+1 / n+2); expected a .nii or .nii.gz image "
                         "(an Analyze 7.5 or .hdr/.img pair, or a damaged header?) — convert or re-export it as NIfTI")
    if not (math.isfinite(vox_offset) and 0 <= vox_offset < 2**62):
        raise InputError(f"{path}: the header declares the voxels at byte {vox_offset}; expected a finite, non-negative offset — "
                         "the header is damaged: re-export the image")
    vox_offset = int(vox_offset)
    ndim = dims[0]
    sizes = tuple(int(d) for d in dims[1 : 1 + ndim]) if 1 <= ndim <= 7 else ()
    if not sizes or min(sizes) < 1:
        raise InputError(f"{path}: the header declares dim = {list(dims)}; expected 1 to 7 positive sizes after dim[0] — the header is damaged: re-export the image")
    spatial = [float(p) for p in pixdim[1 : 1 + min(ndim, 3)]]
    if not all(math.isfinite(p) and p != 0 for p in spatial):
        raise InputError(f"{path}: the header declares voxel spacing {spatial} mm; expected finite, non-zero spacing — "
                         "re-export the image from the source (a reader would silently take 1 mm)")
    found = NiftiLayout(sizes, datatype, bitpix, vox_offset, endian, gz)
    needed = found.nbytes
    size = path.stat().st_size
    room = size * MAX_DEFLATE_RATIO + 1024 if gz else size
    if needed > room:
        shown = "×".join(str(s) for s in sizes)
        held = f"a {size}-byte compressed file holds at most about {room} bytes" if gz else f"the file has {size} bytes"
        raise InputError(f"{path}: cannot be read as NIfTI (the header declares {shown} voxels of {bitpix} bits, {needed} bytes, but {held}); "
                         "the file is truncated or its header damaged — copy or re-export it again")
    return found


#: NIfTI datatype codes of floating-point voxels.
_FLOAT_TYPES = {16: "f4", 64: "f8"}


def count_nonfinite(path: str | os.PathLike, layout: NiftiLayout) -> int:
    """How many stored voxel values are NaN or ±inf (0 for integer types), read in 4 MiB blocks.

    SimpleITK reads them as 0, so this looks at the bytes themselves.
    """
    code = _FLOAT_TYPES.get(layout.datatype)
    if code is None:
        return 0
    dtype = np.dtype(layout.endian + code)
    left, bad = math.prod(layout.sizes) * dtype.itemsize, 0
    with (gzip.open(path, "rb") if layout.gz else Path(path).open("rb")) as handle:
        handle.read(layout.vox_offset)
        carry = b""
        while left > 0:
            block = handle.read(min(1 << 22, left))
            if not block:
                break
            left -= len(block)
            data = carry + block
            usable = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:usable], dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = data[usable:]
    return bad


# --------------------------------------------------------------------------- the image read
def ct_problems(image) -> list[Problem]:
    """Why ``image`` (a :class:`~cervicontour.volume.Volume`) is not a CT in HU the model can use.

    Looks at about a million voxels (a regular subsample) for the value checks, and at every
    voxel for finiteness. ``[]`` when the image passes.

    Example:
        >>> import numpy as np
        >>> from cervicontour.volume import Volume
        >>> [p.check for p in ct_problems(Volume(np.full((9, 9, 9), -1024.0), (1, 1, 1), (0, 0, 0), np.eye(3)))]
        ['body']
    """
    array = image.array
    problems = []
    modality = str((image.metadata or {}).get("Modality", "") or "")
    if modality and modality.upper() != "CT":
        problems.append(Problem("modality", "a CT series (DICOM Modality CT)", f"Modality {modality}",
                                "this model reads CT only; predict on the planning CT series (or --force if this is a CT in HU labelled otherwise)"))
    if min(array.shape) < MIN_SLICES:
        problems.append(Problem("slices", f"a 3-D CT with at least {MIN_SLICES} voxels along every axis", f"shape {tuple(array.shape)}",
                                "export the whole CT series, not a single slice or a thumbnail"))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        return [Problem("finite", "finite voxel values", f"{bad} NaN or infinite voxel(s)",
                        "re-export the CT from the source; a reconstruction or conversion failed"), *problems]
    if array.dtype.kind not in "iuf":
        return [Problem("hu", "a numeric CT in Hounsfield units", f"voxels of type {array.dtype}", "export the CT as a scalar image"), *problems]
    step = max(1, int(round((array.size / 1e6) ** (1 / 3))))
    sample = np.asarray(array[::step, ::step, ::step], dtype=np.float64).ravel()
    kept = sample[sample > HU_PADDING]
    low = float(kept.min()) if kept.size else float(sample.min())
    high = float(sample.max())
    body = float(np.mean(sample > BODY_HU))
    if high > HU_MAX or low > -100:
        hint = ("the values look unrescaled (stored values without RescaleIntercept, about -1024): re-export with rescaling"
                if low >= 0 and high > 500 else "this does not look like a CT in HU (an MR, a normalised or a label image?); predict on the planning CT")
        problems.append(Problem("hu", f"Hounsfield units: air or fat below -100 HU and nothing above {HU_MAX:g}",
                                f"values from {low:g} to {high:g}", hint))
    elif body < MIN_BODY_FRACTION:
        problems.append(Problem("body", f"a body: at least {100 * MIN_BODY_FRACTION:g} % of voxels above {BODY_HU:g} HU",
                                f"{100 * body:.2f} % (values from {low:g} to {high:g})",
                                "the image is empty (all air or constant): check that the right series was exported"))
    return problems


def require_ct(image, *, source: str | os.PathLike, force: bool = False) -> list[Problem]:
    """Refuse ``image`` unless it is a usable CT; with ``force``, let the plausibility checks pass.

    Returns:
        the problems ``force`` let through (``[]`` without force or when none), for the record
        (``predict`` lists them as out-of-scope reasons).

    Raises:
        InputError: what was expected, what arrived, and what to do, for every problem (or the
            ones ``force`` cannot override).
    """
    problems = ct_problems(image)
    blocking = [p for p in problems if not (force and p.check in FORCEABLE)]
    if blocking:
        detail = "; ".join(str(p) for p in blocking)
        forced = "" if force or not all(p.check in FORCEABLE for p in blocking) else " (--force predicts anyway and flags the case out of scope)"
        raise InputError(f"{source}: not a usable CT: {detail}{forced}")
    return problems
