"""Issue 20's MedSAM acceptance on the real CT: LiteMedSAM's bladder with two box sources, beside our model.

Data: TotalSegmentator's example CT (real abdomen-pelvis CT, 122x101x112 voxels, 3 mm, probably
male) from ../shared/data/real/totalsegmentator/, and TotalSegmentator's --fast PREDICTION on it
(label 21 urinary_bladder): a model output, used as a prompt source and a sanity reference only.

Settings (slice by slice, a box around each 2-D component of the source mask on each axial slice):
  boxes from TotalSegmentator's bladder   then Dice against that same bladder (its boxes come from
                                          the reference, so this is an oracle-box setting)
  boxes from our default model's bladder  no reference used; beside our model's own Dice
Margin 0 px (the source mask's own box) is the stated setting; margin 2 px is reported beside it
(decodes only: each slice is encoded once for all four). Each setting's cost is what it would
have cost alone (the encodes of the slices it prompts + its decodes), wall and CPU seconds.

Usage: OMP_NUM_THREADS=1 nice -n 19 python benchmarks/medsam_real_ct.py [--threads 1]
Writes benchmarks/results/medsam_real_ct.json and medsam_real_ct.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator"
OUT = ROOT / "benchmarks" / "results" / "medsam_real_ct.json"
MARGINS = (0, 2)


def main() -> None:
    import torch

    from cervicontour.baselines.compare import commit_of
    from cervicontour.baselines.medsam import load_litemedsam
    from cervicontour.baselines.medsam_cohort import segment_from_masks
    from cervicontour.baselines.totalseg import load_labels
    from cervicontour.io import read_nifti
    from cervicontour.metrics import evaluate_pair
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.case import predict_case

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"real data not present: {REAL}")
    torch.set_num_threads(args.threads)
    ct = read_nifti(REAL / "example_ct.nii.gz")
    ts_bladder = ct.with_array(load_labels(REAL / "example_seg_fast_force_split.nii.gz", ct).masks["urinary_bladder"].astype("uint8"))
    model = load_model("default")
    t = time.perf_counter()
    ours = predict_case(ct, model).masks["Bladder"]
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    medsam, report = load_litemedsam()
    load_s = time.perf_counter() - t
    sources = {"totalseg": ts_bladder, "ours": ours}
    masks = {(src, m): mask for src, mask in sources.items() for m in MARGINS}
    t0 = time.perf_counter()
    segmented, costs = segment_from_masks(medsam, ct, masks, margin_px={key: key[1] for key in masks},
                                         groups={**{key: [key] for key in masks}, "all": list(masks)})  # each slice encoded once
    wall = time.perf_counter() - t0

    def score(mask) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = evaluate_pair(ts_bladder, mask, tolerances_mm=(3.0,))
        return {k: row[k] for k in ("dice", "hd95_mm", "nsd_3mm", "volume_ref_cc", "volume_pred_cc")}

    settings = {}
    for (src, m), mask in segmented.items():
        settings[f"{src}_margin{m}"] = {
            "boxes_from": {"totalseg": "TotalSegmentator's bladder (the reference itself: oracle box)",
                           "ours": "our default model's bladder prediction (no reference used)"}[src],
            "margin_px": m, **score(mask), "cost": costs[(src, m)].to_dict(),
        }  # fmt: skip
    record = {
        "data": "TotalSegmentator example_ct.nii.gz (real CT, 122x101x112, 3 mm isotropic, RAS, probably male); reference = TotalSegmentator "
                "--fast PREDICTION label 21 urinary_bladder (a model output, not ground truth)",
        "commit": commit_of(__file__), "model": f"{model.name} {model.version}", "stated_setting": "margin 0 px", "ours_bladder": {**score(ours), "predict_seconds": round(ours_s, 2)},
        "ours_bladder_recorded": 0.859, "medsam": {"weights": report.summary(), "load_s": load_s, "threads": args.threads},
        "settings": settings, "all_four_together": costs["all"].to_dict(), "wall_s": wall, "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2, default=float) + "\n")
    figure(ct, {"TotalSegmentator's bladder (reference)": ts_bladder, "ours (default model)": ours,
                "MedSAM, boxes from TotalSegmentator": segmented[("totalseg", 2)], "MedSAM, boxes from ours": segmented[("ours", 2)]},
           OUT.with_suffix(".png"), title=f"real CT: LiteMedSAM's bladder (box margin 2 px) vs TotalSegmentator's predicted bladder; "
           f"Dice {settings['totalseg_margin2']['dice']:.3f} (its boxes) and {settings['ours_margin2']['dice']:.3f} (our boxes), ours {record['ours_bladder']['dice']:.3f}")  # fmt: skip
    for name, s in settings.items():
        print(f"{name:18s} Dice {s['dice']:.3f}  HD95 {s['hd95_mm']:.1f} mm  {s['cost']['encode_cpu_s_per_slice']:.2f} s CPU/slice")
    print(f"ours               Dice {record['ours_bladder']['dice']:.3f}")


def figure(ct, masks: dict, path: Path, *, title: str) -> None:
    """Axial and coronal slices through the first mask's centroid, one colour per mask (CT window 40/400 HU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cervicontour.volume import array_to_lps

    image = array_to_lps(ct.array, ct.direction).astype(float)
    lps = {name: array_to_lps(m.array, m.direction) > 0 for name, m in masks.items()}
    i, j, k = (int(round(c)) for c in np.argwhere(next(iter(lps.values()))).mean(axis=0))
    sx, sy, sz = ct.spacing_mm
    views = [("axial", lambda a: a[:, :, k].T, sy / sx), ("coronal", lambda a: a[:, j, :].T[::-1], sz / sx)]
    colours = ("#f6d32d", "#f6d32d", "#33d17a", "#e01b24")
    styles = ("solid", "dashed", "solid", "solid")
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), facecolor="black")
    for ax, (name, cut, aspect) in zip(axes, views):
        ax.imshow(cut(image), cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="nearest")
        for (label, mask), colour, style in zip(lps.items(), colours, styles):
            if cut(mask).any():
                ax.contour(cut(mask).astype(float), levels=[0.5], colors=[colour], linestyles=[style], linewidths=1.3)
        ax.set_title(name, color="white")
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, linestyle=s, label=n) for n, c, s in zip(lps, colours, styles)]
    fig.legend(handles=handles, loc="lower center", ncol=4, facecolor="black", labelcolor="white", frameon=False, fontsize=9)
    fig.suptitle(title, color="white", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=100, facecolor="black")
    plt.close(fig)


if __name__ == "__main__":
    main()
