"""The review page, driven in headless Chromium, composes a CTV from the parts a model predicted (issue 19).

    python benchmarks/review_parts_browser.py --pred PRED_DIR --case PATIENT --parts LN_Pelvic,GTVn --out DIR

Copies ``PRED_DIR/PATIENT`` (a ``cervicontour predict`` output; ``probabilities/`` and any earlier
review left out) to ``DIR/pred/PATIENT``, so the prediction itself is never written to, serves it
with the review page and, in Debian's chromium (Playwright, never ``playwright install``): types
the reviewer, ticks ``--parts`` in the "CTV components" panel (each part goes to the CTV it belongs
to: the nodal groups to CTVn, Cervix/GTVp/Uterus/Vagina to CTVp), composes, accepts the composed
masks, saves, exports the accepted set as RTSTRUCT when the page offers it (a case predicted from a
DICOM series) and takes a screenshot. Then checks what the page wrote without cervicontour's
readers (nibabel, plain JSON, hashlib, pydicom): the composed mask against the voxel union of the
chosen parts' masks (and the CTV's GTV, which compose always adds when the case has it), the log
entry (who, when, parts, hashes) and the export.

Writes ``DIR/review_parts_browser.json`` and ``DIR/review_parts_browser.png``; exits 1 when a check
fails (the JSON is written first). For a NIfTI-input case the page offers no RTSTRUCT export: the
composed NIfTI it wrote under ``review/composed/`` is then recorded as the export.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from review_driver import (  # noqa: E402 - the driving code the browser test uses
    PageError,
    compose_in_page,
    composition_logged,
    expected_parts,
    exported,
    hashes_check,
    skip_reason,
    union_check,
)


def choices_of(parts: str) -> dict[str, list[str]]:
    """``"LN_Pelvic,GTVn,Cervix"`` → ``{"CTVn": ["LN_Pelvic", "GTVn"], "CTVp": ["Cervix"]}`` (canonical names)."""
    from cervicontour.structures import COMPOUND, canonical_name

    choices: dict[str, list[str]] = {}
    for item in (p.strip() for p in parts.split(",") if p.strip()):
        name = canonical_name(item)
        target = next((t for t, members in COMPOUND.items() if name in members), None)
        if target is None:
            raise SystemExit(f"--parts: {name} is not a CTV part; expected some of {'; '.join(f'{t}: ' + ', '.join(m) for t, m in COMPOUND.items())}")
        choices.setdefault(target, []).append(name)
    if not choices:
        raise SystemExit("--parts: no parts given")
    return choices


def copy_case(pred: Path, patient: str, work: Path) -> Path:
    source = pred / patient
    if not (source / "prediction.json").is_file():
        raise SystemExit(f"{source}: no prediction.json; expected PRED_DIR/PATIENT of a `cervicontour predict` output")
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work / patient, ignore=lambda folder, names: [n for n in names if Path(folder) == source and n in ("probabilities", "review", "review.json")])
    return work / patient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", type=Path, required=True, help="a predict output folder (PRED_DIR/PATIENT/prediction.json)")
    parser.add_argument("--case", required=True, help="the patient id to open")
    parser.add_argument("--parts", required=True, help="comma-separated CTV parts to compose, e.g. LN_Pelvic,GTVn")
    parser.add_argument("--out", type=Path, required=True, help="where the copy, the JSON and the screenshot go")
    parser.add_argument("--reviewer", default="benchmark reviewer")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        raise SystemExit(f"cannot drive the page: {reason}")
    choices = choices_of(args.parts)
    args.out.mkdir(parents=True, exist_ok=True)
    case = copy_case(args.pred.resolve(), args.case, args.out / "pred")
    screenshot = args.out / "review_parts_browser.png"
    record = json.loads((case / "prediction.json").read_text())
    result: dict = {
        "pred": str(args.pred.resolve() / args.case), "copy": str(case), "chosen": choices, "reviewer": args.reviewer,
        "model": {k: (record.get("model") or {}).get(k) for k in ("name", "version", "path", "structures")},
        "sub": sorted(p.name.removesuffix(".nii.gz") for p in (case / "structures" / "sub").glob("*.nii.gz")),
    }
    t0 = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc).isoformat()
    try:
        run = compose_in_page(case.parent, args.case, choices, reviewer=args.reviewer, screenshot=screenshot)
    except PageError as exc:
        result.update(ok=False, error=str(exc), seconds=round(time.perf_counter() - t0, 1))
        return _finish(args.out, result)
    result.update(seconds=round(time.perf_counter() - t0, 1), started=started, offered=run.offered, statuses=run.statuses,
                  page_errors=run.page_errors, foreign_requests=run.foreign_requests, screenshot=str(screenshot), composed={})
    ok = not run.page_errors and not run.foreign_requests
    for target, composed_id in run.composed.items():
        check = union_check(case, composed_id, expected_parts(case, target, choices[target]))
        entry, composition = composition_logged(case, composed_id)
        hashes = hashes_check(case, composition)
        logged = {"reviewer": entry["reviewer"], "timestamp": entry["timestamp"], "model": entry.get("model"), **composition}
        result["composed"][target] = {"id": composed_id, "path": str(case / composed_id), "composed_voxels": check["composed_voxels"],
                                      "union": check, "equals_union": check["equals_union"], "log_entry": logged, **hashes}
        ok = ok and check["equals_union"] and all(hashes.values()) and entry["reviewer"] == args.reviewer
    export = exported(case)
    if export is not None:
        named = sorted(run.composed) == sorted(t for t in export["rois"] if t in run.composed)
        from_composed = all(export["entry"]["structures"].get(t, {}).get("id") == i for t, i in run.composed.items())
        result["export"] = {k: v for k, v in export.items() if k != "entry"} | {"names_composed": named and from_composed, "path": str(case / export["path"])}
        ok = ok and export["exists"] and named and from_composed
    else:  # a NIfTI-input case: the page offers no RTSTRUCT; the composed NIfTI is the file it wrote
        result["export"] = {"kind": "composed NIfTI (the page offers RTSTRUCT export only for a case predicted from a DICOM series)",
                            "paths": {t: str(case / i) for t, i in run.composed.items()},
                            "names_composed": all(Path(i).name.startswith(f"{t}_composed_") and (case / i).is_file() for t, i in run.composed.items())}
        ok = ok and result["export"]["names_composed"]
    result["ok"] = bool(ok)
    return _finish(args.out, result)


def _finish(out: Path, result: dict) -> int:
    path = out / "review_parts_browser.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for target, c in result.get("composed", {}).items():
        print(f"{target} = {' ∪ '.join(c['union']['parts'])}: {c['composed_voxels']} voxels, equals the union: {c['equals_union']}, "
              f"hashes logged: {c['parts_sha256_match'] and c['composed_sha256_match']}")
    if "error" in result:
        print(f"the page refused: {result['error']}")
    print(f"export: {result.get('export', {}).get('path') or result.get('export', {}).get('paths')}")
    print(f"{'ok' if result['ok'] else 'FAILED'}: {path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
