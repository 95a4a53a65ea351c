"""Calibrate the "review closely" flags: per-structure uncertainty vs Dice on held-out phantoms.

    python benchmarks/flag_calibration.py [--patients 30] [--seed 7171] [--work out/flag_calibration]

1. ``measure``: draws ``--patients`` labelled phantom patients (``synth --size small --phantom 2``,
   a seed no other benchmark uses, so the shipped model never trained or was chosen on them), predicts
   each with the shipped default model (CTVn composed from the nodal groups of the patient's
   reference, as ``predict --nodal-groups reference``) and records, per structure, the pipeline's
   uncertainty score and the Dice against the phantom's reference (cached per patient under
   ``--work``: a rerun resumes).
2. ``calibrate``: per structure, the threshold :func:`cervicontour.contours.flags.choose_threshold`
   picks, its flag rate and its recall on the worst-Dice decile, in-sample and leave-one-patient-out
   (the threshold chosen on the other patients, applied to the one left out), and the old single
   threshold's rate and recall for comparison.

Writes ``benchmarks/results/flag_calibration.json`` and ``flag_calibration.png`` (uncertainty vs
Dice, one panel per structure). Every number comes from synthetic phantoms.

Dice conventions: an optional structure (GTVn, GTVp) absent from the reference and predicted empty
scores 1 (the right answer), absent and predicted 0; ``LN_ParaAortic`` is scored only on patients whose
reference includes it (for the others it is not contoured, so there is nothing to compare with).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _dice(ref: np.ndarray, pred: np.ndarray) -> float:
    total = int(ref.sum()) + int(pred.sum())
    return 2.0 * int(np.count_nonzero(ref & pred)) / total if total else 1.0


def measure(cohort: Path, records: Path) -> list[dict]:
    """One record per (patient, structure): score, flag, Dice; cached per patient in ``records``."""
    from cervicontour.cohort import load_cohort
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.case import predict_case
    from cervicontour.inference.targets import reference_nodal_groups

    records.mkdir(parents=True, exist_ok=True)
    code = records / "CODE"  # which code predicted the cached records
    if not code.is_file():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        code.write_text(f"{head}{' with uncommitted changes' if dirty else ''}\n")
    model = None
    out = []
    for case in load_cohort(cohort).labelled():
        path = records / f"{case.patient_id}.json"
        if not path.is_file():
            model = model or load_model("default")
            image = case.load_image()
            groups = reference_nodal_groups(case.patient_id, case.structure_names)
            t0 = time.perf_counter()
            result = predict_case(image, model, nodal_groups=groups, keep_probabilities=True)
            seconds = time.perf_counter() - t0
            rows = []
            for name, rec in result.structures.items():
                pred = result.masks[name].array > 0
                contoured = case.has(name)
                ref = case.load_structure(name).array > 0 if contoured else np.zeros_like(pred)
                if name == "LN_ParaAortic" and not contoured:
                    dice = None  # not part of this patient's CTVn: nothing to compare with
                else:
                    dice = _dice(ref, pred)
                p = result.probabilities[name].array
                m = p >= 0.5
                soft = 2.0 * float(p[m].sum()) / (float(p.sum()) + int(m.sum())) if p.sum() > 0 else None
                rows.append({
                    "patient_id": case.patient_id, "structure": name, "uncertainty": rec["uncertainty"],
                    "review_closely_shipped": rec["review_closely"], "reasons_shipped": rec["reasons"],
                    "predicted_voxels": int(pred.sum()), "voxels_before_rules": int(m.sum()),
                    "reference_voxels": int(ref.sum()), "in_reference": contoured,
                    "dice": dice, "max_p": float(p.max()), "soft_dice_proxy": soft,
                    "groups": groups, "note": case.note, "seconds": round(seconds, 1),
                })  # fmt: skip
            path.write_text(json.dumps(rows, indent=1))
            print(f"{case.patient_id}: {seconds:.1f} s", flush=True)
        out += json.loads(path.read_text())
    return out

#: The structures calibrated: the default model's outputs, CTVn composed.
STRUCTURES = ("Bladder", "Anorectum", "CTVp", "Parametrium", "CTVn", "GTVn", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic")
#: The single threshold every structure had before (pipeline.UNCERTAINTY_FLAG).
OLD_THRESHOLD = 0.25


def _model_name() -> str:
    from cervicontour.networks.bundle import load_model

    model = load_model("default")
    return f"{model.name} {model.version}"


def _old_flag(row: dict) -> bool:
    """The flag as the pipeline raised it before calibration: nothing predicted, uncertainty above
    0.25, or the rules removed more than 10 %."""
    from cervicontour.contours.flags import RULE_CHANGE_FLAG

    before, voxels = row["voxels_before_rules"], row["predicted_voxels"]
    removed = before and (before - voxels) / before > RULE_CHANGE_FLAG
    return voxels == 0 or row["uncertainty"] > OLD_THRESHOLD or bool(removed)


def _flag(row: dict, thresholds: dict[str, float], unreliable: dict[str, str]) -> bool:
    from cervicontour.contours.flags import review_reasons

    score = row["uncertainty"] if _eligible(row) else None
    return bool(review_reasons(row["structure"], score, row["predicted_voxels"], row["voxels_before_rules"],
                               thresholds=thresholds, unreliable=unreliable))  # fmt: skip


def _found(row: dict) -> bool:
    """The model found some of it (voxels at p >= 0.5, kept or not)."""
    return row["predicted_voxels"] > 0 or row["voxels_before_rules"] > 0


def _unreliable(rows: list[dict], model: str) -> str | None:
    """The reason to flag a structure whenever it is found, when at least half of the cases where
    the model found it have Dice below 0.5 (its uncertainty then cannot pick out the bad ones)."""
    found = [r for r in rows if _found(r)]
    wrong = [r for r in found if r["dice"] < 0.5]
    if not found or 2 * len(wrong) < len(found):
        return None
    nodes = [r for r in rows if r["in_reference"]]
    hit = [r for r in nodes if r["predicted_voxels"] > 0 and r["dice"] > 0]
    name = rows[0]["structure"]
    return (f"{name} found, and {model}'s {name} is unreliable: on held-out phantoms {len(wrong)} of the {len(found)} "
            f"{name}s it found (p >= 0.5) had Dice < 0.5, and it overlapped {len(hit)} of the {len(nodes)} in the references")


def _eligible(row: dict) -> bool:
    """A case whose uncertainty can raise the flag (an empty optional structure never is)."""
    from cervicontour.structures import ABSENT_MEANS_EMPTY

    return not (row["structure"] in ABSENT_MEANS_EMPTY and row["predicted_voxels"] == 0)


def _threshold(rows: list[dict], rate: float) -> float | None:
    from cervicontour.contours.flags import choose_threshold

    scores = [r["uncertainty"] for r in rows if _eligible(r)]
    return choose_threshold(scores, rate=rate) if scores else None


def _stats(rows: list[dict], flagged: list[bool], worst: set[int]) -> dict:
    hit = [i for i in worst if flagged[i]]
    n_flag = sum(flagged)
    return {"cases": len(rows), "flagged": n_flag, "flag_rate": round(n_flag / len(rows), 4) if rows else None,
            "worst_decile": len(worst), "worst_decile_flagged": len(hit),
            "recall_worst_decile": round(len(hit) / len(worst), 4) if worst else None,
            "precision_worst_decile": round(len(hit) / n_flag, 4) if n_flag else None}  # fmt: skip


def _spearman(x, y) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return round(float(spearmanr(x, y).statistic), 4)


def calibrate(rows: list[dict], *, rate: float, model: str) -> dict:
    """Thresholds and what they flag, per structure and overall (in-sample and leave-one-patient-out)."""
    from cervicontour.contours.flags import worst_decile

    scored = {s: [r for r in rows if r["structure"] == s and r["dice"] is not None] for s in STRUCTURES}
    unreliable = {s: why for s, rs in scored.items() if rs and (why := _unreliable(rs, model))}
    thresholds = {s: t for s, rs in scored.items() if s not in unreliable and (t := _threshold(rs, rate)) is not None}
    from cervicontour.structures import ABSENT_MEANS_EMPTY

    per, pooled = {}, {"new": [], "loo": [], "old": [], "worst": []}
    for name, rs in scored.items():
        if not rs:
            continue
        worst = set(worst_decile([r["dice"] for r in rs]))
        new = [_flag(r, thresholds, unreliable) for r in rs]
        old = [_old_flag(r) for r in rs]
        loo = []
        for r in rs:  # the threshold (or the unreliable verdict) chosen on the other patients, applied to this one
            others = [o for o in rs if o["patient_id"] != r["patient_id"]]
            why, t = _unreliable(others, model), _threshold(others, rate)
            table = {k: v for k, v in thresholds.items() if k != name} | ({name: t} if t is not None and not why else {})
            loo.append(_flag(r, table, {k: v for k, v in unreliable.items() if k != name} | ({name: why} if why else {})))
        dice = [r["dice"] for r in rs]
        eligible = [r for r in rs if _eligible(r)]
        per[name] = {
            "threshold_bits": thresholds.get(name), "eligible_cases": len(eligible),
            "spearman_uncertainty_vs_dice": _spearman([r["uncertainty"] for r in eligible], [r["dice"] for r in eligible]),
            "dice_mean": round(float(np.mean(dice)), 4), "dice_worst_decile_max": round(max(dice[i] for i in worst), 4),
            "calibrated_in_sample": _stats(rs, new, worst), "calibrated_leave_one_out": _stats(rs, loo, worst),
            "old_single_threshold": _stats(rs, old, worst),
        }  # fmt: skip
        if name in ABSENT_MEANS_EMPTY:
            per[name]["outcomes"] = _optional_outcomes(rs, new, old)
        for key, flags_ in (("new", new), ("loo", loo), ("old", old)):
            pooled[key] += [(r["patient_id"], name, f) for r, f in zip(rs, flags_)]
        pooled["worst"] += [(rs[i]["patient_id"], name) for i in worst]
    worst_pairs = set(pooled["worst"])
    overall = _overall(pooled, worst_pairs, set(STRUCTURES))
    overall_reliable = _overall(pooled, worst_pairs, set(STRUCTURES) - set(unreliable))
    curve = {}
    for r_ in (0.05, 0.10, 0.15, 0.20, 0.30):
        t = {s: t for s, rs in scored.items() if s not in unreliable and (t := _threshold(rs, r_)) is not None}
        flagged = {(r["patient_id"], r["structure"]) for s, rs in scored.items() for r in rs if _flag(r, t, unreliable)}
        total = sum(len(rs) for rs in scored.values())
        curve[f"{r_:.2f}"] = {"flag_rate": round(len(flagged) / total, 4), "recall_worst_decile": round(len(flagged & worst_pairs) / len(worst_pairs), 4)}
    not_in_field = [r for r in rows if r["structure"] == "LN_ParaAortic" and r["dice"] is None]
    return {
        "what": "'review closely' flags: per-structure uncertainty thresholds chosen on held-out phantom cases",
        "score": "uncertainty: mean binary entropy (bits) of the working-grid probabilities above 0.05 (pipeline record)",
        "rule": (f"per structure, the threshold that flags at most {rate:.0%} of its cases for uncertainty "
                 "(cervicontour.contours.flags.choose_threshold); plus, unchanged, 'nothing predicted' (never for an "
                 "optional structure: GTVp, GTVn) and 'rules removed > 10 %'"),
        "worst_decile": "per structure, the ceil(n/10) lowest-Dice cases plus ties (flags.worst_decile)",
        "dice_conventions": "optional structure absent and predicted empty = 1, absent and predicted = 0; LN_ParaAortic scored on patients whose reference includes it",
        "rate": rate, "thresholds_bits": thresholds, "per_structure": per, "overall": overall,
        "overall_without_unreliable": overall_reliable,
        "rate_curve_in_sample": curve,
        "unreliable": unreliable,
        "LN_ParaAortic_outside_the_chosen_field": {"cases": len(not_in_field), "flagged": sum(_flag(r, thresholds, unreliable) for r in not_in_field)},
    }  # fmt: skip


def _overall(pooled: dict, worst_pairs: set, names: set[str]) -> dict:
    out = {}
    worst = {(p, s) for p, s in worst_pairs if s in names}
    for key, label in (("new", "calibrated_in_sample"), ("loo", "calibrated_leave_one_out"), ("old", "old_single_threshold")):
        items = [(p, s, f) for p, s, f in pooled[key] if s in names]
        flagged = {(p, s) for p, s, f in items if f}
        patients = {p for p, _, _ in items}
        out[label] = {
            "structure_cases": len(items), "flagged": len(flagged), "flag_rate": round(len(flagged) / len(items), 4),
            "worst_decile": len(worst), "worst_decile_flagged": len(flagged & worst),
            "recall_worst_decile": round(len(flagged & worst) / len(worst), 4),
            "patients_with_a_flag": round(len({p for p, _ in flagged}) / len(patients), 4),
        }  # fmt: skip
    return out


def _optional_outcomes(rs: list[dict], new: list[bool], old: list[bool]) -> dict:
    out: dict[str, dict] = {}
    for r, n, o in zip(rs, new, old):
        ref, pred = r["reference_voxels"] > 0, r["predicted_voxels"] > 0
        key = {(False, False): "no node, none predicted", (False, True): "no node, one predicted",
               (True, False): "node missed", (True, True): "node predicted"}[(ref, pred)]  # fmt: skip
        slot = out.setdefault(key, {"cases": 0, "flagged": 0, "flagged_old": 0, "dice_mean": 0.0})
        slot["cases"] += 1
        slot["flagged"] += int(n)
        slot["flagged_old"] += int(o)
        slot["dice_mean"] += r["dice"]
    for slot in out.values():
        slot["dice_mean"] = round(slot["dice_mean"] / slot["cases"], 4)
    return out


def plot(rows: list[dict], result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cervicontour.contours.flags import worst_decile

    fig, axes = plt.subplots(3, 3, figsize=(13, 11))
    for ax, name in zip(axes.ravel(), STRUCTURES):
        rs = [r for r in rows if r["structure"] == name and r["dice"] is not None]
        t = result["thresholds_bits"].get(name)
        worst = {rs[i]["patient_id"] for i in worst_decile([r["dice"] for r in rs])}
        for r in rs:
            empty = not _eligible(r)
            colour = "tab:red" if _flag(r, result["thresholds_bits"], result["unreliable"]) else "tab:blue"
            ax.scatter(r["uncertainty"], r["dice"], s=28, c="none" if empty else colour, edgecolors=colour,
                       marker="s" if r["patient_id"] in worst else "o")  # fmt: skip
        if t is not None:
            ax.axvline(t, color="tab:red", lw=1, label=f"calibrated {t:.3f}")
        ax.axvline(OLD_THRESHOLD, color="grey", lw=1, ls="--", label="old 0.25")
        stats = result["per_structure"][name]["calibrated_leave_one_out"]
        ax.set_title(f"{name}: LOO rate {stats['flag_rate']:.2f}, recall {stats['recall_worst_decile'] or 0:.2f}", fontsize=10)
        ax.set_xlabel("uncertainty (bits)")
        ax.set_ylabel("Dice")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{result['model']}: uncertainty vs Dice, synthetic phantom seed {result['data']['seed']}, "
                 f"N = {result['data']['patients']} (red: flagged; square: worst-Dice decile; hollow: none predicted)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _print(result: dict) -> None:
    print(f"{'structure':15s} {'thr':>6s} {'rho':>6s}  in-sample rate/recall   LOO rate/recall   old rate/recall")
    for name, p in result["per_structure"].items():
        a, b, c = p["calibrated_in_sample"], p["calibrated_leave_one_out"], p["old_single_threshold"]
        print(f"{name:15s} {p['threshold_bits'] or 0:6.3f} {p['spearman_uncertainty_vs_dice'] or 0:6.2f}  "
              f"{a['flag_rate']:.2f}/{a['recall_worst_decile']:.2f} ({a['worst_decile']})   {b['flag_rate']:.2f}/{b['recall_worst_decile']:.2f}   "
              f"{c['flag_rate']:.2f}/{c['recall_worst_decile']:.2f}")  # fmt: skip
    for key, o in result["overall"].items():
        print(key, o)
    for key, o in result["overall_without_unreliable"].items():
        print("without", ", ".join(result["unreliable"]), key, o)
    print("rate curve", result["rate_curve_in_sample"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=80)
    parser.add_argument("--seed", type=int, default=7171)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "flag_calibration")
    parser.add_argument("--stage", choices=("measure", "all"), default="all")
    parser.add_argument("--rate", type=float, default=0.10, help="largest share of a structure's cases flagged for uncertainty")
    args = parser.parse_args(argv)
    from cervicontour.synth import synthesize_cohort

    cohort = args.work / f"phantom2_seed{args.seed}_n{args.patients}"
    if not cohort.is_dir():
        synthesize_cohort(cohort, patients=args.patients, seed=args.seed, size="small", phantom=2)
    rows = measure(cohort, args.work / f"records_seed{args.seed}")  # a patient is the same whatever --patients
    if args.stage == "measure":
        return 0
    model = _model_name()
    result = calibrate(rows, rate=args.rate, model=model)
    result["data"] = {
        "kind": "synthetic phantom (cervicontour.synth), not real CT", "phantom": 2, "size": "small",
        "seed": args.seed, "patients": args.patients, "labelled": True,
        "why this seed": "used by no other benchmark or test: the shipped model was neither trained nor chosen on it",
        "nodal_groups": "each patient's reference groups (predict --nodal-groups reference)",
    }  # fmt: skip
    result["model"] = model
    result["predicted_by_code"] = (args.work / f"records_seed{args.seed}" / "CODE").read_text().strip()
    result["seconds_per_case_median"] = float(np.median([r["seconds"] for r in rows if r["structure"] == "Bladder"]))
    out = ROOT / "benchmarks" / "results" / "flag_calibration.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    plot(rows, result, out.with_suffix(".png"))
    _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
