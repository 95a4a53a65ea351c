"""`make demo-fit`: the hospital's day (examples/hospital_day.sh) run as written, on a smaller cohort and
a tiny fit budget, and every output it promises opened: the drafts, the CT series and RTSTRUCTs (re-imported
onto the series), the composed CTVn, the model card, the evaluation, and the review page on the drafts."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "hospital_day.sh"
FIVE = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")
PATIENTS = 6  # labelled; hold-out SYN007 and SYN008
NEW = ("SYN007", "SYN008")
TOKEN = "demo-fit-token-0123456789"


def test_make_demo_fit_runs_the_script():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "demo-fit", "DEMO_FIT_DIR=somewhere"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "bash examples/hospital_day.sh somewhere" in dry.stdout


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo_fit") / "day"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DEMO_FIT_BUDGET_MINUTES": "0.5",
           "DEMO_FIT_PATIENTS": str(PATIENTS), "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
    run = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out, run.stdout + run.stderr


@pytest.mark.slow
def test_every_command_is_printed_with_what_it_writes_and_its_wall_time(day):
    out, log = day
    for command in ("synth", "validate", "clean", "fit", "predict", "compose", "rtstruct export", "evaluate"):
        assert f"$ cervicontour {command} " in log, command
    for command in ("synth", "validate", "clean", "fit", "predict", "evaluate"):  # each over a second
        assert re.search(rf"^cervicontour {command}: .* wall$", log, re.MULTILINE), command
    assert f"cervicontour review {out}/drafts" in log  # how to open the review page
    assert "stage1: " in log and " left)" in log  # fit's stages with an estimate of the time left


@pytest.mark.slow
def test_the_cohort_is_the_hospitals_five_masks_and_it_validates(day):
    out, _ = day
    assert not list((out / "hospital").glob("*/structures/sub")) and not list((out / "clean").glob("*/structures/sub"))
    assert sorted(p.stem.split(".")[0] for p in (out / "clean" / "SYN001" / "structures").iterdir()) == sorted(FIVE)
    assert json.loads((out / "validation.json").read_text())["counts"]["error"] == 0 and (out / "validation.html").is_file()


@pytest.mark.slow
def test_the_model_card(day):
    """The card is of this day's fit: the script's budget, the five masks, fitted and validated on
    labelled patients only (SYN001..SYN006; the hold-out SYN007, SYN008 never), train and validation apart."""
    out, _ = day
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["schema"] == "cervicontour-card/1" and card["budget_minutes"] == 0.5
    data = card["data"]
    assert sorted(data["structures"]) == sorted(FIVE)
    train, val = set(data["train_patients"]), set(data["val_patients"])
    assert train and val and not train & val
    assert train | val <= {f"SYN{i:03d}" for i in range(1, PATIENTS + 1)}
    assert (out / "model" / "card.md").read_text().strip() and (out / "model" / "model.pt").is_file()


@pytest.mark.slow
def test_drafts_series_and_rtstructs_open(day):
    """Each hold-out CT: five drafts, its CT/ series holding the NIfTI's voxels (re-indexed to L, P, S:
    every fourth phantom is stored RAS), RS.dcm on that series re-imported to its drafts (Dice >= 0.98);
    RS_final.dcm carries the composed CTVn."""
    pytest.importorskip("pydicom")
    from cervicontour.export.rtstruct_import import read_rtstruct
    from cervicontour.io import read_nifti, read_volume
    from cervicontour.volume import to_lps

    out, _ = day
    for pid in NEW:
        case = out / "drafts" / pid
        record = json.loads((case / "prediction.json").read_text())
        series = read_volume(case / "CT")
        image = to_lps(read_volume(Path(record["input"]["path"])))
        assert series.shape == image.shape and np.allclose(series.origin_mm, image.origin_mm)
        np.testing.assert_array_equal(series.array, image.array)
        assert (case / "report" / "index.html").is_file()
        for name in ("RS.dcm", "RS_final.dcm") if pid == NEW[0] else ("RS.dcm",):
            rois = {roi.name: roi.mask for roi in read_rtstruct(case / name, series).rois}
            assert set(FIVE) <= set(rois), (pid, name, sorted(rois))
            for structure in FIVE:
                path = case / "structures" / f"{structure}.nii.gz"
                if name == "RS.dcm" and structure == "CTVn" and pid == NEW[0]:
                    path = next((case / "history").glob("*/CTVn.nii.gz"))  # RS.dcm: before the choice
                draft = to_lps(read_nifti(path)).array != 0
                total = np.count_nonzero(rois[structure]) + np.count_nonzero(draft)
                dice = 2 * np.count_nonzero(rois[structure] & draft) / total if total else 1.0
                assert dice >= 0.98, (pid, name, structure, dice)

    case = out / "drafts" / NEW[0]  # CTVn composed from the chosen groups (+ GTVn, always, when drafted)
    sub = case / "structures" / "sub"
    chosen = ["LN_Pelvic", "LN_CommonIliac", "LN_ParaAortic"] + (["GTVn"] if (sub / "GTVn.nii.gz").is_file() else [])
    union = np.any([read_nifti(sub / f"{n}.nii.gz").array != 0 for n in chosen], axis=0)
    np.testing.assert_array_equal(read_nifti(case / "structures" / "CTVn.nii.gz").array != 0, union)
    log = [json.loads(line) for line in (case / "compose_log.jsonl").read_text().splitlines()]
    assert log[-1]["action"] == "compose" and log[-1]["who"] == "demo" and "LN_ParaAortic" in log[-1]["used"]


@pytest.mark.slow
def test_the_evaluation(day):
    out, _ = day
    with (out / "test_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["patient_id"] for r in rows} == {"SYN001", "SYN002"} and set(FIVE) <= {r["structure"] for r in rows}
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert (out / "test_report.html").is_file() and (out / "test_metrics_summary.csv").is_file()


@pytest.mark.slow
def test_the_review_page_lists_the_days_cases_and_exports_their_rtstruct(day):
    """The review app (FastAPI TestClient) on the drafts folder the script names: both new patients
    listed, their CT and drafts served, and an accepted draft exported on the case's CT/ series."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pydicom = pytest.importorskip("pydicom")
    from fastapi.testclient import TestClient

    from cervicontour.review.server import create_app

    out, _ = day
    drafts = out / "drafts"
    client = TestClient(create_app(drafts, token=TOKEN), headers={"X-Review-Token": TOKEN})
    assert [c["patient_id"] for c in client.get("/api/cases").json()["cases"]] == list(NEW)
    for pid in NEW:
        summary = client.get(f"/api/cases/{pid}").json()
        assert summary["ct"] and set(FIVE) <= {m["name"] for m in summary["masks"] if m["kind"] == "draft"}
        assert client.get(f"/api/cases/{pid}/ct.nii.gz").status_code == 200
        assert client.get(f"/api/cases/{pid}/masks/structures/CTVn.nii.gz").status_code == 200
    pid = NEW[1]
    slices = {p.name: p.read_bytes() for p in (drafts / pid / "CT").iterdir()}
    decisions = {"structures/Bladder.nii.gz": {"decision": "accept"}}
    assert client.post(f"/api/cases/{pid}/decisions", json={"reviewer": "dr.demo", "decisions": decisions}).status_code == 200
    response = client.post(f"/api/cases/{pid}/rtstruct", json={"reviewer": "dr.demo"})
    assert response.status_code == 200, response.text
    assert {p.name: p.read_bytes() for p in (drafts / pid / "CT").iterdir()} == slices  # the series predict wrote, not a new one
    ds = pydicom.dcmread(drafts / pid / response.json()["path"])
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Bladder"]
