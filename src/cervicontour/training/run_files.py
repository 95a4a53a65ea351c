"""Run-directory files: ``run.json`` (:class:`RunRecord`), the CSV training log, JSON written
atomically, and the PNG curves."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.io.json_object import read_json_object, refuse_unknown_fields, write_json

RUN_FILE = "run.json"
#: ``run.json``'s ``schema``; runs from before it carry none and are read as schema 1 (the same fields)
RUN_SCHEMA = "cervicontour-run/1"


@dataclass
class RunRecord:
    """``run.json``: a training run's configuration, data split, init and, once it ends, its outcome.

    Written by :func:`cervicontour.training.train.train` (at the start, completed at the end) and read
    by :func:`read_run_record` alone (resuming a run, the refiner's split).

    Example:
        >>> r = RunRecord.from_dict({"config": {"steps": 2}, "config_sha256": "ab", "cohort": "/c", "train_cases": ["P1"]})
        >>> r.train_cases, r.schema, r.steps_done
        (('P1',), 'cervicontour-run/1', None)
    """

    config: dict
    config_sha256: str
    cohort: str
    init: str | None = None
    transfer: dict | None = None
    train_cases: tuple[str, ...] = ()
    val_cases: tuple[str, ...] = ()
    arch: dict = dc_field(default_factory=dict)
    plan_sha256: str = ""
    world_size: int = 1
    started: str = ""
    steps_done: int | None = None  # the outcome, written when the run ends
    seconds: float | None = None
    last_loss: float | None = None
    validation: dict | None = None
    stopped_by_time: bool | None = None
    schema: str = RUN_SCHEMA

    def to_dict(self) -> dict:
        data = asdict(self)
        return {"schema": data.pop("schema"), **data}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = RUN_FILE) -> RunRecord:
        """Read a ``run.json`` object (one from before the schema field too).

        Raises:
            InputError: another schema, a field this schema does not have, or a required one missing.
        """
        schema = data.get("schema", RUN_SCHEMA)
        if schema != RUN_SCHEMA:
            raise InputError(f"{source}: run record schema {schema!r}; this cervicontour reads {RUN_SCHEMA!r}")
        refuse_unknown_fields(cls, data, source=source, record=RUN_SCHEMA)
        values = dict(data, schema=RUN_SCHEMA)
        for key in ("train_cases", "val_cases"):
            values[key] = tuple(values.get(key) or ())
        try:
            return cls(**values)
        except TypeError as exc:
            raise InputError(f"{source}: not a run record ({exc}); is this a `cervicontour train` run folder?") from None


def read_run_record(run_dir: str | os.PathLike) -> RunRecord:
    """The :class:`RunRecord` of a run folder.

    Raises:
        InputError: no ``run.json`` there, or not one this version reads.
    """
    path = Path(run_dir) / RUN_FILE
    data = read_json_object(path, expected="the run record of a `cervicontour train` run folder")
    return RunRecord.from_dict(data, source=str(path))


def write_run_record(run_dir: str | os.PathLike, record: RunRecord) -> Path:
    return write_json(Path(run_dir) / RUN_FILE, record.to_dict())

COLUMNS = ["kind", "step", "seconds", "lr", "loss", "dice_loss", "bce_loss", "mean_dice"]


class LogWriter:
    """``log.csv``: ``kind=train`` rows per step, ``kind=val`` rows with Dice/HD95 per structure.

    On resume, rows past the checkpoint's step are dropped first (they belong to the lost tail of
    the killed run), so the log reads as one uninterrupted run.
    """

    def __init__(self, path: Path, structures, *, truncate_after: int = 0) -> None:
        self.path = path
        self.columns = COLUMNS + [f"dice_{n}" for n in structures] + [f"hd95_mm_{n}" for n in structures]
        rows = []
        if truncate_after and path.is_file():
            with path.open(newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= truncate_after]
        self.handle = path.open("w", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=self.columns, extrasaction="ignore")
        self.writer.writeheader()
        for r in rows:
            self.writer.writerow(r)
        self.handle.flush()

    def step(self, step: int, seconds: float, lr: float, loss: float, dice_loss: float, bce_loss: float) -> None:
        self.writer.writerow({"kind": "train", "step": step, "seconds": f"{seconds:.2f}", "lr": f"{lr:.6g}", "loss": f"{loss:.6f}", "dice_loss": f"{dice_loss:.6f}", "bce_loss": f"{bce_loss:.6f}"})
        self.handle.flush()  # a SIGKILL must not lose rows the checkpoint already covers

    def validation(self, step: int, seconds: float, val: dict) -> None:
        row = {"kind": "val", "step": step, "seconds": f"{seconds:.2f}", "mean_dice": f"{val['mean_dice']:.4f}"}
        for n, v in val["dice"].items():
            row[f"dice_{n}"] = f"{v:.4f}"
        for n, v in val["hd95_mm"].items():
            row[f"hd95_mm_{n}"] = f"{v:.3f}"
        self.writer.writerow(row)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def plot_curves(log_csv: Path, png: Path, structures) -> Path:
    """Training loss (raw and 20-step mean) and validation Dice per structure against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = [(int(r["step"]), float(r["loss"])) for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps, loss = zip(*train)
        ax1.plot(steps, loss, color="0.75", lw=0.7, label="loss")
        window = 20
        smooth = [sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1]) for i in range(len(loss))]
        ax1.plot(steps, smooth, color="C0", label=f"{window}-step mean")
    ax1.set_xlabel("step")
    ax1.set_ylabel("Dice + BCE loss")
    if train:  # a run stopped before its first step has no curve to label
        ax1.legend()
    for n in structures:
        pts = [(int(r["step"]), float(r[f"dice_{n}"])) for r in val if r.get(f"dice_{n}") not in (None, "") and not math.isnan(float(r[f"dice_{n}"]))]
        if pts:
            ax2.plot(*zip(*pts), marker="o", ms=3, label=n)
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation Dice (working grid)")
    ax2.set_ylim(0, 1)
    if val:
        ax2.legend(fontsize=7)
    fig.suptitle(log_csv.parent.name)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
