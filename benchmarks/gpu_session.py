"""One prepared session on a lent GPU machine: check the CUDA paths, then train larger models.

The lent machine (``device`` tool) is bare apart from PyTorch and common packages and is lent for
minutes, so this script does everything in one call and packs what comes back into a few files:

1. ``pytest tests/test_cuda.py tests/test_train_schedule.py`` — augmentation on the GPU equals the
   CPU's, AMP training, a GPU checkpoint resumed, GPU inference equals the CPU's (log: ``pytest_cuda.log``);
2. the three synthetic cohorts of ``train_default_model.py`` (same generator and seeds; ``--phantom``,
   default ``synth``'s default anatomy), made there;
3. training arms side by side (one process each, sharing the GPU), each the shipped recipe —
   source pretraining, then the nodal-group fine-tune on the 100-patient target cohort — with a
   time budget instead of a step count (``lr_schedule = "time"``: as many steps as fit, the learning
   rate decayed over the budget). Each arm comes back as ``ARM.tar.gz`` (both runs' run.json, plan,
   log.csv, curves.png; the fine-tuned model as float16).

Selection between the arms and the shipped model, and every evaluation, happen afterwards on the
CPU machine (``train_default_model.py --stage select``/``evaluate``), on validation patients.

Usage (on the GPU machine, wheels installed on PYTHONPATH):
    python benchmarks/gpu_session.py --out "$OUT" [--pretrain-minutes 2 --nodal-minutes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "benchmarks" / "train_default_model.py"

#: name -> extra arguments of train_default_model.py
ARMS = {
    "gpu_cpu96": ["--network", "cpu", "--patch", "96", "96", "56", "--batch-size", "4"],
    "gpu_small96": ["--network", "cpu-small", "--patch", "96", "96", "56", "--batch-size", "4"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cervicontour_gpu"))
    parser.add_argument("--pretrain-minutes", type=float, default=2.0)
    parser.add_argument("--nodal-minutes", type=float, default=3.0)
    parser.add_argument("--arms", nargs="*", default=list(ARMS))
    parser.add_argument("--continue-minutes", type=float, default=0.0, help="> 0: only continue the shipped default model (its nodal fine-tune) at lr 1e-3 for this long")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of this script on a machine without a GPU")
    parser.add_argument("--phantom", type=int, default=None, help="anatomy version of the cohorts (default: synth's, DEFAULT_PHANTOM)")
    args = parser.parse_args()
    if args.phantom is None:
        from cervicontour.synth.anatomy import DEFAULT_PHANTOM

        args.phantom = DEFAULT_PHANTOM
    data = args.work / "data"
    recipe = ["--data", str(data), "--phantom", str(args.phantom)]  # every call of the recipe: same cohorts
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "4"}
    record: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), "phantom": args.phantom, "arms": {}}

    tests = None
    if not args.skip_tests:
        log = open(args.out / "pytest_cuda.log", "w")
        tests = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py", "tests/test_train_schedule.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    run([sys.executable, str(RECIPE), "--work", str(args.work), *recipe, "--stage", "data"], env)
    record["data_seconds"] = round(time.time() - t0, 1)
    record["data_sha256"] = fingerprint(data)  # compare with the CPU machine's cohorts (same generator, seeds)
    if tests is not None:
        record["pytest_exit"] = tests.wait()
        print(f"CUDA tests: exit {record['pytest_exit']}", flush=True)

    stages = (("pretrain", args.pretrain_minutes), ("nodal", args.nodal_minutes))
    if args.continue_minutes:  # the shipped model stands in for its nodal fine-tune
        stages = (("nodal-continue", args.continue_minutes),)
        for name in args.arms:
            (args.work / name / "finetune_nodal").mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "src" / "cervicontour" / "models" / "default" / "model.pt", args.work / name / "finetune_nodal" / "model.pt")
    for stage, minutes in stages:
        procs = {}
        for name in args.arms:
            cmd = [sys.executable, str(RECIPE), "--work", str(args.work / name), *recipe, "--stage", stage, "--device", args.device, "--threads", "4",
                   "--checkpoint-every", "250", f"--{stage.split('-')[-1]}-minutes", str(minutes), *ARMS[name]]  # fmt: skip
            logf = open(args.work / f"{name}_{stage}.log", "w")
            procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT), logf)
        for name, (proc, logf) in procs.items():
            try:
                code = proc.wait(timeout=minutes * 60 + 240)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = "killed (timeout)"
            logf.close()
            record["arms"].setdefault(name, {})[f"{stage}_exit"] = code
            print(f"{name} {stage}: exit {code} ({time.time() - t0:.0f} s)", flush=True)
            tail = (args.work / f"{name}_{stage}.log").read_text().splitlines()[-3:]
            print("\n".join("   " + line for line in tail), flush=True)

    for name in args.arms:
        record["arms"][name].update(pack(args.work / name, args.out / f"{name}.tar.gz", [args.work / f"{name}_{s}.log" for s, _ in stages]))
    record["seconds_total"] = round(time.time() - t0, 1)
    (args.out / "gpu_session.json").write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps(record, indent=1, default=str))


def machine() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def fingerprint(data: Path) -> dict:
    """sha256 of each cohort's notes.csv and of its first patient's CT voxels."""
    import hashlib

    from cervicontour.cohort import load_cohort

    out = {}
    for folder in sorted(p for p in data.iterdir() if (p / "notes.csv").is_file()):
        case = load_cohort(folder).cases()[0]
        voxels = case.load_image().array
        out[folder.name] = {"notes_csv": hashlib.sha256((folder / "notes.csv").read_bytes()).hexdigest(), f"{case.patient_id}_ct": hashlib.sha256(voxels.tobytes()).hexdigest()}
    return out


def run(cmd, env) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    print(proc.stdout[-2000:], proc.stderr[-2000:], flush=True)
    proc.check_returncode()


def pack(arm: Path, target: Path, logs: list[Path]) -> dict:
    """Both runs' records and the fine-tuned model (as float16) into one archive."""
    out: dict = {}
    nodal = arm / "finetune_nodal_continued"
    if not (nodal / "model.pt").is_file():
        nodal = arm / "finetune_nodal"
    if (nodal / "run.json").is_file():
        from cervicontour.networks.bundle import load_model, save_model

        model = load_model(nodal)
        save_model(arm / "model_fp16.pt", model.network, model.plan, model.arch, name=model.name, version=model.version, config_sha256=model.config_sha256, meta=model.meta, half=True)
    for run_name in ("pretrain", "finetune_nodal", "finetune_nodal_continued"):
        info = arm / run_name / "run.json"
        if info.is_file():
            d = json.loads(info.read_text())
            out[run_name] = {k: d.get(k) for k in ("steps_done", "seconds", "stopped_by_time")} | {"mean_dice": (d.get("validation") or {}).get("mean_dice")}
    with tarfile.open(target, "w:gz") as tar:
        for run_name in ("pretrain", "finetune_nodal", "finetune_nodal_continued"):
            for f in ("run.json", "plan.json", "config.toml", "log.csv", "curves.png"):
                if (arm / run_name / f).is_file():
                    tar.add(arm / run_name / f, arcname=f"{run_name}/{f}")
        if (arm / "model_fp16.pt").is_file():
            tar.add(arm / "model_fp16.pt", arcname=f"{nodal.name}/model.pt")
        for log in logs:
            if log.is_file():
                tar.add(log, arcname=log.name)
    return out


if __name__ == "__main__":
    main()
