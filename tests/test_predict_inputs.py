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
    from cervicontour.pipeline import image_sha256, predict

    case = load_cohort(tiny_cohort)["SYN004"]  # stored RAS
    image = case.load_image()
    assert image.orientation == "RAS"
    (record_path,) = predict(case.image_path, tmp_path / "out", model=tiny_run, save_probabilities=True)
    folder = tmp_path / "out" / "image"  # patient id = the file name without .nii.gz
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
    from cervicontour.pipeline import predict

    hu = load_cohort(tiny_cohort)["SYN001"].load_image().array
    series = tmp_path / "CT_series"
    write_ct_series(series, (hu.astype(np.int32) + 1024).astype(np.uint16), pixel_spacing_mm=(7.5, 7.5), slice_step_mm=10.0)
    image = read_volume(series)
    predict(series, tmp_path / "out", model=tiny_run)
    mask = read_nifti(tmp_path / "out" / "CT_series" / "structures" / "Bladder.nii.gz")
    assert mask.same_grid(image)


def test_cohort_input_predicts_the_holdout_patients_unless_asked_for_all(tiny_cohort, tiny_run, tmp_path):
    from cervicontour.pipeline import predict

    written = predict(tiny_cohort, tmp_path / "holdout", model=tiny_run)
    assert [p.parent.name for p in written] == ["SYN005"]
    written = predict(tiny_cohort, tmp_path / "all", model=tiny_run, all_cases=True)
    assert [p.parent.name for p in written] == ["SYN001", "SYN002", "SYN003", "SYN004", "SYN005"]


def test_unusable_inputs_say_what_was_expected(tmp_path, tiny_run, tiny_cohort):
    from cervicontour.errors import InputError
    from cervicontour.pipeline import predict

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
