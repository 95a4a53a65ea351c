import json

import numpy as np
import pytest

import cervicontour.io.nifti as nifti_module
from cervicontour.cohort import load_cohort, read_notes, write_case, write_notes
from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.volume import Volume

SPACING = (0.9, 1.1, 2.5)
ORIGIN = (-20.0, 15.0, -300.0)


def _image():
    rng = np.random.default_rng(0)
    return Volume(rng.integers(-1000, 1000, (12, 10, 8)).astype(np.int16), SPACING, ORIGIN)


def _mask(box):
    array = np.zeros((12, 10, 8), np.uint8)
    array[box] = 1
    return Volume(array, SPACING, ORIGIN)


def test_canonical_layout_round_trip(tmp_path):
    image = _image()
    masks = {"Bladder": _mask(np.s_[2:5, 2:5, 2:4]), "GTVp": _mask(np.s_[6:8, 6:8, 4:6])}
    write_case(tmp_path, "P1", image, masks)
    write_case(tmp_path, "P2", image)  # hold-out
    write_notes(tmp_path, {"P1": "no contrast, LNs hard to see", "P2": ""})
    cohort = load_cohort(tmp_path)
    assert (tmp_path / "P1" / "structures" / "Bladder.nii.gz").is_file()
    assert (tmp_path / "P1" / "structures" / "sub" / "GTVp.nii.gz").is_file()
    assert list(cohort) == ["P1", "P2"]
    assert [c.patient_id for c in cohort.labelled()] == ["P1"]
    assert [c.patient_id for c in cohort.holdout()] == ["P2"]
    case = cohort["P1"]
    assert case.note == "no contrast, LNs hard to see"
    assert case.structure_names == ["Bladder", "GTVp"]
    bladder = case.load_structure("bladder")
    assert bladder.array.sum() == 3 * 3 * 2
    assert bladder.same_grid(case.load_image())
    assert np.array_equal(case.load_image().array, image.array)


def test_write_case_refuses_masks_off_the_image_grid(tmp_path):
    off = Volume(np.zeros((12, 10, 8), np.uint8), SPACING, (0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="not on the image grid"):
        write_case(tmp_path, "P1", _image(), {"Bladder": off})


def test_synonym_and_case_variants_are_matched(tmp_path):
    folder = tmp_path / "pat_a"
    write_nifti(_image(), folder / "CT.nii.gz")
    write_nifti(_mask(np.s_[1:3, 1:3, 1:3]), folder / "rectum.nii.gz")
    write_nifti(_mask(np.s_[1:4, 1:3, 1:3]), folder / "structures" / "CTV_N.nii")
    write_nifti(_mask(np.s_[1:5, 1:3, 1:3]), folder / "structures" / "PARAVAGINA.nii.gz")
    write_nifti(_mask(np.s_[1:2, 1:3, 1:3]), folder / "structures" / "sub" / "gtv_p.nii.gz")
    write_nifti(_mask(np.s_[1:2, 1:2, 1:2]), folder / "structures" / "mystery_blob.nii.gz")
    case = load_cohort(tmp_path)["pat_a"]
    assert case.image_path.name == "CT.nii.gz"
    assert case.structure_names == ["Anorectum", "CTVn", "Parametrium", "GTVp"]
    assert [p.name for p in case.unmatched] == ["mystery_blob.nii.gz"]
    assert case.load_structure("CTVn").array.sum() == 3 * 2 * 2
    assert case.load_structure("Parametrium").array.sum() == 4 * 2 * 2


def test_two_files_for_one_structure_is_an_error(tmp_path):
    folder = tmp_path / "p"
    write_nifti(_image(), folder / "image.nii.gz")
    write_nifti(_mask(np.s_[1:3, 1:3, 1:3]), folder / "Rectum.nii.gz")
    write_nifti(_mask(np.s_[1:3, 1:3, 1:3]), folder / "structures" / "Anorectum.nii.gz")
    with pytest.raises(InputError, match="two files for 'Anorectum'"):
        load_cohort(tmp_path)


def test_nnunet_raw_dataset(tmp_path):
    image = _image()
    labels = np.zeros(image.shape, np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels
    labels[5:8, 5:7, 2:4] = 2  # 12 voxels
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "Bladder": 1, "Rectum": 2},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }))
    write_nifti(image, tmp_path / "imagesTr" / "cx_001_0000.nii.gz")
    write_nifti(image.with_array(labels), tmp_path / "labelsTr" / "cx_001.nii.gz")
    write_nifti(image, tmp_path / "imagesTs" / "cx_900_0000.nii.gz")
    cohort = load_cohort(tmp_path)
    assert cohort.layout == "nnunet_raw"
    assert list(cohort) == ["cx_001", "cx_900"]
    case = cohort["cx_001"]
    assert case.structure_names == ["Bladder", "Anorectum"]
    bladder = case.load_structure("Bladder")
    assert bladder.array.dtype == np.uint8 and bladder.array.sum() == 8
    assert case.load_structure("anorectum").array.sum() == 12
    assert cohort["cx_900"].is_holdout
    with pytest.raises(InputError, match="has no 'CTVn' mask"):
        case.load_structure("CTVn")


def test_loading_a_cohort_reads_no_image(tmp_path, monkeypatch):
    write_case(tmp_path, "P1", _image(), {"Bladder": _mask(np.s_[2:5, 2:5, 2:4])})

    def boom(*args, **kwargs):
        raise AssertionError("load_cohort must not read voxel data")

    monkeypatch.setattr(nifti_module.sitk, "ImageFileReader", boom)
    cohort = load_cohort(tmp_path)
    assert cohort["P1"].structure_names == ["Bladder"]


def test_missing_or_empty_cohort_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_cohort(tmp_path / "absent")
    with pytest.raises(InputError, match="no patient folders found"):
        load_cohort(tmp_path)


def test_notes_header_is_checked(tmp_path):
    (tmp_path / "notes.csv").write_text("id,text\nP1,hello\n")
    with pytest.raises(InputError, match="patient_id,comment"):
        read_notes(tmp_path / "notes.csv")


def test_written_masks_are_binary_uint8_even_from_labels(tmp_path):
    labels = _mask(np.s_[2:5, 2:5, 2:4]).array * 7  # value 7 → written as 1
    write_case(tmp_path, "P1", _image(), {"Bladder": _image().with_array(labels)})
    mask = read_nifti(tmp_path / "P1" / "structures" / "Bladder.nii.gz")
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) == {0, 1}
