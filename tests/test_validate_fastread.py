"""The validation reader returns exactly what `read_nifti` returns, or raises what it raises."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.validate.fastread import read_for_validation
from cervicontour.volume import Volume

nib = pytest.importorskip("nibabel")
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _same(path: Path) -> None:
    a, b = read_nifti(path), read_for_validation(path)
    assert a.array.dtype == b.array.dtype
    assert a.shape == b.shape and np.array_equal(a.array, b.array)
    assert a.spacing_mm == b.spacing_mm and a.origin_mm == b.origin_mm
    assert np.array_equal(a.direction, b.direction)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_matches_read_nifti_for_simpleitk_files(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    array = (rng.random((7, 6, 5)) * 100).astype(dtype)
    for n, direction in enumerate((np.eye(3), np.diag([-1.0, -1.0, 1.0]))):
        path = write_nifti(Volume(array, (0.7, 0.8, 2.5), (10.0, -20.0, 30.0), direction), tmp_path / f"a{n}{suffix}")
        _same(path)


def test_matches_for_nibabel_files_big_endian_nifti2_and_scaled(tmp_path):
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    affine = np.array([[-0.9, 0, 0, 10.0], [0, 0, 0.8, 20.0], [0, 2.5, 0, -30.0], [0, 0, 0, 1]])  # permuted axes
    img = nib.Nifti1Image(data, affine)
    nib.save(img, tmp_path / "le.nii.gz")
    big = nib.Nifti1Image(data.astype(">i2"), affine, img.header.as_byteswapped(">"))
    nib.save(big, tmp_path / "be.nii")
    nib.save(nib.Nifti2Image(data, affine), tmp_path / "n2.nii.gz")
    scaled = nib.Nifti1Image(data, affine)
    scaled.header.set_slope_inter(0.5, -3.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    for name in ("le.nii.gz", "be.nii", "scaled.nii.gz"):
        _same(tmp_path / name)
    # this SimpleITK does not read NIfTI-2: neither reader does, with the same error
    with pytest.raises(InputError) as reference:
        read_nifti(tmp_path / "n2.nii.gz")
    with pytest.raises(InputError) as ours:
        read_for_validation(tmp_path / "n2.nii.gz")
    strip = lambda e: re.sub(r"0x[0-9a-f]+", "", str(e.value))  # noqa: E731 - ITK prints object addresses
    assert strip(ours) == strip(reference)


def test_errors_are_read_niftis(tmp_path):
    path = write_nifti(Volume(np.ones((30, 30, 30), np.int16), (1, 1, 1)), tmp_path / "x.nii.gz")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(InputError, match="x.nii.gz"):
        read_for_validation(path)
    with pytest.raises(InputError, match="no such file"):
        read_for_validation(tmp_path / "absent.nii.gz")
    four = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.int16), np.eye(4)), four)
    with pytest.raises(InputError, match="3-D"):
        read_for_validation(four)



@pytest.mark.skipif(not (REAL / "totalsegmentator").is_dir(), reason="real data not present")
def test_matches_on_real_files():
    for path in (REAL / "totalsegmentator" / "example_ct.nii.gz", REAL / "totalsegmentator" / "example_seg_fast.nii.gz",
                 REAL / "word" / "labels" / "word_0014.nii.gz"):
        _same(path)


# --------------------------------------------------------------------------- streamed masks
from cervicontour.validate import stream  # noqa: E402
from cervicontour.validate.header import read_header  # noqa: E402


def _scan_matches(path: Path) -> None:
    scan = stream.scan_mask(path, read_header(path))
    full = read_nifti(path).array
    assert scan is not None and scan.max_value == full.max()
    where = np.nonzero(full)  # the box from numpy directly, not from our helper
    if where[0].size == 0:
        assert scan.lo is None and scan.crop is None
        return
    lo, hi = tuple(int(w.min()) for w in where), tuple(int(w.max()) + 1 for w in where)
    assert scan.lo == lo
    assert np.array_equal(scan.crop, full[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] != 0)


@pytest.mark.parametrize("chunk", [1, 300, 1 << 20])  # one slice per chunk, a few, all at once
def test_streamed_scan_equals_the_full_read(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(stream, "CHUNK_BYTES", chunk)
    cases = {
        "middle": ((3, 4, 5), (9, 8, 12)),
        "first_slice": ((0, 0, 0), (2, 3, 1)),
        "last_slice": ((5, 5, 19), (6, 6, 20)),
        "everything": ((0, 0, 0), (12, 10, 20)),
    }
    for name, (lo, hi) in cases.items():
        a = np.zeros((12, 10, 20), np.uint8)
        a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
        if name == "middle":
            a[2, 2, 17] = 1  # a second island past a gap of empty slices
        for orientation in (np.eye(3), np.diag([-1.0, -1.0, 1.0])):
            _scan_matches(write_nifti(Volume(a, (1, 1, 2), (0, 0, 0), orientation), tmp_path / f"{name}.nii.gz"))
    _scan_matches(write_nifti(Volume(np.zeros((12, 10, 20), np.uint8), (1, 1, 2)), tmp_path / "empty.nii.gz"))
    labels = np.zeros((12, 10, 20), np.uint8)
    labels[1:3, 1:3, 1:3] = 255
    path = write_nifti(Volume(labels, (1, 1, 2)), tmp_path / "255.nii.gz")
    assert stream.scan_mask(path, read_header(path)).max_value == 255


def test_streaming_declines_what_it_does_not_read(tmp_path):
    a = np.zeros((12, 10, 20), np.uint8)
    a[2:4, 2:4, 2:4] = 1
    path = write_nifti(Volume(a, (1, 1, 2)), tmp_path / "m.nii.gz")
    header = read_header(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # truncated
    assert stream.scan_mask(path, header) is None
    plain = write_nifti(Volume(a, (1, 1, 2)), tmp_path / "m.nii")
    assert stream.scan_mask(plain, read_header(plain)) is None
    floats = write_nifti(Volume(a.astype(np.float32), (1, 1, 2)), tmp_path / "f.nii.gz")
    assert not stream.streamable(read_header(floats)) and stream.scan_mask(floats, read_header(floats)) is None
