"""The out-of-scope flag measured: phantom patients (none may be flagged) and the real CT (male
abdomen-pelvis: it must be predicted, exit 0, and flagged), also cut to its upper abdomen (slices 50
and up: lung bases to about L3, no pelvis in the field of view).

Runs the real commands (`cervicontour synth`, `cervicontour predict`) and reads what each case's
``prediction.json`` records, with the quantities the check looks at (the model's CTVp / Parametrium /
Bladder volumes, CTVp uncertainty, the bilateral pelvic-bone extent of the CT).
Usage: python benchmarks/out_of_scope.py [--patients 8] [--seed 101] [--out JSON]
Writes benchmarks/results/out_of_scope.json (or --out). Needs ../shared/data/real/totalsegmentator/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real" / "totalsegmentator" / "example_ct.nii.gz"


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cervicontour.cli", *args], check=True)


def _rows(pred: Path, images: dict[str, Path]) -> list[dict]:
    from cervicontour.io import read_volume
    from cervicontour.validate.scope import pelvic_bone_extent_mm

    rows = []
    for record_path in sorted(pred.glob("*/prediction.json")):
        record = json.loads(record_path.read_text())
        s = record["structures"]
        rows.append({
            "patient_id": record["patient_id"], "out_of_scope": record["out_of_scope"],
            "pelvic_bone_mm": round(pelvic_bone_extent_mm(read_volume(images[record["patient_id"]])), 1),
            **{f"{n}_cc": s[n]["volume_cc"] for n in ("Bladder", "CTVp", "Parametrium") if n in s},
            "CTVp_uncertainty": s.get("CTVp", {}).get("uncertainty"),
        })
    return rows


def _upper_abdomen(source: Path, path: Path, first_slice: int = 50) -> Path:
    """The real CT from slice ``first_slice`` up (its axis 2 runs superior), same geometry otherwise."""
    import numpy as np

    from cervicontour.io import read_nifti, write_nifti
    from cervicontour.volume import Volume

    ct = read_nifti(source)
    origin = tuple(ct.index_to_world(np.array([0, 0, first_slice])))
    return write_nifti(Volume(np.ascontiguousarray(ct.array[:, :, first_slice:]), ct.spacing_mm, origin, ct.direction), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "out_of_scope.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="out-of-scope-") as tmp:
        tmp = Path(tmp)
        _cli("synth", str(tmp / "cohort"), "--patients", str(args.patients), "--seed", str(args.seed))
        _cli("predict", str(tmp / "cohort"), "--out", str(tmp / "phantom"), "--all")
        phantom = _rows(tmp / "phantom", {p.name: p / "image.nii.gz" for p in (tmp / "cohort").iterdir() if p.is_dir()})
        real = []
        if REAL.is_file():
            upper = _upper_abdomen(REAL, tmp / "example_ct_upper.nii.gz")
            _cli("predict", str(REAL), "--out", str(tmp / "real"))
            _cli("predict", str(upper), "--out", str(tmp / "real"))
            real = _rows(tmp / "real", {"example_ct": REAL, "example_ct_upper": upper})
    result = {"phantom_seed": args.seed, "phantom": phantom, "phantom_flagged": sum(bool(r["out_of_scope"]) for r in phantom), "real": real}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in phantom + real:
        print(row["patient_id"], row["out_of_scope"] or "in scope", {k: v for k, v in row.items() if k not in ("patient_id", "out_of_scope")})
    print(f"phantom cases flagged: {result['phantom_flagged']} of {len(phantom)}; written {args.out}")


if __name__ == "__main__":
    main()
