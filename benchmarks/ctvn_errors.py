"""Where does a model's nodal CTV go wrong? Error voxels by anatomical zone, on a synthetic test cohort.

The phantom's reference CTVn is built the guideline way (vessels + 7 mm, minus bone, muscle, bowel,
kidney, CTVp, Anorectum), and the phantom writes every vessel and muscle under ``structures/sub/``, so
each wrong voxel (missed or extra) can be placed:

  iliopsoas       within one in-plane voxel of the iliopsoas (the CTVn's boundary against the muscle,
                  and in phantom 1 the vessels buried in it);
  vessel          elsewhere inside an iliac/aortic/caval vessel of the reference anatomy;
  other_boundary  within one in-plane voxel of another exclusion (bone, other muscle, bowel, CTVp,
                  Anorectum, outside the body);
  margin          elsewhere (the free 7 mm margin in fat).

The zones are taken in that order (a voxel counts once). ``dice_if_iliopsoas_zone_right`` replaces the
prediction by the reference in the iliopsoas zone: the most that getting that boundary right could give.

Usage: python benchmarks/ctvn_errors.py [--test COHORT] [--pred PREDICTIONS] [--name shipped]
Writes benchmarks/results/ctvn_errors_<name>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
ZONES = ("iliopsoas", "vessel", "other_boundary", "margin")
EXCLUSION_PREFIXES = ("Bone_", "Sacrum", "VB_", "Femur_", "Musc_Gluteus", "Bowel_", "Colon_", "Kidney_")
#: in-plane 3×3 neighbourhood: "within one voxel" across the slice (the phantom's slices are thick)
NEAR = np.ones((3, 3, 1), bool)


def zones(ref: np.ndarray, pred: np.ndarray, vessel: np.ndarray, iliopsoas: np.ndarray, other: np.ndarray) -> dict:
    """Missed (FN) and extra (FP) CTVn voxels per zone, and two Dice values.

    Arrays are boolean, one grid, axes (x, y, z) with z the slice axis. ``other`` is the union of the
    non-iliopsoas exclusions.
    """
    near_psoas = ndimage.binary_dilation(iliopsoas, NEAR)
    near_other = ndimage.binary_dilation(other, NEAR)
    label = np.full(ref.shape, 3, np.uint8)  # margin
    label[near_other] = 2
    label[vessel] = 1
    label[near_psoas] = 0
    fn, fp = ref & ~pred, pred & ~ref
    out = {"fn": {z: int(np.count_nonzero(fn & (label == i))) for i, z in enumerate(ZONES)},
           "fp": {z: int(np.count_nonzero(fp & (label == i))) for i, z in enumerate(ZONES)}}  # fmt: skip
    fixed = np.where(near_psoas, ref, pred)
    out["dice"] = _dice(ref, pred)
    out["dice_if_iliopsoas_zone_right"] = _dice(ref, fixed)
    out["reference_voxels"], out["predicted_voxels"] = int(ref.sum()), int(pred.sum())
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 1.0


def _anatomy(case, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vessel, iliopsoas and other-exclusion masks of a synthetic case (its grid's ``shape``)."""
    vessel, psoas, other = (np.zeros(shape, bool) for _ in range(3))
    for name in case.structure_names:
        if name.startswith(("A_", "V_")):
            vessel |= case.load_structure(name).array > 0
        elif name.startswith("Musc_Iliopsoas"):
            psoas |= case.load_structure(name).array > 0
        elif name.startswith(EXCLUSION_PREFIXES) or name in ("CTVp", "Anorectum"):
            other |= case.load_structure(name).array > 0
    if case.has("External"):
        other |= case.load_structure("External").array == 0
    return vessel, psoas, other


def analyse(test: Path, pred: Path) -> dict:
    """Zone counts per patient of ``test`` (a synthetic cohort with ``structures/sub``) for the
    CTVn masks under ``pred`` (the cohort layout ``predict`` writes), and their sums."""
    from cervicontour.cohort import load_cohort

    cohort, predicted = load_cohort(test), load_cohort(pred)
    patients = {}
    for pid, case in cohort.items():
        if not case.has("CTVn") or pid not in predicted:
            continue
        ref = case.load_structure("CTVn").array > 0
        mask = predicted[pid].load_structure("CTVn").array > 0
        patients[pid] = zones(ref, mask, *_anatomy(case, ref.shape))
    fn = {z: sum(p["fn"][z] for p in patients.values()) for z in ZONES}
    fp = {z: sum(p["fp"][z] for p in patients.values()) for z in ZONES}
    errors = sum(fn.values()) + sum(fp.values())
    summary = {
        "patients": len(patients), "fn": fn, "fp": fp,
        "share_of_errors": {z: round((fn[z] + fp[z]) / errors, 3) if errors else 0.0 for z in ZONES},
        "share_of_errors_next_to_iliopsoas": round((fn["iliopsoas"] + fp["iliopsoas"]) / errors, 3) if errors else 0.0,
        "dice_mean": round(float(np.mean([p["dice"] for p in patients.values()])), 4),
        "dice_if_iliopsoas_zone_right": round(float(np.mean([p["dice_if_iliopsoas_zone_right"] for p in patients.values()])), 4),
    }  # fmt: skip
    return {"patients": patients, "summary": summary}


def plot(test: Path, pred: Path, pid: str, out: Path) -> None:
    """Three axial slices of one patient: CT, missed (yellow) / extra (cyan) / agreed (grey) CTVn
    voxels, vessels (red), iliopsoas (orange)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cervicontour.cohort import load_cohort
    from cervicontour.volume import to_lps

    case = load_cohort(test)[pid]
    ct = case.load_image()
    image = to_lps(ct).array
    ref = to_lps(case.load_structure("CTVn")).array > 0
    mask = to_lps(load_cohort(pred)[pid].load_structure("CTVn")).array > 0
    vessel, psoas, _ = (to_lps(ct.with_array(a.astype(np.uint8))).array > 0 for a in _anatomy(case, ct.shape))
    zs = np.flatnonzero((ref | mask).any(axis=(0, 1)))
    picks = zs[np.linspace(len(zs) * 0.2, len(zs) * 0.8, 3).astype(int)]
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    for col, z in enumerate(picks):
        xs, ys = np.nonzero(ref[..., z] | mask[..., z])
        box = (slice(max(xs.min() - 6, 0), xs.max() + 7), slice(max(ys.min() - 6, 0), ys.max() + 7))
        axes[0, col].imshow(image[box + (z,)].T, cmap="gray", vmin=-200, vmax=300, interpolation="nearest")
        axes[0, col].set_title(f"{pid} slice {z}: CT")
        rgb = np.zeros(ref[..., z].shape + (3,))
        rgb[psoas[..., z]] = (0.55, 0.3, 0.0)
        rgb[vessel[..., z]] = (0.6, 0.0, 0.0)
        rgb[ref[..., z] & mask[..., z]] += 0.4
        rgb[ref[..., z] & ~mask[..., z]] = (1, 1, 0)
        rgb[mask[..., z] & ~ref[..., z]] = (0, 1, 1)
        axes[1, col].imshow(np.clip(rgb[box], 0, 1).transpose(1, 0, 2), interpolation="nearest")
        axes[1, col].set_title("missed yellow, extra cyan, agreed grey;\nvessel red, iliopsoas brown")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle("CTVn errors against the phantom anatomy (synthetic data; image rows = posterior→, columns = patient left→)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_default_model as recipe

    from cervicontour.inference.cohort import predict

    parser = argparse.ArgumentParser()
    parser.add_argument("--test", type=Path, default=None, help="synthetic test cohort (default: the recipe's, seed 3003)")
    parser.add_argument("--pred", type=Path, default=None, help="predictions of it (default: predict with --model)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--name", default="shipped")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "ctvn_errors")
    args = parser.parse_args()
    test = args.test or recipe.cohort(ROOT / "out" / "default_v4" / "data", "test", 1)
    pred = args.pred
    if pred is None:
        pred = args.work / f"pred_{args.name}"
        if not pred.is_dir():
            predict(test, pred, model=args.model, all_cases=True, nodal_groups="reference")
    made_by = next((json.loads(f.read_text()).get("model") for f in sorted(pred.glob("*/prediction.json"))), None)  # what predict recorded
    record = {"data": f"synthetic test cohort {test.name} (cervicontour.synth)", "model": made_by or args.model, "predictions": str(pred), **analyse(test, pred)}
    results = ROOT / "benchmarks" / "results"
    worst = min(record["patients"], key=lambda p: record["patients"][p]["dice"])
    plot(test, pred, worst, results / f"ctvn_errors_{args.name}.png")
    (results / f"ctvn_errors_{args.name}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record["summary"], indent=1))


if __name__ == "__main__":
    main()
