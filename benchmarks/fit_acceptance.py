"""Issue 18's acceptance: `cervicontour fit` on a five-label phantom cohort vs the zero-shot default.

    python benchmarks/fit_acceptance.py --name bespoke --seed 6161 --style ctvn_margin_mm=10 \
        --style slice_thickness_mm=2.5 --style noise_hu=25 --style hu_offset=30 --budget-minutes 40

Draws ``--patients`` labelled phantom patients with the style (``synth --style``), deletes every
``structures/sub/`` (the hospital labels the five compound masks only), keeps the last
``--test`` patients apart, runs ``cervicontour fit`` on the others (as a process, timed), then
predicts the test patients with the fitted model and with the shipped default (zero-shot), each
CTVn composed from the nodal groups the patient's note records (para-aortic when "para-aortic
nodes included": the clinician knows it before contouring), and scores both against the
phantom's compound masks. Writes ``benchmarks/results/fit_acceptance_<name>.json``.
Every number comes from synthetic phantoms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
FIVE = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def make_cohorts(work: Path, *, patients: int, test: int, seed: int, style: dict) -> tuple[Path, Path]:
    from cervicontour.cohort import load_cohort, read_notes, write_notes
    from cervicontour.synth import synthesize_cohort
    from cervicontour.synth.style import style_from_dict

    drawn, train, held = work / "drawn", work / "train", work / "test"
    if not drawn.is_dir():
        synthesize_cohort(drawn, patients=patients, seed=seed, size="small", style=style_from_dict(style, source="--style"))
    if train.is_dir() and held.is_dir():
        return train, held
    notes = read_notes(drawn / "notes.csv")
    ids = sorted(load_cohort(drawn))
    for folder, chosen in ((train, ids[: len(ids) - test]), (held, ids[len(ids) - test :])):
        folder.mkdir(parents=True)
        for pid in chosen:
            shutil.copytree(drawn / pid, folder / pid)
            shutil.rmtree(folder / pid / "structures" / "sub", ignore_errors=True)  # five compound masks only
        write_notes(folder, {p: notes.get(p, "") for p in chosen})
        if (drawn / "style.toml").is_file():
            shutil.copy2(drawn / "style.toml", folder / "style.toml")
    return train, held


def score(model_spec, test: Path) -> dict:
    from cervicontour.cohort import load_cohort
    from cervicontour.networks.bundle import load_model
    from cervicontour.training.selection import score_model

    model = load_model(model_spec)
    cases = load_cohort(test).cases()
    t = time.perf_counter()
    result = score_model(model, cases, FIVE)
    result["predict_seconds_per_case"] = round((time.perf_counter() - t) / len(cases), 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--test", type=int, default=4)
    parser.add_argument("--style", action="append", default=[], help="KEY=VALUE (synth --style keys)")
    parser.add_argument("--budget-minutes", type=float, default=40.0)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "fit_acceptance")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted fit in the work folder")
    parser.add_argument("--note", default="", help="recorded in the results (e.g. what was re-run)")
    args = parser.parse_args()
    style = {k: float(v) for k, v in (s.split("=", 1) for s in args.style)}
    work = args.work / args.name
    train, test = make_cohorts(work, patients=args.patients, test=args.test, seed=args.seed, style=style)
    model_dir = work / "model"
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "cervicontour.cli", "fit", str(train), "--out", str(model_dir), "--budget-minutes", str(args.budget_minutes)]
    if args.resume:
        command.append("--resume")
    if not (model_dir / "model.pt").is_file():
        subprocess.run(command, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    fit_wall_s = time.perf_counter() - t0
    fitted, zero = score(model_dir, test), score("default", test)
    record = json.loads((model_dir / "fit.json").read_text())
    rows = {}
    for name in FIVE:
        rows[name] = {"fit": fitted["dice"][name], "zero_shot": zero["dice"][name], "fit_hd95_mm": fitted["hd95_mm"][name], "zero_shot_hd95_mm": zero["hd95_mm"][name]}
        print(f"{name:12s} fit {fitted['dice'][name]:.3f}  zero-shot {zero['dice'][name]:.3f}")
    print(f"five-structure mean: fit {fitted['mean_dice']:.4f}  zero-shot {zero['mean_dice']:.4f}  ({fitted['mean_dice'] - zero['mean_dice']:+.4f})")
    from cervicontour.cohort import load_cohort
    from cervicontour.validate.notes import para_aortic_included

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = {
        "data": f"synthetic phantom (cervicontour synth --size small --seed {args.seed}, style {style or 'default'}), {args.patients} patients, "
                f"structures/sub deleted; fit on the first {args.patients - args.test}, tested on the last {args.test}",
        "commit": commit, "budget_minutes": args.budget_minutes, "note": args.note,
        "fit_wall_seconds_this_call": round(fit_wall_s, 1), "fit_stage_seconds": {k: v.get("seconds") for k, v in record["stages"].items()},
        "fit_steps": {k: record["stages"][k].get("steps_done") for k in ("stage1", "refiner") if k in record["stages"]},
        "selection_choice": record["stages"]["select"]["choice"],
        "test_patients": {c.patient_id: {"para_aortic": para_aortic_included(c.note)} for c in load_cohort(test).cases()},
        "dice": rows, "mean_dice": {"fit": fitted["mean_dice"], "zero_shot": zero["mean_dice"]},
        "per_case": {"fit": fitted["per_case"], "zero_shot": zero["per_case"]},
        "predict_seconds_per_case": {"fit": fitted["predict_seconds_per_case"], "zero_shot": zero["predict_seconds_per_case"]},
        "load_average_end": os.getloadavg(),
    }  # fmt: skip
    path = ROOT / "benchmarks" / "results" / f"fit_acceptance_{args.name}.json"
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
