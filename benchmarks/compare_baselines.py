"""Ours vs the baselines on one fixed synthetic split: one run, one table, one figure.

Data (all synthetic, made here by ``cervicontour.synth``; nothing downloaded):
  train  synth --patients 20 --seed 2002 --size small   (labelled; also the atlases / support set)
  test   synth --patients 10 --seed 3003 --size small   (never trained on)
  source synth --patients 40 --seed 1001 --size small   (only through the pretrained run used by
         "ours transfer": ``python benchmarks/train_default_model.py --stage pretrain``)

Methods, each trained (where it trains) on the same 20 cases with the same wall-clock budget
(``--budget-minutes``, 2 CPU threads):
  ours scratch / ours transfer  our per-structure sigmoid U-Net predicting the nodal groups; CTVn
                                composed per patient from the groups its reference CTVn includes
                                (the clinician's para-aortic decision is an input, as in the review
                                page), and once with the default groups (no para-aortic: "blind")
  ours default (shipped)        the packaged model (its own, longer training: see its model card)
  nnU-Net v2                    3d_fullres, region-based (overlaps kept), epochs x iterations sized
                                to the budget from a measured s/iteration, no test-time mirroring
  multi-atlas                   SimpleITK rigid → affine → B-spline, K atlases, majority vote / STAPLE
  UniverSeg-style               2D in-context segmenter meta-trained here for the budget, K support slices
  TotalSegmentator rule         guideline CTVn (vessels + 7 mm - bone - muscle + presacral) and the
                                bladder, from the phantom's own labels ("oracle TotalSegmentator":
                                an upper bound of what TotalSegmentator's labels would give)

Usage:
  python benchmarks/compare_baselines.py [--work out/compare] [--budget-minutes 6] [--only m1,m2]

Writes benchmarks/results/compare_baselines.{json,md,png}. Every number is measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from cervicontour.structures import NODAL_OUTPUTS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRIMARY = ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium")


def cohort(path: Path, patients: int, seed: int) -> Path:
    from cervicontour.synth import synthesize_cohort

    if not (path / "notes.csv").is_file():
        if path.exists():
            shutil.rmtree(path)
        synthesize_cohort(path, patients=patients, seed=seed, size="small", phantom=1)  # the phantom its recorded results used
    return path


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- methods
def ours_steps(train_dir: Path, work: Path, budget_s: float) -> tuple[int, float]:
    """Steps that fit the budget: a 12-step probe measures seconds per step (data loading excluded)."""
    from cervicontour.model import TrainConfig, train

    probe = train(train_dir, fresh(work / "probe"), TrainConfig(structures=NODAL_OUTPUTS, steps=12, folds=1, seed=0, threads=2, checkpoint_every=1000))
    # the first steps pay one-off costs (allocation); the probe is pessimistic by a few percent
    per_step = probe.seconds / 12
    return max(int(budget_s / per_step), 20), per_step


def run_ours(name: str, train_dir: Path, test_dir: Path, work: Path, steps: int, init: Path | None) -> list[dict]:
    from cervicontour.model import TrainConfig, train
    from cervicontour.pipeline import predict

    run = fresh(work / name) / "run"
    t = time.perf_counter()
    train(train_dir, run, TrainConfig(structures=NODAL_OUTPUTS, steps=steps, folds=1, seed=0, threads=2, checkpoint_every=100), init=init)
    train_s = time.perf_counter() - t
    rows = []
    for label, groups in (("reference nodal groups", "reference"), ("default groups, blind", None)):
        pred = fresh(work / name / ("pred_reference" if groups else "pred_default"))
        t = time.perf_counter()
        predict(test_dir, pred, model=run, all_cases=True, nodal_groups=groups)
        infer = (time.perf_counter() - t) / n_cases(test_dir)
        rows.append({"method": f"{name.replace('_', ' ')} ({label})", "pred": pred, "train_s": train_s, "infer_s_per_case": infer,
                     "notes": f"{steps} steps, init {'pretrained run ' + str(init.name) if init else 'random'}"})  # fmt: skip
    return rows


def run_default(test_dir: Path, work: Path) -> list[dict]:
    from cervicontour.model import load_model
    from cervicontour.pipeline import predict

    model = load_model("default")
    nodal = "CTVn" not in model.structures
    pred = fresh(work / "default" / "pred")
    t = time.perf_counter()
    predict(test_dir, pred, model="default", all_cases=True, nodal_groups="reference" if nodal else None)
    infer = (time.perf_counter() - t) / n_cases(test_dir)
    meta = model.meta
    train_s = sum(float((meta.get(k) or {}).get("seconds") or 0) for k in ("pretrain", "finetune", "finetune_first"))
    return [{"method": "ours default (shipped)", "pred": pred, "train_s": train_s, "infer_s_per_case": infer,
             "notes": "packaged model; its training (pretraining + fine-tuning on seed 2002, made by an earlier phantom generator version) is longer than the budget"}]  # fmt: skip


def nnunet_probe(train_dir: Path, test_dir: Path, work: Path) -> float:
    """nnU-Net's seconds per training iteration on this cohort: 1 epoch x 6 iterations (its own plan)."""
    from cervicontour.baselines.nnunet_run import run_nnunet as nnunet

    one_ct = sorted(test_dir.glob("*/image.nii.gz"))[:1]
    result = nnunet(train_dir, one_ct, fresh(work / "nnunet_probe"), dataset_id=600, epochs=1, iterations_per_epoch=6, device="cpu", fold="all",
                    use_mirroring=False, on_stage=lambda s: log(f"nnU-Net probe: {s}"))  # fmt: skip
    return float(result["timings"]["train_s_per_iteration"])


def run_nnunet(train_dir: Path, test_dir: Path, work: Path, budget_s: float, s_per_iteration: float) -> list[dict]:
    from cervicontour.baselines.nnunet_run import run_nnunet as nnunet

    per_epoch = 25
    epochs = max(int(budget_s / s_per_iteration) // per_epoch, 1)
    out = fresh(work / "nnunet")
    result = nnunet(train_dir, test_dir, out, dataset_id=601, epochs=epochs, iterations_per_epoch=per_epoch, device="cpu", fold="all",
                    use_mirroring=False, on_stage=lambda s: log(f"nnU-Net: {s}"))  # fmt: skip
    t = result["timings"]
    infer = t.get("per_case_inference_s")
    if isinstance(infer, dict):
        infer = float(np.mean(list(infer.values())))
    if infer is None:
        infer = float(t.get("predict_s", float("nan"))) / n_cases(test_dir)
    plan_s = sum(float(v) for k, v in t.items() if ("plan" in k or "preprocess" in k) and isinstance(v, (int, float)))
    return [{"method": "nnU-Net v2 3d_fullres", "pred": Path(result["predictions"]), "train_s": float(t.get("train_s", float("nan"))),
             "infer_s_per_case": float(infer), "notes": f"{epochs} epochs x {per_epoch} iterations (probe: {s_per_iteration:.2f} s/iteration); "
             f"plan + preprocess {plan_s:.0f} s not counted; timings {json.dumps(t, default=str)}"}]  # fmt: skip


def run_atlas(train_dir: Path, test_dir: Path, work: Path, k: int) -> list[dict]:
    """One registration set per target, fused twice (majority vote and STAPLE)."""
    from cervicontour.baselines.atlas import (
        load_atlases,
        predict_case,
        write_prediction,
    )
    from cervicontour.cohort import load_cohort

    atlases = load_atlases(train_dir, list(PRIMARY))
    outs = {fusion: fresh(work / f"atlas_{fusion}") for fusion in ("majority", "staple")}
    seconds = []
    for case in load_cohort(test_dir).cases():
        t = time.perf_counter()
        prediction = predict_case(case.load_image(), atlases, k=k, deformable="demons", structures=list(PRIMARY), image_path=Path(case.image_path), patient_id=case.patient_id)
        for fusion, out in outs.items():
            write_prediction(out, case.patient_id, prediction, fusion=fusion)
        seconds.append(time.perf_counter() - t)
        log(f"atlas {case.patient_id}: {seconds[-1]:.0f} s")
    return [{"method": f"multi-atlas K={k} ({fusion})", "pred": out, "train_s": 0.0, "infer_s_per_case": float(np.mean(seconds)),
             "notes": "rigid ranking of all atlases → affine → demons (SimpleITK); both fusions from the same registrations; no training"}
            for fusion, out in outs.items()]  # fmt: skip


def run_universeg(train_dir: Path, test_dir: Path, work: Path, budget_min: float, k: int) -> list[dict]:
    from cervicontour.baselines.universeg import predict_cohort
    from cervicontour.baselines.universeg_train import MetaTrainConfig, meta_train

    out = fresh(work / "universeg")
    t = time.perf_counter()
    # lr 3e-4 rather than the paper's 1e-4: a few hundred CPU steps instead of the paper's long GPU run
    trained = meta_train(train_dir, out / "model.pt", MetaTrainConfig(seed=0, max_minutes=budget_min, lr=3e-4))
    train_s = time.perf_counter() - t
    pred = fresh(work / "universeg" / "pred")
    result = predict_cohort(out / "model.pt", train_dir, test_dir, pred, structures=PRIMARY, k=k, seed=0)
    infer = float(np.mean([c["seconds"] for c in result["cases"].values()]))
    steps = getattr(trained, "steps", None)
    return [{"method": f"UniverSeg-style K={k}", "pred": pred, "train_s": train_s, "infer_s_per_case": infer,
             "notes": f"2D in-context, meta-trained here ({steps} steps) on the 20 train patients' 41 labels; official weights not downloadable"}]  # fmt: skip


def run_totalseg(test_dir: Path, work: Path) -> list[dict]:
    from cervicontour.baselines.totalseg import predict_cohort

    pred = fresh(work / "totalseg")
    seconds = predict_cohort(test_dir, pred, para_aortic=None)
    infer = float(np.mean(list(seconds.values()))) if seconds else float("nan")
    return [{"method": "TotalSegmentator rule (oracle labels)", "pred": pred, "train_s": 0.0, "infer_s_per_case": infer,
             "notes": "Bladder + guideline CTVn from the phantom's own vessel/bone/muscle labels (upper bound); para-aortic per the reference"}]  # fmt: skip


def n_cases(test_dir: Path) -> int:
    from cervicontour.cohort import load_cohort

    return len(load_cohort(test_dir).cases())


# ----------------------------------------------------------------------------- scoring
def score(test_dir: Path, row: dict) -> dict:
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort

    predicted = sorted({p.name.split(".")[0] for p in Path(row["pred"]).glob("*/structures/*.nii.gz")} & set(PRIMARY))
    result = evaluate_cohort(test_dir, row["pred"], structures=[s for s in PRIMARY if s in predicted], settings=EvaluationSettings(tolerances_mm=(2.0, 5.0)))
    per = {}
    for name in PRIMARY:
        sub = [r for r in result.rows if r["structure"] == name]
        if not sub:
            continue
        hd = np.array([float(r["hd95_mm"]) for r in sub])
        per[name] = {
            "n": len(sub),
            "dice_mean": float(np.mean([float(r["dice"]) for r in sub])),
            "dice_median": float(np.median([float(r["dice"]) for r in sub])),
            "hd95_mm_mean": float(np.mean(hd[np.isfinite(hd)])) if np.isfinite(hd).any() else float("nan"),
            "hd95_mm_median": float(np.median(hd)),
            "hd95_infinite": int((~np.isfinite(hd)).sum()),
            "apl_mm_mean": float(np.mean([float(r["apl_mm"]) for r in sub])),
        }
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in row.items()} | {"structures": per}


def table(results: list[dict]) -> str:
    lines = ["| method | " + " | ".join(f"{s} Dice / HD95 mm / APL mm" for s in PRIMARY) + " | train s | infer s/case |",
             "|---|" + "---|" * (len(PRIMARY) + 2)]  # fmt: skip
    for r in results:
        cells = []
        for s in PRIMARY:
            m = r["structures"].get(s)
            if m is None:
                cells.append("—")
                continue
            # HD95 is infinite where one side is empty: "∞" when every case is, else the finite mean (+ count)
            hd = "∞" if m["hd95_infinite"] == m["n"] else f"{m['hd95_mm_mean']:.1f}" + (f" ({m['hd95_infinite']}×∞)" if m["hd95_infinite"] else "")
            cells.append(f"{m['dice_mean']:.3f} / {hd} / {m['apl_mm_mean']:.0f}")
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['train_s']:.0f} | {r['infer_s_per_case']:.1f} |")
    lines.append("")
    lines += [f"- **{r['method']}**: {r['notes'].split('; timings')[0]}" for r in results]
    return "\n".join(lines)


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(PRIMARY))
    for i, r in enumerate(results):
        dice = [r["structures"].get(s, {}).get("dice_mean", np.nan) for s in PRIMARY]
        hd = [r["structures"].get(s, {}).get("hd95_mm_mean", np.nan) for s in PRIMARY]
        axes[0].bar(x + i * width, dice, width, label=r["method"])
        axes[1].bar(x + i * width, hd, width, label=r["method"])
    axes[1].set_yscale("log")
    for ax, title in zip(axes, ("mean Dice (higher is better)", "mean HD95 mm, log scale (lower is better; no bar: every case empty or not predicted)")):
        ax.set_xticks(x + 0.4 - width / 2, PRIMARY)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(0.9, color="k", lw=0.8, ls="--")
    axes[1].axhline(5.0, color="k", lw=0.8, ls="--")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle("Synthetic phantom test cohort (seed 3003, 10 patients) — train: 20 patients (seed 2002)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "compare")
    parser.add_argument("--budget-minutes", type=float, default=6.0)
    parser.add_argument("--pretrain", type=Path, default=ROOT / "out" / "default_model" / "pretrain")
    parser.add_argument("--atlas-k", type=int, default=5)
    parser.add_argument("--universeg-k", type=int, default=4, help="support size (inference cost grows with K: ~0.5 s per slice per structure at K=4 here)")
    parser.add_argument("--nnunet-s-per-iteration", type=float, default=None, help="skip the probe and assume this cost")
    parser.add_argument("--only", default=None, help="comma list of: default,scratch,transfer,nnunet,atlas,universeg,totalseg")
    parser.add_argument("--render-only", action="store_true", help="re-write the table and figure from the saved JSON (no new measurement)")
    args = parser.parse_args()
    if args.render_only:
        record = json.loads((RESULTS / "compare_baselines.json").read_text())
        write_outputs(record, "compare_baselines")
        return
    torch.set_num_threads(2)
    budget_s = args.budget_minutes * 60
    work = args.work
    train_dir = cohort(work / "data" / "train_s2002", 20, 2002)
    test_dir = cohort(work / "data" / "test_s3003", 10, 3003)
    only = set(args.only.split(",")) if args.only else {"default", "scratch", "transfer", "nnunet", "atlas", "universeg", "totalseg"}
    if "transfer" in only and not (args.pretrain / "model.pt").is_file():
        raise SystemExit(f"{args.pretrain}/model.pt not found: run `python benchmarks/train_default_model.py --stage pretrain` first")
    started = time.time()
    rows: list[dict] = []
    if "default" in only:
        log("ours default")
        rows += run_default(test_dir, work)
    if only & {"scratch", "transfer"}:
        steps, per_step = ours_steps(train_dir, work, budget_s)
        log(f"ours: {per_step:.2f} s/step → {steps} steps in {args.budget_minutes} min")
        if "scratch" in only:
            rows += run_ours("ours_scratch", train_dir, test_dir, work, steps, None)
        if "transfer" in only:
            rows += run_ours("ours_transfer", train_dir, test_dir, work, steps, args.pretrain)
    if "nnunet" in only:
        log("nnU-Net")
        s_per_it = args.nnunet_s_per_iteration or nnunet_probe(train_dir, test_dir, work)
        log(f"nnU-Net: {s_per_it:.2f} s/iteration")
        rows += run_nnunet(train_dir, test_dir, work, budget_s, s_per_it)
    if "atlas" in only:
        log("multi-atlas")
        rows += run_atlas(train_dir, test_dir, work, args.atlas_k)
    if "totalseg" in only:
        log("TotalSegmentator rule")
        rows += run_totalseg(test_dir, work)
    if "universeg" in only:
        log("UniverSeg-style")
        rows += run_universeg(train_dir, test_dir, work, args.budget_minutes, args.universeg_k)
    log("scoring")
    results = [score(test_dir, r) for r in rows]
    record = {
        "data": "synthetic phantom (cervicontour.synth): train seed 2002 (20 patients), test seed 3003 (10 patients), size small",
        "budget_minutes": args.budget_minutes, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads 2",
        "wall_s": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M"), "results": results,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "compare_baselines" if not args.only else "compare_baselines_partial"
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2, default=float))
    write_outputs(record, name)


def write_outputs(record: dict, name: str) -> None:
    md = table(record["results"])
    (RESULTS / f"{name}.md").write_text(
        f"Synthetic data ({record['data']}); budget {record['budget_minutes']} min per trained method; "
        f"{record['machine']}; measured {record['date']} in one run of {record['wall_s']:.0f} s.\n\n{md}\n"
    )
    figure(record["results"], RESULTS / f"{name}.png")
    print(md)


if __name__ == "__main__":
    main()
