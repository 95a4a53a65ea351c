"""TotalSegmentator baseline on the real CT: guideline CTVn (Taylor 2005) and zero-shot Bladder.

Data: TotalSegmentator's example_ct.nii.gz (real CT, 122x101x112, 3 mm, stored RAS); labels =
TotalSegmentator's own --fast prediction (example_seg_fast_force_split.nii.gz, v2 'total' ids), a
model output, not a clinician's contour. Needs ../shared/data/real/totalsegmentator/.
Usage: python benchmarks/totalseg_ctvn_real.py [--para-aortic --para-aortic-top L2]
Writes benchmarks/results/totalseg_ctvn_real.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator"
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    import numpy as np

    from cervicontour.baselines.totalseg import TOTAL_V2, run_baseline
    from cervicontour.io import read_nifti
    from cervicontour.io.atomic import write_text_atomic
    from cervicontour.report.preview import render_overlay

    parser = argparse.ArgumentParser()
    parser.add_argument("--para-aortic", action="store_true")
    parser.add_argument("--para-aortic-top", default="L2")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"real data not present: {REAL}")
    ct_path, seg_path = REAL / "example_ct.nii.gz", REAL / "example_seg_fast_force_split.nii.gz"
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder, result = run_baseline(ct_path, tmp, ts_output=seg_path, para_aortic=args.para_aortic,
                                      para_aortic_top=args.para_aortic_top)
        seconds_total = time.perf_counter() - t
        report = json.loads((folder / "totalseg_baseline.json").read_text())
    ct, seg = read_nifti(ct_path), read_nifti(seg_path).array
    ids = {name: label for label, name in TOTAL_V2.items()}
    inside = result.ctvn.array.astype(bool)
    iliac = np.isin(seg, [ids[n] for n in ("iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right")])
    bone = np.isin(seg, [i for n, i in ids.items() if n.startswith(("hip_", "femur_", "sacrum", "vertebrae_"))])
    out = {
        "data": "real CT: TotalSegmentator example_ct.nii.gz (122x101x112, 3 mm, RAS); labels = TotalSegmentator "
                "--fast prediction example_seg_fast_force_split.nii.gz (v2 'total' ids; a model output)",
        "rule": report["rule"],
        "volumes_cc": report["volumes_cc"],
        "checks": {"iliac_voxels": int(iliac.sum()), "iliac_voxels_outside_ctvn": int((iliac & ~inside).sum()),
                   "bone_voxels_inside_ctvn": int((bone & inside).sum())},
        "findings": report["findings"],
        "seconds": {**report["seconds"], "total_including_writes": round(seconds_total, 3)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "totalseg_ctvn_real.json", json.dumps(out, indent=2, default=float) + "\n")
    render_overlay(ct, {"Bladder": result.bladder, "CTVn": result.ctvn}, RESULTS / "totalseg_ctvn_real.png",
                   centre_on="CTVn", title="TotalSegmentator baseline, real CT: guideline CTVn (iliac vessels + 7 mm "
                   "- bone/muscle + presacral 10 mm), zero-shot Bladder; labels = TotalSegmentator --fast")
    print(json.dumps({"volumes_cc": out["volumes_cc"], "checks": out["checks"], "seconds": out["seconds"]}, default=float))


if __name__ == "__main__":
    main()
