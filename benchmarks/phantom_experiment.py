"""Is the nodal CTV hard to learn because of the phantom's anatomy? Phantom 1 vs phantom 2, equal budget.

Error analysis of the shipped model (``ctvn_errors.py``) found ~40 % of its CTVn errors within one voxel
of the iliopsoas: in phantom 1 the iliac vessels run *through* the muscle (71 % of each external
iliac artery's volume inside it), so the nodal CTV there is the vessel alone, cut out of the muscle.
Phantom 2 puts the arteries on the psoas' antero-medial surface, veins postero-medial to them, as in
the pelvis (only the vessels move; same seeds, same patients otherwise).

Two arms fine-tune the same pretraining (model 0.1's CPU source pretraining, ``out/default_v4/pretrain``,
cpu-small: the CPU affords it) for the same steps, seed and train/validation split, on the 100-patient target cohort (seed 2002) of each
phantom; each is scored on the test cohort (seed 3003) of both phantoms, CTVn composed from the
reference's nodal groups, with the share of CTVn errors next to the iliopsoas. The shipped model 0.2
is scored on both test cohorts too. With real data beside the project, each arm's CTVn on the real
CT is compared with the guideline CTVn from TotalSegmentator's labels (a sanity check on one CT).

Usage: python benchmarks/phantom_experiment.py [--steps 1200] [--work out/phantom]
Writes benchmarks/results/phantom_experiment.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ctvn_errors
    import real_ct_bladder as real
    import train_default_model as recipe

    from cervicontour.networks.bundle import load_model
    from cervicontour.training.train import train
    from cervicontour.training.train_config import TrainConfig
    from cervicontour.structures import NODAL_OUTPUTS

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "phantom")
    parser.add_argument("--data", type=Path, default=ROOT / "out" / "default_v4" / "data", help="the recipe's phantom-1 cohorts (target and test)")
    parser.add_argument("--init", type=Path, default=ROOT / "out" / "default_v4" / "pretrain", help="the source pretraining both arms start from")
    args = parser.parse_args()
    if not (args.init / "model.pt").is_file():
        raise SystemExit(f"no pretraining at {args.init}: make it with train_default_model.py --stage pretrain, or pass --init")
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)

    def phantom_cohort(name: str, phantom: int) -> Path:
        return recipe.cohort(args.data if phantom == 1 else args.work / "data", name, phantom)

    targets = {p: phantom_cohort("target", p) for p in (1, 2)}
    tests = {p: phantom_cohort("test", p) for p in (1, 2)}
    ct = refs = None
    if real.REAL.is_dir():
        from cervicontour.io import read_nifti

        ct = read_nifti(real.REAL / "example_ct.nii.gz")
        refs = real.references(ct)

    def score(model, label: str) -> dict:
        out = {}
        for p, test in tests.items():
            pred = args.work / f"test_{label}_phantom{p}"
            rows = recipe.score_test(test, pred, model)
            errors = ctvn_errors.analyse(test, pred)
            out[f"test_phantom{p}"] = {
                "dice": recipe.means(rows, "dice"), "hd95_mm": recipe.means(rows, "hd95_mm", 2),
                "ctvn_errors_next_to_iliopsoas": errors["summary"]["share_of_errors_next_to_iliopsoas"],
                "ctvn_dice_if_iliopsoas_zone_were_right": errors["summary"]["dice_if_iliopsoas_zone_right"],
            }  # fmt: skip
        if ct is not None:
            scores, _, _ = real.score(ct, refs, load_model(model))
            out["real_ct_ctvn_vs_guideline"] = {k: scores["ctvn_vs_guideline"][k] for k in ("dice", "hd95_mm", "volume_pred_cc")}
            out["real_ct_bladder_dice"] = scores["bladder"]["dice"]
        return out

    record = {
        "data": "synthetic phantoms (cervicontour.synth), phantom 1 and 2: target seed 2002 (100), test seed 3003 (10); real CT: TotalSegmentator example, references = TotalSegmentator outputs",
        "init": str(args.init.relative_to(ROOT) if args.init.is_relative_to(ROOT) else args.init), "steps": args.steps,
        "shipped_model": {"version": load_model("default").version, **score("default", "shipped")}, "arms": {},
    }  # fmt: skip
    print("shipped", json.dumps(record["shipped_model"], default=float), flush=True)
    for p, cohort in targets.items():
        run = args.work / f"phantom{p}"
        if not (run / "model.pt").is_file():
            shutil.rmtree(run, ignore_errors=True)
            config = TrainConfig(structures=NODAL_OUTPUTS, steps=args.steps, val_every=args.steps, val_cases=8, folds=5, seed=2, threads=2, strategy="full")
            t = time.time()
            train(cohort, run, config, init=args.init, on_progress=recipe.progress(f"phantom{p}"))
            print(f"phantom{p}: {args.steps} steps in {time.time() - t:.0f} s", flush=True)
        record["arms"][f"trained_on_phantom{p}"] = score(run, f"phantom{p}")
        print(p, json.dumps(record["arms"][f"trained_on_phantom{p}"], default=float), flush=True)
    out = ROOT / "benchmarks" / "results" / "phantom_experiment.json"
    out.write_text(json.dumps(record, indent=2, default=float))
    print("wrote", out)


if __name__ == "__main__":
    main()
