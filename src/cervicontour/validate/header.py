"""Read the raw NIfTI header (348-byte NIfTI-1 or 540-byte NIfTI-2) and check it.

SimpleITK hides what the header really says (it picks qform or sform, applies scaling, drops the
free-text fields), so validation parses the bytes itself: a few ``struct`` reads, no dependency.
The same offsets let :mod:`cervicontour.validate.clean` blank the free-text fields without
touching a single data byte. The checks live in :mod:`cervicontour.validate.header_checks`.
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
from cervicontour.io.atomic import atomic_path

#: datatype code → (name, bits) for the scalar types cervicontour reads.
DATATYPES: dict[int, tuple[str, int]] = {
    2: ("uint8", 8),
    4: ("int16", 16),
    8: ("int32", 32),
    16: ("float32", 32),
    64: ("float64", 64),
    256: ("int8", 8),
    512: ("uint16", 16),
    768: ("uint32", 32),
    1024: ("int64", 64),
    1280: ("uint64", 64),
}
#: other codes the standard defines (complex, RGB, bit, float128): readable by some tools, not here.
OTHER_DATATYPES = {1: ("binary", 1), 32: ("complex64", 64), 128: ("rgb24", 24), 1536: ("float128", 128),
                   1792: ("complex128", 128), 2048: ("complex256", 256), 2304: ("rgba32", 32)}
SPATIAL_UNITS = {0: "unknown", 1: "m", 2: "mm", 3: "µm"}

#: free-text fields: name → (offset, length) per NIfTI version.
TEXT_FIELDS: dict[int, dict[str, tuple[int, int]]] = {
    1: {"db_name": (14, 18), "descrip": (148, 80), "aux_file": (228, 24), "intent_name": (328, 16)},
    2: {"descrip": (240, 80), "aux_file": (320, 24), "intent_name": (508, 16)},
}


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1/2 header that validation looks at.

    Attributes:
        version: 1 or 2.
        endian: ``"<"`` or ``">"``.
        dim: ``dim[0..7]`` (``dim[0]`` = number of dimensions).
        pixdim: ``pixdim[0..7]`` (``pixdim[0]`` = qfac).
        srow: 3×4 sform rows (RAS mm).
        text: the free-text fields (``descrip``, ``aux_file``, ``intent_name``, ``db_name``),
            decoded as Latin-1 up to the first NUL.
    """

    version: int
    endian: str
    dim: tuple[int, ...]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]
    vox_offset: float
    scl_slope: float
    scl_inter: float
    xyzt_units: int
    qform_code: int
    sform_code: int
    quatern: tuple[float, float, float]
    qoffset: tuple[float, float, float]
    srow: tuple[tuple[float, ...], ...]
    magic: bytes
    intent_code: int
    text: dict[str, str]

    @property
    def ndim(self) -> int:
        return int(self.dim[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.dim[1 : 1 + max(0, min(self.ndim, 7))])

    @property
    def spatial_unit(self) -> str:
        return SPATIAL_UNITS.get(self.xyzt_units & 0x07, f"code {self.xyzt_units & 0x07}")

    @property
    def scaled(self) -> bool:
        """True when scl_slope/scl_inter change the stored values (slope not 0/NaN and not 1/0)."""
        slope, inter = self.scl_slope, self.scl_inter
        if not math.isfinite(slope) or slope == 0:
            return False
        return slope != 1 or (math.isfinite(inter) and inter != 0)

    def qform_affine(self) -> np.ndarray:
        """4×4 index → RAS mm from the quaternion (NIfTI method 2)."""
        b, c, d = self.quatern
        a2 = 1.0 - (b * b + c * c + d * d)
        if a2 < 1e-7:  # 180° rotation: renormalise (b, c, d), a = 0
            norm = math.sqrt(b * b + c * c + d * d) or 1.0
            b, c, d, a = b / norm, c / norm, d / norm, 0.0
        else:
            a = math.sqrt(a2)
        rot = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        zooms = np.array([self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac])
        affine = np.eye(4)
        affine[:3, :3] = rot * zooms[None, :]
        affine[:3, 3] = self.qoffset
        return affine

    def sform_affine(self) -> np.ndarray:
        """4×4 index → RAS mm from ``srow_x/y/z`` (NIfTI method 3)."""
        affine = np.eye(4)
        affine[:3, :] = np.asarray(self.srow, dtype=float)
        return affine


# --------------------------------------------------------------------------- reading
def _open(path: Path):
    with path.open("rb") as handle:
        gz = handle.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb")


def read_header(path: str | os.PathLike) -> NiftiHeader:
    """Parse the header of a ``.nii``/``.nii.gz`` file (reads at most 540 bytes).

    Raises:
        InputError: not a NIfTI-1/2 single file (wrong size field or magic), or too short.
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            raw = handle.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: header cannot be read ({exc}); re-export the file") from None
    if len(raw) < 348:
        raise InputError(f"{path}: only {len(raw)} header bytes (a NIfTI-1 header has 348); the file is truncated")
    return parse_header(raw, source=str(path))


def parse_header(raw: bytes, *, source: str = "<bytes>") -> NiftiHeader:
    """Parse header bytes (see :func:`read_header`)."""
    for endian in "<>":
        size = struct.unpack(endian + "i", raw[:4])[0]
        if size in (348, 540):
            break
    else:
        raise InputError(f"{source}: not a NIfTI file (header size field is {struct.unpack('<i', raw[:4])[0]}, expected 348 or 540)")
    if size == 540:
        return _parse_nifti2(raw, endian, source)
    return _parse_nifti1(raw, endian, source)


def _text(raw: bytes, offset: int, length: int) -> str:
    return raw[offset : offset + length].split(b"\x00", 1)[0].decode("latin-1")


def _parse_nifti1(raw: bytes, e: str, source: str) -> NiftiHeader:
    u = lambda fmt, off: struct.unpack_from(e + fmt, raw, off)  # noqa: E731
    magic = raw[344:348]
    if magic not in (b"n+1\x00", b"ni1\x00"):
        raise InputError(f"{source}: NIfTI-1 magic is {magic!r}, expected b'n+1\\x00'; not a NIfTI-1 file")
    return NiftiHeader(
        version=1,
        endian=e,
        dim=u("8h", 40),
        datatype=u("h", 70)[0],
        bitpix=u("h", 72)[0],
        pixdim=u("8f", 76),
        vox_offset=u("f", 108)[0],
        scl_slope=u("f", 112)[0],
        scl_inter=u("f", 116)[0],
        xyzt_units=raw[123],
        qform_code=u("h", 252)[0],
        sform_code=u("h", 254)[0],
        quatern=u("3f", 256),
        qoffset=u("3f", 268),
        srow=(u("4f", 280), u("4f", 296), u("4f", 312)),
        magic=magic,
        intent_code=u("h", 68)[0],
        text={k: _text(raw, o, n) for k, (o, n) in TEXT_FIELDS[1].items()},
    )


def _parse_nifti2(raw: bytes, e: str, source: str) -> NiftiHeader:
    if len(raw) < 540:
        raise InputError(f"{source}: NIfTI-2 header is truncated ({len(raw)} of 540 bytes)")
    u = lambda fmt, off: struct.unpack_from(e + fmt, raw, off)  # noqa: E731
    magic = raw[4:12]
    if magic[:3] not in (b"n+2", b"ni2"):
        raise InputError(f"{source}: NIfTI-2 magic is {magic!r}, expected b'n+2'; not a NIfTI-2 file")
    return NiftiHeader(
        version=2,
        endian=e,
        dim=u("8q", 16),
        datatype=u("h", 12)[0],
        bitpix=u("h", 14)[0],
        pixdim=u("8d", 104),
        vox_offset=float(u("q", 168)[0]),
        scl_slope=u("d", 176)[0],
        scl_inter=u("d", 184)[0],
        xyzt_units=u("i", 500)[0],
        qform_code=u("i", 344)[0],
        sform_code=u("i", 348)[0],
        quatern=u("3d", 352),
        qoffset=u("3d", 376),
        srow=(u("4d", 400), u("4d", 432), u("4d", 464)),
        magic=magic[:4],
        intent_code=u("i", 504)[0],
        text={k: _text(raw, o, n) for k, (o, n) in TEXT_FIELDS[2].items()},
    )


# --------------------------------------------------------------------------- patching
def blank_text_fields(src: str | os.PathLike, dst: str | os.PathLike, fields: list[str]) -> Path:
    """Copy a NIfTI file with some free-text header fields set to NUL bytes; data untouched.

    Args:
        src: input ``.nii``/``.nii.gz`` (never modified).
        dst: output path (same compression as ``src``), written atomically.
        fields: names from :data:`TEXT_FIELDS` (``descrip``, ``aux_file``, ...).

    Returns:
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    header = read_header(src)
    with _open(src) as handle:
        data = bytearray(handle.read())
    for name in fields:
        offset, length = TEXT_FIELDS[header.version][name]
        data[offset : offset + length] = b"\x00" * length
    with src.open("rb") as handle:
        gz = handle.read(2) == b"\x1f\x8b"
    with atomic_path(dst) as tmp:
        if gz:
            with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as out:
                out.write(data)
        else:
            tmp.write_bytes(bytes(data))
    return dst
