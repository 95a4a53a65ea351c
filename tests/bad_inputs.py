"""A corpus of broken inputs, the way a new user (or an attacker) hands them to the commands.

:func:`build_corpus` writes every item under a folder and returns :class:`BadInput` records: the
path to hand over, and which commands must refuse it (exit 2, a message, no traceback, nothing
written, the input's bytes unchanged). The items are small (at most 40 × 40 × 12 voxels) and
built by hand from their definitions, never from the code under test.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: PHI written into some DICOM items: a message must never repeat it.
PHI_NAME = "Doe^Jane^Secret"

# NIfTI-1 header offsets (the standard's)
_DIM, _DATATYPE, _BITPIX, _PIXDIM, _VOX_OFFSET, _QOFFSET, _SROW, _MAGIC = 40, 70, 72, 76, 108, 268, 280, 344


@dataclass(frozen=True)
class BadInput:
    name: str
    path: Path
    kind: str  # "nifti" (one file), "dicom" (a series folder), "rtstruct" (an RS file for `series`)
    commands: tuple[str, ...]  # which commands must refuse it
    series: Path | None = None  # the CT series an "rtstruct" item is imported with


# --------------------------------------------------------------------------- NIfTI
def good_ct() -> np.ndarray:
    """40 × 40 × 12 int16 'CT' (HU): air, an elliptic body of soft tissue, two bone blocks."""
    i, j = np.mgrid[0:40, 0:40]
    body = ((i - 20) / 17.0) ** 2 + ((j - 20) / 13.0) ** 2 <= 1
    ct = np.full((40, 40, 12), -1000, np.int16)
    ct[body] = 30
    ct[8:14, 16:24, :] = 700
    ct[26:32, 16:24, :] = 700
    return ct


def _nifti_bytes(array: np.ndarray, spacing=(2.0, 2.0, 3.0), datatype=None) -> bytearray:
    """An uncompressed NIfTI-1 file (identity qform/sform in RAS), written by hand."""
    dtypes = {np.dtype(np.int16): (4, 16), np.dtype(np.float32): (16, 32), np.dtype(np.uint8): (2, 8), np.dtype(np.int32): (8, 32)}
    code, bits = datatype or dtypes[array.dtype]
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    dims = [array.ndim, *array.shape] + [1] * (7 - array.ndim)
    struct.pack_into("<8h", header, _DIM, *dims)
    struct.pack_into("<h", header, _DATATYPE, code)
    struct.pack_into("<h", header, _BITPIX, bits)
    struct.pack_into("<8f", header, _PIXDIM, 1.0, *(list(spacing) + [1.0] * 7)[:7])
    struct.pack_into("<f", header, _VOX_OFFSET, 352.0)
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    header[123] = 2  # xyzt_units: mm
    struct.pack_into("<hh", header, 252, 1, 1)  # qform_code, sform_code
    struct.pack_into("<4f", header, _SROW, spacing[0], 0, 0, 0)
    struct.pack_into("<4f", header, _SROW + 16, 0, spacing[1], 0, 0)
    struct.pack_into("<4f", header, _SROW + 32, 0, 0, spacing[2] if len(spacing) > 2 else 1.0, 0)
    header[_MAGIC:_MAGIC + 4] = b"n+1\x00"
    return header + bytearray(np.asarray(array).astype(array.dtype.newbyteorder("<")).tobytes(order="F"))


def _write(path: Path, data: bytes, *, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(data), mtime=0) if gz else bytes(data))
    return path


def _patched(array: np.ndarray, offset: int, fmt: str, *values, **kwargs) -> bytearray:
    data = _nifti_bytes(array, **kwargs)
    struct.pack_into("<" + fmt, data, offset, *values)
    return data


def _nifti_items(root: Path) -> list[tuple[str, bytes | None, bool]]:
    """``(name, bytes, gz)``: ``bytes`` None means 'write nothing' (handled by the caller)."""
    ct = good_ct()
    f = ct.astype(np.float32)
    items: list[tuple[str, bytes, bool]] = []

    def add(name, data, gz=True):
        items.append((name, bytes(data), gz))

    nan = f.copy(); nan[20, 20, 6] = np.nan
    add("nan_voxel", _nifti_bytes(nan))
    phi = _nifti_bytes(nan)
    phi[148:148 + len(PHI_NAME)] = PHI_NAME.encode()  # descrip: a name where none belongs
    add("nan_voxel_phi_in_descrip", phi)
    inf = f.copy(); inf[20, 20, 6] = np.inf
    add("inf_voxel", _nifti_bytes(inf))
    ninf = f.copy(); ninf[5, 5, 0] = -np.inf
    add("minus_inf_voxel", _nifti_bytes(ninf))
    all_nan = np.full(ct.shape, np.nan, np.float32)
    add("all_nan", _nifti_bytes(all_nan))
    add("spacing_zero", _nifti_bytes(ct, spacing=(0.0, 2.0, 3.0)))
    add("spacing_zero_slice", _nifti_bytes(ct, spacing=(2.0, 2.0, 0.0)))
    add("spacing_nan", _nifti_bytes(ct, spacing=(float("nan"), 2.0, 3.0)))
    add("spacing_inf", _nifti_bytes(ct, spacing=(2.0, float("inf"), 3.0)))
    add("one_voxel", _nifti_bytes(np.full((1, 1, 1), 30, np.int16)))
    add("single_slice", _nifti_bytes(ct[:, :, :1]))
    add("two_slices", _nifti_bytes(ct[:, :, :2]))
    add("thin_in_plane", _nifti_bytes(ct[:4]))
    add("image_2d", _nifti_bytes(ct[:, :, 0], spacing=(2.0, 2.0)))
    add("image_4d", _nifti_bytes(np.stack([ct, ct], axis=-1), spacing=(2.0, 2.0, 3.0, 1.0)))
    add("image_5d", _nifti_bytes(ct[:, :, :, None, None].repeat(2, axis=4), spacing=(2.0, 2.0, 3.0, 1.0, 1.0)))
    add("empty_file", b"")
    add("empty_file_uncompressed", b"", False)
    whole = gzip.compress(bytes(_nifti_bytes(ct)), mtime=0)
    add("truncated_gzip", whole[: len(whole) // 2], False)  # already gzip bytes: written as they are
    add("truncated_nii", _nifti_bytes(ct)[:2000], False)
    add("header_only_nii", _nifti_bytes(ct)[:352], False)
    add("huge_dims_gz", _patched(np.zeros((1, 1, 1), np.int16), _DIM, "4h", 3, 30000, 30000, 30000)[:352])
    add("huge_dims_nii", _patched(np.zeros((1, 1, 1), np.int16), _DIM, "4h", 3, 30000, 30000, 30000)[:352], False)
    add("negative_dim", _patched(ct, _DIM, "4h", 3, 40, -40, 12))
    add("dim0_zero", _patched(ct, _DIM, "h", 0))
    add("dim0_nine", _patched(ct, _DIM, "h", 9))
    add("constant_minus_1024", _nifti_bytes(np.full(ct.shape, -1024, np.int16)))
    add("constant_zero", _nifti_bytes(np.zeros(ct.shape, np.int16)))
    add("all_air_noise", _nifti_bytes((-1000 + np.random.default_rng(0).integers(-20, 20, ct.shape)).astype(np.int16)))
    add("mr_like_positive", _nifti_bytes(np.where(ct > -500, 800, 0).astype(np.int16)))
    add("z_scored", _nifti_bytes(((f - f.mean()) / f.std()).astype(np.float32)))
    add("label_uint8", _nifti_bytes(np.where(ct > -500, 255, 0).astype(np.uint8)))
    add("unrescaled_ct", _nifti_bytes((ct.astype(np.int32) + 1024).astype(np.int16)))
    add("values_1e9", _nifti_bytes(np.where(ct > -500, 1e9, -1000).astype(np.float32)))
    add("garbage_bytes", np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), False)
    add("gzip_of_garbage", np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    add("text_file", b"patient: Jane Doe\nthis is not an image\n")
    add("wrong_magic", _patched(ct, _MAGIC, "4s", b"xyz\x00"))
    add("rgb_datatype", _nifti_bytes(np.zeros((40, 40, 12, 3), np.uint8).reshape(40, 40, 36), datatype=(128, 24)))
    add("complex_datatype", _nifti_bytes(np.zeros((40, 40, 24), np.float32), datatype=(32, 64)))
    add("nan_origin", _patched(ct, _SROW + 12, "f", float("nan")))
    nan_slice = f.copy(); nan_slice[:, :, 3] = np.nan
    add("nan_slice", _nifti_bytes(nan_slice))
    add("huge_dims_4d_gz", _patched(np.zeros((1, 1, 1), np.int16), _DIM, "5h", 4, 5000, 5000, 5000, 5000)[:352])
    add("vox_offset_past_end", _patched(ct, _VOX_OFFSET, "f", 1e9), False)
    add("vox_offset_nan", _patched(ct, _VOX_OFFSET, "f", float("nan")))
    add("constant_bright", _nifti_bytes(np.full(ct.shape, 3000, np.int16)))
    return items


# --------------------------------------------------------------------------- DICOM
def _series(folder: Path, stored, **kwargs) -> Path:
    from dicom_factory import write_ct_series

    write_ct_series(folder, stored, pixel_spacing_mm=(2.0, 2.0), slice_step_mm=3.0, **kwargs)
    return folder


def _dicom_items(root: Path) -> list[tuple[str, Path]]:
    import pydicom

    stored = (good_ct().astype(np.int32) + 1024).astype(np.uint16)
    items = []

    def add(name, folder):
        items.append((name, folder))

    def edit(folder: Path, **changes):
        for path in sorted(folder.iterdir()):
            ds = pydicom.dcmread(path)
            for key, value in changes.items():
                if value is None:
                    delattr(ds, key)
                else:
                    setattr(ds, key, value)
            ds.save_as(path)
        return folder

    add("dicom_mr_modality", edit(_series(root / "dicom_mr_modality", stored), Modality="MR"))
    add("dicom_pt_modality_phi", edit(_series(root / "dicom_pt_modality_phi", stored), Modality="PT", PatientName=PHI_NAME))
    missing = _series(root / "dicom_missing_slice", stored)
    sorted(missing.iterdir())[5].unlink()
    add("dicom_missing_slice", missing)
    uneven = _series(root / "dicom_uneven_spacing", stored)
    for k, path in enumerate(sorted(uneven.iterdir())):
        ds = pydicom.dcmread(path)
        z = float(ds.ImagePositionPatient[2]) + (0.7 if k >= 6 else 0.0) + (0.4 if k >= 9 else 0.0)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], f"{z:.6f}"]
        ds.save_as(path)
    add("dicom_uneven_spacing", uneven)
    mixed = _series(root / "dicom_mixed_series", stored, description="series A")
    _series(root / "dicom_mixed_series", stored, description="series B", name_prefix="b", seed=5)
    add("dicom_mixed_series", mixed)
    add("dicom_oblique_sheared", _series(root / "dicom_oblique_sheared", stored, slice_direction=(0.0, 0.3, 0.954)))
    duplicate = _series(root / "dicom_duplicate_slice", stored)
    first = sorted(duplicate.iterdir())[3]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(duplicate / "copy.dcm")
    add("dicom_duplicate_slice", duplicate)
    truncated = _series(root / "dicom_truncated_file", stored)
    victim = sorted(truncated.iterdir())[4]
    victim.write_bytes(victim.read_bytes()[:-1500])
    add("dicom_truncated_file", truncated)
    add("dicom_single_slice", _series(root / "dicom_single_slice", stored[:, :, :1]))
    add("dicom_few_slices", _series(root / "dicom_few_slices", stored[:, :, :3], slice_thickness_mm=3.0))
    empty = root / "dicom_empty_folder"
    empty.mkdir()
    add("dicom_empty_folder", empty)
    junk = root / "dicom_not_dicom"
    junk.mkdir()
    (junk / "a.dcm").write_bytes(b"\x00" * 300)
    (junk / "readme.txt").write_text("not a slice")
    add("dicom_not_dicom", junk)
    add("dicom_constant_air", _series(root / "dicom_constant_air", np.full(stored.shape, 0, np.uint16)))
    add("dicom_pixel_spacing_zero", edit(_series(root / "dicom_pixel_spacing_zero", stored), PixelSpacing=["0", "0"]))
    add("dicom_no_orientation", edit(_series(root / "dicom_no_orientation", stored), ImageOrientationPatient=None))
    add("dicom_phi_and_mr", edit(_series(root / "dicom_phi_and_mr", stored), Modality="MR", PatientName=PHI_NAME, PatientID="MRN-0042-SECRET"))
    add("dicom_huge_rows", edit(_series(root / "dicom_huge_rows", stored), Rows=65535, Columns=65535))  # damaged headers
    add("dicom_no_uids", edit(_series(root / "dicom_no_uids", stored), StudyInstanceUID="", SOPInstanceUID=""))  # an anonymiser's work
    return items


def _rtstruct_items(root: Path) -> tuple[Path, list[tuple[str, Path]]]:
    """A good series and RTSTRUCTs drawn on it, each broken one way."""
    import pydicom

    from cervicontour.export.rtstruct import write_rtstruct
    from cervicontour.io.dicom import read_dicom_series

    series = _series(root / "series", (good_ct().astype(np.int32) + 1024).astype(np.uint16))
    ct = read_dicom_series(series)
    mask = np.zeros(ct.shape, np.uint8)
    mask[15:25, 15:25, 3:8] = 1
    good = write_rtstruct(series, {"Bladder": ct.with_array(mask)}, root / "good.dcm").path
    items = []

    def variant(name, edit):
        ds = pydicom.dcmread(good)
        edit(ds)
        ds.save_as(root / f"{name}.dcm")
        items.append((name, root / f"{name}.dcm"))

    def nan(ds):
        contour = ds.ROIContourSequence[0].ContourSequence[0]
        contour.ContourData = ["NaN", *list(contour.ContourData)[1:]]

    def outside(ds):
        for contour in ds.ROIContourSequence[0].ContourSequence:
            contour.ContourData = [f"{float(v) + (400.0 if k % 3 == 0 else 0.0):.6g}" for k, v in enumerate(contour.ContourData)]

    def other_frame(ds):
        ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.12345"

    variant("rtstruct_nan_coordinate", nan)
    variant("rtstruct_outside_image", outside)
    variant("rtstruct_other_frame", other_frame)
    variant("rtstruct_not_rtstruct", lambda ds: (setattr(ds, "Modality", "CT"), delattr(ds, "StructureSetROISequence")))
    return series, items


# --------------------------------------------------------------------------- the corpus
def build_corpus(root: Path) -> list[BadInput]:
    """Write every broken input under ``root`` and return them (≥ 60)."""
    root = Path(root)
    corpus: list[BadInput] = []
    file_level = {"empty_file", "empty_file_uncompressed", "truncated_gzip", "truncated_nii", "header_only_nii", "huge_dims_gz",
                  "huge_dims_nii", "negative_dim", "dim0_zero", "dim0_nine", "image_2d", "image_4d", "image_5d", "garbage_bytes",
                  "gzip_of_garbage", "text_file", "wrong_magic", "rgb_datatype", "complex_datatype", "spacing_zero", "spacing_zero_slice",
                  "spacing_nan", "spacing_inf", "nan_origin", "huge_dims_4d_gz", "vox_offset_past_end", "vox_offset_nan"}
    for name, data, gz in _nifti_items(root):
        suffix = ".nii.gz" if gz or name in ("truncated_gzip",) else ".nii"
        path = root / "nifti" / f"{name}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "truncated_gzip":
            path.write_bytes(data)
        else:
            _write(path, data, gz=gz)
        # file-level damage: every command that reads the file refuses it; content damage: the CT gate (predict)
        commands = ("predict", "info", "preview", "report", "margin", "evaluate", "compose") if name in file_level else ("predict",)
        if name == "truncated_gzip":  # info reads headers only: a cut-off data stream shows when the data are read
            commands = tuple(c for c in commands if c != "info")
        corpus.append(BadInput(name, path, "nifti", commands))
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return corpus
    for name, folder in _dicom_items(root / "dicom"):
        # an RTSTRUCT may be drawn on any image series (MR in brachytherapy): only damaged series are refused by export
        content = name in ("dicom_mr_modality", "dicom_pt_modality_phi", "dicom_phi_and_mr", "dicom_constant_air", "dicom_few_slices")
        commands = ("rtstruct-export",) if name == "dicom_no_uids" else ("predict",) if content else ("predict", "rtstruct-export")
        corpus.append(BadInput(name, folder, "dicom", commands))
    series, items = _rtstruct_items(root / "rtstruct")
    for name, path in items:
        corpus.append(BadInput(name, path, "rtstruct", ("rtstruct-import",), series))
    return corpus


def copy_input(item: BadInput, dst: Path) -> Path:
    """A copy of the item at ``dst`` (a file or a folder)."""
    if item.path.is_dir():
        return Path(shutil.copytree(item.path, dst))
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(item.path, dst))
