"""How much the working grid alone costs: reference masks sent to the model's working grid and back.

A perfect network reproduces its training labels exactly on the working grid; what it can then reach
on each patient's own grid is bounded by this round trip. Two kinds of training label are compared:
``binary`` (the resampled mask thresholded at 0.5, what training used before ``soft_labels``) and
``soft`` (the resampled fraction kept, ``TrainConfig(soft_labels=True)``). Both go back to the input
grid as a network's probabilities do (linear interpolation, ≥ 0.5).

Usage: python benchmarks/resampling_ceiling.py [--model default|RUN] [--cohort DIR] [--patients N]
Default cohort: the default model's synthetic test cohort (synth --size small --seed 3003, 10 patients).
Writes benchmarks/results/resampling_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def main() -> None:
    from rich.progress import track

    from cervicontour.cohort import load_cohort
    from cervicontour.metrics import evaluate_pair
    from cervicontour.networks.bundle import load_model
    from cervicontour.preprocess import paste, prepare_image
    from cervicontour.preprocess.prepare import SOFT_SCALE, masks_to_working

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--cohort", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=10)
    args = parser.parse_args()
    cohort_dir = args.cohort
    if cohort_dir is None:
        from cervicontour.synth import synthesize_cohort

        cohort_dir = ROOT / "out" / "resampling_ceiling" / "test_s3003"
        if not (cohort_dir / "notes.csv").is_file():
            synthesize_cohort(cohort_dir, patients=10, seed=3003, size="small", phantom=1)
    plan = load_model(args.model).plan
    cases = load_cohort(cohort_dir).labelled()[: args.patients]
    rows: dict[str, dict[str, list]] = {}
    t0 = time.time()
    for case in track(cases, description="round trips"):
        image = case.load_image()
        prepared = prepare_image(image, plan)
        masks = [case.load_structure(n) for n in STRUCTURES]
        for kind in ("binary", "soft"):
            labels = masks_to_working(masks, prepared.grid, image, soft=kind == "soft").astype(np.float32)
            if kind == "soft":
                labels /= SOFT_SCALE
            values, box = prepared.back_to_input(labels)
            for c, (name, mask) in enumerate(zip(STRUCTURES, masks)):
                back = mask.with_array((paste(values[c], box, image.shape) >= 0.5).astype(np.uint8))
                row = evaluate_pair(mask, back, tolerances_mm=(5.0,))
                rows.setdefault(kind, {}).setdefault(name, []).append((row["dice"], row["hd95_mm"]))
    summary = {
        kind: {name: {"dice_mean": float(np.mean([d for d, _ in v])), "dice_min": float(np.min([d for d, _ in v])),
                      "hd95_mm_mean": float(np.mean([h for _, h in v])), "hd95_mm_max": float(np.max([h for _, h in v]))}
               for name, v in per.items()}
        for kind, per in rows.items()
    }  # fmt: skip
    record = {
        "benchmark": "resampling_ceiling",
        "data": f"synthetic phantom cohort {cohort_dir.name} ({len(cases)} patients), reference masks only (no network)",
        "model_plan": {"model": str(args.model), "spacing_mm": list(plan.spacing_mm)},
        "seconds": round(time.time() - t0, 1),
        "summary": summary,
    }
    out = ROOT / "benchmarks" / "results" / "resampling_ceiling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    for kind, per in summary.items():
        print(kind, {n: f"Dice {v['dice_mean']:.3f} HD95 {v['hd95_mm_mean']:.2f} mm" for n, v in per.items()})


if __name__ == "__main__":
    main()
