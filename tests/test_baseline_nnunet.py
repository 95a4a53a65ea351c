"""nnU-Net v2 baseline: region encoding of overlapping structures, export, import, run.

A hand-built phantom whose every label value is derived below. Grid 20 × 16 × 12 voxels
(i, j, k), half-open boxes::

    Bladder      i 2–10   j 2–10   k 2–8      bit 1
    Anorectum    i 14–18  j 10–14  k 2–8      bit 2
    CTVn         i 1–4    j 12–15  k 8–11     bit 4
    CTVp         i 8–12   j 6–10   k 3–6      bit 8   (inside Parametrium; i 8–9 also in Bladder)
    Parametrium  i 6–14   j 4–12   k 2–8      bit 16  (overlaps Bladder at i 6–9, j 4–9)

Combinations that occur, ordered (number of structures, bit code) → label values:
1 {Bladder}, 2 {Anorectum}, 3 {CTVn}, 4 {Parametrium}, 5 {Bladder, Parametrium} (code 17),
6 {CTVp, Parametrium} (24), 7 {Bladder, CTVp, Parametrium} (25). CTVp never occurs alone, so its
``regions_class_order`` entry is its smallest combination, 6.
"""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from cervicontour.baselines.nnunet import (
    ENCODING_KEY,
    RegionEncoding,
    export_dataset,
    import_predictions,
)
from cervicontour.cohort import load_cohort, write_case
from cervicontour.errors import InputError
from cervicontour.io import read_nifti
from cervicontour.structures import PRIMARY
from cervicontour.volume import Volume

SHAPE = (20, 16, 12)
BOXES = {
    "Bladder": ((2, 2, 2), (10, 10, 8)),
    "Anorectum": ((14, 10, 2), (18, 14, 8)),
    "CTVn": ((1, 12, 8), (4, 15, 11)),
    "CTVp": ((8, 6, 3), (12, 10, 6)),
    "Parametrium": ((6, 4, 2), (14, 12, 8)),
}
LABELS = {"background": 0, "Bladder": [1, 5, 7], "Anorectum": [2], "CTVn": [3], "CTVp": [6, 7], "Parametrium": [4, 5, 6, 7]}
REGIONS_CLASS_ORDER = [1, 2, 3, 6, 4]
COMBINATIONS = {"1": ["Bladder"], "2": ["Anorectum"], "3": ["CTVn"], "4": ["Parametrium"], "5": ["Bladder", "Parametrium"],
                "6": ["CTVp", "Parametrium"], "7": ["Bladder", "CTVp", "Parametrium"]}  # fmt: skip
TRIPLE = (8, 6, 3)  # in Bladder, CTVp and Parametrium → label 7
PAIR = (6, 4, 2)  # Bladder ∩ Parametrium, not CTVp (i < 8) → label 5
CTVP_PARAM = (11, 9, 5)  # CTVp ∩ Parametrium, not Bladder (i ≥ 10) → label 6
ROTATION_Z_30 = np.array([[np.cos(np.pi / 6), -np.sin(np.pi / 6), 0], [np.sin(np.pi / 6), np.cos(np.pi / 6), 0], [0, 0, 1]])
GEOMETRIES = {  # patient → (spacing_mm, origin_mm, direction): LPS, RAS, oblique
    "P01": ((2.5, 2.5, 4.0), (-25.0, -20.0, -24.0), np.eye(3)),
    "P02": ((2.4, 2.6, 4.2), (25.3, 19.7, -30.0), np.diag([-1.0, -1.0, 1.0])),
    "P03": ((2.5, 2.5, 3.8), (-10.0, -12.5, 7.5), ROTATION_Z_30),
}


def _mask(name: str) -> np.ndarray:
    (a, b, c), (d, e, f) = BOXES[name]
    out = np.zeros(SHAPE, np.uint8)
    out[a:d, b:e, c:f] = 1
    return out


def _ct() -> np.ndarray:
    """Air outside a soft-tissue block; each structure adds its own HU so combinations differ."""
    ct = np.full(SHAPE, -1000, np.int16)
    ct[1:19, 1:15, 1:11] = 0
    for step, name in enumerate(PRIMARY, 1):
        ct[_mask(name) > 0] += 40 * step
    return ct


def _grid(pid: str, array: np.ndarray) -> Volume:
    spacing, origin, direction = GEOMETRIES[pid]
    return Volume(array, spacing, origin, direction)


@pytest.fixture(scope="module")
def box_cohort(tmp_path_factory):
    """P01 (LPS), P02 (RAS), P03 (oblique) labelled; P04 (LPS) hold-out."""
    root = tmp_path_factory.mktemp("nnunet_box") / "cohort"
    for pid in GEOMETRIES:
        write_case(root, pid, _grid(pid, _ct()), {s: _grid(pid, _mask(s)) for s in PRIMARY})
    write_case(root, "P04", _grid("P01", _ct()))
    return root


@pytest.fixture(scope="module")
def exported(box_cohort, tmp_path_factory):
    raw = tmp_path_factory.mktemp("nnunet_raw")
    (dataset,) = export_dataset(box_cohort, raw, dataset_id=501)
    return dataset


# --------------------------------------------------------------------------- encoding
def test_encoding_labels_and_class_order_are_the_hand_derived_ones():
    masks = {s: _mask(s) for s in PRIMARY}
    from cervicontour.baselines.nnunet import bit_codes

    encoding = RegionEncoding.from_bits(PRIMARY, np.unique(bit_codes([masks[s] for s in PRIMARY])))
    assert encoding.labels() == LABELS
    assert encoding.regions_class_order() == REGIONS_CLASS_ORDER
    assert encoding.is_region_based and encoding.num_labels == 7
    label_map = encoding.encode(masks)
    assert label_map[TRIPLE] == 7 and label_map[PAIR] == 5 and label_map[CTVP_PARAM] == 6
    assert label_map[0, 0, 0] == 0 and label_map[15, 11, 3] == 2
    assert np.count_nonzero(label_map == 7) == 2 * 4 * 3  # i 8–9, j 6–9, k 3–5
    decoded = encoding.decode(label_map)
    for name in PRIMARY:
        np.testing.assert_array_equal(decoded[name], masks[name] > 0, err_msg=name)
    assert [s for s in PRIMARY if decoded[s][TRIPLE]] == ["Bladder", "CTVp", "Parametrium"]


def test_encoding_without_overlaps_is_plain_labels():
    encoding = RegionEncoding.from_bits(("Bladder", "Anorectum"), [0, 1, 2])
    assert encoding.labels() == {"background": 0, "Bladder": 1, "Anorectum": 2}
    assert not encoding.is_region_based


def test_encoding_refuses_an_unseen_combination():
    encoding = RegionEncoding.from_bits(("Bladder", "Parametrium"), [1, 2])
    both = np.ones((2, 2, 2), np.uint8)
    with pytest.raises(InputError, match="no label value"):
        encoding.encode({"Bladder": both, "Parametrium": both})


# --------------------------------------------------------------------------- export
def test_dataset_json_declares_one_region_per_structure(exported):
    meta = json.loads((exported.folder / "dataset.json").read_text())
    assert exported.folder.name == "Dataset501_Cervix"
    assert meta["labels"] == LABELS
    assert meta["regions_class_order"] == REGIONS_CLASS_ORDER
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "CT"}
    assert meta[ENCODING_KEY]["label_values"] == COMBINATIONS
    assert sorted(p.name for p in (exported.folder / "imagesTr").iterdir()) == ["P01_0000.nii.gz", "P02_0000.nii.gz", "P03_0000.nii.gz"]
    assert sorted(p.name for p in (exported.folder / "labelsTr").iterdir()) == ["P01.nii.gz", "P02.nii.gz", "P03.nii.gz"]
    assert [p.name for p in (exported.folder / "imagesTs").iterdir()] == ["P04_0000.nii.gz"]
    assert not (exported.folder / ".codes").exists()


@pytest.mark.parametrize("pid", ["P01", "P02", "P03"])
def test_export_keeps_the_exact_geometry_and_labels(exported, box_cohort, pid):
    source = sitk.ReadImage(str(box_cohort / pid / "image.nii.gz"))
    for path in (exported.folder / "imagesTr" / f"{pid}_0000.nii.gz", exported.folder / "labelsTr" / f"{pid}.nii.gz"):
        written = sitk.ReadImage(str(path))
        assert written.GetSpacing() == source.GetSpacing()
        assert written.GetOrigin() == source.GetOrigin()
        assert written.GetDirection() == source.GetDirection()
    image = read_nifti(exported.folder / "imagesTr" / f"{pid}_0000.nii.gz")
    np.testing.assert_array_equal(image.array, _ct())
    label = read_nifti(exported.folder / "labelsTr" / f"{pid}.nii.gz").array
    assert label[TRIPLE] == 7 and label[PAIR] == 5 and label[CTVP_PARAM] == 6
    assert set(np.unique(label).tolist()) == set(range(8))
    assert image.orientation == {"P01": "LPS", "P02": "RAS", "P03": "LPS"}[pid]


def test_nnunet_reader_order_is_our_index_order_reversed(exported):
    """nnU-Net's SimpleITKIO arrays (and so its .npz probabilities) are (c, z, y, x) = our [i,j,k] reversed."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    data, properties = SimpleITKIO().read_images([str(exported.folder / "imagesTr" / "P02_0000.nii.gz")])
    assert data.shape == (1, *SHAPE[::-1])
    np.testing.assert_array_equal(data[0].transpose(2, 1, 0), _ct())
    assert properties["sitk_stuff"]["direction"] == (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def test_nnunet_verify_dataset_integrity_passes(exported):
    pytest.importorskip("nnunetv2")
    from nnunetv2.experiment_planning.verify_dataset_integrity import (
        verify_dataset_integrity,
    )

    verify_dataset_integrity(str(exported.folder), num_processes=1)  # raises on any problem


def test_per_structure_export_writes_consecutive_binary_datasets(box_cohort, tmp_path):
    datasets = export_dataset(box_cohort, tmp_path, dataset_id=510, structures=["Bladder", "rectum"], per_structure=True)
    assert [d.folder.name for d in datasets] == ["Dataset510_CervixBladder", "Dataset511_CervixAnorectum"]
    meta = json.loads((datasets[1].folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "Anorectum": 1} and "regions_class_order" not in meta
    label = read_nifti(datasets[0].folder / "labelsTr" / "P01.nii.gz").array
    np.testing.assert_array_equal(label, _mask("Bladder"))


def test_export_refuses_a_patient_without_a_structure(box_cohort, tmp_path):
    write_case(tmp_path / "c", "Q01", _grid("P01", _ct()), {"Bladder": _grid("P01", _mask("Bladder"))})
    with pytest.raises(InputError, match=r"lacks \['Anorectum'"):
        export_dataset(tmp_path / "c", tmp_path / "raw", dataset_id=502)


# --------------------------------------------------------------------------- import
def _nnunet_outputs(folder, pid: str, *, probabilities: bool) -> None:
    """What nnU-Net writes for one case: the label map, and the .npz (c, z, y, x) + .pkl."""
    spacing, origin, direction = GEOMETRIES[pid]
    masks = np.stack([_mask(s) for s in PRIMARY])  # (c, i, j, k)
    properties = {"sitk_stuff": {"spacing": spacing, "origin": origin, "direction": tuple(direction.ravel())},
                  "spacing": list(spacing[::-1]), "shape_before_cropping": SHAPE[::-1]}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    if probabilities:
        probs = np.where(masks > 0, 0.8, 0.2).astype(np.float16).transpose(0, 3, 2, 1)  # → (c, z, y, x)
        np.savez_compressed(folder / f"{pid}.npz", probabilities=probs)
        with (folder / f"{pid}.pkl").open("wb") as handle:
            pickle.dump(properties, handle)
    seg = np.zeros(SHAPE, np.uint8)  # nnU-Net's region export: later regions overwrite earlier ones
    for index, value in enumerate(REGIONS_CLASS_ORDER):
        seg[masks[index] > 0] = value
    image = sitk.GetImageFromArray(seg.transpose(2, 1, 0))
    image.SetSpacing(spacing), image.SetOrigin(origin), image.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(image, str(folder / f"{pid}.nii.gz"))


@pytest.mark.parametrize("pid", ["P02", "P03"])
def test_import_from_probabilities_keeps_overlaps_and_grid(exported, box_cohort, tmp_path, pid):
    _nnunet_outputs(tmp_path / "pred", pid, probabilities=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = import_predictions(tmp_path / "pred", tmp_path / "out", dataset_json=exported.folder / "dataset.json",
                                     reference=box_cohort)  # fmt: skip
    assert list(written) == [pid]
    reference = load_cohort(box_cohort)[pid].load_image()
    for name in PRIMARY:
        mask = read_nifti(tmp_path / "out" / pid / "structures" / f"{name}.nii.gz")
        assert mask.same_grid(reference, tolerance_mm=1e-6)
        np.testing.assert_array_equal(mask.array, _mask(name), err_msg=name)
    assert load_cohort(tmp_path / "out")[pid].structure_names == list(PRIMARY)


def test_import_from_nnunet_label_map_warns_that_overlaps_are_lost(exported, tmp_path):
    _nnunet_outputs(tmp_path / "pred", "P01", probabilities=False)
    with pytest.warns(UserWarning, match="overlaps between predicted structures are lost"):
        import_predictions(tmp_path / "pred", tmp_path / "out", dataset_json=exported.folder / "dataset.json")
    masks = {s: read_nifti(tmp_path / "out" / "P01" / "structures" / f"{s}.nii.gz").array for s in PRIMARY}
    # order Bladder, Anorectum, CTVn, CTVp, Parametrium: Parametrium (last) wins wherever it is
    np.testing.assert_array_equal(masks["Parametrium"], _mask("Parametrium"))
    assert masks["Bladder"][PAIR] == 0 and masks["Bladder"][2, 2, 2] == 1
    assert masks["CTVp"].sum() == 0
    np.testing.assert_array_equal(masks["Anorectum"], _mask("Anorectum"))


def test_import_from_a_combination_label_map_decodes_every_structure(exported, tmp_path):
    (tmp_path / "pred").mkdir()
    sitk.WriteImage(sitk.ReadImage(str(exported.folder / "labelsTr" / "P02.nii.gz")), str(tmp_path / "pred" / "P02.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import_predictions(tmp_path / "pred", tmp_path / "out", dataset_json=exported.folder / "dataset.json")
    for name in PRIMARY:
        np.testing.assert_array_equal(read_nifti(tmp_path / "out" / "P02" / "structures" / f"{name}.nii.gz").array, _mask(name))


def test_import_refuses_a_prediction_off_the_reference_grid(exported, box_cohort, tmp_path):
    _nnunet_outputs(tmp_path / "pred", "P01", probabilities=True)
    (tmp_path / "pred" / "P01.pkl").rename(tmp_path / "pred" / "P02.pkl")  # P02's name, P01's geometry
    (tmp_path / "pred" / "P01.npz").rename(tmp_path / "pred" / "P02.npz")
    (tmp_path / "pred" / "P01.nii.gz").unlink()
    with pytest.raises(InputError, match="not on the grid"):
        import_predictions(tmp_path / "pred", tmp_path / "out", dataset_json=exported.folder / "dataset.json", reference=box_cohort)


# --------------------------------------------------------------------------- CLI
def test_cli_export_and_import(box_cohort, tmp_path):
    from typer.testing import CliRunner

    from cervicontour.baselines.nnunet_cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(box_cohort), str(tmp_path / "raw"), "--dataset-id", "7", "--name", "Box"])
    assert result.exit_code == 0, result.output
    dataset_json = tmp_path / "raw" / "Dataset007_Box" / "dataset.json"
    assert json.loads(dataset_json.read_text())["labels"] == LABELS
    again = runner.invoke(app, ["export", str(box_cohort), str(tmp_path / "raw"), "--dataset-id", "7", "--name", "Box"])
    assert again.exit_code == 2 and "exists" in again.output
    _nnunet_outputs(tmp_path / "pred", "P01", probabilities=False)
    result = runner.invoke(app, ["import", str(tmp_path / "pred"), str(tmp_path / "out"), "--dataset-json", str(dataset_json)])
    assert result.exit_code == 0, result.output
    assert "overlaps between predicted structures are lost" in result.output
    assert (tmp_path / "out" / "P01" / "structures" / "CTVp.nii.gz").is_file()


# --------------------------------------------------------------------------- nnU-Net itself (slow)
@pytest.mark.slow
def test_run_trains_predicts_with_probabilities_and_imports(box_cohort, tmp_path):
    """Export → plan (verify integrity) → preprocess → 1 epoch × 3 iterations on CPU → predict → import."""
    pytest.importorskip("nnunetv2")
    from typer.testing import CliRunner

    from cervicontour.baselines.nnunet_cli import app

    args = ["run", str(box_cohort), str(tmp_path / "work"), "--dataset-id", "503", "--epochs", "1",
            "--iterations-per-epoch", "3", "--device", "cpu", "--no-mirroring"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    predictions = tmp_path / "work" / "predictions"
    timings = json.loads((tmp_path / "work" / "timings.json").read_text())
    assert set(timings["per_case_inference_s"]) == {"P04"}
    for key in ("plan_s", "preprocess_s", "train_s", "predict_s"):
        assert timings[key] > 0
    print("\nnnU-Net timings:", json.dumps({k: v for k, v in timings.items()}, indent=1))
    raw = tmp_path / "work" / "nnunet_predictions"
    with np.load(raw / "P04.npz") as data:
        probabilities = data["probabilities"].transpose(0, 3, 2, 1)  # → (c, i, j, k)
    assert probabilities.shape == (5, *SHAPE)
    reference = load_cohort(box_cohort)["P04"].load_image()
    masks = {}
    for index, name in enumerate(PRIMARY):
        mask = read_nifti(predictions / "P04" / "structures" / f"{name}.nii.gz")
        assert mask.same_grid(reference, tolerance_mm=1e-6)
        np.testing.assert_array_equal(mask.array, probabilities[index] > 0.5, err_msg=name)
        masks[name] = mask.array
    # nnU-Net's own label map (written from the same probabilities): where it says region r, our r is set
    seg = read_nifti(raw / "P04.nii.gz").array
    assert masks["Parametrium"][seg == REGIONS_CLASS_ORDER[-1]].all()
    overlapping = sum(m.astype(int) for m in masks.values()) >= 2
    assert np.count_nonzero(overlapping) == np.count_nonzero((probabilities > 0.5).sum(0) >= 2)
    # after 3 iterations the sigmoids still sit near 0.5, so many voxels get several structures
    assert np.count_nonzero(overlapping) > 0, "expected some voxels in >= 2 predicted structures"
