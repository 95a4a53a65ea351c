"""Wall time of `cervicontour validate` on a full-size cohort (acceptance: 100 patients < 5 min).

Usage::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/validate_speed.py --cohort DIR [--replicate-to 100]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/validate_speed.py --synth 100      # ~40 s/patient to make

``--cohort`` times an existing cohort. ``--synth N`` first writes an N-patient ``--size full``
phantom cohort to a temporary folder (slow: the phantom, not validation). ``--replicate-to K``
times a K-patient cohort made of hard links to the given cohort's patient folders, round robin
(every file is still read and decompressed once per patient, so the I/O and CPU work is that of
K patients; only the cohort statistics see duplicates) — the JSON says how many patients were
unique. Prints the numbers and writes them to ``benchmarks/results/validate_speed.json``. Nothing
here is asserted by tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

from cervicontour.cohort import load_cohort, read_notes, write_notes  # noqa: E402
from cervicontour.validate import ValidateOptions, validate_cohort  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def replicate(src: Path, dst: Path, patients: int) -> Path:
    """A cohort of ``patients`` folders hard-linked (round robin) from ``src``'s patients."""
    cases = load_cohort(src).cases()
    notes = read_notes(src / "notes.csv")
    out_notes = {}
    for n in range(patients):
        case = cases[n % len(cases)]
        pid = f"R{n + 1:03d}"
        for path in sorted((src / case.patient_id).rglob("*")):
            target = dst / pid / path.relative_to(src / case.patient_id)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
        out_notes[pid] = notes.get(case.patient_id, "")
    write_notes(dst, out_notes)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path)
    parser.add_argument("--synth", type=int, default=0, help="write an N-patient full-size cohort first")
    parser.add_argument("--replicate-to", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "validate_speed.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="validate_speed_"))
    synth_s = None
    if args.synth:
        from cervicontour.synth import synthesize_cohort

        start = time.perf_counter()
        args.cohort = synthesize_cohort(tmp / "synth", patients=args.synth, holdout=0, seed=100, size="full")
        synth_s = time.perf_counter() - start
    if args.cohort is None:
        parser.error("give --cohort DIR or --synth N")
    unique = len(load_cohort(args.cohort))
    cohort = replicate(args.cohort, tmp / "replicated", args.replicate_to) if args.replicate_to else args.cohort
    patients = len(load_cohort(cohort))
    size_bytes = sum(p.stat().st_size for p in cohort.rglob("*.nii*"))
    with (cohort / "notes.csv").open() as handle:
        labelled = sum(1 for row in csv.DictReader(handle) if not row["comment"].startswith("hold-out"))

    load_before = os.getloadavg()
    start = time.perf_counter()
    result = validate_cohort(cohort, options=ValidateOptions(workers=args.workers))
    seconds = time.perf_counter() - start
    record = {
        "what": "validate_cohort wall time, full-size phantom cohort",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cohort": {
            "source": str(args.cohort),
            "patients": patients,
            "unique_patients": unique,
            "replicated_by_hard_links": bool(args.replicate_to),
            "labelled_patients_approx": labelled,
            "nifti_gigabytes": round(size_bytes / 1e9, 2),
        },
        "workers": args.workers,
        "seconds": round(seconds, 1),
        "seconds_per_patient": round(seconds / patients, 2),
        "extrapolated_100_patients_s": round(seconds / patients * 100, 1),
        "synth_seconds": round(synth_s, 1) if synth_s else None,
        "counts": result.counts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
