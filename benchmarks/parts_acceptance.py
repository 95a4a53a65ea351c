"""Issue 19's acceptance: CTV parts from a model fitted to the five compound masks only.

    python benchmarks/parts_acceptance.py --name parts --seed 7979 --patients 32 --test 12 --budget-minutes 35

Draws ``--patients`` phantom patients (default style), deletes every ``structures/sub/`` (the hospital
labels the five compound masks only), fits on all but the last ``--test`` patients with
``cervicontour fit`` (init: the shipped default), then predicts the test patients with the fitted
model and with the shipped default (zero-shot), each CTVn composed from the nodal groups the
patient's note records (``--para-aortic`` when "para-aortic nodes included"), and scores
* every part (GTVn, LN_CommonIliac, LN_Pelvic, LN_ParaAortic; Cervix, GTVp, Uterus, Vagina) against
  the phantom's own parts (the drawn cohort's ``structures/sub/``, never seen by the fit),
* the split itself, voxel-exact on every case: each part inside its compound, the parts' union the
  compound (a CTVn's: the groups it was composed of; LN_ParaAortic outside a non-para-aortic CTVn
  is the one allowed extension),
* the five compound structures,
* the nodal choice: ``--nodal-groups LN_Pelvic,GTVn`` gives CTVn = LN_Pelvic ∪ GTVn; ``--para-aortic``
  on a para-aortic patient gives a non-empty LN_ParaAortic above the aortic bifurcation.
Writes ``benchmarks/results/parts_acceptance_<name>.json``. Every number comes from synthetic phantoms.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit_acceptance import FIVE, make_cohorts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def predict_folder(model, test: Path, out: Path, groups_of) -> dict[str, Path]:
    """Predict every test patient (its CTVn from ``groups_of(case)``), one folder per patient."""
    from cervicontour.cohort import load_cohort
    from cervicontour.inference.cohort import predict

    out.mkdir(parents=True, exist_ok=True)
    folders = {}
    for case in load_cohort(test).cases():
        target = out / case.patient_id
        if _predicted(target) is None:
            predict(case.image_path, target, model=model, nodal_groups=groups_of(case))
        folders[case.patient_id] = _predicted(target)
    return folders


def _predicted(out: Path) -> Path | None:
    """The one case folder a predict call wrote under ``out`` (named after the input file), or None."""
    found = sorted(out.glob("*/prediction.json"))
    return found[0].parent if found else None


def read_case(folder: Path) -> tuple[dict, dict[str, np.ndarray], object]:
    from cervicontour.io import read_volume

    record = json.loads((folder / "prediction.json").read_text())
    masks, grid = {}, None
    for path in sorted(folder.rglob("*.nii.gz")):
        if "probabilities" in path.parts:
            continue
        volume = read_volume(path)
        grid = grid or volume
        masks[path.name.split(".")[0]] = volume.array > 0
    return record, masks, grid


def split_check(record: dict, masks: dict[str, np.ndarray]) -> dict:
    """Voxel-exact: each part inside its compound; the parts' union the compound."""
    out = {}
    for compound, parts in record["partitions"].items():
        whole = masks[compound]
        union = np.zeros_like(whole)
        outside = {}
        for p in parts:
            outside[p] = int((masks[p] & ~whole).sum())
            union |= masks[p]
        out[compound] = {"parts": parts, "voxels_outside": outside, "union_equals_compound": bool(np.array_equal(union, whole)),
                         "compound_voxels": int(whole.sum())}
    return out


def score_parts(folders: dict[str, Path], drawn: Path) -> dict:
    from cervicontour.cohort import load_cohort
    from cervicontour.metrics.overlap import dice
    from cervicontour.structures import ABSENT_MEANS_EMPTY, COMPOUND

    reference = load_cohort(drawn)
    per_case = {}
    for pid, folder in folders.items():
        record, masks, _ = read_case(folder)
        ref = reference[pid]
        row = {"dice": {}, "split": split_check(record, masks)}
        for name in (*FIVE, *COMPOUND["CTVn"], *COMPOUND["CTVp"]):
            if name not in masks or (not ref.has(name) and name not in ABSENT_MEANS_EMPTY):
                continue  # a part the clinician did not contour (no para-aortic field) is not scored; no GTV is "none"
            r = ref.load_structure(name).array > 0 if ref.has(name) else np.zeros_like(masks[name])
            d = dice(r, masks[name])
            row["dice"][name] = float(d) if np.isfinite(d) else None  # both empty: undefined, not scored
        per_case[pid] = row
    names = sorted({n for row in per_case.values() for n in row["dice"]})
    summary = {}
    for n in names:
        values = [row["dice"][n] for row in per_case.values() if row["dice"].get(n) is not None]
        summary[n] = {"mean": float(np.mean(values)) if values else None, "n": len(values)}
    return {"per_case": per_case, "dice": summary}


def choice_checks(model_dir: Path, test: Path, work: Path) -> dict:
    """--nodal-groups LN_Pelvic,GTVn and --para-aortic on the fitted model, on one patient each."""
    from cervicontour.cohort import load_cohort
    from cervicontour.inference.cohort import predict
    from cervicontour.structures import DEFAULT_NODAL_GROUPS
    from cervicontour.validate.notes import para_aortic_included

    cases = load_cohort(test).cases()
    out = {}
    first = cases[0]
    folder = work / "choice_pelvic_gtvn"
    if _predicted(folder) is None:
        predict(first.image_path, folder, model=model_dir, nodal_groups=["LN_Pelvic", "GTVn"])
    _, masks, _ = read_case(_predicted(folder))
    out["pelvic_gtvn"] = {"patient": first.patient_id, "ctvn_equals_union": bool(np.array_equal(masks["CTVn"], masks["LN_Pelvic"] | masks["GTVn"])),
                          "ctvn_voxels": int(masks["CTVn"].sum())}
    pa = next((c for c in cases if para_aortic_included(c.note)), None)
    if pa is not None:
        folder = work / "choice_para_aortic"
        if _predicted(folder) is None:
            predict(pa.image_path, folder, model=model_dir, nodal_groups=[*DEFAULT_NODAL_GROUPS, "LN_ParaAortic"])
        _, masks, grid = read_case(_predicted(folder))
        # the aortic bifurcation: the top of the phantom's common iliac arteries (the drawn reference's anatomy)
        drawn = load_cohort(work / "drawn")[pa.patient_id]
        iliac = np.zeros_like(masks["CTVn"])
        for n in ("A_Iliac_Cm_L", "A_Iliac_Cm_R"):
            if drawn.has(n):
                iliac |= drawn.load_structure(n).array > 0
        z_world = lambda m: [grid.index_to_world(np.array(ix))[2] for ix in np.argwhere(m)[:: max(1, int(m.sum()) // 2000)]]  # noqa: E731
        bifurcation_z = max(z_world(iliac)) if iliac.any() else None
        pa_z = z_world(masks["LN_ParaAortic"])
        out["para_aortic"] = {"patient": pa.patient_id, "ln_paraaortic_voxels": int(masks["LN_ParaAortic"].sum()),
                              "ctvn_includes_it": bool(not (masks["LN_ParaAortic"] & ~masks["CTVn"]).any()),
                              "aortic_bifurcation_z_mm": bifurcation_z,
                              "fraction_above_bifurcation": float(np.mean(np.array(pa_z) > bifurcation_z)) if pa_z and bifurcation_z is not None else None}
    return out


def review_in_browser(model_dir: Path, test: Path, work: Path, parts: str = "LN_Pelvic,GTVn,Cervix,Uterus") -> dict:
    """The review page on the fitted model, in Chromium: one test patient written as a DICOM series
    (so the page can export an RTSTRUCT), predicted, composed from ``parts`` and exported
    (benchmarks/review_parts_browser.py). Results: benchmarks/results/parts_acceptance_review/."""
    from cervicontour.cohort import load_cohort
    from cervicontour.inference.cohort import predict

    sys.path.insert(0, str(ROOT / "tests"))
    from dicom_factory import write_ct_series

    case = next(c for c in load_cohort(test).cases() if c.load_image().orientation == "LPS")
    image = case.load_image()
    sx, sy, sz = image.spacing_mm
    series = work / "review_dicom" / case.patient_id
    if not series.is_dir():
        stored = np.clip(image.array.astype(np.int32) + 1024, 0, 65535).astype(np.uint16)
        write_ct_series(series, stored, origin_mm=tuple(image.origin_mm), pixel_spacing_mm=(sy, sx), slice_step_mm=sz, clinical_header=True)
    pred = work / "review_pred"
    if not pred.is_dir():
        predict(series, pred, model=model_dir)
    patient = next(p.name for p in pred.iterdir() if (p / "prediction.json").is_file())
    out = ROOT / "benchmarks" / "results" / "parts_acceptance_review"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "review_parts_browser.py"), "--pred", str(pred), "--case", patient,
                           "--parts", parts, "--out", str(work / "review_browser")], capture_output=True, text=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("review_parts_browser.json", "review_parts_browser.png"):
        if (work / "review_browser" / name).is_file():
            (out / name).write_bytes((work / "review_browser" / name).read_bytes())
    return {"patient": patient, "returncode": done.returncode, "stdout_tail": done.stdout[-1500:], "stderr_tail": done.stderr[-1500:],
            "results": str(out.relative_to(ROOT))}


def main() -> None:
    from cervicontour.cohort import load_cohort
    from cervicontour.structures import DEFAULT_NODAL_GROUPS
    from cervicontour.validate.notes import nodal_groups_for, para_aortic_included

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="parts")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--patients", type=int, default=32)
    parser.add_argument("--test", type=int, default=12)
    parser.add_argument("--budget-minutes", type=float, default=35.0)
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "parts_acceptance")
    args = parser.parse_args()
    work = args.work / args.name
    train, test = make_cohorts(work, patients=args.patients, test=args.test, seed=args.seed, style={})
    model_dir = work / "model"
    t0 = time.perf_counter()
    if not (model_dir / "model.pt").is_file():
        command = [sys.executable, "-m", "cervicontour.cli", "fit", str(train), "--out", str(model_dir), "--budget-minutes", str(args.budget_minutes)]
        if (model_dir / "fit.json").is_file():
            command.append("--resume")
        subprocess.run(command, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    fit_wall_s = time.perf_counter() - t0
    groups = lambda case: nodal_groups_for(case.note)  # noqa: E731  (--para-aortic where the note says so)
    results = {}
    for label, model in (("fit", model_dir), ("zero_shot", "default")):
        t = time.perf_counter()
        folders = predict_folder(model, test, work / f"pred_{label}", groups)
        results[label] = score_parts(folders, work / "drawn")
        results[label]["seconds"] = round(time.perf_counter() - t, 1)
    cases = load_cohort(test).cases()
    pa_ids = [c.patient_id for c in cases if para_aortic_included(c.note)]
    for label, r in results.items():
        r["para_aortic_patients"] = {n: float(np.mean([r["per_case"][p]["dice"][n] for p in pa_ids if r["per_case"][p]["dice"].get(n) is not None]))
                                     for n in ("CTVn", "LN_ParaAortic")} if pa_ids else {}
        r["split_exact_every_case"] = all(s["union_equals_compound"] and not any(s["voxels_outside"].values())
                                          for row in r["per_case"].values() for s in row["split"].values())
    record = json.loads((model_dir / "fit.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = {
        "data": f"synthetic phantom (cervicontour synth --size small --seed {args.seed}, default style), {args.patients} patients, "
                f"structures/sub deleted for the fit; fit on the first {args.patients - args.test}, tested on the last {args.test} against the drawn parts",
        "commit": commit, "budget_minutes": args.budget_minutes, "fit_wall_seconds_this_call": round(fit_wall_s, 1),
        "fit_stage_seconds": {k: v.get("seconds") for k, v in record["stages"].items()},
        "fit_targets": record["stages"]["plan"]["channels"]["targets"], "selection_choice": record["stages"]["select"]["choice"],
        "test_patients": {c.patient_id: {"para_aortic": para_aortic_included(c.note), "nodal_groups": list(nodal_groups_for(c.note) or DEFAULT_NODAL_GROUPS)} for c in cases},
        "results": results, "choices": choice_checks(model_dir, test, work), "review_browser": review_in_browser(model_dir, test, work),
        "load_average_end": os.getloadavg(),
    }  # fmt: skip
    for label, r in results.items():
        print(label, {n: round(v["mean"], 3) if v["mean"] is not None else None for n, v in r["dice"].items()}, "PA:", r["para_aortic_patients"], "split exact:", r["split_exact_every_case"])
    print("choices:", out["choices"])
    path = ROOT / "benchmarks" / "results" / f"parts_acceptance_{args.name}.json"
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
