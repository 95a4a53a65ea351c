"""Experiments that answer the seed's questions, at a CPU budget this machine affords.

Data (all synthetic, made by our own phantom; nothing downloaded):
  target pool   synth --patients 20 --seed 5005 --size small   (labelled target cases; N = the first N)
  test set      synth --patients 10 --seed 3003 --size small   (fixed; never trained on)
  source model  out/default_model/pretrain (benchmarks/train_default_model.py: 40 patients, seed 1001,
                35 anatomy labels + Bladder)

Experiments (equal budget = equal optimiser steps of the same network and 48×48×32 patch, batch 2):
  learning_curve   N ∈ {2, 5, 10, 20}: scratch vs transfer (fine-tune from the source model)
  multi_vs_single  N = 10: one 5-channel model vs five 1-channel models sharing the same total steps
  spacing          N = 10: cohort-median working spacing vs a coarser fixed 5 × 5 × 7 mm

Usage: python benchmarks/experiments.py [--exp all|learning_curve|multi_vs_single|spacing] [--steps 120]
       [--work out/experiments] [--source out/default_model/pretrain] [--transfer]
Writes benchmarks/results/<exp>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "out" / "experiments"
RESULTS = ROOT / "benchmarks" / "results"
SOURCE = ROOT / "out" / "default_model" / "pretrain"
PRIMARY = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def cohort(name: str, patients: int, seed: int) -> Path:
    from cervicontour.synth import synthesize_cohort

    path = WORK / "data" / f"{name}_s{seed}"
    if not (path / "notes.csv").is_file():
        if path.exists():
            shutil.rmtree(path)
        synthesize_cohort(path, patients=patients, seed=seed, size="small", phantom=1)  # the phantom its recorded results used
    return path


def subset(pool: Path, n: int) -> Path:
    """A cohort folder holding the first ``n`` patients of ``pool`` (symlinks, no copies)."""
    out = WORK / "data" / f"{pool.name}_first{n}"
    if not out.exists():
        out.mkdir(parents=True)
        for d in sorted(p for p in pool.iterdir() if p.is_dir())[:n]:
            (out / d.name).symlink_to(d.resolve())
    return out


def evaluate_model(run: Path, test: Path, structures=PRIMARY) -> dict:
    """Mean Dice and HD95 per structure of ``run``'s model on the test cohort (input grid, rules on)."""
    from cervicontour.cohort import load_cohort
    from cervicontour.metrics import evaluate_pair
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.case import predict_case

    model = load_model(run)
    per: dict[str, dict[str, list]] = {n: {"dice": [], "hd95_mm": []} for n in structures}
    seconds = []
    for case in load_cohort(test).labelled():
        image = case.load_image()
        t = time.perf_counter()
        result = predict_case(image, model)
        seconds.append(time.perf_counter() - t)
        for name in structures:
            if name not in result.masks:
                continue
            row = evaluate_pair(case.load_structure(name), result.masks[name], tolerances_mm=(5.0,))
            per[name]["dice"].append(row["dice"])
            per[name]["hd95_mm"].append(row["hd95_mm"])
    out = {"dice": {}, "hd95_mm": {}, "predict_seconds_mean": float(np.mean(seconds))}
    for name, m in per.items():
        if m["dice"]:
            out["dice"][name] = float(np.nanmean(m["dice"]))
            finite = [v for v in m["hd95_mm"] if np.isfinite(v)]
            out["hd95_mm"][name] = float(np.mean(finite)) if finite else float("inf")
    out["mean_dice"] = float(np.mean(list(out["dice"].values())))
    return out


def run(name: str, cohort_dir: Path, config, *, init=None) -> dict:
    from cervicontour.training.train import train

    out = WORK / "runs" / name
    if (out / "model.pt").is_file() and (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    result = train(cohort_dir, out, config, init=init)
    record = {"name": name, "steps": result.steps_done, "train_seconds": round(result.seconds, 1), "wall_seconds": round(time.perf_counter() - t, 1), "config_sha256": config.sha256()}
    (out / "result.json").write_text(json.dumps(record))
    print(f"{name}: trained {result.steps_done} steps in {result.seconds:.0f} s", flush=True)
    return record


def base_config(steps: int, **kw):
    from cervicontour.training.train_config import TrainConfig

    return TrainConfig(network="cpu-small", patch_size=(48, 48, 32), steps=steps, folds=1, threads=1, seed=0, checkpoint_every=max(steps, 1), **kw)


def learning_curve(steps: int, test: Path) -> dict:
    pool = cohort("pool", 20, 5005)
    results = []
    # scratch arms first: the transfer arms need the source model, which may still be training
    for arm in ("scratch", "transfer"):
        for n in (2, 5, 10, 20):
            data = subset(pool, n)
            if arm == "transfer":
                while not (SOURCE / "model.pt").is_file():
                    print("waiting for the source model (benchmarks/train_default_model.py pretrain stage)", flush=True)
                    time.sleep(60)
            record = run(f"lc_{arm}_n{n}", data, base_config(steps), init=SOURCE if arm == "transfer" else None)
            record.update({"n": n, "arm": arm, "test": evaluate_model(WORK / "runs" / record["name"], test)})
            results.append(record)
            print(f"  N={n} {arm}: mean Dice {record['test']['mean_dice']:.3f}", flush=True)
    return {"experiment": "learning_curve", "steps_per_run": steps, "results": results}


def multi_vs_single(steps: int, test: Path, transfer: bool = False) -> dict:
    data = subset(cohort("pool", 20, 5005), 10)
    init, tag = (SOURCE, "_transfer") if transfer else (None, "")
    multi = run(f"mvs_multi{tag}", data, base_config(steps), init=init)
    multi["test"] = evaluate_model(WORK / "runs" / f"mvs_multi{tag}", test)
    singles = {}
    per = max(steps // len(PRIMARY), 1)
    for name in PRIMARY:
        record = run(f"mvs_single_{name}{tag}", data, base_config(per, structures=(name,)), init=init)
        record["test"] = evaluate_model(WORK / "runs" / f"mvs_single_{name}{tag}", test, structures=(name,))
        singles[name] = record
    return {"experiment": "multi_vs_single", "init": "transfer from the source" if transfer else "scratch", "total_steps_each_arm": steps, "steps_per_single_model": per, "multi": multi, "single": singles}


def spacing(steps: int, test: Path, transfer: bool = False) -> dict:
    data = subset(cohort("pool", 20, 5005), 10)
    init, tag = (SOURCE, "_transfer") if transfer else (None, "")
    out = {}
    for label, sp in (("median", None), ("fixed_5x5x7", (5.0, 5.0, 7.0))):
        record = run(f"spacing_{label}{tag}", data, base_config(steps, spacing_mm=sp), init=init)
        plan = json.loads((WORK / "runs" / f"spacing_{label}{tag}" / "plan.json").read_text())
        record.update({"spacing_mm": plan["spacing_mm"], "patch_size": plan["patch_size"], "test": evaluate_model(WORK / "runs" / f"spacing_{label}{tag}", test)})
        out[label] = record
    return {"experiment": "spacing", "init": "transfer from the source" if transfer else "scratch", "steps_per_run": steps, "results": out}


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp = result["experiment"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if exp == "learning_curve":
        for arm, colour in (("scratch", "C0"), ("transfer", "C1")):
            pts = sorted((r["n"], r["test"]["mean_dice"]) for r in result["results"] if r["arm"] == arm)
            if pts:
                ax.plot(*zip(*pts), marker="o", color=colour, label=arm)
        ax.set_xlabel("labelled target cases N")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([2, 5, 10, 20], ["2", "5", "10", "20"])
    elif exp == "multi_vs_single":
        names = list(result["single"])
        x = np.arange(len(names))
        ax.bar(x - 0.2, [result["multi"]["test"]["dice"].get(n, np.nan) for n in names], 0.4, label="one 5-channel model")
        ax.bar(x + 0.2, [result["single"][n]["test"]["dice"].get(n, np.nan) for n in names], 0.4, label="five 1-channel models")
        ax.set_xticks(x, names)
    else:
        names = list(PRIMARY)
        x = np.arange(len(names))
        for k, (label, rec) in enumerate(result["results"].items()):
            ax.bar(x + (k - 0.5) * 0.4, [rec["test"]["dice"].get(n, np.nan) for n in names], 0.4, label=f"{label} {tuple(round(v, 2) for v in rec['spacing_mm'])} mm, {rec['train_seconds']:.0f} s")
        ax.set_xticks(x, names)
    ax.set_ylabel("mean Dice on the synthetic test set (seed 3003)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"{exp}, {result.get('init', 'scratch')} (synthetic data; CPU budget per run: {result.get('steps_per_run', result.get('total_steps_each_arm'))} steps)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main() -> None:
    global WORK, SOURCE
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--exp", default="all", choices=["all", "learning_curve", "multi_vs_single", "spacing"])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--work", type=Path, default=WORK, help="cohorts and runs (a new folder re-makes the cohorts with the current generator)")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the pretraining run the transfer arms start from")
    parser.add_argument("--transfer", action="store_true", help="multi_vs_single, spacing: every arm fine-tunes from --source (writes <exp>_transfer.json)")
    args = parser.parse_args()
    WORK, SOURCE = args.work, args.source
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    test = cohort("test", 10, 3003)
    todo = ["multi_vs_single", "spacing", "learning_curve"] if args.exp == "all" else [args.exp]
    for exp in todo:
        t = time.time()
        if exp == "learning_curve":
            result, name = learning_curve(args.steps, test), exp
        else:
            result = {"multi_vs_single": multi_vs_single, "spacing": spacing}[exp](args.steps, test, transfer=args.transfer)
            name = f"{exp}_transfer" if args.transfer else exp
        result.update({"data": {"pool": "synth small, 20 patients, seed 5005", "test": "synth small, 10 patients, seed 3003", "source": f"{SOURCE.relative_to(ROOT) if SOURCE.is_relative_to(ROOT) else SOURCE} (train_default_model.py pretrain: synth small, 40 patients, seed 1001)"}, "machine": "2 shared CPU cores, torch CPU fp32, 1 thread per run", "wall_seconds": round(time.time() - t)})
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        plot(result, RESULTS / f"{name}.png")
        print(f"wrote {RESULTS / name}.json/.png", flush=True)


if __name__ == "__main__":
    main()
