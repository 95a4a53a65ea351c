"""Does training on more unenhanced phantoms move the nodal CTV towards real (unenhanced) CT?

The real CT in ../shared/data/real/totalsegmentator is unenhanced (iliac vessels ~45 HU) while ~94 % of
phantoms carry IV contrast. Two arms continue the same model — model 0.1's nodal fine-tune
(``out/default_v4/finetune_nodal_continued``, cpu-small; the CPU affords it) — for the same steps, seed
and train/validation split, on the 100-patient target cohort (seed 2002) drawn

  control    with the generator's contrast rates (6 % unenhanced + the fifth patient);
  nc50       with "no contrast" drawn at 50 % (same patients, same anatomy: only the edge-case draws change).

Scored on the synthetic test cohort (seed 3003, mostly enhanced; SYN005 unenhanced) and on the real CT:
Bladder vs TotalSegmentator's bladder, CTVn vs the guideline CTVn derived from TotalSegmentator's labels
(both model outputs, not ground truth; one CT: a sanity check, not an unbiased estimate).

Usage: python benchmarks/contrast_experiment.py [--steps 600] [--work out/contrast]
Writes benchmarks/results/contrast_experiment.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_CONTRAST = "no contrast - hard to see LNs"


def main() -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import real_ct_bladder as real
    import train_default_model as recipe

    from cervicontour.io import read_nifti
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import train
    from cervicontour.training.train_config import TrainConfig
    from cervicontour.structures import NODAL_OUTPUTS
    from cervicontour.synth import synthesize_cohort

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "contrast")
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "default_v4" / "data", help="the recipe's cohorts (target and test)")
    parser.add_argument("--init", type=Path, default=ROOT / "out" / "default_v4" / "finetune_nodal_continued")
    args = parser.parse_args()
    if not real.REAL.is_dir():
        raise SystemExit(f"real data not present: {real.REAL}")
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    control = recipe.cohort(args.data, "target", 1)
    nc50 = args.work / "target_s2002_nc50"
    if not (nc50 / "notes.csv").is_file():
        shutil.rmtree(nc50, ignore_errors=True)
        synthesize_cohort(nc50, patients=recipe.COHORTS["target"][0], seed=recipe.COHORTS["target"][1], edge_rates={NO_CONTRAST: 0.5}, phantom=1)
    test = recipe.cohort(args.data, "test", 1)
    ct = read_nifti(real.REAL / "example_ct.nii.gz")
    refs = real.references(ct)

    record = {"data": "synthetic target cohorts (seed 2002, 100 patients) and test cohort (seed 3003); real CT: TotalSegmentator example (unenhanced), references = TotalSegmentator outputs",
              "init": str(args.init.relative_to(ROOT) if args.init.is_relative_to(ROOT) else args.init), "steps": args.steps, "arms": {}}  # fmt: skip
    for arm, cohort in (("control", control), ("nc50", nc50)):
        notes = (cohort / "notes.csv").read_text()
        run = args.work / arm
        if not (run / "model.pt").is_file():
            shutil.rmtree(run, ignore_errors=True)
            config = TrainConfig(structures=NODAL_OUTPUTS, steps=args.steps, lr=1e-3, val_every=args.steps, val_cases=8, folds=5, seed=2, threads=2)
            t = time.time()
            train(cohort, run, config, init=args.init)
            print(f"{arm}: {args.steps} steps in {time.time() - t:.0f} s", flush=True)
        rows = recipe.score_test(test, args.work / f"test_{arm}", run)
        synthetic = recipe.means(rows, "dice")
        unenhanced = {r["structure"]: round(float(r["dice"]), 4) for r in rows if r["patient_id"] == "SYN005"}
        scores, _, _ = real.score(ct, refs, load_model(run))
        record["arms"][arm] = {
            "unenhanced_training_patients": notes.count(NO_CONTRAST), "test_dice": synthetic, "test_SYN005_unenhanced_dice": unenhanced,
            "real_ct": {"bladder": {k: scores["bladder"][k] for k in ("dice", "volume_pred_cc")}, "ctvn_vs_guideline": {k: scores["ctvn_vs_guideline"][k] for k in ("dice", "hd95_mm", "volume_pred_cc")}},
        }  # fmt: skip
        print(arm, json.dumps(record["arms"][arm], default=float), flush=True)
    out = ROOT / "benchmarks" / "results" / "contrast_experiment.json"
    out.write_text(json.dumps(record, indent=2, default=float))
    print("wrote", out)


if __name__ == "__main__":
    main()
