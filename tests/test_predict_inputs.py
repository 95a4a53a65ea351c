"""predict(): NIfTI file, DICOM series folder, cohort → cohort layout on the input grid + prediction.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_helpers import TINY, tiny_cohort, tiny_run  # noqa: F401 (fixtures)

pytest.importorskip("torch")


def test_nifti_input_ras_gives_masks_on_its_exact_grid(tiny_cohort, tiny_run, tmp_path):
    from cervicontour.cohort import load_cohort
    from cervicontour.io import read_nifti
    from cervicontour.inference.cohort import predict
    from cervicontour.volume import image_sha256

    case = load_cohort(tiny_cohort)["SYN004"]  # stored RAS
    image = case.load_image()
    assert image.orientation == "RAS"
    (record_path,) = predict(case.image_path, tmp_path / "out", model=tiny_run, save_probabilities=True)
    folder = tmp_path / "out" / "SYN004"  # a cohort case's image.nii.gz: the case folder names it
    assert record_path == folder / "prediction.json"
    for name in TINY.structures:
        mask = read_nifti(folder / "structures" / f"{name}.nii.gz")
        assert mask.same_grid(image), mask.grid_differences(image)
        assert set(np.unique(mask.array)) <= {0, 1}
        prob = read_nifti(folder / "probabilities" / f"{name}.nii.gz")
        assert prob.same_grid(image) and prob.array.max() <= 100
    record = json.loads(record_path.read_text())
    assert record["input"]["sha256"] == image_sha256(image)
    assert record["model"]["config_sha256"] == json.loads((tiny_run / "run.json").read_text())["config_sha256"]
    assert set(record["structures"]) == set(TINY.structures)
    for rec in record["structures"].values():
        assert 0 <= rec["uncertainty"] <= 1 and isinstance(rec["review_closely"], bool)
    assert {"read", "preprocess", "model", "rules", "write", "total_case"} <= set(record["timings_s"])
    assert isinstance(record["rule_changes"], list)


def test_dicom_series_folder_input(tiny_cohort, tiny_run, tmp_path):
    pytest.importorskip("pydicom")
    from dicom_factory import write_ct_series

    from cervicontour.cohort import load_cohort
    from cervicontour.io import read_nifti, read_volume
    from cervicontour.inference.cohort import predict

    hu = load_cohort(tiny_cohort)["SYN001"].load_image().array
    series = tmp_path / "CT_series"
    write_ct_series(series, (hu.astype(np.int32) + 1024).astype(np.uint16), pixel_spacing_mm=(7.5, 7.5), slice_step_mm=10.0)
    image = read_volume(series)
    predict(series, tmp_path / "out", model=tiny_run)
    mask = read_nifti(tmp_path / "out" / "SYNTH01" / "structures" / "Bladder.nii.gz")  # the series' PatientID
    assert mask.same_grid(image)


def test_cohort_input_predicts_the_holdout_patients_unless_asked_for_all(tiny_cohort, tiny_run, tmp_path):
    from cervicontour.inference.cohort import predict

    written = predict(tiny_cohort, tmp_path / "holdout", model=tiny_run)
    assert [p.parent.name for p in written] == ["SYN005"]
    written = predict(tiny_cohort, tmp_path / "all", model=tiny_run, all_cases=True)
    assert [p.parent.name for p in written] == ["SYN001", "SYN002", "SYN003", "SYN004", "SYN005"]


def test_unusable_inputs_say_what_was_expected(tmp_path, tiny_run, tiny_cohort):
    from cervicontour.errors import InputError
    from cervicontour.inference.cohort import predict

    with pytest.raises(InputError, match="no such"):
        predict(tmp_path / "missing.nii.gz", tmp_path / "o", model=tiny_run)
    text = tmp_path / "ct.txt"
    text.write_text("x")
    with pytest.raises(InputError, match="expected a NIfTI"):
        predict(text, tmp_path / "o", model=tiny_run)
    image = next(tiny_cohort.glob("*/image.nii.gz"))  # the input is checked first, then the model is loaded
    with pytest.raises(InputError, match="no model.pt"):
        predict(image, tmp_path / "o", model=tmp_path)
    assert not (tmp_path / "o").exists()


def test_case_names_from_the_file_the_series_or_the_option(tiny_cohort, tmp_path):
    """A single file is named by its stem (or its case folder for image.nii.gz), a DICOM series by its
    PatientID (made folder-safe; the folder's name without one), any single case by --patient-id."""
    import shutil

    pydicom = pytest.importorskip("pydicom")
    from dicom_factory import write_ct_series

    from cervicontour.errors import InputError
    from cervicontour.inference.cohort import find_inputs

    def names(path, **kw):
        return [c.patient_id for c in find_inputs(path, **kw)]

    image = tiny_cohort / "SYN002" / "image.nii.gz"
    shutil.copy(image, tmp_path / "ct_0042.nii.gz")
    assert names(tmp_path / "ct_0042.nii.gz") == ["ct_0042"]
    assert names(image) == ["SYN002"]
    assert names(image, patient_id="P-17") == ["P-17"]
    series = tmp_path / "series_folder"
    write_ct_series(series, np.full((8, 8, 8), 1024, np.uint16), clinical_header=True)
    assert names(series) == ["SYNTH01"]  # the factory's PatientID
    for given, expected in (("AB 12/3", "AB_12_3"), ("", "series_folder")):
        for path in series.iterdir():
            ds = pydicom.dcmread(path)
            ds.PatientID = given
            ds.save_as(path)
        assert names(series) == [expected]
    assert names(series, patient_id="anon01") == ["anon01"]
    assert names(tiny_cohort, all_cases=True) == ["SYN001", "SYN002", "SYN003", "SYN004", "SYN005"]
    with pytest.raises(InputError, match="5 cases to predict, but --patient-id names one"):
        find_inputs(tiny_cohort, all_cases=True, patient_id="P1")
    with pytest.raises(InputError, match="expected letters, digits"):
        find_inputs(image, patient_id="../P1")
