"""Measure `synth` wall time per patient (small and full size) and save it as JSON.

Usage: .venv/bin/python benchmarks/synth_speed.py [--full-patients 3] [--small-patients 10]
Writes benchmarks/results/synth_speed.json. Numbers are measured on the machine that runs it.
Wall time depends on what else runs; process CPU time (both threads) is recorded beside it,
and the 1-minute load average says how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cervicontour.synth import synthesize_cohort  # noqa: E402


def measure(size: str, patients: int, seed: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"synth_{size}_"))
    times: list[float] = []
    cpu: list[float] = []
    last = [time.perf_counter(), time.process_time()]

    def tick(_pid: str) -> None:
        now, now_cpu = time.perf_counter(), time.process_time()
        times.append(now - last[0])
        cpu.append(now_cpu - last[1])
        last[0], last[1] = now, now_cpu

    try:
        start = time.perf_counter()
        synthesize_cohort(tmp / "c", patients=patients, seed=seed, size=size, on_case=tick)
        total = time.perf_counter() - start
        disk_mb = sum(p.stat().st_size for p in (tmp / "c").rglob("*") if p.is_file()) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "size": size,
        "patients": patients,
        "seconds_total": round(total, 3),
        "seconds_per_patient": [round(t, 3) for t in times],
        "seconds_per_patient_max": round(max(times), 3),
        "seconds_per_patient_mean": round(sum(times) / len(times), 3),
        "cpu_seconds_per_patient": [round(t, 3) for t in cpu],
        "cpu_seconds_per_patient_max": round(max(cpu), 3),
        "disk_mb": round(disk_mb, 1),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full-patients", type=int, default=3)
    parser.add_argument("--small-patients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = {
        "benchmark": "synth_speed",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "data": "synthetic phantom (cervicontour synth)",
        "runs": [measure("small", args.small_patients, args.seed), measure("full", args.full_patients, args.seed)],
    }
    out = Path(__file__).parent / "results" / "synth_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    for run in results["runs"]:
        print(f"{run['size']:>5}: {run['patients']} patients, mean {run['seconds_per_patient_mean']:.2f} s, "
              f"max {run['seconds_per_patient_max']:.2f} s per patient (process CPU max "
              f"{run['cpu_seconds_per_patient_max']:.2f} s), {run['disk_mb']:.0f} MB, "
              f"load {run['load_average_1min_at_end']}")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
