"""Learning-rate schedule: poly decay over steps, or over steps or training time (a lent GPU)."""

from __future__ import annotations

import csv

import pytest
from model_helpers import TINY, tiny_cohort  # noqa: F401 (fixture)

pytest.importorskip("torch")


def test_progress_by_steps_ignores_time():
    from cervicontour.training.train import _progress

    config = TINY.replace(steps=10, max_minutes=1.0)
    assert _progress(config, 5, seconds=59.0) == 0.5  # 5 / 10, the 59 s of the 60 s budget do not count


def test_progress_by_time_takes_whichever_budget_is_further_spent():
    from cervicontour.training.train import _progress

    config = TINY.replace(steps=10, max_minutes=2.0, lr_schedule="time")
    assert _progress(config, 2, seconds=60.0) == 0.5  # half of 120 s beats 2 / 10
    assert _progress(config, 8, seconds=12.0) == 0.8  # 8 / 10 beats 12 / 120
    assert _progress(config, 3, seconds=500.0) == 1.0  # capped: the rate never goes negative


def test_time_schedule_needs_a_time_budget():
    from cervicontour.errors import InputError

    with pytest.raises(InputError, match="max_minutes"):
        TINY.replace(lr_schedule="time")
    with pytest.raises(InputError, match="'steps' or 'time'"):
        TINY.replace(lr_schedule="cosine")


def test_time_schedule_run_logs_a_decaying_rate(tiny_cohort, tmp_path):
    from cervicontour.training.train import train

    config = TINY.replace(steps=6, lr=1e-3, max_minutes=60.0, lr_schedule="time")
    train(tiny_cohort, tmp_path / "run", config)
    rows = [r for r in csv.DictReader((tmp_path / "run" / "log.csv").open()) if r["kind"] == "train"]
    lrs = [float(r["lr"]) for r in rows]
    # a 60-minute budget is barely touched: the step fraction rules, (1 - k/6)^0.9 * 1e-3 at step k+1
    expected = [(1 - k / 6) ** 0.9 * 1e-3 for k in range(6)]
    assert lrs == pytest.approx(expected, rel=1e-3)
