"""Raw NIfTI header parsing (cross-checked with nibabel) and the header checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.validate.header import blank_text_fields, read_header
from cervicontour.validate.header_checks import check_header, unusable
from cervicontour.volume import Volume

nib = pytest.importorskip("nibabel")

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
CT = REAL / "totalsegmentator" / "example_ct.nii.gz"
SEG = REAL / "totalsegmentator" / "example_seg_fast_force_split.nii.gz"
WORD = REAL / "word" / "labels"


def _nib_image(shape=(6, 7, 8), dtype=np.int16, affine=None, version=1, **fields):
    data = (np.arange(np.prod(shape)) % 100).reshape(shape).astype(dtype)
    affine = np.diag([0.9, 0.8, 2.5, 1.0]) if affine is None else affine
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = cls(data, affine)
    img.header.set_xyzt_units("mm")
    for key, value in fields.items():
        img.header[key] = value
    return img


def _save(img, path: Path) -> Path:
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_header_fields_match_nibabel(tmp_path, version, suffix):
    affine = np.array([[-0.9, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    img = _nib_image(affine=affine, version=version, descrip=b"hello", aux_file=b"aux", intent_name=b"label")
    path = _save(img, tmp_path / f"x{suffix}")
    ref = nib.load(str(path)).header
    h = read_header(path)
    assert h.version == version
    assert list(h.dim) == list(ref["dim"])
    assert h.datatype == int(ref["datatype"]) and h.bitpix == int(ref["bitpix"])
    np.testing.assert_allclose(h.pixdim, ref["pixdim"])
    assert (h.qform_code, h.sform_code) == (int(ref["qform_code"]), int(ref["sform_code"]))
    np.testing.assert_allclose(h.qform_affine(), ref.get_qform(), atol=1e-5)
    np.testing.assert_allclose(h.sform_affine(), ref.get_sform(), atol=1e-6)
    assert h.spatial_unit == "mm"
    assert h.text["descrip"] == "hello" and h.text["aux_file"] == "aux" and h.text["intent_name"] == "label"
    assert check_header(h, role="image") == []


def test_big_endian_header_is_read(tmp_path):
    img = _nib_image()
    big = nib.Nifti1Image(np.asarray(img.dataobj).astype(">i2"), img.affine, img.header.as_byteswapped(">"))
    path = _save(big, tmp_path / "big.nii")
    h = read_header(path)
    assert h.endian == ">" and h.shape == (6, 7, 8) and h.pixdim[1:4] == pytest.approx((0.9, 0.8, 2.5))


def test_what_simpleitk_writes_passes(tmp_path):
    for direction in (np.eye(3), np.diag([-1.0, -1.0, 1.0])):
        path = write_nifti(Volume(np.zeros((5, 6, 7), np.int16), (0.98, 0.98, 2.5), (1, 2, 3), direction), tmp_path / "a.nii.gz")
        assert check_header(read_header(path), role="image") == []


def _checks(findings):
    return sorted((f.check, f.severity.value) for f in findings)


def test_4d_image_is_an_unusable_dim_error(tmp_path):
    path = _save(_nib_image(shape=(6, 7, 8, 2)), tmp_path / "4d.nii.gz")
    found = check_header(read_header(path), role="image", patient_id="p", file="p/image.nii.gz")
    assert _checks(found) == [("header.dim", "error")]
    assert "4-D, shape 6 x 7 x 8 x 2" in found[0].actual and found[0].patient_id == "p"
    assert unusable(found)
    # a singleton 4th dimension is still one 3-D volume
    path = _save(_nib_image(shape=(6, 7, 8, 1)), tmp_path / "4d1.nii.gz")
    assert check_header(read_header(path), role="image") == []


def test_datatype_units_orientation_scaling(tmp_path):
    def patched(name, offset, values):
        path = _save(_nib_image(), tmp_path / name)
        raw = bytearray(path.read_bytes())
        raw[offset : offset + values.nbytes] = values.tobytes()
        path.write_bytes(bytes(raw))
        return read_header(path)

    rgb = patched("rgb.nii", 70, np.array([128, 24], np.int16))  # datatype RGB24, bitpix 24
    assert _checks(check_header(rgb, role="image")) == [("header.datatype", "error")]
    assert "rgb24" in check_header(rgb, role="image")[0].actual
    bitpix = patched("bitpix.nii", 72, np.array([32], np.int16))  # int16 says bitpix 16
    assert _checks(check_header(bitpix, role="image")) == [("header.datatype", "error")]
    zero = patched("pixdim.nii", 80, np.array([0.0], np.float32))  # pixdim[1] = 0
    assert _checks(check_header(zero, role="image")) == [("header.pixdim", "error")]

    metres = _nib_image()
    metres.header.set_xyzt_units("meter")
    assert _checks(check_header(read_header(_save(metres, tmp_path / "m.nii")), role="image")) == [("header.units", "error")]

    unknown = _nib_image()
    unknown.header["xyzt_units"] = 0
    assert _checks(check_header(read_header(_save(unknown, tmp_path / "u.nii")), role="image")) == [("header.units", "info")]

    path = _save(_nib_image(), tmp_path / "noorient.nii")
    raw = bytearray(path.read_bytes())
    raw[252:256] = np.array([0, 0], np.int16).tobytes()  # qform_code = sform_code = 0
    path.write_bytes(bytes(raw))
    assert _checks(check_header(read_header(path), role="image")) == [("header.orientation", "error")]

    scaled = _nib_image(dtype=np.uint8)
    scaled.header.set_slope_inter(2.0, 0.0)
    path = _save(scaled, tmp_path / "scaled.nii")
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([2.0, 0.0], np.float32).tobytes()  # nibabel resets scaling on save
    path.write_bytes(bytes(raw))
    h = read_header(path)
    assert h.scaled
    assert _checks(check_header(h, role="mask")) == [("header.scaling", "warning")]
    assert check_header(h, role="image") == []  # CT stored with a rescale slope is normal


def test_qform_and_sform_that_disagree(tmp_path):
    img = _nib_image()
    qform = img.affine.copy()
    sform = qform.copy()
    sform[0, 3] += 2.0  # 2 mm apart at every corner
    img.set_sform(sform, code=1)
    img.set_qform(qform, code=1)
    found = check_header(read_header(_save(img, tmp_path / "qs.nii")), role="image", tolerance_mm=0.01)
    assert _checks(found) == [("header.qform_sform", "error")]
    assert found[0].value == pytest.approx(2.0, abs=1e-4)


def test_not_nifti_and_truncated_header(tmp_path):
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"\0" * 400)
    with pytest.raises(InputError, match="not a NIfTI file"):
        read_header(junk)
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(b"\x5c\x01\0\0" + b"\0" * 100))
    with pytest.raises(InputError, match="truncated"):
        read_header(short)


def test_blank_text_fields_keeps_every_data_byte(tmp_path):
    img = _nib_image(descrip=b"Doe^Jane 1961-03-12", aux_file=b"MRN1234567", intent_name=b"x", db_name=b"hospital")
    src = _save(img, tmp_path / "phi.nii.gz")
    before = src.read_bytes()
    dst = blank_text_fields(src, tmp_path / "out" / "clean.nii.gz", ["descrip", "aux_file", "intent_name", "db_name"])
    assert src.read_bytes() == before
    h = read_header(dst)
    assert h.text == {"db_name": "", "descrip": "", "aux_file": "", "intent_name": ""}
    a, b = gzip.decompress(before), gzip.decompress(dst.read_bytes())
    assert len(a) == len(b)
    differ = np.flatnonzero(np.frombuffer(a, np.uint8) != np.frombuffer(b, np.uint8))
    assert differ.min() >= 14 and differ.max() < 344  # only inside the header's text fields
    assert np.array_equal(read_nifti(src).array, read_nifti(dst).array)


@pytest.mark.skipif(not CT.is_file(), reason=f"real CT not present at {CT}")
def test_real_ct_and_its_labels_pass_the_header_checks():
    for path, role in ((CT, "image"), (SEG, "mask")):
        found = check_header(read_header(path), role=role)
        assert [f for f in found if f.severity.value != "info"] == [], found
        # xyzt_units = 0 in these files: read as mm, reported as info only
        assert [f.check for f in found] == ["header.units"]


@pytest.mark.skipif(not WORD.is_dir(), reason=f"real WORD labels not present at {WORD}")
def test_real_word_label_headers_pass():
    for path in sorted(WORD.glob("*.nii.gz")):
        assert check_header(read_header(path), role="mask") == [], path.name
