"""nnU-Net with its own default 3d_fullres plan on a lent GPU (issue 20, Deliver 1): the script that
is ready for a GPU session. Validation Dice against training wall time, on the cases of the CPU run.

The same data and stop rule as `benchmarks/nnunet_long.py`'s long run:
- the five structures as nnU-Net regions;
- train seed 2002 N=20, validation seed 4004 N=3, test seed 3003 N=10 (phantom 1, small, five masks only);
- it stops at Bladder Dice > 0.8 or at the budget.

What differs from the CPU run:
- nnU-Net's own plan (no CPU plan) and device cuda;
- the points are paced by training wall time (`--every-s`, default 120 s);
- `--budget-s` (default 480 s) bounds the training: it fits a 15-minute device session with planning,
  preprocessing and the evaluations;
- nnU-Net's default 250 iterations per epoch; an epoch is the checkpoint unit, so a second call resumes.

On the GPU machine (nnunetv2 and its dependencies importable, e.g. wheels carried on PYTHONPATH):
    python benchmarks/nnunet_gpu.py --out "$OUT"
It writes OUT/nnunet_gpu_curve.json and leaves the work folder under OUT/work (the checkpoints are not
needed back). Copy the curve to benchmarks/results/ afterwards. Not yet run: no GPU was lent to the
sessions since it was written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    import torch

    from cervicontour.baselines.nnunet_curve import CurveConfig, run_curve

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=480.0, help="training wall seconds")
    parser.add_argument("--every-s", type=float, default=120.0, help="training wall seconds between two points")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this script is for a lent GPU machine (the CPU run is benchmarks/nnunet_long.py)")
    config = CurveConfig(plan="default", device="cuda", dataset_id=702, iterations_per_epoch=250,
                         eval_every_cpu_s=args.every_s, stop_cpu_s=args.budget_s)  # fmt: skip
    started = time.perf_counter()
    record = run_curve(config, args.out / "work", args.out / "nnunet_gpu_curve.json",
                       on_stage=lambda s: print(f"[{time.strftime('%H:%M:%S')}] {s}", flush=True))  # fmt: skip
    rows = [{"iterations": p["iterations"], "wall_s": p["train_wall_s"]} | {s: round(d["mean"], 3) for s, d in p["dice"].items()}
            for p in record["points"]]  # fmt: skip
    print(json.dumps({"device": torch.cuda.get_device_name(0), "session_s": round(time.perf_counter() - started), "points": rows,
                      "finished": record["finished"]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
