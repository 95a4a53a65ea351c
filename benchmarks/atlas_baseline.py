"""Multi-atlas baseline on synthetic data: Dice per structure (majority and STAPLE) and s/target.

Usage: .venv/bin/python benchmarks/atlas_baseline.py [--atlases 20] [--targets 3] [--k 5]
           [--deformable demons bspline] [--threads 2]
Atlases: small phantom cohort seed 2002; targets: small phantom cohort seed 3003 (synthetic data).
Each target is registered once; both fusions are scored from the same propagated masks.
Writes benchmarks/results/atlas_baseline.json. Wall time depends on what else runs: the
1-minute load average and process CPU time are recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import SimpleITK as sitk

from cervicontour.baselines.atlas import load_atlases, predict_case
from cervicontour.cohort import load_cohort
from cervicontour.metrics.overlap import dice
from cervicontour.structures import PRIMARY
from cervicontour.synth import synthesize_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlases", type=int, default=20)
    parser.add_argument("--targets", type=int, default=3)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--deformable", nargs="+", default=["demons", "bspline"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "atlas_baseline.json")
    args = parser.parse_args()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="atlas_bench_"))
    atlas_dir = synthesize_cohort(tmp / "atlases", patients=args.atlases, holdout=0, seed=2002, size="small", phantom=1)
    test_dir = synthesize_cohort(tmp / "test", patients=args.targets, holdout=0, seed=3003, size="small", phantom=1)
    atlases = load_atlases(atlas_dir, PRIMARY)
    targets = load_cohort(test_dir).labelled()

    results: dict = {
        "data": "synthetic phantom (cervicontour.synth), small grids; atlases seed 2002, targets seed 3003",
        "atlases": len(atlases),
        "k": args.k,
        "threads": args.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "runs": {},
    }
    for deformable in args.deformable:
        rows = []
        for case in targets:
            image = case.load_image()
            wall, cpu = time.perf_counter(), time.process_time()
            prediction = predict_case(
                image, atlases, k=args.k, deformable=deformable, patient_id=case.patient_id
            )
            fused = {f: prediction.fused(f) for f in ("majority", "staple")}
            row = {
                "patient_id": case.patient_id,
                "orientation": image.orientation,
                "seconds": round(time.perf_counter() - wall, 2),
                "cpu_seconds": round(time.process_time() - cpu, 2),
                "load_1min": round(os.getloadavg()[0], 2),
                "atlases_used": [a["patient_id"] for a in prediction.record["atlases"]],
            }
            for fusion, masks in fused.items():
                row[fusion] = {
                    n: round(dice(case.load_structure(n).array > 0, masks[n].array > 0), 4) for n in PRIMARY
                }
            rows.append(row)
            print(deformable, json.dumps(row), flush=True)
        summary = {
            fusion: {n: round(float(np.mean([r[fusion][n] for r in rows])), 4) for n in PRIMARY}
            for fusion in ("majority", "staple")
        }
        summary["seconds_per_target_mean"] = round(float(np.mean([r["seconds"] for r in rows])), 2)
        results["runs"][deformable] = {"cases": rows, "mean": summary}
        print(deformable, "mean", json.dumps(summary), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
