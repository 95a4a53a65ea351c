"""The resumable nnU-Net curve run: its configuration, record, stop rule, clock and planner flags.

No training here; the values are derived by hand. The end-to-end run (plan, train, kill, resume) is
``test_curve_run_resumes_after_a_kill`` (slow, needs nnunetv2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from cervicontour.baselines.nnunet_curve import (
    SCHEMA,
    CurveConfig,
    _exclusive,
    evaluation_due,
    learned,
    new_curve,
    read_curve,
    run_curve,
    stop_reason,
    write_curve,
)
from cervicontour.baselines.nnunet_run import CPU_PLAN, PlanOptions
from cervicontour.baselines.nnunet_trainer import CPU_KEY, training_clock
from cervicontour.errors import InputError


def _point(cpu_s: float, bladder: float) -> dict:
    return {"train_cpu_s": cpu_s, "dice": {"Bladder": {"mean": bladder, "cases": {}}}}


# --------------------------------------------------------------------------- configuration
def test_default_schedule_is_nnunets_per_iteration():
    # nnU-Net: 1000 epochs × 250 iterations; 50 iterations per epoch → 5000 epochs
    assert CurveConfig().epochs == 5000
    assert CurveConfig(iterations_per_epoch=250).epochs == 1000
    assert CurveConfig(iterations_per_epoch=300).epochs == 834  # ceil(250000 / 300)
    assert CurveConfig(num_epochs=7).epochs == 7


def test_config_round_trips_and_its_hash_follows_every_field():
    config = CurveConfig(structures=["Bladder"], train_patients=10)
    again = CurveConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config and again.structures == ("Bladder",)
    assert again.digest() == config.digest() != CurveConfig(structures=("Bladder",), train_patients=11).digest()


def test_config_refuses_unknown_keys_and_a_stop_structure_not_exported():
    with pytest.raises(InputError, match="unknown keys.*'epoch'"):
        CurveConfig.from_json({"epoch": 3})
    with pytest.raises(InputError, match="'Bladder' is not among the exported"):
        CurveConfig(structures=("Anorectum",))


# --------------------------------------------------------------------------- stop rule and cadence
def test_stop_when_the_structure_passes_the_threshold_or_the_cpu_is_spent():
    config = CurveConfig(stop_dice=0.8, stop_cpu_s=1000)
    assert stop_reason({"points": []}, config) is None
    assert stop_reason({"points": [_point(500, 0.80)]}, config) is None  # not strictly above
    assert stop_reason({"points": [_point(500, 0.801)]}, config).startswith("Bladder mean validation Dice 0.801 > 0.8")
    assert stop_reason({"points": [_point(1000, 0.1)]}, config).startswith("1000 s training CPU ≥ 1000 s")
    assert stop_reason({"points": [_point(500, 0.9), _point(900, 0.5)]}, config) is None  # the last point decides


def test_a_point_is_due_every_interval_and_once_at_the_budget():
    config = CurveConfig(eval_every_cpu_s=600, stop_cpu_s=1000)
    empty = {"points": []}
    assert not evaluation_due(empty, config, 599.9) and evaluation_due(empty, config, 600)
    after = {"points": [_point(600, 0.0)]}
    assert not evaluation_due(after, config, 999)
    assert evaluation_due(after, config, 1000)  # the budget is reached: a last point
    assert not evaluation_due({"points": [_point(1000, 0.0)]}, config, 1010)


def test_a_gpu_run_uses_nnunets_plan_and_is_paced_by_wall_time():
    gpu = CurveConfig(plan="default", device="cuda", eval_every_cpu_s=120, stop_cpu_s=480)
    assert gpu.to_json()["plan"] == "default" and gpu.to_json()["device"] == "cuda"
    assert CurveConfig.from_json(gpu.to_json()) == gpu and gpu.digest() != CurveConfig(eval_every_cpu_s=120, stop_cpu_s=480).digest()
    # a CPU configuration stores neither key: the hash of a run made before they existed is unchanged
    assert "plan" not in CurveConfig().to_json() and "device" not in CurveConfig().to_json()
    legacy = {k: v for k, v in CurveConfig().to_json().items()}
    assert CurveConfig.from_json(legacy).digest() == CurveConfig().digest()
    # points carry CPU and wall seconds; on CUDA the wall seconds decide
    point = {"train_cpu_s": 50.0, "train_wall_s": 130.0, "dice": {"Bladder": {"mean": 0.3}}}
    assert evaluation_due({"points": []}, gpu, 120.0) and not evaluation_due({"points": [point]}, gpu, 240.0)
    assert evaluation_due({"points": [point]}, gpu, 250.0)
    assert stop_reason({"points": [dict(point, train_wall_s=480.0)]}, gpu).startswith("480 s training wall time ≥ 480 s")
    assert stop_reason({"points": [point]}, CurveConfig(stop_cpu_s=50)).startswith("50 s training CPU")
    with pytest.raises(InputError, match="plan must be 'cpu' or 'default'"):
        CurveConfig(plan="gpu")
    with pytest.raises(InputError, match="device 'cpu' or 'cuda'"):
        CurveConfig(device="mps")


def test_learned_means_some_point_reached_the_floor():
    assert not learned({"points": []}, "Bladder")
    assert not learned({"points": [_point(600, 0.49)]}, "Bladder")
    assert learned({"points": [_point(600, 0.5), _point(1200, 0.2)]}, "Bladder")  # reached once
    assert learned({"points": [_point(600, 0.3)]}, "Bladder", min_dice=0.25)


def test_a_work_folder_in_use_is_refused_before_anything_is_written(tmp_path):
    with _exclusive(tmp_path / ".lock"):
        with pytest.raises(InputError, match="in use by another curve run"):
            run_curve(CurveConfig(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # no config.json, no data


# --------------------------------------------------------------------------- the record
def test_curve_record_round_trips_and_refuses_another_schema(tmp_path, monkeypatch):
    config = CurveConfig()
    record = new_curve(config, {"patch_size": [40, 64, 56]})
    record["points"].append(_point(12.5, 0.25))
    path = tmp_path / "curve.json"
    write_curve(path, record)
    back = read_curve(path)
    assert back["schema"] == SCHEMA and back["points"] == [_point(12.5, 0.25)]
    assert back["config_sha256"] == config.digest() and "seed 2002 N=20" in back["data"]
    # written through a temporary file renamed onto the curve: a write that fails there leaves the
    # previous curve whole and no temporary file behind
    def disk_full(*args):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr("cervicontour.io.atomic.os.replace", disk_full)
        with pytest.raises(OSError, match="disk full"):
            write_curve(path, {**record, "points": []})
    assert read_curve(path)["points"] == [_point(12.5, 0.25)]
    assert [p.name for p in tmp_path.iterdir()] == ["curve.json"]
    path.write_text(json.dumps({**back, "schema": "other/1"}))
    with pytest.raises(InputError, match="expected 'cervicontour-nnunet-curve/1'"):
        read_curve(path)


# --------------------------------------------------------------------------- clock and planner flags
def test_training_clock_sums_the_finished_epochs():
    logged = {"epoch_start_timestamps": [100.0, 160.0, 230.0], "epoch_end_timestamps": [150.0, 220.0], CPU_KEY: [40.0, 65.0]}
    logger = SimpleNamespace(get_value=lambda key, step: logged[key], local_logger=SimpleNamespace(my_fantastic_logging=logged))
    clock = training_clock(SimpleNamespace(logger=logger, num_iterations_per_epoch=50))
    # epoch 2 started but did not finish: only (150-100) + (220-160) wall, 40 + 65 CPU
    assert clock == {"epochs": 2, "iterations": 100, "wall_s": 110.0, "cpu_s": 105.0}


def test_planner_flags_are_nnunets_own():
    assert PlanOptions().planner_args() == []
    assert CPU_PLAN.planner_args() == ["-gpu_memory_target", "0.5", "-overwrite_target_spacing", "4.0", "4.0", "4.0",
                                       "-overwrite_plans_name", "nnUNetPlans_cpu"]  # fmt: skip


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_curve_run_resumes_after_a_kill(tmp_path):
    """Tiny run (2 training phantoms, Bladder, 2 iterations per epoch): killed after its first
    checkpoint, then resumed; the resumed run continues the epochs and the curve."""
    pytest.importorskip("nnunetv2")
    work, curve = tmp_path / "work", tmp_path / "curve.json"
    config = dict(structures=["Bladder"], train_patients=2, val_patients=1, test_patients=1, dataset_id=990,
                  iterations_per_epoch=2, num_epochs=50, eval_every_cpu_s=0.0, stop_cpu_s=1e9, stop_dice=2.0)  # fmt: skip
    script = ("import json, sys; from cervicontour.baselines.nnunet_curve import CurveConfig, run_curve; "
              "run_curve(CurveConfig.from_json(json.loads(sys.argv[1])), sys.argv[2], sys.argv[3])")  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(config), str(work), str(curve)], env=env, start_new_session=True)
    deadline = time.time() + 1200
    while time.time() < deadline and not (curve.is_file() and len(read_curve(curve)["points"]) >= 2):
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_curve(curve)["points"]
    assert len(first) >= 2 and [p["epoch"] for p in first] == list(range(1, len(first) + 1))
    resumed = dict(config, num_epochs=None)  # another configuration is refused
    with pytest.raises(InputError, match="another configuration"):
        from cervicontour.baselines.nnunet_curve import run_curve

        run_curve(CurveConfig.from_json(resumed), work, curve)
    # the same configuration resumes
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(config), str(work), str(curve)], env=env, start_new_session=True)
    while time.time() < deadline and len(read_curve(curve)["points"]) < len(first) + 1:
        time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    points = read_curve(curve)["points"]
    assert points[: len(first)] == first
    assert points[len(first)]["epoch"] > first[-1]["epoch"]  # continued from the checkpoint, not from epoch 0
    assert points[len(first)]["train_cpu_s"] > first[0]["train_cpu_s"]
    assert "resumed from" in (work / "logs" / "train_curve.log").read_text()


def test_curve_command_refuses_a_stop_structure_it_does_not_train(tmp_path):
    from typer.testing import CliRunner

    from cervicontour.baselines.nnunet_cli import app

    result = CliRunner().invoke(app, ["curve", str(tmp_path / "work"), "-s", "Anorectum", "--stop-structure", "bladder"])
    assert result.exit_code == 2
    assert "stop structure 'Bladder' is not among the exported ['Anorectum']" in result.output
    assert not (tmp_path / "work").exists()
