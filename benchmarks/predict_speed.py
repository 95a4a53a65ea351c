"""`cervicontour predict` on a 512×512×N NIfTI CT (N=150 by default): wall time and peak RSS (acceptance: ≤ 12 s, ≤ 2 GB).

The CT is a full-size synthetic phantom patient (seed 777, not used in training), cut or padded to
exactly N slices. The command runs in a fresh process under ``/usr/bin/time -v`` (wall clock
and maximum resident set size of the whole process, model loading and file writing included).

Each run's stages come from the case's prediction.json; ``process_other_s`` is the rest of the
wall time (interpreter start, imports, reading the rules, hashing, the record).

``--accuracy N`` also checks what running the CTVp parts network over the CTVp's box only
(cervicontour.inference.case.parts_region) does to accuracy: N full-size labelled phantom patients (seed 6161, never trained on) predicted
both ways, in process, and scored against their drawn structures and parts.

``--against REV`` times another commit's ``predict`` in turn with this checkout's (a git worktree
under out/predict_speed/; the runs alternate, so both see the same machine: its speed varies by
half from hour to hour here).

Usage: python benchmarks/predict_speed.py [--model default|RUN] [--repeats 3] [--tta] [--accuracy 6] [--against 02d1c28]
Writes benchmarks/results/predict_speed.json (and predict_speed_accuracy.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cervicontour.io.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "predict_speed"


def make_ct(slices: int) -> Path:
    from cervicontour.io import write_nifti
    from cervicontour.synth.case import synthesize_case
    from cervicontour.volume import Volume

    path = WORK / f"ct_512x512x{slices}.nii.gz"
    if path.is_file():
        return path
    case = synthesize_case(np.random.default_rng([777, 0]), size="full", edge=set(), labelled=False)
    image = case.image
    hu = image.array
    if hu.shape[2] >= slices:
        start = (hu.shape[2] - slices) // 2
        hu = hu[:, :, start : start + slices]
        origin = image.index_to_world(np.array([0, 0, start]))
    else:
        pad = slices - hu.shape[2]
        hu = np.concatenate([hu, np.full((*hu.shape[:2], pad), -1024, hu.dtype)], axis=2)
        origin = np.asarray(image.origin_mm)
    WORK.mkdir(parents=True, exist_ok=True)
    write_nifti(Volume(np.ascontiguousarray(hu), image.spacing_mm, tuple(origin), image.direction), path)
    return path


def run_once(ct: Path, model: str, tta: bool, src: Path | None = None) -> dict:
    """One ``cervicontour predict`` process; ``src``: another checkout's ``src`` folder to run
    instead of this one (``--against``)."""
    out = WORK / "pred"
    if out.exists():
        shutil.rmtree(out)
    cli = ["-c", "from cervicontour.cli import main; main()"]
    cmd = ["/usr/bin/time", "-v", sys.executable, *cli, "predict", str(ct), "--out", str(out), "--model", model] + (["--tta"] if tta else [])
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **({"PYTHONPATH": str(src)} if src else {})}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    record = json.loads((out / ct.name.replace(".nii.gz", "") / "prediction.json").read_text())
    stages = record["timings_s"]
    other = wall - stages["total_case"]
    return {"wall_s": round(wall, 2), "peak_rss_gb": round(rss_kb / 1024**2, 3), "stages_s": stages, "process_other_s": round(other, 2)}


def accuracy(patients: int, model: str) -> dict:
    """Dice of every structure and part, the parts network over the CTVp's box ("fast") against
    sliding windows over the whole grid for every network ("windows")."""
    from cervicontour.inference import case as pipeline
    from cervicontour.inference.cohort import predict
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort, summarize
    from cervicontour.synth import synthesize_cohort

    cohort = WORK / f"accuracy_s6161_n{patients}"
    if not cohort.is_dir():
        synthesize_cohort(cohort, patients=patients, seed=6161, size="full")
    out, timings = {}, {}
    fast = pipeline.parts_region
    for mode in ("windows", "fast"):
        if mode == "windows":
            pipeline.parts_region = lambda *a, **k: None
        else:
            pipeline.parts_region = fast
        pred = WORK / f"accuracy_pred_{mode}"
        if pred.exists():
            shutil.rmtree(pred)
        predict(cohort, pred, model=model, all_cases=True, nodal_groups="reference")
        timings[mode] = {p.parent.name: json.loads(p.read_text())["timings_s"]["model"] for p in sorted(pred.glob("*/prediction.json"))}
        result = evaluate_cohort(cohort, pred, parts=True, settings=EvaluationSettings(tolerances_mm=(2.0,)))
        rows = summarize(list(result.rows) + list(result.part_rows), ["dice"])
        out[mode] = {r["structure"]: {"mean": round(r["mean"], 4), "n": r["n"]} for r in rows}
        out[mode + "_per_case"] = [{k: r[k] for k in ("patient_id", "structure", "dice") if k in r} for r in list(result.rows) + list(result.part_rows)]
    pipeline.parts_region = fast
    delta = {k: round(out["fast"][k]["mean"] - out["windows"][k]["mean"], 4) for k in out["fast"] if k in out["windows"]}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"commit": commit, "data": f"synthetic full-size phantom, seed 6161, {patients} labelled patients (never trained on); CTVn composed from each reference's nodal groups",
            "model": model, "dice_mean": {m: out[m] for m in ("windows", "fast")}, "fast_minus_windows": delta,
            "model_stage_s": timings, "per_case": {m: out[m + "_per_case"] for m in ("windows", "fast")}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--accuracy", type=int, default=0, help="also score N full-size labelled phantoms, the parts network over the CTVp box against the whole grid")
    parser.add_argument("--against", default=None, help="a commit to time in turn with this checkout (same machine state: the runs alternate)")
    parser.add_argument("--slices", type=int, default=150, help="the CT's slice count (issue 22 times 512x512x150)")
    args = parser.parse_args()
    if args.accuracy:
        record = accuracy(args.accuracy, args.model)
        write_text_atomic(ROOT / "benchmarks" / "results" / "predict_speed_accuracy.json", json.dumps(record, indent=2))
        print(json.dumps(record["fast_minus_windows"]), json.dumps(record["model_stage_s"]))
    if not args.repeats:
        return
    ct = make_ct(args.slices)
    from cervicontour.io import read_nifti

    image = read_nifti(ct)
    other = None
    if args.against:  # the other commit's package, checked out beside (its own default model included)
        other = WORK / f"checkout_{args.against}"
        if not other.is_dir():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(other), args.against], check=True, capture_output=True)
    runs, against = [], []
    for _ in range(args.repeats):
        if other is not None:
            against.append(run_once(ct, args.model, args.tta, src=other / "src"))
        runs.append(run_once(ct, args.model, args.tta))
    result = {
        "input": {"path": str(ct.relative_to(ROOT)), "shape": list(image.shape), "spacing_mm": list(image.spacing_mm), "data": "synthetic full-size phantom, seed 777"},
        "model": args.model, "tta": args.tta, "runs": runs,
        "wall_s_median": float(np.median([r["wall_s"] for r in runs])), "peak_rss_gb_max": max(r["peak_rss_gb"] for r in runs),
        "limits": {"wall_s": 12, "peak_rss_gb": 2}, "machine": "2 shared CPU cores (load from other jobs varies), torch CPU",
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
    }  # fmt: skip
    if against:
        result["against"] = {"commit": args.against, "runs": against, "wall_s_median": float(np.median([r["wall_s"] for r in against])),
                             "peak_rss_gb_max": max(r["peak_rss_gb"] for r in against)}
    name = "predict_speed_tta.json" if args.tta else "predict_speed.json"
    write_text_atomic(ROOT / "benchmarks" / "results" / name, json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("wall_s_median", "peak_rss_gb_max")}), [r["wall_s"] for r in runs], "against:", [r["wall_s"] for r in against])


if __name__ == "__main__":
    main()
