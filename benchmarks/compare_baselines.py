"""Ours vs the baselines on one fixed synthetic split: a thin caller of `cervicontour compare`.

Data (all synthetic, drawn here by ``cervicontour.synth``, phantom 1 — the anatomy the shipped
model's recorded training data used — size small, the default contouring convention; nothing downloaded):
  train  seed --train-seed (2002), --train-patients (20), five masks per patient (structures/sub
         removed: what a hospital labels); also the atlases and UniverSeg's support set
  test   seed --test-seed (3003), --test-patients (10), never trained on; structures/sub kept so
         the TotalSegmentator-style rule can read the phantom's vessels

The methods, scoring and record are `cervicontour compare`'s (cervicontour.baselines.compare):
``--methods`` and ``--use NAME=DIR`` are passed through (e.g. ``--use nnunet=out/nnunet_long``
scores the long nnU-Net run without retraining it). MedSAM can be restricted
(``--medsam-structures``, ``--medsam-cases N``: the first N test patients).

Usage:
  python benchmarks/compare_baselines.py --name NAME [--train-patients 20] [--test-patients 10]
      [--budget-minutes 6] [--methods default,fit,scratch,atlas] [--use nnunet=DIR] ...

Writes the comparison to out/compare/NAME/ (predictions, models, resumable) and copies
comparison.{json,md,png} to benchmarks/results/compare/NAME/.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHANTOM = 1


def cohort(path: Path, *, patients: int, seed: int, five_only: bool) -> Path:
    """Draw a phantom cohort once (a finished one is kept: ``.complete``)."""
    from cervicontour.synth import synthesize_cohort

    if (path / ".complete").is_file():
        return path
    if path.exists():
        shutil.rmtree(path)
    synthesize_cohort(path, patients=patients, seed=seed, size="small", phantom=PHANTOM, primary_only=five_only)
    (path / ".complete").write_text("five masks only\n" if five_only else "all phantom labels\n")
    return path


def main() -> None:
    from cervicontour.baselines.compare import CompareOptions, compare, parse_methods
    from cervicontour.cohort import load_cohort

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="names the work and results folders")
    parser.add_argument("--train-patients", type=int, default=20)
    parser.add_argument("--test-patients", type=int, default=10)
    parser.add_argument("--train-seed", type=int, default=2002)
    parser.add_argument("--test-seed", type=int, default=3003)
    parser.add_argument("--budget-minutes", type=float, default=6.0)
    parser.add_argument("--methods", default="default,fit,scratch,atlas")
    parser.add_argument("--use", action="append", default=[], help="NAME=DIR (repeatable)")
    parser.add_argument("--medsam-structures", default=None)
    parser.add_argument("--medsam-cases", type=int, default=None, help="MedSAM on the first N test patients only")
    parser.add_argument("--medsam-margin-px", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "compare")
    args = parser.parse_args()
    work = args.work / args.name
    train = cohort(work / "data" / f"train_s{args.train_seed}_n{args.train_patients}", patients=args.train_patients, seed=args.train_seed, five_only=True)
    test = cohort(work / "data" / f"test_s{args.test_seed}_n{args.test_patients}", patients=args.test_patients, seed=args.test_seed, five_only=False)
    ids = sorted(c.patient_id for c in load_cohort(test).labelled())
    data = (f"synthetic phantom {PHANTOM} (cervicontour.synth, size small, default convention: CTVn margin 7 mm): "
            f"train seed {args.train_seed} N={args.train_patients} (five masks each), test seed {args.test_seed} N={args.test_patients}")  # fmt: skip
    options = CompareOptions(
        budget_minutes=args.budget_minutes, data=data, threads=args.threads, medsam_margin_px=args.medsam_margin_px,
        medsam_structures=tuple(args.medsam_structures.split(",")) if args.medsam_structures else None,
        medsam_cases=tuple(ids[: args.medsam_cases]) if args.medsam_cases else None,
    )  # fmt: skip
    use = dict(item.split("=", 1) for item in args.use)
    compare(train, test, work / "comparison", methods=parse_methods(args.methods), options=options, use=use,
            on_event=lambda line: print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True))  # fmt: skip
    results = ROOT / "benchmarks" / "results" / "compare" / args.name
    results.mkdir(parents=True, exist_ok=True)
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        shutil.copy2(work / "comparison" / name, results / name)
    print((results / "comparison.md").read_text())


if __name__ == "__main__":
    main()
