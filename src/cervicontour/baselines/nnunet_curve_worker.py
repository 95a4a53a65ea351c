"""The training process of :mod:`.nnunet_curve`: nnU-Net training with a curve point every so often.

Run as ``python -m cervicontour.baselines.nnunet_curve_worker JOB_JSON`` with the nnU-Net
environment (:func:`.nnunet_run.nnunet_env`); imports torch and nnunetv2.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from copy import deepcopy
from pathlib import Path

import numpy as np

from cervicontour.baselines.nnunet_curve import (
    CurveConfig,
    evaluation_due,
    held_out_cases,
    new_curve,
    read_curve,
    stop_reason,
    write_curve,
)


def evaluate(trainer, images: dict[str, str], references: dict, structures, out: Path, *, use_mirroring: bool) -> dict:
    """Predict ``images`` with the trainer's current network and score them against ``references``.

    Prediction is nnU-Net's (raw CT → its preprocessing → sliding window, tile step 0.5, Gaussian
    weighting → probabilities on the CT's grid); the import thresholds each region at 0.5
    (:func:`~.nnunet.import_predictions`), as the baseline's prediction does.

    Returns:
        ``{structure: {"mean": d, "cases": {case: d}}}``; a case whose reference and prediction
        are both empty scores NaN and is left out of the mean.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from cervicontour.baselines.nnunet import import_predictions
    from cervicontour.io import read_nifti
    from cervicontour.metrics.overlap import dice

    shutil.rmtree(out, ignore_errors=True)
    (out / "raw").mkdir(parents=True)
    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    try:
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                    perform_everything_on_device=False, device=trainer.device, allow_tqdm=False)  # fmt: skip
        predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager,
                                        [deepcopy(trainer.network.state_dict())], trainer.dataset_json,
                                        type(trainer).__name__, trainer.inference_allowed_mirroring_axes)  # fmt: skip
        for case, image in images.items():
            predictor.predict_from_files_sequential([[image]], [str(out / "raw" / case)], save_probabilities=True, overwrite=True)
    finally:
        trainer.set_deep_supervision_enabled(trainer.enable_deep_supervision)
        trainer.network.train()
    written = import_predictions(out / "raw", out / "pred", dataset_json=trainer.dataset_json, reference=references)
    scores: dict = {}
    for structure in structures:
        cases = {case: dice(references[case].load_structure(structure).array, read_nifti(written[case][structure]).array)
                 for case in images}  # fmt: skip
        values = [v for v in cases.values() if not np.isnan(v)]
        scores[structure] = {"mean": float(np.mean(values)) if values else float("nan"), "cases": cases}
    return scores


def _describe(trainer, prepared: dict) -> dict:
    import nnunetv2
    import torch

    cm = trainer.configuration_manager
    return {
        "version": getattr(nnunetv2, "__version__", None) or _version("nnunetv2"),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "plans_name": prepared["plans_name"], "planner_options": prepared["plans"],
        "patch_size": list(cm.patch_size), "batch_size": cm.batch_size, "spacing": list(cm.spacing),
        "parameters": sum(p.numel() for p in trainer.network.parameters()),
        "region_based": trainer.label_manager.has_regions,
        "num_epochs": trainer.num_epochs, "iterations_per_epoch": trainer.num_iterations_per_epoch,
        "val_iterations_per_epoch": trainer.num_val_iterations_per_epoch, "initial_lr": trainer.initial_lr,
        "oversample_foreground_percent": trainer.oversample_foreground_percent,
        "deep_supervision": trainer.enable_deep_supervision, "fold": "all",
        "changes_from_defaults": [
            "CPU plan through nnU-Net's planner: -gpu_memory_target 0.5 -overwrite_target_spacing 4 4 4",
            f"{trainer.num_iterations_per_epoch} iterations per epoch (nnU-Net 250) and {trainer.num_epochs} epochs "
            "(nnU-Net 1000), so checkpoints come often on CPU while the poly learning rate per iteration is nnU-Net's "
            "1000 x 250 schedule" if trainer.num_epochs * trainer.num_iterations_per_epoch == 250_000 else
            f"{trainer.num_iterations_per_epoch} iterations per epoch, {trainer.num_epochs} epochs (nnU-Net 250, 1000)",
            f"{trainer.num_val_iterations_per_epoch} validation iterations per epoch (nnU-Net's ratio 50 per 250)",
            "checkpoint_latest every epoch (nnU-Net every 50), written atomically",
            "training on CPU, fp32, torch.compile off (nnUNet_compile=f), augmentation in the training process (nnUNet_n_proc_DA=0)",
            "curve evaluation: nnU-Net's sliding window without test-time mirroring",
        ],
    }  # fmt: skip


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def main(job: dict) -> None:
    import torch

    from cervicontour.baselines.nnunet_trainer import build_trainer, training_clock

    config = CurveConfig.from_json(job["config"])
    work, curve_path, prepared = Path(job["work"]), Path(job["curve"]), job["prepared"]
    cases = held_out_cases({k: work / "data" / k for k in ("val", "test")})["val"]
    images = {case: str(work / "nnUNet_raw" / prepared["dataset"] / "imagesTs" / f"{case}_0000.nii.gz") for case in cases}
    results = work / "nnUNet_results" / prepared["dataset"]
    checkpoints = sorted(results.glob("*/fold_all/checkpoint_latest.pth")) + sorted(results.glob("*/fold_all/checkpoint_final.pth"))
    resume = next((c for c in checkpoints if c.name == "checkpoint_latest.pth"), None)
    record = read_curve(curve_path) if curve_path.is_file() else None
    if record is not None and record["config_sha256"] != config.digest():
        raise SystemExit(f"{curve_path} belongs to another configuration ({record['config']}); move it away or pass its options")
    if record is not None and record["finished"]:
        print(f"already finished: {record['finished']['reason']}", flush=True)
        return
    if resume is None and any(c.name == "checkpoint_final.pth" for c in checkpoints):
        raise SystemExit(f"{checkpoints[-1]} exists but the curve is not finished: the run cannot continue past its final checkpoint")

    def after_epoch(trainer) -> bool:
        nonlocal record
        clock = training_clock(trainer)
        if record is None:
            record = new_curve(config, _describe(trainer, prepared))
            write_curve(curve_path, record)
        print(f"[{time.strftime('%H:%M:%S')}] epoch {clock['epochs']}: {clock['iterations']} iterations, "
              f"{clock['cpu_s']:.0f} s CPU, {clock['wall_s']:.0f} s wall", flush=True)  # fmt: skip
        if evaluation_due(record, config, clock["cpu_s"] if config.device == "cpu" else clock["wall_s"]):
            start = time.perf_counter()
            dice = evaluate(trainer, images, cases, config.structures, work / "eval", use_mirroring=config.use_mirroring)
            point = {"epoch": clock["epochs"], "iterations": clock["iterations"], "train_wall_s": round(clock["wall_s"], 1),
                     "train_cpu_s": round(clock["cpu_s"], 1), "eval_s": round(time.perf_counter() - start, 1),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "dice": dice}  # fmt: skip
            record["points"].append(point)
            write_curve(curve_path, record)
            print("  validation Dice: " + ", ".join(f"{s} {d['mean']:.3f}" for s, d in dice.items()), flush=True)
        reason = stop_reason(record, config)
        if reason:
            record["finished"] = {"reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            write_curve(curve_path, record)
            print(f"stop: {reason}", flush=True)
        return reason is not None

    trainer = build_trainer(work / "nnUNet_preprocessed" / prepared["dataset"], plans_name=prepared["plans_name"],
                            configuration="3d_fullres", fold="all", device=config.device, continue_training=resume is not None,
                            num_epochs=config.epochs, iterations_per_epoch=config.iterations_per_epoch, save_every=1,
                            after_epoch=after_epoch)  # fmt: skip
    if resume is not None:
        trainer.load_checkpoint(str(resume))
        print(f"resumed from {resume} at epoch {trainer.current_epoch} ({training_clock(trainer)})", flush=True)
    print(f"torch threads {torch.get_num_threads()}", flush=True)
    trainer.run_training()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
