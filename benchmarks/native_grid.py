"""Resample to the working spacing, or keep each patient's native grid? (The seed's question (b), at inference.)

The model was trained on the working grid (its plan's spacing). Two ways to predict a patient:

  working  the shipped path: the CT resampled to the plan's spacing, probabilities resampled back
           (linear) to the patient's grid;
  native   the same network run on the patient's own grid (the plan's spacing replaced by the
           CT's LPS spacing): no resampling either way, but the network sees anatomy at a scale
           it was not trained on (native spacings in the phantom cohorts vary by about ±10 %).

Both score against the reference on the patient's grid (rules enforced; CTVn composed from the
nodal groups the patient's reference includes, as the test evaluation does).

Usage: python benchmarks/native_grid.py --cohort LABELLED_COHORT [--model default|RUN] [--name NAME]
Use validation patients (e.g. `train_default_model.py`'s WORK/data/target_validation), not the test set.
Writes benchmarks/results/native_grid_<name>.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def main() -> None:
    import torch
    from rich.progress import track

    from cervicontour.cohort import load_cohort
    from cervicontour.io.atomic import write_text_atomic
    from cervicontour.metrics import evaluate_pair
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.case import predict_case
    from cervicontour.inference.targets import reference_nodal_groups
    from cervicontour.volume import to_lps

    parser = argparse.ArgumentParser()
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--name", default="shipped")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cases = load_cohort(args.cohort).labelled()
    patients: dict[str, dict] = {}
    t0 = time.time()
    for case in track(cases, description="working vs native grid"):
        image = case.load_image()
        native_mm = tuple(float(v) for v in to_lps(image).spacing_mm)
        groups = reference_nodal_groups(case.patient_id, case.structure_names)
        references = {s: case.load_structure(s) for s in STRUCTURES}
        row: dict = {"native_spacing_mm": native_mm}
        for kind in ("working", "native"):
            used = model
            if kind == "native":
                used = copy.copy(model)
                used.plan = dataclasses.replace(model.plan, spacing_mm=native_mm)
            pred = predict_case(image, used, nodal_groups=groups)
            scores = {s: evaluate_pair(references[s], pred.masks[s], tolerances_mm=(5.0,)) for s in STRUCTURES}
            row[kind] = {s: {"dice": float(r["dice"]), "hd95_mm": float(r["hd95_mm"])} for s, r in scores.items()}
        patients[case.patient_id] = row
    summary = {kind: {s: {m: float(np.mean([p[kind][s][m] for p in patients.values()])) for m in ("dice", "hd95_mm")} for s in STRUCTURES}
               for kind in ("working", "native")}  # fmt: skip
    record = {
        "benchmark": "native_grid",
        "data": f"synthetic phantom cohort {args.cohort} ({len(cases)} labelled patients; cervicontour.synth)",
        "model": {"name": model.name, "version": model.version, "path": str(model.path), "plan_spacing_mm": list(model.plan.spacing_mm)},
        "seconds": round(time.time() - t0, 1),
        "summary": summary,
        "patients": patients,
    }
    for kind, per in summary.items():
        print(kind, " ".join(f"{s} {v['dice']:.4f}/{v['hd95_mm']:.2f}" for s, v in per.items()))
    out = ROOT / "benchmarks" / "results" / f"native_grid_{args.name}.json"
    write_text_atomic(out, json.dumps(record, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
