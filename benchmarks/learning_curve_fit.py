"""Issue 20, Deliver 3: the learning curve on the bespoke-convention cohort: `fit` vs scratch (vs the
zero-shot default) at N labelled cases, equal wall-clock budget. A thin caller of `cervicontour compare`.

Data (synthetic, drawn here; nothing downloaded): the `fit` issue's bespoke convention (phantom
seed 6161, style ctvn_margin_mm=10, slice_thickness_mm=2.5, noise_hu=25, hu_offset=30: the
hospital draws CTVn with a 10 mm margin, the shipped model's convention is 7 mm), size small,
``--patients`` (30) patients with their five compound masks only (structures/sub deleted); the last
``--test`` (10) are the test set, never trained on; N ∈ ``--sizes`` (5, 10, 20) take the first N of the others.
Each N is one `compare` run (resumable: run again to continue) with ``--methods``
(default: default,fit,scratch) and the same ``--budget-minutes`` for each method that trains.

nnU-Net is not trained here by default: at budgets of minutes on this CPU it predicts background only
(issue 20: 170 iterations, 15 min, Dice 0.000), and its default-plan predict costs ~2.5 min per test case.
Its curve against CPU time comes from `benchmarks/nnunet_long.py` (N=20, the same number of cases).
Add ``--methods ...,nnunet`` to train it at the budget anyway.

Usage:
  python benchmarks/learning_curve_fit.py [--sizes 5,10,20] [--budget-minutes 6] [--threads 1]
Writes out/learning_curve_fit/N<n>/ (compare's folders) and benchmarks/results/learning_curve_fit.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STYLE = {"ctvn_margin_mm": 10.0, "slice_thickness_mm": 2.5, "noise_hu": 25.0, "hu_offset": 30.0}
SEED = 6161


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def cohorts(work: Path, *, patients: int, test: int, sizes: list[int]) -> tuple[dict[int, Path], Path]:
    """The drawn cohort split once: ``{N: train_N}`` (the first N of the pool) and the test cohort."""
    from cervicontour.cohort import load_cohort, read_notes, write_notes
    from cervicontour.synth import synthesize_cohort
    from cervicontour.synth.style import style_from_dict

    drawn = work / "drawn"
    if not (drawn / ".complete").is_file():
        shutil.rmtree(drawn, ignore_errors=True)
        synthesize_cohort(drawn, patients=patients, seed=SEED, size="small", style=style_from_dict(STYLE, source="learning_curve_fit"), primary_only=True)
        (drawn / ".complete").write_text("five masks only\n")
    ids = sorted(load_cohort(drawn))
    notes = read_notes(drawn / "notes.csv")
    pool, held = ids[: len(ids) - test], ids[len(ids) - test :]
    if max(sizes) > len(pool):
        raise SystemExit(f"N={max(sizes)} needs {max(sizes)} training patients; the pool has {len(pool)} (--patients {patients} - --test {test})")
    folders = {n: work / f"train_n{n}" for n in sizes}
    for folder, chosen in [*((folders[n], pool[:n]) for n in sizes), (work / "test", held)]:
        if (folder / ".complete").is_file():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for pid in chosen:
            shutil.copytree(drawn / pid, folder / pid)
            shutil.rmtree(folder / pid / "structures" / "sub", ignore_errors=True)
        write_notes(folder, {p: notes.get(p, "") for p in chosen})
        for extra in ("style.toml",):
            if (drawn / extra).is_file():
                shutil.copy2(drawn / extra, folder / extra)
        (folder / ".complete").write_text(", ".join(chosen) + "\n")
    return folders, work / "test"


def summary(records: dict[int, dict]) -> dict:
    """Per method and N: mean Dice over the structures (and per structure), train and predict seconds."""
    out: dict = {}
    for n, record in sorted(records.items()):
        for name, method in record["methods"].items():
            if not method or not method.get("structures"):
                continue
            dice = {s: v["dice"] for s, v in method["structures"].items()}
            values = [v for v in dice.values() if v is not None]
            out.setdefault(name, {})[str(n)] = {
                "mean_dice": round(sum(values) / len(values), 4) if values else None, "dice": dice,
                "train_seconds": method.get("train_seconds"), "predict_seconds_per_case": method.get("predict_seconds_per_case"),
            }
    return out


def figure(curve: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cervicontour.io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curve.items():
        ns = sorted(int(n) for n in points)
        ax.plot(ns, [points[str(n)]["mean_dice"] for n in ns], marker="o", label=name)
    ax.set_xlabel("labelled training cases (N)")
    ax.set_ylabel("mean Dice, 5 structures, 10 test cases")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(sorted({int(n) for p in curve.values() for n in p}))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    from cervicontour.baselines.compare import CompareOptions, compare, parse_methods
    from cervicontour.io.atomic import write_text_atomic

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5,10,20")
    parser.add_argument("--patients", type=int, default=30)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--budget-minutes", type=float, default=6.0)
    parser.add_argument("--methods", default="default,fit,scratch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "learning_curve_fit")
    args = parser.parse_args()
    sizes = sorted({int(n) for n in args.sizes.split(",")})
    trains, test = cohorts(args.work / "data", patients=args.patients, test=args.test, sizes=sizes)
    style = ", ".join(f"{k}={v:g}" for k, v in STYLE.items())
    records = {}
    for n in sizes:
        data = (f"synthetic phantom (cervicontour.synth, size small, seed {SEED}, bespoke convention: {style}), five compound masks only; "
                f"train: the first {n} of {args.patients - args.test}, test: the last {args.test} of {args.patients}")  # fmt: skip
        options = CompareOptions(budget_minutes=args.budget_minutes, data=data, threads=args.threads)
        log(f"N={n}: compare {args.methods}, budget {args.budget_minutes:g} min each")
        compare(trains[n], test, args.work / f"N{n}", methods=parse_methods(args.methods), options=options,
                on_event=lambda line, n=n: log(f"N={n} {line}"))  # fmt: skip
        records[n] = json.loads((args.work / f"N{n}" / "comparison.json").read_text())
    curve = summary(records)
    record = {
        "data": f"synthetic phantom, size small, seed {SEED}, bespoke convention ({style}), five compound masks; test: the last {args.test} of {args.patients} patients",
        "budget_minutes": args.budget_minutes, "threads": args.threads, "sizes": sizes,
        "commits": {str(n): r.get("commit") for n, r in records.items()}, "curve": curve,
        "fit_minus_scratch": {str(n): round(curve["fit"][str(n)]["mean_dice"] - curve["scratch"][str(n)]["mean_dice"], 4)
                              for n in sizes if "fit" in curve and "scratch" in curve and str(n) in curve["fit"] and str(n) in curve["scratch"]},
    }  # fmt: skip
    results = ROOT / "benchmarks" / "results"
    write_text_atomic(results / "learning_curve_fit.json", json.dumps(record, indent=2) + "\n")
    figure(curve, results / "learning_curve_fit.png", f"bespoke phantom convention, budget {args.budget_minutes:g} min per method (wall)")
    log(json.dumps({name: {n: p["mean_dice"] for n, p in pts.items()} for name, pts in curve.items()}))


if __name__ == "__main__":
    main()
