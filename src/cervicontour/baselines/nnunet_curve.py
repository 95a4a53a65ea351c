"""nnU-Net trained until it learns: a resumable CPU run that records validation Dice against training time.

nnU-Net's own planner (a CPU-sized plan, :data:`~.nnunet_run.CPU_PLAN`), preprocessing and trainer
(:mod:`.nnunet_trainer`), on phantom cohorts drawn here. The run checkpoints every epoch
(nnU-Net's ``checkpoint_latest.pth``) and, started again on the same work folder, resumes from it.
Every ``eval_every_cpu_s`` of training CPU it predicts the validation patients with the current
network (nnU-Net's sliding window, from their raw CT) and appends one point to the curve JSON,
until the stop structure's mean Dice exceeds ``stop_dice`` or ``stop_cpu_s`` of training CPU is spent.

Work folder::

    WORK/config.json                  the resolved :class:`CurveConfig` and its hash (a resume must match)
    WORK/data/{train,val,test}/       phantom cohorts, five labels (``structures/sub`` removed)
    WORK/nnUNet_raw|preprocessed|results/   nnU-Net's; imagesTs = validation + test patients
    WORK/prepared.json                export + plan + preprocess done (seconds, patch, batch)
    WORK/eval/                        the latest evaluation's predictions
    WORK/logs/train_curve.log         the training process's output (appended across resumes)

The curve (:func:`read_curve`, schema :data:`SCHEMA`)::

    {"schema": ..., "config": {...}, "data": "...", "nnunet": {...},
     "points": [{"epoch", "iterations", "train_wall_s", "train_cpu_s", "eval_s", "time",
                 "dice": {structure: {"mean": d, "cases": {patient: d}}}}],
     "finished": null | {"reason": ..., "time": ...}}
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY, canonical_name

SCHEMA = "cervicontour-nnunet-curve/1"
TRAINER_LOG = "train_curve.log"


@dataclass(frozen=True)
class CurveConfig:
    """Everything a curve run depends on; stored in ``WORK/config.json`` with its hash.

    Attributes:
        structures: the exported structures (nnU-Net regions when they overlap, else labels).
        train_seed, train_patients: the training phantom cohort (``synth --seed --patients``).
        val_seed, val_patients: the validation phantom patients the curve is measured on.
        test_seed, test_patients: held-out test patients, exported to ``imagesTs`` for later scoring.
        phantom: phantom anatomy version (1: the comparison's).
        dataset_id: nnU-Net dataset id.
        iterations_per_epoch: nnU-Net's epoch length (default 250); an epoch is the checkpoint unit.
        num_epochs: nnU-Net's poly learning-rate horizon in epochs; ``None``: 1000 × 250 iterations,
            i.e. nnU-Net's default schedule per iteration.
        eval_every_cpu_s: training CPU seconds between two curve points.
        stop_structure, stop_dice: stop once that structure's mean validation Dice exceeds this.
        stop_cpu_s: or once this many training CPU seconds are spent (a last point is measured).
        use_mirroring: test-time mirroring in the evaluation (8 passes in 3-D).
        plan: ``"cpu"`` (:data:`~.nnunet_run.CPU_PLAN`: 4 mm, a small patch) or ``"default"``
            (nnU-Net's own 3d_fullres plan, for a GPU).
        device: ``"cpu"`` or ``"cuda"``. On CUDA the training clock that paces the points and the
            budget (``eval_every_cpu_s``, ``stop_cpu_s``) is the epochs' wall time, not process CPU.
    """

    structures: tuple[str, ...] = PRIMARY
    train_seed: int = 2002
    train_patients: int = 20
    val_seed: int = 4004
    val_patients: int = 3
    test_seed: int = 3003
    test_patients: int = 10
    phantom: int = 1
    dataset_id: int = 701
    iterations_per_epoch: int = 50
    num_epochs: int | None = None
    eval_every_cpu_s: float = 1200.0
    stop_structure: str = "Bladder"
    stop_dice: float = 0.8
    stop_cpu_s: float = 3 * 3600.0
    use_mirroring: bool = False
    plan: str = "cpu"
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "structures", tuple(dict.fromkeys(canonical_name(s) for s in self.structures)))
        object.__setattr__(self, "stop_structure", canonical_name(self.stop_structure))
        if self.stop_structure not in self.structures:
            raise InputError(f"stop structure {self.stop_structure!r} is not among the exported {list(self.structures)}")
        if self.plan not in ("cpu", "default") or self.device not in ("cpu", "cuda"):
            raise InputError(f"plan must be 'cpu' or 'default' and device 'cpu' or 'cuda'; got plan {self.plan!r}, device {self.device!r}")
        if min(self.train_patients, self.val_patients, self.test_patients, self.iterations_per_epoch) < 1:
            raise InputError("train, validation and test patients and iterations per epoch must each be ≥ 1")

    @property
    def epochs(self) -> int:
        """The poly schedule's horizon: ``num_epochs`` or nnU-Net's 250 000 iterations in epochs."""
        return self.num_epochs or -(-1000 * 250 // self.iterations_per_epoch)

    def to_json(self) -> dict:
        """The configuration as stored; ``plan`` and ``device`` only when not the CPU defaults, so the
        hash of a CPU run made before they existed is unchanged (its work folder still resumes)."""
        data = {**asdict(self), "structures": list(self.structures)}
        for key in ("plan", "device"):
            if data[key] == "cpu":
                del data[key]
        return data

    @property
    def clock_key(self) -> str:
        """The point's field that paces the run: ``train_cpu_s`` on the CPU, ``train_wall_s`` on CUDA."""
        return "train_cpu_s" if self.device == "cpu" else "train_wall_s"

    @classmethod
    def from_json(cls, data: Mapping) -> CurveConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"curve config has unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def describe_data(self) -> str:
        return (f"synthetic phantom (cervicontour.synth, phantom {self.phantom}, size small), five labels "
                f"(structures/sub removed): train seed {self.train_seed} N={self.train_patients}, "
                f"validation seed {self.val_seed} N={self.val_patients}, test seed {self.test_seed} N={self.test_patients}")  # fmt: skip


# --------------------------------------------------------------------------- the curve record
def new_curve(config: CurveConfig, nnunet: Mapping) -> dict:
    return {"schema": SCHEMA, "config": config.to_json(), "config_sha256": config.digest(), "data": config.describe_data(),
            "nnunet": dict(nnunet), "points": [], "finished": None}  # fmt: skip


def read_curve(path: str | os.PathLike) -> dict:
    """Read a curve JSON; raise :class:`InputError` for another schema."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if record.get("schema") != SCHEMA:
        raise InputError(f"{path}: schema {record.get('schema')!r}; expected {SCHEMA!r} (a curve written by nnunet_curve)")
    return record


def write_curve(path: str | os.PathLike, record: Mapping) -> None:
    from cervicontour.io import write_text_atomic

    write_text_atomic(path, json.dumps(record, indent=1))


def mean_dice(point: Mapping, structure: str) -> float:
    return float(point["dice"][structure]["mean"])


def stop_reason(record: Mapping, config: CurveConfig) -> str | None:
    """Why the run is over, judged from its last point; None while it must go on.

    Example:
        >>> cfg = CurveConfig(stop_cpu_s=100)
        >>> point = {"train_cpu_s": 50, "dice": {"Bladder": {"mean": 0.81}}}
        >>> stop_reason({"points": [point]}, cfg)
        'Bladder mean validation Dice 0.810 > 0.8 after 50 s training CPU'
        >>> stop_reason({"points": [dict(point, dice={"Bladder": {"mean": 0.2}})]}, cfg) is None
        True
    """
    if not record["points"]:
        return None
    last = record["points"][-1]
    dice = mean_dice(last, config.stop_structure)
    spent, unit = last[config.clock_key], "training CPU" if config.device == "cpu" else "training wall time"
    if dice > config.stop_dice:
        return f"{config.stop_structure} mean validation Dice {dice:.3f} > {config.stop_dice} after {spent:.0f} s {unit}"
    if spent >= config.stop_cpu_s:
        return f"{spent:.0f} s {unit} ≥ {config.stop_cpu_s:.0f} s; {config.stop_structure} Dice {dice:.3f}"
    return None


def learned(record: Mapping, structure: str, *, min_dice: float = 0.5) -> bool:
    """Whether a run learned ``structure`` at all: some point's mean Dice reached ``min_dice``.

    Example:
        >>> learned({"points": [{"dice": {"Bladder": {"mean": 0.1}}}, {"dice": {"Bladder": {"mean": 0.6}}}]}, "Bladder")
        True
    """
    return any(mean_dice(point, structure) >= min_dice for point in record["points"])


def evaluation_due(record: Mapping, config: CurveConfig, train_cpu_s: float) -> bool:
    """A point is due every ``eval_every_cpu_s`` of training CPU, and at the CPU budget
    (on CUDA: of training wall time, passed as ``train_cpu_s``; see :attr:`CurveConfig.clock_key`)."""
    last = record["points"][-1][config.clock_key] if record["points"] else 0.0
    return train_cpu_s - last >= config.eval_every_cpu_s or (train_cpu_s >= config.stop_cpu_s > last)


# --------------------------------------------------------------------------- data and preparation
def phantom_cohort(path: Path, *, patients: int, seed: int, phantom: int) -> Path:
    """Draw a five-label phantom cohort at ``path`` (kept if complete; a partial one is redrawn)."""
    from cervicontour.synth import synthesize_cohort

    done = path / ".five_labels"
    if done.is_file():
        return path
    if path.exists():
        shutil.rmtree(path)
    synthesize_cohort(path, patients=patients, seed=seed, size="small", phantom=phantom, primary_only=True)  # the five compound masks only
    done.write_text("five primary masks only (no structures/sub)\n")
    return path


def cohorts(config: CurveConfig, work: Path) -> dict[str, Path]:
    data = work / "data"
    return {
        "train": phantom_cohort(data / "train", patients=config.train_patients, seed=config.train_seed, phantom=config.phantom),
        "val": phantom_cohort(data / "val", patients=config.val_patients, seed=config.val_seed, phantom=config.phantom),
        "test": phantom_cohort(data / "test", patients=config.test_patients, seed=config.test_seed, phantom=config.phantom),
    }  # fmt: skip


def held_out_cases(folders: Mapping[str, Path]) -> dict[str, dict]:
    """Validation and test patients under distinct nnU-Net case ids: ``{"val": {"VAL_SYN001": Case}, "test": ...}``."""
    from cervicontour.cohort import load_cohort

    return {key: {f"{key.upper()}_{c.patient_id}": c for c in load_cohort(folders[key]).cases()} for key in ("val", "test")}


def prepare(config: CurveConfig, work: Path) -> dict:
    """Cohorts, export, nnU-Net planning (the CPU plan or nnU-Net's own) and preprocessing, once; returns ``prepared.json``."""
    from cervicontour.baselines.nnunet import export_dataset
    from cervicontour.baselines.nnunet_run import CPU_PLAN, PlanOptions, plan_and_preprocess, require_nnunet
    from cervicontour.cohort import Case
    from cervicontour.io import write_text_atomic

    require_nnunet()
    marker = work / "prepared.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    folders = cohorts(config, work)
    shutil.rmtree(work / "nnUNet_raw", ignore_errors=True)  # an interrupted export or plan starts over
    shutil.rmtree(work / "nnUNet_preprocessed", ignore_errors=True)
    cases = held_out_cases(folders)
    held_out = [Case(case_id, c.image_path) for group in cases.values() for case_id, c in group.items()]
    start = time.perf_counter()
    (dataset,) = export_dataset(folders["train"], work / "nnUNet_raw", dataset_id=config.dataset_id, name="Cervix",
                                structures=config.structures, test=held_out)  # fmt: skip
    plans = CPU_PLAN if config.plan == "cpu" else PlanOptions()
    prepared = {"export_s": time.perf_counter() - start, "dataset": dataset.folder.name, "plans_name": plans.name,
                "plans": asdict(plans), "cases": {k: list(v) for k, v in cases.items()}}  # fmt: skip
    prepared.update(plan_and_preprocess(config.dataset_id, work, plans=plans))
    write_text_atomic(marker, json.dumps(prepared, indent=2))
    return prepared


# --------------------------------------------------------------------------- the run
def run_curve(config: CurveConfig, work: str | os.PathLike, curve_path: str | os.PathLike | None = None, *,
              on_stage: Callable[[str], None] | None = None) -> dict:  # fmt: skip
    """Prepare once, then train (resuming from ``checkpoint_latest.pth``) until a stop condition.

    Args:
        config: the run's configuration; a work folder keeps the one it started with.
        work: the work folder (see the module docstring).
        curve_path: where the curve JSON goes (default ``WORK/curve.json``); rewritten atomically per point.
        on_stage: called with each stage name as it starts.

    Returns:
        The curve record as it stands when the training process ends.

    Raises:
        InputError: the work folder holds a run with another configuration.
        RuntimeError: the training process failed (the log's tail is in the message).
    """
    work = Path(work).resolve()
    curve_path = Path(curve_path or work / "curve.json").resolve()
    stage = on_stage or (lambda _name: None)
    work.mkdir(parents=True, exist_ok=True)
    with _exclusive(work / ".lock") as lock:
        return _run_locked(config, work, curve_path, stage, lock)


@contextmanager
def _exclusive(path: Path):
    """An exclusive ``flock`` on ``path`` (released when every process holding it exits)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{path.parent} is in use by another curve run (lock {path}); wait for it or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        os.close(fd)


def _run_locked(config: CurveConfig, work: Path, curve_path: Path, stage: Callable[[str], None], lock: int) -> dict:
    from cervicontour.baselines.nnunet_run import nnunet_env
    from cervicontour.io import write_text_atomic

    stored = work / "config.json"
    if stored.is_file():
        previous = json.loads(stored.read_text())
        if previous["sha256"] != config.digest():
            raise InputError(
                f"{work} holds a run with another configuration ({previous['config']}); expected {config.to_json()}: "
                f"resume with the same options or use a new work folder"
            )
    else:
        write_text_atomic(stored, json.dumps({"config": config.to_json(), "sha256": config.digest()}, indent=2))
    stage("prepare")
    prepared = prepare(config, work)
    stage("train")
    env = nnunet_env(work, training_on_cpu=config.device == "cpu")
    job = {"work": str(work), "curve": str(curve_path), "config": config.to_json(), "prepared": prepared}
    log = work / "logs" / TRAINER_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start (pid {os.getpid()})\n")
        handle.flush()
        # the worker inherits the lock: a worker outliving this process still keeps others out
        code = subprocess.run([sys.executable, "-m", "cervicontour.baselines.nnunet_curve_worker", json.dumps(job)],
                              env=env, stdout=handle, stderr=subprocess.STDOUT, check=False, pass_fds=(lock,)).returncode  # fmt: skip
    if code != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        raise RuntimeError(f"nnU-Net curve training failed (exit {code}); full log: {log}\n{tail}")
    return read_curve(curve_path)
