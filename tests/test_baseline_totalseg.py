"""TotalSegmentator baseline: guideline CTVn (vessels + 7 mm − bone/muscle + presacral strip) and Bladder.

Expected masks are derived by hand in world millimetres or by an independent brute-force distance
computation (scipy cKDTree over voxel centres), never from the baseline's own output.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data
from scipy.spatial import cKDTree

from cervicontour.baselines.totalseg import (
    PHANTOM_TO_TOTALSEG,
    TOTAL_V2,
    TotalSegLabels,
    guideline_ctvn,
    phantom_to_totalseg,
    predict_cohort,
    presacral_strip,
    run_baseline,
)
from cervicontour.errors import InputError
from cervicontour.io import read_nifti, write_nifti
from cervicontour.structures import STRUCTURES, Role
from cervicontour.volume import Volume, to_lps

ID = {name: label for label, name in TOTAL_V2.items()}


# ----------------------------------------------------------------------------------------- helpers
def _world(volume: Volume) -> np.ndarray:
    """(nx, ny, nz, 3) LPS mm of every voxel centre, computed straight from the affine."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), axis=-1)
    return volume.index_to_world(ijk)


def _restore(volume: Volume, order: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Volume:
    """The same voxels stored with permuted/flipped axes (the world position of every voxel kept)."""
    array = np.transpose(volume.array, order)
    direction = volume.direction[:, order].copy()
    spacing = tuple(volume.spacing_mm[a] for a in order)
    corner = np.zeros(3)
    for axis, flip in enumerate(flips):
        if flip:
            corner[order[axis]] = volume.shape[order[axis]] - 1
            array = np.flip(array, axis)
            direction[:, axis] *= -1
    return Volume(np.ascontiguousarray(array), spacing, tuple(volume.index_to_world(corner)), direction)


RAS = ((0, 1, 2), (True, True, False))
ODD = ((2, 0, 1), (False, True, True))  # axes stored S, L, P with two flips ("IRA")


def _label_map(grid: Volume, masks: dict[str, np.ndarray]) -> Volume:
    out = np.zeros(grid.shape, np.uint8)
    for name, mask in masks.items():
        out[mask] = ID[name]
    return grid.with_array(out)


def _labels(label_map: Volume) -> TotalSegLabels:
    """In-memory labels from a v2 label map (the file reader is tested through run_baseline)."""
    masks = {TOTAL_V2[v]: label_map.array == v for v in np.unique(label_map.array) if v in TOTAL_V2}
    return TotalSegLabels(label_map, masks, "test")


def _pelvis(spacing=(1.5, 2.0, 3.0), shape=(40, 36, 24)) -> tuple[Volume, dict[str, np.ndarray]]:
    """LPS box phantom: a vertical iliac 'artery' (radius 4 mm), a bone block, a muscle block, a bladder."""
    grid = Volume(np.zeros(shape, np.int16), spacing, (-30.0, -36.0, 0.0))
    x, y, z = np.moveaxis(_world(grid), -1, 0)
    masks = {
        "iliac_artery_left": x**2 + y**2 <= 16.0,
        "hip_left": (x >= 8) & (x <= 20) & (z <= 30),
        "iliopsoas_left": (x <= -6) & (x >= -14) & (y >= -2) & (y <= 2) & (z >= 40),
        "urinary_bladder": (np.abs(x) <= 6) & (y >= -34) & (y <= -26) & (z >= 6) & (z <= 18),
    }
    return grid, masks


# ------------------------------------------------------------------------- the rule, hand-derived
def test_ctvn_is_cylinder_plus_7mm_minus_bone_brute_force():
    grid, masks = _pelvis()
    result = guideline_ctvn(_labels(_label_map(grid, masks)))
    world = _world(grid).reshape(-1, 3)
    vessel = masks["iliac_artery_left"].ravel()
    distance, _ = cKDTree(world[vessel]).query(world)
    expected = (distance <= 7.0 + 1e-9) & ~masks["hip_left"].ravel() & ~masks["iliopsoas_left"].ravel()
    expected |= vessel
    assert np.array_equal(result.ctvn.array.ravel() != 0, expected)
    # Analytic: where there is neither bone nor muscle, each slice is the 7 mm parallel body of the
    # vessel's voxel centres, whose hull (on this 1.5 × 2 mm grid) is the polygon through
    # (±3, ±2), (±1.5, ±2), (0, ±4)... (area 36 mm²); Steiner's formula gives its parallel body.
    from scipy.spatial import ConvexHull

    free = slice(11, 13)  # z = 33, 36 mm: above the bone block, below the muscle
    xy = _world(grid)[..., 0, :2][masks["iliac_artery_left"][..., 0]]
    hull = ConvexHull(xy)
    steiner_mm2 = hull.volume + 7.0 * hull.area + np.pi * 7.0**2  # area + perimeter·r + π r²
    assert hull.volume == pytest.approx(36.0)
    area_mm2 = result.ctvn.array[:, :, free].sum() / 2 * 1.5 * 2.0
    assert area_mm2 == pytest.approx(steiner_mm2, rel=0.02)
    assert steiner_mm2 < np.pi * 11.0**2  # the continuous radius-4 cylinder would give π·11²
    assert not (result.ctvn.array.astype(bool) & masks["hip_left"]).any()
    assert np.array_equal(result.bladder.array != 0, masks["urinary_bladder"])
    vcc = grid.voxel_volume_cc
    assert result.report["volumes_cc"]["CTVn"] == pytest.approx(expected.sum() * vcc)
    assert result.report["rule"]["margin_mm"] == 7.0
    missing = {f.actual for f in result.findings if f.check == "totalseg.class_missing"}
    assert any("iliac_artery_right" in m for m in missing) and any("sacrum" in m for m in missing)


def _sacral_phantom() -> tuple[Volume, dict[str, np.ndarray], np.ndarray]:
    """Sacrum box x∈[-10,10], y∈[20,40], z∈[0,45) and S1 box above it z∈[45,60] mm (3 mm slices).

    21 sacral slices → one segment = ceil(21/5) = 5 slices; S1 starts at slice 15 (z = 45), so
    S1–S2 = slices 10..20 (z 30..60 mm). The anterior surface is y = 20; voxel centres 2.5 mm
    apart, so the 10 mm strip is y ∈ {10, 12.5, 15, 17.5}.
    """
    grid = Volume(np.zeros((21, 40, 30), np.int16), (2.0, 2.5, 3.0), (-20.0, -30.0, 0.0))
    x, y, z = np.moveaxis(_world(grid), -1, 0)
    box = (np.abs(x) <= 10) & (y >= 20) & (y <= 40)
    masks = {
        "sacrum": box & (z < 45), "vertebrae_S1": box & (z >= 45) & (z <= 60),
        "iliac_artery_left": (x - 14) ** 2 + (y + 20) ** 2 <= 4.0,
    }
    expected = (np.abs(x) <= 10) & (y >= 10) & (y < 20) & (z >= 30) & (z <= 60)
    return grid, masks, expected


def test_presacral_strip_is_10mm_anterior_to_s1_s2():
    grid, masks, expected = _sacral_phantom()
    strip, info = presacral_strip(_labels(_label_map(grid, masks)))
    assert np.array_equal(strip, expected)
    assert info["superior_inferior_mm"] == [30.0, 60.0] and info["slices"] == 11
    # Without the S1 label: the top 2/5 of the sacral slices (2 × 5 = 10 slices, z 33..60 mm).
    no_s1 = {"sacrum": masks["sacrum"] | masks["vertebrae_S1"], "iliac_artery_left": masks["iliac_artery_left"]}
    strip, info = presacral_strip(_labels(_label_map(grid, no_s1)))
    z = _world(grid)[..., 2]
    assert np.array_equal(strip, expected & (z >= 33))
    # In the CTVn: the strip is added, bone stays out.
    ctvn = guideline_ctvn(_labels(_label_map(grid, masks))).ctvn.array.astype(bool)
    assert (ctvn & expected).sum() == expected.sum()
    assert not (ctvn & (masks["sacrum"] | masks["vertebrae_S1"])).any()


@pytest.mark.parametrize("storage", [RAS, ODD], ids=["RAS", "IRA"])
def test_same_world_mask_whatever_the_storage_orientation(storage):
    grid, masks, _ = _sacral_phantom()
    x, y, z = np.moveaxis(_world(grid), -1, 0)
    masks["hip_right"] = (x <= -12) & (z <= 20)
    masks["urinary_bladder"] = (np.abs(x) <= 6) & (y <= -22)
    lps_map = _label_map(grid, masks)
    stored = _restore(lps_map, *storage)
    assert stored.orientation != "LPS"
    a, b = guideline_ctvn(_labels(lps_map)), guideline_ctvn(_labels(stored))
    for mine, theirs in ((a.ctvn, b.ctvn), (a.bladder, b.bladder)):
        back = to_lps(theirs)
        assert back.same_grid(mine) and np.array_equal(back.array, mine.array)
    assert a.report["volumes_cc"] == b.report["volumes_cc"]
    assert b.report["volumes_cc"]["presacral_strip"] > 0


def test_run_baseline_lps_and_ras_files_give_the_same_world_mask(tmp_path):
    grid, masks = _pelvis()
    ct = grid.with_array(np.full(grid.shape, 40, np.int16))
    outputs = {}
    for name, storage in (("lps", None), ("ras", RAS)):
        image, label_map = (ct, _label_map(grid, masks)) if storage is None else (
            _restore(ct, *storage), _restore(_label_map(grid, masks), *storage))
        write_nifti(image, tmp_path / f"{name}.nii.gz")
        write_nifti(label_map, tmp_path / f"{name}_seg.nii.gz")
        folder, _ = run_baseline(tmp_path / f"{name}.nii.gz", tmp_path / "out", ts_output=tmp_path / f"{name}_seg.nii.gz")
        ctvn = read_nifti(folder / "structures" / "CTVn.nii.gz")
        assert ctvn.same_grid(image)  # on the CT's exact grid
        outputs[name] = to_lps(ctvn)
        report = json.loads((folder / "totalseg_baseline.json").read_text())
        assert report["grid"]["orientation"] == name.upper() and report["labels"]["source"] == "multilabel"
    assert outputs["lps"].same_grid(outputs["ras"])
    assert np.array_equal(outputs["lps"].array, outputs["ras"].array)
    # Labels stored RAS for an LPS CT: put on the CT grid (nearest neighbour, exact here), and said so.
    folder, result = run_baseline(tmp_path / "lps.nii.gz", tmp_path / "mixed", ts_output=tmp_path / "ras_seg.nii.gz")
    assert np.array_equal(read_nifti(folder / "structures" / "CTVn.nii.gz").array, outputs["lps"].array)
    assert [f.check for f in result.findings if f.severity.value == "info"] == ["totalseg.resampled"]
    assert json.loads((folder / "totalseg_baseline.json").read_text())["findings"][0]["patient_id"] == "lps"


def test_para_aortic_up_to_the_top_of_the_chosen_vertebra():
    grid = Volume(np.zeros((30, 30, 40), np.int16), (2.0, 2.0, 3.0), (-30.0, -30.0, 0.0))
    x, y, z = np.moveaxis(_world(grid), -1, 0)
    masks = {
        "iliac_artery_left": ((x - 10) ** 2 + y**2 <= 9.0) & (z <= 30),
        "aorta": (x**2 + y**2 <= 16.0) & (z > 30),
        "vertebrae_L4": (np.abs(x) <= 10) & (y >= 15) & (z >= 54) & (z <= 78),
    }
    labels = _labels(_label_map(grid, masks))
    pelvic = guideline_ctvn(labels).ctvn.array.astype(bool)
    para = guideline_ctvn(labels, para_aortic=True, para_aortic_top="L4").ctvn.array.astype(bool)
    top = 78.0
    assert (para & masks["aorta"]).sum() == (masks["aorta"] & (z <= top)).sum()
    assert z[para].max() <= top and z[pelvic].max() == pytest.approx(36.0)  # 30 mm + 2 slices (6 ≤ 7 mm)
    assert not (pelvic & masks["aorta"] & (z > 40)).any()
    with pytest.raises(InputError, match="vertebrae_L2.*L4"):
        guideline_ctvn(labels, para_aortic=True, para_aortic_top="L2")
    with pytest.raises(InputError, match="expected one of"):
        guideline_ctvn(labels, para_aortic=True, para_aortic_top="C7")


# ------------------------------------------------------------------------------ inputs and errors
def test_missing_labels_are_clear_errors(tmp_path, monkeypatch):
    grid, masks = _pelvis()
    write_nifti(grid, tmp_path / "ct.nii.gz")
    no_vessels = {k: v for k, v in masks.items() if not k.startswith("iliac")}
    write_nifti(_label_map(grid, no_vessels), tmp_path / "seg.nii.gz")
    with pytest.raises(InputError, match="iliac vessels"):
        run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out", ts_output=tmp_path / "seg.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="per-class files"):
        run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out", ts_output=tmp_path / "empty")
    with pytest.raises(InputError, match="neither"):
        run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out", ts_output=tmp_path / "nope.nii.gz")
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)  # not installed, whatever this machine has
    with pytest.raises(InputError, match="not installed.*--ts-output"):
        run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out")


def test_per_class_folder_and_missing_bladder(tmp_path):
    grid, masks = _pelvis()
    write_nifti(grid, tmp_path / "ct.nii.gz")
    folder = tmp_path / "ts"
    for name, mask in masks.items():
        if name != "urinary_bladder":
            write_nifti(grid.with_array(mask.astype(np.uint8)), folder / f"{name}.nii.gz")
    out, result = run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out", ts_output=folder, patient_id="p1")
    assert out == tmp_path / "out" / "p1"
    assert not read_nifti(out / "structures" / "Bladder.nii.gz").array.any()
    assert any(f.check == "totalseg.class_missing" and f.structure == "Bladder" for f in result.findings)
    report = json.loads((out / "totalseg_baseline.json").read_text())
    assert report["labels"]["source"] == "folder" and "urinary_bladder" in report["labels"]["classes_missing"]
    assert np.array_equal(read_nifti(out / "structures" / "CTVn.nii.gz").array, result.ctvn.array)


def _fake_totalsegmentator(monkeypatch, grid, masks, calls, *, weights_dir=None):
    """Inject a stand-in `totalsegmentator.python_api` that writes a per-class folder (wiring only)."""
    package = types.ModuleType("totalsegmentator")
    package.__path__ = []  # a package, so `totalsegmentator.config` is looked up (and, absent, fails)
    api = types.ModuleType("totalsegmentator.python_api")

    def totalsegmentator(input, output, **kwargs):  # TotalSegmentator's own argument names
        calls.append({"input": input, "output": output, **kwargs})
        for name, mask in masks.items():
            if name in kwargs["roi_subset"]:
                write_nifti(grid.with_array(mask.astype(np.uint8)), Path(output) / f"{name}.nii.gz")

    api.totalsegmentator = totalsegmentator
    monkeypatch.setitem(sys.modules, "totalsegmentator", package)
    monkeypatch.setitem(sys.modules, "totalsegmentator.python_api", api)
    if weights_dir is not None:
        config = types.ModuleType("totalsegmentator.config")
        config.get_weights_dir = lambda: weights_dir
        monkeypatch.setitem(sys.modules, "totalsegmentator.config", config)
    else:
        monkeypatch.setitem(sys.modules, "totalsegmentator.config", None)


def test_python_api_path_with_a_fake_totalsegmentator(tmp_path, monkeypatch):
    """Tests the wiring only: the real TotalSegmentator and its weights are not installed here."""
    grid, masks = _pelvis()
    write_nifti(grid, tmp_path / "ct.nii.gz")
    calls: list[dict] = []
    _fake_totalsegmentator(monkeypatch, grid, masks, calls)
    out, result = run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out")
    assert len(calls) == 1 and Path(calls[0]["input"]) == tmp_path / "ct.nii.gz"
    assert calls[0]["ml"] is False and calls[0]["fast"] is True and calls[0]["task"] == "total"
    assert {"urinary_bladder", "iliac_artery_left", "hip_left", "sacrum"} <= set(calls[0]["roi_subset"])
    assert Path(calls[0]["output"]) == out / "totalsegmentator"
    assert result.report["labels"]["source"] == "api"
    reference = guideline_ctvn(_labels(_label_map(grid, masks)))
    assert np.array_equal(read_nifti(out / "structures" / "CTVn.nii.gz").array, reference.ctvn.array)


def test_missing_weights_are_an_input_error(tmp_path, monkeypatch):
    grid, masks = _pelvis()
    write_nifti(grid, tmp_path / "ct.nii.gz")
    (tmp_path / "weights").mkdir()
    calls: list[dict] = []
    _fake_totalsegmentator(monkeypatch, grid, masks, calls, weights_dir=tmp_path / "weights")
    with pytest.raises(InputError, match="Dataset297.*--ts-output"):
        run_baseline(tmp_path / "ct.nii.gz", tmp_path / "out")
    assert not calls


def test_cli_exit_codes(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from cervicontour.baselines.totalseg_cli import totalseg

    app = typer.Typer()
    app.command()(totalseg)
    grid, masks = _pelvis()
    write_nifti(grid, tmp_path / "ct.nii.gz")
    write_nifti(_label_map(grid, masks), tmp_path / "seg.nii.gz")
    ok = CliRunner().invoke(app, [str(tmp_path / "ct.nii.gz"), str(tmp_path / "out"), "--ts-output", str(tmp_path / "seg.nii.gz")])
    assert ok.exit_code == 0, ok.output
    assert "CTVn" in ok.output and (tmp_path / "out" / "ct" / "structures" / "CTVn.nii.gz").is_file()
    monkeypatch.setitem(sys.modules, "totalsegmentator", None)
    bad = CliRunner().invoke(app, [str(tmp_path / "ct.nii.gz"), str(tmp_path / "out2")])
    assert bad.exit_code == 2 and "--ts-output" in bad.output


# --------------------------------------------------------------------------- phantom (oracle) path
def test_every_phantom_vessel_bone_and_muscle_has_a_totalsegmentator_class():
    anatomy = [s.name for s in STRUCTURES.values() if s.role is Role.ANATOMY]
    wanted = [n for n in anatomy if n.startswith(("A_", "V_", "VB_", "Musc_", "Femur_", "Sacrum"))]
    assert wanted and all(n in PHANTOM_TO_TOTALSEG for n in wanted)
    grid = Volume(np.zeros((10, 4, 4), np.uint8), (2.0, 2.0, 2.0), (-9.0, 0.0, 0.0))
    x = _world(grid)[..., 0]
    masks = {"Bone_Pelvic": grid.with_array((np.abs(x) > 4).astype(np.uint8)),
             "A_Iliac_Int_L": grid.with_array((x == 1).astype(np.uint8)),
             "A_Iliac_Ext_L": grid.with_array((x == 3).astype(np.uint8))}
    ts = phantom_to_totalseg(masks)
    assert np.array_equal(ts["hip_left"], x > 4) and np.array_equal(ts["hip_right"], x < -4)  # LPS +x = left
    assert np.array_equal(ts["iliac_artery_left"], (x == 1) | (x == 3))


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Path:
    from cervicontour.synth import synthesize_cohort

    return synthesize_cohort(tmp_path_factory.mktemp("ts") / "c", patients=2, holdout=1, seed=7, size="small")


def test_predict_cohort_oracle_on_phantoms(tiny_cohort, tmp_path):
    from cervicontour.cohort import load_cohort

    cohort = load_cohort(tiny_cohort)
    seconds = predict_cohort(tiny_cohort, tmp_path / "pred", para_aortic=None)
    assert sorted(seconds) == sorted(c.patient_id for c in cohort.labelled())  # the hold-out is skipped
    for pid in seconds:
        case = cohort[pid]
        ctvn = read_nifti(tmp_path / "pred" / pid / "structures" / "CTVn.nii.gz")
        assert ctvn.same_grid(case.load_image())
        inside = ctvn.array.astype(bool)
        for name in ("A_Iliac_Ext_L", "V_Iliac_Int_R", "A_Iliac_Cm_L"):
            assert np.all(inside[case.load_structure(name).array != 0])
        for name in ("Sacrum", "Bone_Pelvic", "Femur_Head_L"):
            assert not np.any(inside & (case.load_structure(name).array != 0))
        report = json.loads((tmp_path / "pred" / pid / "totalseg_baseline.json").read_text())
        assert report["labels"]["source"] == "phantom"
        assert report["rule"]["para_aortic"] == case.has("LN_ParaAortic")


# --------------------------------------------------------------------------------------- real data
def test_real_ct_guideline_ctvn(tmp_path):
    folder = real_data("totalsegmentator")
    shipped = json.loads((folder / "label_map_total_v2.json").read_text())
    shipped = next(iter(shipped.values()))
    assert all(shipped[str(label)] == name for label, name in TOTAL_V2.items())  # embedded map = shipped map
    out, result = run_baseline(folder / "example_ct.nii.gz", tmp_path, ts_output=folder / "example_seg_fast_force_split.nii.gz")
    seg = read_nifti(folder / "example_seg_fast_force_split.nii.gz").array
    ctvn = read_nifti(out / "structures" / "CTVn.nii.gz")
    assert ctvn.same_grid(read_nifti(folder / "example_ct.nii.gz")) and ctvn.orientation == "RAS"
    inside = ctvn.array.astype(bool)
    vessels = np.isin(seg, [ID[n] for n in ("iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right")])
    bone = np.isin(seg, [ID[n] for n in TOTAL_V2.values() if n.startswith(("hip_", "femur_", "sacrum", "vertebrae_"))])
    assert vessels.any() and np.all(inside[vessels]) and not np.any(inside & bone)
    volume_cc = result.report["volumes_cc"]["CTVn"]
    assert result.report["volumes_cc"]["vessels"] < volume_cc < 3000  # sanity only, the value is reported
    assert result.report["volumes_cc"]["presacral_strip"] > 0
    assert np.array_equal(read_nifti(out / "structures" / "Bladder.nii.gz").array != 0, seg == ID["urinary_bladder"])
    print(f"real CT guideline CTVn: {volume_cc:.1f} cc")
