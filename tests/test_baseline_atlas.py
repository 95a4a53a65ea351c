"""Multi-atlas baseline: registration recovers known transforms, fusion rules, geometry, errors.

Expected values are derived by hand: a copy of a case moved by a known rigid transform must map
back by exactly that transform (to within a voxel), identical atlases give their own masks,
majority/STAPLE of hand-made masks follow the voxel-wise rule, and the world-space result does
not depend on whether the target is stored LPS or RAS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sitk = pytest.importorskip("SimpleITK")
sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(2)

from cervicontour.baselines import atlas as atlas_mod
from cervicontour.baselines.atlas import load_atlases, predict_case, predict_cohort
from cervicontour.baselines.atlas_fusion import majority_vote, staple
from cervicontour.baselines.atlas_register import propagate, register
from cervicontour.cohort import load_cohort, write_case
from cervicontour.errors import InputError
from cervicontour.io import read_nifti
from cervicontour.metrics.overlap import dice
from cervicontour.structures import PRIMARY
from cervicontour.volume import Volume, to_lps

TWO = ("Bladder", "CTVp")  # enough structures to exercise propagation; keeps tests fast


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three labelled small phantom patients (LPS), seed 7."""
    from cervicontour.synth import synthesize_cohort

    return synthesize_cohort(tmp_path_factory.mktemp("atlas") / "c", patients=3, holdout=0, seed=7, size="small")


def _moved_copy(volume: Volume, *, shift_mm=(0.0, 0.0, 0.0), rotation_deg: float = 0.0) -> Volume:
    """The same voxels placed elsewhere in the world: origin + shift, direction rotated about z."""
    angle = np.deg2rad(rotation_deg)
    rz = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return Volume(volume.array, volume.spacing_mm, np.add(volume.origin_mm, shift_mm), rz @ volume.direction)


def _body_points(volume: Volume, n: int = 200) -> np.ndarray:
    ijk = np.argwhere(volume.array > -500)
    ijk = ijk[np.linspace(0, len(ijk) - 1, n).astype(int)]
    return volume.index_to_world(ijk)


# --------------------------------------------------------------------------- registration
def test_translated_copy_recovers_translation_and_masks(cohort):
    case = load_cohort(cohort)["SYN001"]
    atlas = case.load_image()
    shift = np.array([12.0, -8.0, 10.0])  # not a multiple of the voxel size
    target = _moved_copy(atlas, shift_mm=shift)
    reg = register(target, atlas, deformable="demons")
    # target point x shows what the atlas shows at x - shift
    points = _body_points(target)
    mapped = np.array([reg.linear.TransformPoint(tuple(p)) for p in points])
    err_linear = np.linalg.norm(mapped - (points - shift), axis=1)
    assert err_linear.max() < min(atlas.spacing_mm)  # within a voxel
    recovered = -(mapped - points).mean(axis=0)
    np.testing.assert_allclose(recovered, shift, atol=min(atlas.spacing_mm))
    masks = [case.load_structure(n) for n in TWO]
    for mask, moved in zip(masks, propagate(masks, reg.transform, target)):
        assert dice(mask.array > 0, moved) >= 0.95  # same voxel indices on the target grid


def test_rotated_copy_recovers_rotation_and_masks(cohort):
    case = load_cohort(cohort)["SYN002"]
    atlas = case.load_image()
    target = _moved_copy(atlas, shift_mm=(5.0, 3.0, -4.0), rotation_deg=8.0)
    reg = register(target, atlas, deformable="bspline")
    # expected map: world -> target index -> same index on the atlas grid -> world
    points = _body_points(target)
    expected = atlas.index_to_world(target.world_to_index(points))
    mapped = np.array([reg.transform.TransformPoint(tuple(p)) for p in points])
    assert np.median(np.linalg.norm(mapped - expected, axis=1)) < min(atlas.spacing_mm)
    masks = [case.load_structure(n) for n in TWO]
    for mask, moved in zip(masks, propagate(masks, reg.transform, target)):
        assert dice(mask.array > 0, moved) >= 0.95


def test_identical_atlas_gives_its_own_masks_end_to_end(cohort, tmp_path):
    """Atlas cohort = one case; the target is a copy of its CT in another folder."""
    src = load_cohort(cohort)["SYN003"]
    image = src.load_image()
    atlas_dir = tmp_path / "atlases"
    write_case(atlas_dir, "A1", image, {n: src.load_structure(n) for n in TWO})
    target_dir = tmp_path / "targets"
    write_case(target_dir, "T1", image)
    seconds = predict_cohort(atlas_dir, target_dir, tmp_path / "out", k=1, deformable="none", structures=TWO)
    assert set(seconds) == {"T1"} and seconds["T1"] > 0
    for name in TWO:
        out = read_nifti(tmp_path / "out" / "T1" / "structures" / f"{name}.nii.gz")
        assert out.same_grid(image)
        assert dice(src.load_structure(name).array > 0, out.array > 0) >= 0.99
    record = json.loads((tmp_path / "out" / "T1" / "atlas.json").read_text())
    assert [a["patient_id"] for a in record["atlases"]] == ["A1"]
    assert record["fusion"] == "majority" and record["k"] == 1
    assert set(record["atlases"][0]["stages"]) == {"centroid", "rigid", "affine"}
    # the same CT: the rigid optimiser's first step is 4 mm and it stops within its minimum step, so
    # it ends a fraction of a working voxel from the identity; a sharp-edged phantom then gives NCC
    # ~0.99 (a failed registration gives far less)
    assert record["atlases"][0]["similarity_ncc"] > 0.98


def test_target_stored_ras_gives_the_same_world_result_as_lps(cohort):
    cases = load_cohort(cohort)
    lps = cases["SYN001"].load_image()
    assert lps.orientation == "LPS"
    n0, n1, _ = lps.shape
    ras = Volume(
        lps.array[::-1, ::-1, :].copy(),
        lps.spacing_mm,
        tuple(lps.index_to_world(np.array([n0 - 1, n1 - 1, 0]))),
        np.diag([-1.0, -1.0, 1.0]),
    )
    atlases = load_atlases(cohort, TWO)
    atlases = [a for a in atlases if a.patient_id != "SYN001"]
    a = predict_case(lps, atlases, k=1, deformable="none", structures=TWO).fused("majority")
    b = predict_case(ras, atlases, k=1, deformable="none", structures=TWO).fused("majority")
    for name in TWO:
        assert b[name].same_grid(ras)
        back = to_lps(b[name])
        assert back.same_grid(a[name])
        assert a[name].array.sum() > 100
        assert np.mean(back.array != a[name].array) < 1e-4  # identical up to float rounding


# --------------------------------------------------------------------------- fusion
def test_majority_vote_of_three_hand_made_masks():
    a = np.zeros((4, 4, 1), bool)
    b, c = a.copy(), a.copy()
    a[:2] = True  # rows 0-1
    b[1:3] = True  # rows 1-2
    c[:, :2] = True  # columns 0-1
    votes = a.astype(int) + b + c
    np.testing.assert_array_equal(majority_vote([a, b, c]), votes >= 2)
    assert majority_vote([a, b, c])[1, 3, 0] and not majority_vote([a, b, c])[3, 3, 0]


def test_majority_even_k_ties_follow_the_first_atlas():
    first = np.array([[[1, 1, 0, 0, 1]]], bool)
    second = np.array([[[1, 0, 1, 0, 1]]], bool)
    third = np.array([[[0, 1, 1, 0, 0]]], bool)
    fourth = np.array([[[0, 0, 0, 0, 1]]], bool)
    # votes: 2, 2, 2, 0, 3 -> ties (2 of 4) at 0, 1, 2 follow `first`: 1, 1, 0
    assert majority_vote([first, second, third, fourth]).astype(int).tolist() == [[[1, 1, 0, 0, 1]]]
    assert majority_vote([second, first, third, fourth]).astype(int).tolist() == [[[1, 0, 1, 0, 1]]]
    np.testing.assert_array_equal(majority_vote([second, first]), second)  # K=2: the best atlas


def test_staple_of_identical_masks_is_that_mask():
    mask = np.zeros((12, 10, 8), bool)
    mask[3:9, 2:7, 2:6] = True
    np.testing.assert_array_equal(staple([mask, mask, mask]), mask)
    assert not staple([np.zeros_like(mask)] * 3).any()  # all empty -> empty, not NaN


def test_staple_outvotes_a_single_outlier():
    mask = np.zeros((12, 10, 8), bool)
    mask[3:9, 2:7, 2:6] = True
    outlier = np.zeros_like(mask)
    outlier[0:2, 0:2, 0:2] = True
    np.testing.assert_array_equal(staple([mask, mask, mask, outlier]), mask)


# --------------------------------------------------------------------------- errors
def test_k_larger_than_atlas_count_is_a_clear_error_and_writes_nothing(cohort, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        predict_cohort(cohort, cohort / "SYN001" / "image.nii.gz", out, k=3, structures=TWO)
    message = str(info.value)
    # SYN001 is itself in the atlas cohort: it is excluded, leaving 2
    assert "K=3" in message and "2 usable atlases" in message and "--k between 1 and 2" in message
    assert not out.exists()


def test_unknown_options_are_input_errors(cohort, tmp_path):
    with pytest.raises(InputError, match="fusion must be one of majority, staple"):
        predict_cohort(cohort, cohort, tmp_path / "o", fusion="vote")
    with pytest.raises(InputError, match="deformable must be one of"):
        predict_cohort(cohort, cohort, tmp_path / "o", deformable="syn")
    assert not (tmp_path / "o").exists()


def test_failure_while_writing_leaves_no_partial_case(cohort, tmp_path, monkeypatch):
    calls = []

    def failing_write(volume, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(volume, path, **kwargs)

    real_write = atlas_mod.write_nifti
    monkeypatch.setattr(atlas_mod, "write_nifti", failing_write)
    atlases = [a for a in load_atlases(cohort, TWO) if a.patient_id != "SYN001"]
    image = load_cohort(cohort)["SYN001"].load_image()
    prediction = predict_case(image, atlases, k=1, deformable="none", structures=TWO)
    with pytest.raises(OSError, match="disk full"):
        atlas_mod.write_prediction(tmp_path / "out", "SYN001", prediction)
    assert list((tmp_path / "out").iterdir()) == []  # no case folder, no staging left behind


def test_cli_exit_code_2_on_bad_k(cohort, tmp_path):
    import typer
    from typer.testing import CliRunner

    from cervicontour.baselines.atlas_cli import atlas

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("atlas")(atlas)
    result = CliRunner().invoke(app, ["atlas", str(cohort), str(cohort), str(tmp_path / "o"), "--k", "9"])
    assert result.exit_code == 2, result.output
    assert "K=9" in result.output
    assert not (tmp_path / "o").exists()


def test_cli_runs_on_a_single_nifti_target(cohort, tmp_path):
    """The real command end to end: one atlas, one NIfTI target file, STAPLE, one structure."""
    import typer
    from typer.testing import CliRunner

    from cervicontour.baselines.atlas_cli import atlas

    src = load_cohort(cohort)["SYN003"]
    write_case(tmp_path / "atlases", "A1", src.load_image(), {"Bladder": src.load_structure("Bladder")})
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("atlas")(atlas)
    args = ["atlas", str(tmp_path / "atlases"), str(src.image_path), str(tmp_path / "o")]
    args += ["--k", "1", "--deformable", "none", "--fusion", "staple", "--structures", "bladder"]
    result = CliRunner().invoke(app, args)
    # the target file is not the atlas's file (a copy), so the atlas is usable
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "o" / "SYN003" / "structures").iterdir())
    assert written == ["Bladder.nii.gz"]
    record = json.loads((tmp_path / "o" / "SYN003" / "atlas.json").read_text())
    assert record["fusion"] == "staple" and record["structures"] == ["Bladder"]


def test_primary_is_the_default_structure_set():
    import inspect

    assert inspect.signature(predict_cohort).parameters["structures"].default == PRIMARY
