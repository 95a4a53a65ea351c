"""The real CLI end to end on a tiny cohort: train → predict → evaluate (like nnU-Net's CI)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_helpers import lift_head, tiny_cohort  # noqa: F401 (fixture)

pytest.importorskip("torch")
EXE = str(Path(sys.executable).parent / "cervicontour")
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "COLUMNS": "200"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=ENV, timeout=600)


def test_train_predict_evaluate_with_the_real_commands(tiny_cohort, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('network = "tiny"\npatch_budget_voxels = 16384\nfolds = 2\nval_every = 2\nval_cases = 1\nthreads = 1\n')
    run = tmp_path / "run"
    proc = _run("train", str(tiny_cohort), "--out", str(run), "--config", str(config), "--steps", "2", "--seed", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "validation Dice" in proc.stdout and (run / "model.pt").is_file()
    assert json.loads((run / "run.json").read_text())["config"]["seed"] == 5

    pred = tmp_path / "pred"
    proc = _run("predict", str(tiny_cohort), "--out", str(pred), "--model", str(run), "--all")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in pred.iterdir()) == ["SYN001", "SYN002", "SYN003", "SYN004", "SYN005"]
    assert "review closely" in proc.stdout

    metrics = tmp_path / "m.csv"
    proc = _run("evaluate", "--pred", str(pred), "--ref", str(tiny_cohort), "--out", str(metrics))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(metrics.open()))
    assert len(rows) == 4 * 5  # 4 labelled patients × the primary five


def test_bad_model_and_resume_requests_exit_2_with_a_message(tiny_cohort, tmp_path):
    proc = _run("predict", str(tiny_cohort), "--out", str(tmp_path / "o"), "--model", str(tmp_path))
    assert proc.returncode == 2 and "no model.pt" in proc.stderr
    proc = _run("train", str(tiny_cohort), "--out", str(tmp_path / "r"), "--resume")
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


@pytest.mark.slow
def test_demo_with_the_shipped_model(tmp_path):
    from cervicontour.errors import InputError
    from cervicontour.models import default_model_path

    try:
        default_model_path()
    except InputError as exc:
        pytest.skip(str(exc))
    proc = _run("demo", str(tmp_path / "demo"), "--patients", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "demo" / "report.html").is_file() and "Dice" in proc.stdout


@pytest.mark.slow  # ~55 s; fit's refiner stage (tests/test_fit.py) covers the second stage in make test
def test_refine_trains_a_second_stage_that_predict_uses(tiny_cohort, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text('network = "tiny"\npatch_budget_voxels = 16384\nfolds = 2\nval_every = 2\nval_cases = 1\nthreads = 1\n')
    run = tmp_path / "run"
    assert _run("train", str(tiny_cohort), "--out", str(run), "--config", str(config), "--steps", "2").returncode == 0
    lift_head(run, "CTVn", run / "model.pt")  # so that stage 1 finds a CTVn for the refiner to work on
    refined = tmp_path / "refined"
    proc = _run("refine", str(tiny_cohort), "--model", str(run), "--out", str(refined), "--steps", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((refined / "refiner.json").read_text())
    split = json.loads((run / "run.json").read_text())
    assert record["steps"] == 3 and record["val_patients"] == split["val_cases"]  # the stage-1 run's own split
    assert set(record["train_patients"]) == set(split["train_cases"])
    pred = tmp_path / "pred"
    proc = _run("predict", str(tiny_cohort), "--out", str(pred), "--model", str(refined), "--all")
    assert proc.returncode == 0, proc.stderr[-2000:]
    prediction = json.loads((pred / "SYN004" / "prediction.json").read_text())
    assert prediction["model"]["refined"] == ["CTVn"] and "refine" in prediction["timings_s"]
    # a second run into the same folder is refused before any work, and writes nothing
    proc = _run("refine", str(tiny_cohort), "--model", str(run), "--out", str(refined), "--steps", "3")
    assert proc.returncode == 2 and "not empty" in proc.stderr
