"""nnU-Net trained until it learns (issue 20, Deliver 1): validation Dice against CPU training time.

A thin caller of :func:`cervicontour.baselines.nnunet_curve.run_curve` (nnU-Net's own planner with
the CPU plan, its preprocessing and trainer; that module lists every change from nnU-Net's defaults).

Two runs, one after the other (each resumable; a finished one is skipped):
  1. set-up check  Bladder alone (one label, softmax), train seed 2002 N=10, validation seed 4004 N=3;
                   a point every 10 min of training CPU; stops at Dice > 0.8 or 40 min of training CPU.
                   Curve: benchmarks/results/nnunet_setup_check_curve.json; work out/nnunet_setup.
  2. long run      only if the check learned (some point's Bladder Dice >= 0.5): the five structures as
                   nnU-Net regions, train seed 2002 N=20 (the comparison's training cases), the same
                   validation patients, test seed 3003 N=10 (exported for later scoring, not evaluated
                   here); a point every 20 min of training CPU; stops at Bladder Dice > 0.8 or 3 h of
                   training CPU. Curve: benchmarks/results/nnunet_long_curve.json; work out/nnunet_long.
Data: synthetic phantom (cervicontour.synth, phantom 1, size small), five labels (structures/sub removed).

Resume (e.g. in a later session): run the same command again; each run continues from nnU-Net's
checkpoint_latest.pth and appends to its curve. Niced, one thread, its scheduler group lowered:

  OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nohup nice -n 19 .venv/bin/python benchmarks/nnunet_long.py \\
      >> out/nnunet_long/run.log 2>&1 &  echo 19 > /proc/$!/autogroup
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", flush=True)


def summary(record: dict) -> str:
    rows = [{"iterations": p["iterations"], "cpu_min": round(p["train_cpu_s"] / 60, 1)} | {s: round(d["mean"], 3) for s, d in p["dice"].items()}
            for p in record["points"]]  # fmt: skip
    return json.dumps({"points": rows, "finished": record["finished"]}, indent=1)


def main() -> None:
    from cervicontour.baselines.nnunet_curve import CurveConfig, learned, run_curve

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup-check-only", action="store_true", help="run (or resume) the set-up check and stop")
    args = parser.parse_args()
    check = CurveConfig(structures=("Bladder",), train_patients=10, dataset_id=700, eval_every_cpu_s=600, stop_cpu_s=2400)
    log("set-up check: Bladder alone")
    record = run_curve(check, ROOT / "out" / "nnunet_setup", RESULTS / "nnunet_setup_check_curve.json", on_stage=log)
    log(f"set-up check:\n{summary(record)}")
    if args.setup_check_only:
        return
    if not record["finished"]:
        raise SystemExit("the set-up check did not finish; run again to resume it")
    if not learned(record, "Bladder", min_dice=0.5):
        raise SystemExit("the set-up check did not learn (Bladder Dice < 0.5 at every point): find out why before a long run")
    log("long run: the five structures")
    record = run_curve(CurveConfig(), ROOT / "out" / "nnunet_long", RESULTS / "nnunet_long_curve.json", on_stage=log)
    log(f"long run:\n{summary(record)}")


if __name__ == "__main__":
    main()
