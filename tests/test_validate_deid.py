"""De-identification: what looks identifying, and what must not (vocabulary, software strings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cervicontour.structures import STRUCTURES
from cervicontour.validate.deid import BASIC_PROFILE, check_dicom_folder, check_header_text, check_name, check_note, identifying

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
CT_SMALL = REAL / "pydicom" / "CT_small.dcm"


@pytest.mark.parametrize(
    "text, kind",
    [
        ("Doe^Jane", "a name"),
        ("Mrs Smithers planning CT", "a name"),
        ("patient name: X", "a name"),
        ("scan of jane", "a name"),
        ("1961-03-12", "a date"),
        ("19610312", "a date"),
        ("12/03/1961", "a date"),
        ("12.03.61", "a date"),
        ("12 March 1961", "a date"),
        ("Mar 2021", "a date"),
        ("MRN 1234567", "a hospital number"),
        ("1234567", "a hospital number"),
        ("943 476 5919", "a hospital number"),
        ("NHS: 9434765919", "a hospital number"),
        ("case_20210312_ct", "a date"),
    ],
)
def test_identifying_shapes_are_found(text, kind):
    hits = identifying(text)
    assert any(h.startswith(kind) for h in hits), hits


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SYN001",
        "patient_01",
        "image",
        "TotalSegmentator 2.0.5",
        "FSL5.0",
        "TE=2.3;Time=133216.000;phase=1",
        "spacing 0.9765625 mm",
        "no GTVp. para-aortic nodes included",
        "only scanned bottom of kidneys. missing left kidney",
        "extra slices",
        "no contrast - hard to see LNs",
        "small parametrium and low uterus",
        "hold-out: CT only, no contours",
        "word_0014",
        "labels v2, 16 classes",
    ],
)
def test_ordinary_text_is_not_flagged(text):
    assert identifying(text) == []


def test_vocabulary_names_are_not_flagged():
    for s in STRUCTURES.values():
        for name in (s.name, *s.synonyms):
            assert identifying(name) == [], name


def test_findings_carry_patient_structure_and_file_but_no_fix_of_free_text():
    (f,) = check_header_text({"descrip": "Doe^Jane", "aux_file": ""}, patient_id="p1", structure="CTVn", file="p1/x.nii.gz")
    assert (f.check, f.patient_id, f.structure, f.severity.value, f.file) == ("deid.header", "p1", "CTVn", "error", "p1/x.nii.gz")
    assert "descrip" in f.actual and "clean" in f.hint
    (f,) = check_name("Smith_Jane_19610312", what="patient folder", patient_id="Smith_Jane_19610312")
    assert f.check == "deid.filename" and "study code" in f.hint
    (f,) = check_note("Mrs Brown, DOB 12/03/1961", patient_id="p2")
    assert (f.check, f.severity.value) == ("deid.notes", "warning")
    assert check_note("no GTVp", patient_id="p2") == []


def test_basic_profile_lists_the_core_attributes():
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "AccessionNumber", "StudyDate"):
        assert keyword in BASIC_PROFILE
    from pydicom.datadict import tag_for_keyword

    assert all(tag_for_keyword(k) is not None for k in BASIC_PROFILE)  # every keyword is a real DICOM keyword


def _dicom(path: Path, **attributes):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in attributes.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True) if pydicom.__version__ >= "3" else ds.save_as(path, write_like_original=False)
    return path


def test_dicom_folder_lists_basic_profile_attributes_present(tmp_path):
    folder = tmp_path / "p1" / "dicom"
    _dicom(folder / "1.dcm", PatientName="Doe^Jane", PatientBirthDate="19610312", InstitutionName="St Elsewhere", Modality="CT")
    _dicom(folder / "2.dcm", PatientName="Doe^Jane", Modality="CT")
    (f,) = check_dicom_folder(folder, patient_id="p1")
    assert (f.check, f.severity.value, f.value) == ("deid.dicom", "error", 3)
    assert "PatientName (2/2 files)" in f.actual and "PatientBirthDate (1/2 files)" in f.actual
    assert "Doe" not in f.actual  # the report names attributes, never their values
    clean = tmp_path / "p2" / "dicom"
    _dicom(clean / "1.dcm", Modality="CT")
    assert check_dicom_folder(clean, patient_id="p2") == []
    declared = tmp_path / "p3" / "dicom"
    _dicom(declared / "1.dcm", PatientID="ANON01", PatientIdentityRemoved="YES", Modality="CT")
    (f,) = check_dicom_folder(declared, patient_id="p3")
    assert f.severity.value == "warning" and "PatientIdentityRemoved = YES" in f.actual


@pytest.mark.skipif(not CT_SMALL.is_file(), reason=f"real DICOM not present at {CT_SMALL}")
def test_real_dicom_ct_slice_has_identifying_attributes(tmp_path):
    import shutil

    folder = tmp_path / "dicom"
    folder.mkdir()
    shutil.copyfile(CT_SMALL, folder / "CT_small.dcm")
    (f,) = check_dicom_folder(folder, patient_id="p")
    assert f.severity.value == "error"
    assert "PatientName" in f.actual and "StudyDate" in f.actual
