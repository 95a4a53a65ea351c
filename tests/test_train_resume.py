"""Training: run directory contents, and SIGKILL + resume = the uninterrupted run, bit for bit."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

torch = pytest.importorskip("torch")


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_run_directory_holds_config_hash_plan_log_curves_and_model(tiny_cohort, tmp_path):
    from cervicontour.training.train import train
    from cervicontour.training.train_config import load_config

    config = TINY.replace(steps=4, folds=2, val_every=2, val_cases=1)
    result = train(tiny_cohort, tmp_path / "run", config)
    run = tmp_path / "run"
    for name in ("config.toml", "run.json", "plan.json", "log.csv", "curves.png", "checkpoint_last.pt", "model.pt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["config_sha256"] == config.sha256()
    assert load_config(run / "config.toml") == config  # the stored config re-reads to the same config
    assert (run / "config.toml").read_text().splitlines()[0].endswith(config.sha256())
    rows = list(csv.DictReader((run / "log.csv").open()))
    assert [int(r["step"]) for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [int(r["step"]) for r in rows if r["kind"] == "val"] == [2, 4]
    assert set(info["validation"]["dice"]) == set(config.structures)
    assert result.steps_done == 4 and (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(Exception, match="--resume"):
        train(tiny_cohort, run, config)
    # run.json is a typed record: the file read back field for field, a legacy one (no schema) too,
    # a foreign one refused
    from cervicontour.errors import InputError
    from cervicontour.training.run_files import RUN_SCHEMA, read_run_record

    record = read_run_record(run)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN Dice compares as text)
    assert info["schema"] == record.schema == RUN_SCHEMA and same(record.to_dict(), info)
    patients = {p.parent.name for p in Path(tiny_cohort).glob("*/image.nii.gz")}
    assert record.steps_done == 4 and not set(record.train_cases) & set(record.val_cases) and {*record.train_cases, *record.val_cases} <= patients
    legacy = {k: v for k, v in info.items() if k != "schema"}
    (run / "run.json").write_text(json.dumps(legacy))
    assert same(read_run_record(run).to_dict(), info)
    for foreign in ({**info, "schema": "cervicontour-run/2"}, {**info, "surprise": 1}, {k: v for k, v in info.items() if k != "config"}):
        (run / "run.json").write_text(json.dumps(foreign))
        with pytest.raises(InputError, match="schema|not in a|not a run record"):
            read_run_record(run)


def test_sigkill_then_resume_ends_with_identical_weights(tiny_cohort, tmp_path):
    from cervicontour.training.train import train

    config = TINY.replace(steps=7, checkpoint_every=2)
    straight = train(tiny_cohort, tmp_path / "straight", config)

    killed = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        from cervicontour.training.train import train
        from cervicontour.training.train_config import TrainConfig
        from cervicontour.training.train_config import config_from_dict
        import json
        config = config_from_dict(json.loads({json.dumps(json.dumps(config.to_dict()))}))
        def bomb(step, total, loss, val):
            if step == 5:  # checkpoint at 4, step 5 done but not saved: the worst moment
                os.kill(os.getpid(), signal.SIGKILL)
        train({str(tiny_cohort)!r}, {str(killed)!r}, config, on_progress=bomb)
    """)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (killed / "model.pt").exists()
    assert torch.load(killed / "checkpoint_last.pt", weights_only=False)["step"] == 4

    resumed = train(tiny_cohort, killed, resume=True)
    assert resumed.steps_done == 7
    assert resumed.weights_sha256 == straight.weights_sha256
    a, b = _state(tmp_path / "straight" / "model.pt"), _state(killed / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [int(r["step"]) for r in csv.DictReader((killed / "log.csv").open()) if r["kind"] == "train"]
    assert steps == list(range(1, 8))  # the killed run's lost step 5 is not logged twice


def test_resume_without_a_checkpoint_says_what_to_do(tiny_cohort, tmp_path):
    from cervicontour.errors import InputError
    from cervicontour.training.train import train

    with pytest.raises(InputError, match="without --resume"):
        train(tiny_cohort, tmp_path / "none", TINY, resume=True)


def test_max_minutes_stops_early_and_still_writes_a_model(tiny_cohort, tmp_path):
    from cervicontour.training.train import train

    result = train(tiny_cohort, tmp_path / "run", TINY.replace(steps=10_000, max_minutes=0.0))
    assert result.stopped_by_time and result.steps_done == 0
    assert (tmp_path / "run" / "model.pt").is_file()
