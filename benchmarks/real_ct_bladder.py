"""Sim-to-real sanity check: the default model's Bladder on the real TotalSegmentator example CT,
against TotalSegmentator's own *predicted* bladder (label 21; a model output, not ground truth).

Acceptance target from issue 5: Dice ≥ 0.80. Needs ../shared/data/real/totalsegmentator/.
Also (no target; information): the model's CTVn (default nodal groups) against the guideline CTVn our
TotalSegmentator baseline derives from the same labels (iliac vessels + 7 mm − bone/muscle + presacral
strip, Taylor 2005; ``cervicontour.baselines.totalseg``) — the only real-CT signal for CTVn we have.
Usage: python benchmarks/real_ct_bladder.py [--model default|RUN] [--tta] [--out JSON]
Writes benchmarks/results/real_ct_bladder.json (or --out) and an overlay PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator"


def references(ct):
    """TotalSegmentator's bladder (``urinary_bladder`` as predicted) and the guideline CTVn derived
    from its labels (:func:`cervicontour.baselines.totalseg.guideline_ctvn`), on ``ct``'s grid."""
    from cervicontour.baselines.totalseg import guideline_ctvn, load_labels

    return guideline_ctvn(load_labels(REAL / "example_seg_fast_force_split.nii.gz", ct))


def score(ct, refs, model, *, tta: bool = False):
    """``(scores, prediction, seconds)``: Bladder and CTVn of ``model`` on the real CT against ``refs``."""
    from cervicontour.metrics import evaluate_pair
    from cervicontour.inference.case import predict_case

    t = time.perf_counter()
    result = predict_case(ct, model, tta=tta)
    seconds = time.perf_counter() - t
    def row(reference, structure):
        values = evaluate_pair(reference, result.masks[structure], tolerances_mm=(3.0,))
        return {k: values[k] for k in ("dice", "hd95_mm", "volume_ref_cc", "volume_pred_cc")}

    return {"bladder": row(refs.bladder, "Bladder"), "ctvn_vs_guideline": row(refs.ctvn, "CTVn")}, result, seconds


def main() -> None:
    from cervicontour.io import read_nifti
    from cervicontour.networks.bundle import load_model
    from cervicontour.report.preview import render_overlay

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--tta", action="store_true", help="left-right mirror test-time augmentation")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_ct_bladder.json")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"real data not present: {REAL}")
    ct = read_nifti(REAL / "example_ct.nii.gz")
    refs = references(ct)
    model = load_model(args.model)
    scores, result, seconds = score(ct, refs, model, tta=args.tta)
    out = {
        "data": "TotalSegmentator example_ct.nii.gz (real CT, 122x101x112, 3 mm, probably male); reference = TotalSegmentator --fast prediction label 21 urinary_bladder (a model output)",
        "model": str(model.path), "tta": args.tta, "bladder": scores["bladder"],
        "target_dice": 0.80, "predict_seconds": round(seconds, 2),
        "other_structures_cc": {n: r["volume_cc"] for n, r in result.structures.items()},
        "ctvn_vs_guideline": {
            "reference": "guideline CTVn from TotalSegmentator's labels (iliac vessels + 7 mm - bone/muscle + presacral 10 mm; benchmarks/totalseg_ctvn_real.py); no target",
            **scores["ctvn_vs_guideline"],
        },
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    render_overlay(ct, {"Bladder (TotalSeg)": refs.bladder, "Bladder (ours)": result.masks["Bladder"], "CTVn (guideline)": refs.ctvn, "CTVn (ours)": result.masks["CTVn"]},
                   args.out.with_suffix(".png"), centre_on="CTVn (guideline)", title=f"real CT: model {model.name} {model.version} vs TotalSegmentator-derived references")  # fmt: skip
    print(json.dumps(scores, default=float))


if __name__ == "__main__":
    main()
