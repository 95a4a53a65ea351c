"""`cervicontour predict` on a 512×512×200 NIfTI CT: wall time and peak RSS (acceptance: ≤ 15 s, ≤ 3 GB).

The CT is a full-size synthetic phantom patient (seed 777, not used in training), cut or padded to
exactly 200 slices. The command runs in a fresh process under ``/usr/bin/time -v`` (wall clock
and maximum resident set size of the whole process, model loading and file writing included).

Usage: python benchmarks/predict_speed.py [--model default|RUN] [--repeats 3] [--tta]
Writes benchmarks/results/predict_speed.json.
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

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "predict_speed"


def make_ct() -> Path:
    from cervicontour.io import write_nifti
    from cervicontour.synth.case import synthesize_case
    from cervicontour.volume import Volume

    path = WORK / "ct_512x512x200.nii.gz"
    if path.is_file():
        return path
    case = synthesize_case(np.random.default_rng([777, 0]), size="full", edge=set(), labelled=False)
    image = case.image
    hu = image.array
    if hu.shape[2] >= 200:
        start = (hu.shape[2] - 200) // 2
        hu = hu[:, :, start : start + 200]
        origin = image.index_to_world(np.array([0, 0, start]))
    else:
        pad = 200 - hu.shape[2]
        hu = np.concatenate([hu, np.full((*hu.shape[:2], pad), -1024, hu.dtype)], axis=2)
        origin = np.asarray(image.origin_mm)
    WORK.mkdir(parents=True, exist_ok=True)
    write_nifti(Volume(np.ascontiguousarray(hu), image.spacing_mm, tuple(origin), image.direction), path)
    return path


def run_once(ct: Path, model: str, tta: bool) -> dict:
    out = WORK / "pred"
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).parent / "cervicontour"
    cmd = ["/usr/bin/time", "-v", str(exe), "predict", str(ct), "--out", str(out), "--model", model] + (["--tta"] if tta else [])
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    record = json.loads((out / ct.name.replace(".nii.gz", "") / "prediction.json").read_text())
    return {"wall_s": round(wall, 2), "peak_rss_gb": round(rss_kb / 1024**2, 3), "stages_s": record["timings_s"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    ct = make_ct()
    from cervicontour.io import read_nifti

    image = read_nifti(ct)
    runs = [run_once(ct, args.model, args.tta) for _ in range(args.repeats)]
    result = {
        "input": {"path": str(ct.relative_to(ROOT)), "shape": list(image.shape), "spacing_mm": list(image.spacing_mm), "data": "synthetic full-size phantom, seed 777"},
        "model": args.model, "tta": args.tta, "runs": runs,
        "wall_s_median": float(np.median([r["wall_s"] for r in runs])), "peak_rss_gb_max": max(r["peak_rss_gb"] for r in runs),
        "limits": {"wall_s": 15, "peak_rss_gb": 3}, "machine": "2 shared CPU cores (load from other jobs varies), torch CPU",
    }  # fmt: skip
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    name = "predict_speed_tta.json" if args.tta else "predict_speed.json"
    (ROOT / "benchmarks" / "results" / name).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("wall_s_median", "peak_rss_gb_max")}), [r["wall_s"] for r in runs])


if __name__ == "__main__":
    main()
