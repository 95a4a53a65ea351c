"""``fit.json``, the record of a fit stage by stage (:class:`FitRecord`, read by :func:`read_fit_record`),
and the bookkeeping the stages share: the budget clock, progress counters, a stage's end."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from cervicontour.errors import InputError

FIT_SCHEMA = "cervicontour-fit/1"
STAGES = ("gate", "plan", "targets", "zeroshot", "stage1", "refiner", "select", "export")
#: seconds kept for selection and export, per validation patient and candidate (measured on the
#: zero-shot scoring, this is the floor)
_RESERVE_FLOOR_S = 30.0


@dataclass
class FitRecord:
    """``fit.json``: what a fit did, stage by stage (schema :data:`FIT_SCHEMA`)."""

    cohort: str
    init: str
    config: dict
    stages: dict = field(default_factory=dict)
    schema: str = FIT_SCHEMA
    started: str = ""

    def to_dict(self) -> dict:
        return {"schema": self.schema, "cohort": self.cohort, "init": self.init, "config": self.config, "started": self.started, "stages": self.stages}

    def elapsed_s(self) -> float:
        return float(sum(s.get("seconds", 0.0) for s in self.stages.values()))

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("status") == "done"


def read_fit_record(path: str | os.PathLike) -> FitRecord:
    """Read ``fit.json`` (a model folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the fit record ({exc}); is this a `cervicontour fit` output folder?") from None
    if data.get("schema") != FIT_SCHEMA:
        raise InputError(f"{path}: fit record schema {data.get('schema')!r}, expected {FIT_SCHEMA!r}")
    return FitRecord(data["cohort"], data["init"], data["config"], data.get("stages", {}), data["schema"], data.get("started", ""))


# ----------------------------------------------------------------------------- bookkeeping
class _Budget:
    def __init__(self, total_s: float, spent_before_s: float, t0: float) -> None:
        self.total, self.before, self.t0 = total_s, spent_before_s, t0

    def left(self) -> float:
        return self.total - self.before - (time.perf_counter() - self.t0)


def _counter(emit, stage: str, total: int):
    state = {"n": 0}
    emit(stage, 0, total, "")  # the stage starts now: its elapsed time and estimate count from here

    def one(pid):
        state["n"] += 1
        emit(stage, state["n"], total, str(pid))

    return one


def _finish(out: Path, record: FitRecord, stage: str, t0: float, info: dict, emit=None) -> None:
    if emit is not None:
        emit(stage, 1, 1, "done")
    record.stages[stage] = {**info, "status": "done", "seconds": round(time.perf_counter() - t0, 1)}  # this run's time (a killed run's is not recorded)
    _write_record(out, record)


def _write_record(out: Path, record: FitRecord) -> None:
    from cervicontour.io.json_object import write_json

    write_json(out / "fit.json", record.to_dict())
