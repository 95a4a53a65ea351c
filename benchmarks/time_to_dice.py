"""Training seconds each method needed to reach validation Dice 0.5 and 0.8, per structure (issue 20).

Read from the curves the runs recorded (nothing is re-run here):
- ``fit`` and ``scratch``: the comparison's runs (``--compare``, `cervicontour compare`'s folder):
  the zero-shot score of the init on fit's validation patients at 0 s (fit keeps, per structure, the
  zero-shot model unless training beats it; scratch has none), then stage 1's ``log.csv`` validation
  rows (working-grid Dice) at stage 1's cumulative training seconds; clock: training wall time with
  the comparison's torch threads (its preparation and scoring are not training and are stated apart);
- nnU-Net on the lent H200 (``nnunet_gpu_curve.json``): validation Dice of 3 held-out patients against
  training wall time (its own plan; points every ~90 s, so a time is an upper bound at that spacing);
- nnU-Net on this CPU (``nnunet_setup_check_curve.json``: Bladder alone; ``nnunet_long_curve.json``:
  five structures), against training process-CPU seconds, CPU plan.
A structure never reaching a threshold gets ``null`` with the last point's seconds and Dice.
The validation patients differ between the runs (named per method); the test scores are the
comparison's, on the same 10 test patients for all.

Usage: python benchmarks/time_to_dice.py [--compare out/compare/full_train20_test10/comparison]
           [--fit-run "scratch, 40 min=out/scratch40/model"]
Writes benchmarks/results/time_to_dice.{json,png}.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
THRESHOLDS = (0.5, 0.8)
STRUCTURES = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def reached(points: list[tuple[float, dict]], structure: str) -> dict:
    """``{"0.5": seconds | None, "0.8": ..., "last": {"seconds", "dice"}}`` over ``(seconds, {structure: dice})``.

    Example:
        >>> reached([(0.0, {"B": 0.1}), (60.0, {"B": 0.6}), (120.0, {"B": 0.85})], "B")
        {'0.5': 60.0, '0.8': 120.0, 'last': {'seconds': 120.0, 'dice': 0.85}}
        >>> reached([(10.0, {"B": 0.6})], "B")["0.8"] is None
        True
    """
    scored = [(s, d[structure]) for s, d in points if d.get(structure) is not None]
    out = {f"{t}": next((s for s, d in scored if d >= t), None) for t in THRESHOLDS}
    out["last"] = {"seconds": scored[-1][0], "dice": round(scored[-1][1], 4)} if scored else None
    return out


def fit_curve(model_dir: Path) -> tuple[list[tuple[float, dict]], dict]:
    """The zero-shot score (if any) at 0 s, then stage 1's validation rows."""
    record = json.loads((model_dir / "fit.json").read_text())
    stages = record["stages"]
    points = []
    zero = stages.get("zeroshot", {})
    if zero.get("applicable"):
        points.append((0.0, {s: float(v) for s, v in zero["dice"].items()}))
    log = Path(stages["stage1"]["run"]) / "log.csv"
    if not log.is_absolute() or not log.is_file():
        log = model_dir / "work" / "stage1" / "log.csv"
    with log.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["kind"] == "val":
                points.append((float(row["seconds"]), {s: float(row[f"dice_{s}"]) for s in STRUCTURES if row.get(f"dice_{s}")}))
    prep = sum(float(stages.get(k, {}).get("seconds") or 0.0) for k in ("gate", "plan", "targets", "zeroshot"))
    val = stages.get("plan", {}).get("val_patients") or []
    info = {"validation": f"fit's validation fold of the training cohort ({len(val)} patients: {', '.join(val)}); "
                          "stage 1 rows on the working grid",
            "clock": "training wall seconds (stage 1), zero-shot at 0 s", "not_counted_s": round(prep, 1),
            "steps": stages["stage1"].get("steps_done"), "stage1_train_s": stages["stage1"].get("train_seconds")}  # fmt: skip
    return points, info


def nnunet_curve(path: Path, key: str) -> tuple[list[tuple[float, dict]], dict]:
    record = json.loads(path.read_text())
    points = [(float(p[key]), {s: float(v["mean"]) for s, v in p["dice"].items()}) for p in record["points"]]
    return points, {"validation": record["data"], "clock": key, "device": record.get("device", "this CPU"),
                    "finished": record.get("finished")}  # fmt: skip


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cervicontour.io import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, default=ROOT / "out" / "compare" / "full_train20_test10" / "comparison")
    parser.add_argument("--fit-run", action="append", default=[], metavar="NAME=MODEL_DIR",
                        help="another `cervicontour fit` output on the same training cohort (e.g. a longer budget)")
    args = parser.parse_args()
    curves = {}
    runs = [(name, args.compare / "methods" / name / "model") for name in ("fit", "scratch")]
    runs += [(item.split("=", 1)[0], Path(item.split("=", 1)[1])) for item in args.fit_run]
    for name, folder in runs:
        stages = json.loads((folder / "fit.json").read_text())["stages"] if (folder / "fit.json").is_file() else {}
        if stages.get("stage1", {}).get("status") == "done":
            curves[name] = fit_curve(folder)
        else:
            print(f"{name}: no finished stage 1 in {folder} (yet)")
    for name, file, key in (("nnU-Net, H200 (default plan)", "nnunet_gpu_curve.json", "train_wall_s"),
                            ("nnU-Net, CPU plan, Bladder alone", "nnunet_setup_check_curve.json", "train_cpu_s"),
                            ("nnU-Net, CPU plan, five structures", "nnunet_long_curve.json", "train_cpu_s")):  # fmt: skip
        if (RESULTS / file).is_file():
            curves[name] = nnunet_curve(RESULTS / file, key)
    record = {"thresholds": list(THRESHOLDS), "compare": str(args.compare.relative_to(ROOT)) if args.compare.is_relative_to(ROOT) else str(args.compare),
              "methods": {name: {**info, "structures": {s: reached(points, s) for s in STRUCTURES if any(s in d for _, d in points)},
                                 "points": [{"seconds": s, "dice": {k: round(v, 4) for k, v in d.items()}} for s, d in points]}
                          for name, (points, info) in curves.items()}}  # fmt: skip
    write_text_atomic(RESULTS / "time_to_dice.json", json.dumps(record, indent=1))
    fig, axes = plt.subplots(1, len(STRUCTURES), figsize=(4 * len(STRUCTURES), 3.6), sharey=True)
    for ax, structure in zip(axes, STRUCTURES):
        for name, (points, _) in curves.items():
            xy = [(max(s, 1.0), d[structure]) for s, d in points if structure in d]
            if xy:
                ax.plot(*zip(*xy), marker="o", ms=3, label=name)
        for t in THRESHOLDS:
            ax.axhline(t, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_title(structure)
        ax.set_xlabel("training seconds (clock per method: see JSON)")
    axes[0].set_ylabel("validation Dice")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Validation Dice against training time (synthetic phantoms; fit/scratch at 0 s = 1 s on the log axis)", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "time_to_dice.png", dpi=110)
    for name, row in record["methods"].items():
        print(f"{name}: " + "; ".join(f"{s} 0.5@{v['0.5']} 0.8@{v['0.8']} (last {v['last']['dice']} @{v['last']['seconds']:.0f} s)"
                                      for s, v in row["structures"].items()))  # fmt: skip


if __name__ == "__main__":
    main()
