"""Run the nnU-Net v2 baseline end to end: export → plan → preprocess → train → predict → import.

Every nnU-Net stage runs in its own Python subprocess with ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` pointing into the work folder (nnU-Net reads them
once, at import time, so they cannot change inside one process), and its output goes to
``WORK/logs/<stage>.log``. Training and prediction import ``nnUNetTrainer`` directly: nnU-Net's
trainer-class search imports every trainer module, and some of those import torchvision.

Work folder::

    WORK/nnUNet_raw/Dataset{id}_{name}/        export (imagesTs = the test cases)
    WORK/nnUNet_preprocessed/, nnUNet_results/ nnU-Net's own
    WORK/nnunet_predictions/                   <case>.nii.gz + .npz + .pkl
    WORK/predictions/<case>/structures/<Name>.nii.gz
    WORK/timings.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cervicontour.baselines.nnunet import export_dataset, import_predictions
from cervicontour.errors import InputError
from cervicontour.structures import PRIMARY

TRAINER_NAME = "nnUNetTrainerCervicontour"
PLANS_NAME = "nnUNetPlans"


@dataclass(frozen=True)
class PlanOptions:
    """nnU-Net planner options (``nnUNetv2_plan_and_preprocess``'s own flags); defaults = nnU-Net's plan.

    Attributes:
        name: plans identifier (``-overwrite_plans_name``); ``nnUNetPlans`` is nnU-Net's default.
        gpu_memory_target_gb: the planner's memory target (``-gpu_memory_target``), which sizes the
            patch and batch; None: nnU-Net's default (8 GB).
        target_spacing_mm: ``-overwrite_target_spacing`` in nnU-Net's axis order; None: planned.

    Example:
        >>> CPU_PLAN.planner_args()
        ['-gpu_memory_target', '0.5', '-overwrite_target_spacing', '4.0', '4.0', '4.0', '-overwrite_plans_name', 'nnUNetPlans_cpu']
    """

    name: str = PLANS_NAME
    gpu_memory_target_gb: float | None = None
    target_spacing_mm: tuple[float, float, float] | None = None

    def planner_args(self) -> list[str]:
        args = []
        if self.gpu_memory_target_gb is not None:
            args += ["-gpu_memory_target", str(self.gpu_memory_target_gb)]
        if self.target_spacing_mm is not None:
            args += ["-overwrite_target_spacing", *(str(float(s)) for s in self.target_spacing_mm)]
        if self.name != PLANS_NAME:
            args += ["-overwrite_plans_name", self.name]
        return args


#: The CPU-sized plan measured in issue 20: patch 40 x 64 x 56, 5.6 M parameters, ~5 s per iteration.
CPU_PLAN = PlanOptions("nnUNetPlans_cpu", 0.5, (4.0, 4.0, 4.0))


def require_nnunet() -> None:
    """Raise :class:`InputError` naming the extra when nnunetv2 is not importable."""
    import importlib.util

    if importlib.util.find_spec("nnunetv2") is None:
        raise InputError(
            "the nnU-Net baseline needs nnunetv2, which is not installed: "
            "pip install -e '.[nnunet]' -c constraints.txt"
        )


def nnunet_env(work_dir: str | os.PathLike, *, training_on_cpu: bool = False) -> dict[str, str]:
    """The environment for nnU-Net subprocesses: its three folders under ``work_dir``.

    Also ``nnUNet_compile=f`` (torch.compile costs minutes on CPU) and, for CPU training only,
    ``nnUNet_n_proc_DA=0`` (augmentation in the training process; planning needs it unset)
    unless already set.
    """
    work = Path(work_dir).resolve()
    env = dict(os.environ)
    env.update(nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"))  # fmt: skip
    env.setdefault("nnUNet_compile", "f")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if training_on_cpu:
        env.setdefault("nnUNet_n_proc_DA", "0")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def _stage(name: str, args: Sequence[str], env: dict[str, str], logs: Path) -> tuple[float, str]:
    """Run one stage as ``python <args>``; return (wall seconds, stdout). Raise with the log tail."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], check=False, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.write_text(f"$ python {' '.join(args)}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}", encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"nnU-Net {name} failed (exit {proc.returncode}); full log: {log}\n{tail}")
    return seconds, proc.stdout


def _entry(function: str, *argv: str) -> list[str]:
    """``python -c`` arguments calling an nnU-Net console entry point with ``argv``."""
    module, func = function.rsplit(".", 1)
    return ["-c", f"import sys; from {module} import {func} as f; sys.exit(f())", *argv]


def plan_and_preprocess(dataset_id: int, work_dir: str | os.PathLike, *, configuration: str = "3d_fullres",
                        num_processes: int = 1, plans: PlanOptions | None = None) -> dict[str, float]:  # fmt: skip
    """Fingerprint + plan (with ``--verify_dataset_integrity``), then preprocess one configuration.

    Args:
        plans: nnU-Net planner options (GPU memory target, target spacing, plans name);
            default: nnU-Net's own plan, ``nnUNetPlans``.

    Returns:
        ``{"plan_s": ..., "preprocess_s": ...}`` wall seconds.
    """
    env, logs, np_ = nnunet_env(work_dir), Path(work_dir) / "logs", str(num_processes)
    extra = (plans or PlanOptions()).planner_args()
    plan_s, _ = _stage("plan", _entry("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints.plan_and_preprocess_entry",
                                      "-d", str(dataset_id), "--verify_dataset_integrity", "--no_pp", "-npfp", np_, *extra), env, logs)  # fmt: skip
    pre_s, _ = _stage("preprocess", _entry("nnunetv2.experiment_planning.plan_and_preprocess_entrypoints.preprocess_entry",
                                           "-d", str(dataset_id), "-c", configuration, "-np", np_,
                                           "-plans_name", (plans or PlanOptions()).name), env, logs)  # fmt: skip
    return {"plan_s": plan_s, "preprocess_s": pre_s}


def run_nnunet(
    train_cohort,
    test=None,
    work_dir: str | os.PathLike = "nnunet_work",
    *,
    dataset_id: int,
    epochs: int,
    iterations_per_epoch: int = 250,
    device: str = "cpu",
    configuration: str = "3d_fullres",
    fold: str = "all",
    name: str = "Cervix",
    structures: Sequence[str] = PRIMARY,
    use_mirroring: bool = True,
    num_processes: int = 1,
    on_stage: Callable[[str], None] | None = None,
) -> dict:
    """Train nnU-Net v2 on ``train_cohort`` and predict ``test``; predictions in the cohort layout.

    Args:
        train_cohort: cohort (folder or Cohort) whose labelled patients are the training cases.
        test: cohort (folder or Cohort: all its patients), or CT files (case id = file stem);
            default: the hold-out patients of ``train_cohort``.
        work_dir: the work folder (see the module docstring); created.
        dataset_id: nnU-Net dataset id; ``WORK/nnUNet_raw`` must not already hold it.
        epochs, iterations_per_epoch: the training budget (nnU-Net's default is 1000 × 250).
        device: ``"cpu"`` or ``"cuda"``.
        configuration: nnU-Net configuration, e.g. ``"3d_fullres"`` or ``"2d"``.
        fold: ``"all"`` (train on every case) or ``"0"``..``"4"`` (nnU-Net's 5-fold split; ≥ 5 cases).
        use_mirroring: nnU-Net's test-time mirroring (8 passes in 3-D; off is ~8× faster).
        num_processes: worker processes for fingerprinting and preprocessing.
        on_stage: called with each stage name as it starts.

    Returns:
        ``{"predictions": WORK/predictions, "dataset": raw folder, "model": trained model folder,
        "timings": dict}``; ``timings`` is also written to ``WORK/timings.json``.
    """
    require_nnunet()
    from cervicontour.cohort import Case, Cohort, load_cohort
    from cervicontour.io import strip_nifti_suffix, write_text_atomic

    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if fold not in ("all", "0", "1", "2", "3", "4"):
        raise InputError(f"fold must be 'all' or 0..4, got {fold!r}")
    if epochs < 1 or iterations_per_epoch < 1:
        raise InputError(f"epochs and iterations per epoch must be ≥ 1, got {epochs} and {iterations_per_epoch}")
    work = Path(work_dir).resolve()
    train = train_cohort if isinstance(train_cohort, Cohort) else load_cohort(train_cohort)
    if test is None:
        test_cases = train.holdout()
    elif isinstance(test, Cohort) or (isinstance(test, (str, os.PathLike)) and Path(test).is_dir()):
        test_cases = (test if isinstance(test, Cohort) else load_cohort(test)).cases()
    else:
        paths = [Path(p) for p in ([test] if isinstance(test, (str, os.PathLike)) else test)]
        test_cases = [Case(strip_nifti_suffix(p.name), p) for p in paths]
    if not test_cases:
        raise InputError("no test cases: expected hold-out patients in the cohort, a test cohort, or CT files")
    stage = on_stage or (lambda _name: None)
    timings: dict = {"device": device, "configuration": configuration, "fold": fold, "epochs": epochs,
                     "iterations_per_epoch": iterations_per_epoch, "use_mirroring": use_mirroring,
                     "cpu_count": os.cpu_count()}  # fmt: skip

    stage("export")
    start = time.perf_counter()
    (dataset,) = export_dataset(train, work / "nnUNet_raw", dataset_id=dataset_id, name=name,
                                structures=structures, test=test_cases)  # fmt: skip
    timings["export_s"] = time.perf_counter() - start
    stage("plan + preprocess")
    timings.update(plan_and_preprocess(dataset_id, work, configuration=configuration, num_processes=num_processes))
    env, logs = nnunet_env(work, training_on_cpu=device == "cpu"), work / "logs"
    preprocessed = work / "nnUNet_preprocessed" / dataset.folder.name
    job = {"preprocessed": str(preprocessed), "configuration": configuration, "fold": fold, "device": device,
           "epochs": epochs, "iterations_per_epoch": iterations_per_epoch}  # fmt: skip
    stage("train")
    timings["train_s"], out = _stage("train", ["-m", __name__, "train", json.dumps(job)], env, logs)
    trained = json.loads(out.strip().splitlines()[-1])
    model = Path(trained["model"])
    # the epochs alone (training + validation iterations), without process start and data loading
    timings["train_epochs_s"] = sum(trained["epochs_s"])
    timings["train_s_per_iteration"] = timings["train_epochs_s"] / (epochs * iterations_per_epoch)
    stage("predict")
    raw_predictions = work / "nnunet_predictions"
    images = {c.patient_id: str(dataset.folder / "imagesTs" / f"{c.patient_id}_0000.nii.gz") for c in test_cases}
    timings["predict_s"], timings["per_case_inference_s"] = predict_stage(
        model, images, raw_predictions, configuration=configuration, fold=fold, device=device,
        use_mirroring=use_mirroring, env=env, logs=logs,
    )  # fmt: skip
    stage("import")
    start = time.perf_counter()
    import_predictions(raw_predictions, work / "predictions", dataset_json=dataset.folder / "dataset.json",
                       reference={c.patient_id: c for c in test_cases})  # fmt: skip
    timings["import_s"] = time.perf_counter() - start
    write_text_atomic(work / "timings.json", json.dumps(timings, indent=2))
    return {"predictions": work / "predictions", "dataset": dataset.folder, "model": model, "timings": timings}


def predict_stage(model: str | os.PathLike, images: Mapping[str, str], out: str | os.PathLike, *, configuration: str, fold: str,
                  device: str, use_mirroring: bool, env: dict[str, str], logs: Path,
                  checkpoint: str | os.PathLike | None = None) -> tuple[float, dict[str, float]]:  # fmt: skip
    """nnU-Net's predictor on CT files, as the ``predict`` stage (a subprocess; its log ``LOGS/predict.log``).

    Args:
        model: trained model folder (``plans.json``, ``dataset.json``, ``fold_<fold>/``).
        images: ``{case id: CT file}``; writes ``OUT/<case>.nii.gz`` + ``.npz`` + ``.pkl``.
        checkpoint: the checkpoint to load; default ``MODEL/fold_<fold>/checkpoint_final.pth``.

    Returns:
        ``(wall seconds of the stage, {case id: prediction seconds})``.
    """
    job = {"model": str(model), "checkpoint": str(checkpoint) if checkpoint is not None else None, "configuration": configuration,
           "fold": fold, "device": device, "use_mirroring": use_mirroring, "images": dict(images), "out": str(out)}  # fmt: skip
    seconds, stdout = _stage("predict", ["-m", __name__, "predict", json.dumps(job)], env, logs)
    return seconds, json.loads(stdout.strip().splitlines()[-1])["per_case_s"]


# --------------------------------------------------------------------------- subprocess workers
def _train_worker(job: dict) -> None:
    from cervicontour.baselines.nnunet_trainer import build_trainer

    trainer = build_trainer(job["preprocessed"], plans_name=job.get("plans_name", PLANS_NAME), configuration=job["configuration"],
                            fold=job["fold"], device=job["device"], continue_training=False,
                            num_epochs=job["epochs"], iterations_per_epoch=job["iterations_per_epoch"])  # fmt: skip
    trainer.run_training()
    starts, ends = (trainer.logger.get_value(f"epoch_{k}_timestamps", None) for k in ("start", "end"))
    print(json.dumps({"model": str(Path(trainer.output_folder).parent), "epochs_s": [e - s for s, e in zip(starts, ends)]}))


def _predict_worker(job: dict) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import (
        determine_num_input_channels,
    )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model, device = Path(job["model"]), torch.device(job["device"])
    plans = json.loads((model / "plans.json").read_text())
    dataset_json = json.loads((model / "dataset.json").read_text())
    checkpoint = torch.load(job.get("checkpoint") or model / f"fold_{job['fold']}" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration(job["configuration"])
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, configuration, determine_num_input_channels(plans_manager, configuration, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False,
    )  # fmt: skip
    predictor = nnUNetPredictor(use_mirroring=job["use_mirroring"], perform_everything_on_device=device.type == "cuda",
                                device=device, allow_tqdm=False)  # fmt: skip
    predictor.manual_initialization(network, plans_manager, configuration, [checkpoint["network_weights"]], dataset_json,
                                    checkpoint["trainer_name"], checkpoint.get("inference_allowed_mirroring_axes"))  # fmt: skip
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    per_case = {}
    for case, image in job["images"].items():
        start = time.perf_counter()
        predictor.predict_from_files_sequential([[image]], [str(out / case)], save_probabilities=True, overwrite=True)
        per_case[case] = time.perf_counter() - start
    print(json.dumps({"per_case_s": per_case}))


def _main(argv: Iterable[str]) -> None:
    command, job = list(argv)
    {"train": _train_worker, "predict": _predict_worker}[command](json.loads(job))


if __name__ == "__main__":
    _main(sys.argv[1:])
