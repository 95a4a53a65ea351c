"""The stages of :func:`cervicontour.training.fit.fit` (gate, plan, stage 1, refiner, assembly): each
reads the cohort, the init and the budget and returns what the fit records for it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND, PRIMARY
from cervicontour.training.config import FitConfig
from cervicontour.training.fit_record import _RESERVE_FLOOR_S, _counter, _write_record

def _gate(cohort, emit) -> dict:
    from cervicontour.validate import validate_cohort

    emit("gate", 0, 1, "validating the cohort")
    result = validate_cohort(cohort)
    errors = result.errors
    if errors:
        patients = sorted({f.patient_id or "(cohort)" for f in errors})
        lines = "; ".join(f"{f.patient_id or 'cohort'} {f.structure or ''} {f.check}: {f.actual}".replace("  ", " ") for f in errors[:8])
        raise InputError(
            f"{cohort}: validation found {len(errors)} errors in {len(patients)} patients ({', '.join(patients)}): {lines}"
            f"{' …' if len(errors) > 8 else ''}. Fix them (see `cervicontour validate {cohort} --html report.html`; "
            f"`cervicontour clean` repairs grids, binarisation and names) and run fit again; nothing was written"
        )
    warnings = [f for f in result.findings if f.severity.value == "warning"]
    return {"patients": len(result.patients), "counts": result.counts,
            "warnings": [{"patient": f.patient_id, "structure": f.structure, "check": f.check, "actual": str(f.actual)} for f in warnings]}  # fmt: skip


def _cases(cohort):
    from cervicontour.cohort import load_cohort

    loaded = load_cohort(cohort)
    cases = [c for c in loaded.labelled() if c.image_path is not None and any(c.has(n) for n in PRIMARY)]
    if len(cases) < 2:
        raise InputError(f"{cohort}: {len(cases)} labelled patients with any of {', '.join(PRIMARY)}; fit needs at least 2 (one to train, one to validate)")
    return cases


def _open_init(init: str):
    """``(model or None, transfer source or None)`` for an init spec."""
    from cervicontour.training import transfer

    spec = str(init)
    if spec == "none":
        return None, None
    if spec.startswith("nnunet:"):
        folder = Path(spec[len("nnunet:") :])
        if not (folder / "plans.json").is_file():
            raise InputError(f"--init {spec}: {folder} has no plans.json; expected an nnU-Net v2 results folder (plans.json, dataset.json, fold_*/checkpoint_final.pth)")
        return None, transfer.open_source(folder)
    if transfer.is_merlin_spec(spec):
        raise InputError(f"--init {spec}: fit transfers from a segmentation model (default, a run folder, a model.pt) or nnunet:DIR; "
                         f"a Merlin encoder has no segmentation head to start from: use `cervicontour train --init {spec}` for it")
    source = transfer.open_source(spec)
    if source.kind != "cervicontour":
        return None, source
    from cervicontour.networks.bundle import load_model

    # an init that carries a fallback (the shipped default: its CTVp-parts network, with the previous
    # network kept for the structures the parts fine-tune did not improve) transfers its main network;
    # what it predicts with the fallback stays there for the selection to keep (see _assemble)
    return load_model(spec), source


def _predicts(model) -> set[str]:
    names = set(model.plan.structures)
    return names | {c for c, parts in COMPOUND.items() if names & set(parts)}


def _plan(cases, source, source_model, config: FitConfig) -> dict:
    from cervicontour.training.data import split_cases
    from cervicontour.preprocess import make_plan
    from cervicontour.training.targets import channel_plan

    train, val = split_cases(cases, fold=config.fold, folds=config.folds, seed=config.seed)
    if not val:
        raise InputError(f"{len(cases)} labelled patients cannot be split into {config.folds} folds with one held out; lower --folds")
    cohort_structures = [n for n in PRIMARY if any(c.has(n) for c in train)]
    fingerprint = make_plan(train, cohort_structures).to_dict()
    channels = channel_plan(source_model.plan.structures if source_model is not None else None, cohort_structures)
    if source is not None and source.plan is not None:
        provenance = {
            "spacing_mm": ["source", "the transferred weights learned at this scale"],
            "patch_size": ["source", "the receptive field the weights were trained with"],
            "normalization": ["source", "the transferred first layers expect this input scale; the cohort's own foreground statistics are recorded beside it"],
            "crop": ["source", "body threshold and margin of the source plan"],
        }
        used = source.plan.to_dict()
    else:
        provenance = {k: ["cohort", "no source plan to keep"] for k in ("spacing_mm", "patch_size", "normalization", "crop")}
        used = fingerprint
    return {
        "split": f"fold {config.fold} of {config.folds} (seed {config.seed}) held out for validation",
        "train_patients": [c.patient_id for c in train], "val_patients": [c.patient_id for c in val],
        "cohort_structures": cohort_structures,
        "cohort_fingerprint": {k: fingerprint[k] for k in ("spacing_mm", "patch_size", "normalization")} | {"fingerprint": fingerprint["fingerprint"]},
        "plan_used": {k: used[k] for k in ("spacing_mm", "patch_size", "normalization", "body_threshold_hu", "margin_mm")},
        "plan_provenance": provenance,
        "channels": channels.to_dict(),
    }  # fmt: skip


def _train_config(channels, config: FitConfig):
    from cervicontour.training.train_config import TrainConfig

    return TrainConfig(
        structures=channels.structures, lr=config.lr, batch_size=config.batch_size, head_prior=config.head_prior,
        strategy=config.strategy, fold=config.fold, folds=config.folds, seed=config.seed, device=config.device,
        amp=config.amp, threads=config.threads, steps=max(config.min_steps, 1), val_cases=10**6, checkpoint_every=10,
    )  # fmt: skip


def _init_spec(init: str, source) -> str | None:
    if init == "none":
        return None
    return str(source.path) if source is not None else init


def _stage1_step_seconds(targets_dir: Path, work: Path, train_config, init: str, source) -> float:
    """Seconds per training step, measured on 4 steps of a throwaway run (the first one, which
    warms up, is left out)."""
    import csv

    from cervicontour.training.train import train

    probe = work / "stage1_speed_probe"
    shutil.rmtree(probe, ignore_errors=True)
    train(targets_dir, probe, train_config.replace(steps=4, val_every=10**6, checkpoint_every=10**6, folds=1, fold=0), init=_init_spec(init, source), cache_dir=work / "cache")
    with (probe / "log.csv").open(newline="") as handle:
        seconds = [float(r["seconds"]) for r in csv.DictReader(handle) if r["kind"] == "train"]
    shutil.rmtree(probe, ignore_errors=True)
    return (seconds[-1] - seconds[0]) / max(len(seconds) - 1, 1)


def _steps(seconds: float, step_s: float, floor: int, cap: int | None) -> int:
    steps = int(max(seconds, 0.0) // max(step_s, 1e-3))
    steps = max(steps, floor)
    return min(steps, cap) if cap else steps


def _run_stage1(targets_dir: Path, run_dir: Path, train_config, init: str, cache: Path, emit):
    from cervicontour.training.train import train

    resume = (run_dir / "checkpoint_last.pt").is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: start the stage again

    def progress(step, total, loss, val):
        emit("stage1", step, total, f"loss {loss:.3f}" + (f", val Dice {val:.3f}" if val is not None else ""))

    steps = train_config.steps
    config = train_config.replace(val_every=max(steps // 4, 10), checkpoint_every=max(1, min(25, steps // 10)))
    return train(targets_dir, run_dir, config, init=None if resume else init, resume=resume, on_progress=progress, cache_dir=cache)


def _run_refiner(stage1, source_model, train_cases, val_cases, folder: Path, record, out: Path, clock, config: FitConfig, per_case_eval_s: float, emit) -> dict:
    import copy

    from cervicontour.networks.refine import new_refiner, train_refiner
    from cervicontour.training.refiner_cases import refine_training_cases
    from cervicontour.volume import lps_axes

    folder.mkdir(parents=True, exist_ok=True)
    stage = record.stages.get("refiner", {})
    if source_model is not None and source_model.refiner is not None:
        refiner = copy.deepcopy(source_model.refiner)
        start = f"the init's refiner ({source_model.name} {source_model.version}), fine-tuned"
    else:
        spacings = []
        for case in train_cases:
            image = case.load_image()
            order, _ = lps_axes(image.direction)
            spacings.append([image.spacing_mm[a] for a in order])
        context = tuple(n for n in ("CTVp", "Anorectum", "Bladder") if n in stage1.plan.structures)
        refiner = new_refiner("CTVn", context, np.min(spacings, 0), np.max(spacings, 0), seed=config.seed)
        start = "a new refiner (zero-initialised correction: the identity until trained)"
    counter = _counter(emit, "refiner: stage-1 outputs", len(train_cases) + len(val_cases))
    t_cases = time.perf_counter()
    train_set = refine_training_cases(stage1, train_cases, refiner, nodal_groups="notes", progress=counter, device=config.device)
    val_set = refine_training_cases(stage1, val_cases, refiner, nodal_groups="notes", progress=counter, device=config.device)
    cases_s = time.perf_counter() - t_cases
    if not train_set:
        return {"skipped": "stage 1 finds no CTVn in any training patient", "start": start}
    if "steps" not in stage:
        probe = copy.deepcopy(refiner)
        t = time.perf_counter()
        train_refiner(probe, train_set, [], steps=5, batch_size=config.refiner_batch_size, lr=config.refiner_lr, seed=config.seed, device=config.device)
        step_s = (time.perf_counter() - t) / 5
        reserve = max(_RESERVE_FLOOR_S, per_case_eval_s * len(val_cases) * 3)
        steps = _steps(clock.left() - reserve, step_s, config.min_steps, config.max_refiner_steps)
        stage = {"steps": steps, "step_seconds_measured": round(step_s, 3), "budget_seconds": round(clock.left() - reserve, 1), "status": "running", "start": start}
        record.stages["refiner"] = stage
        _write_record(out, record)

    def progress(step, seconds, loss, val):
        emit("refiner", step, stage["steps"], f"loss {loss:.3f}" + (f", val Dice {val:.3f}" if val is not None else ""))

    result = train_refiner(refiner, train_set, val_set, steps=stage["steps"], batch_size=config.refiner_batch_size, lr=config.refiner_lr, seed=config.seed,
                           device=config.device, progress=progress, checkpoint=folder / "checkpoint.pt", checkpoint_every=max(1, min(50, stage["steps"] // 10)),
                           validate_every=max(stage["steps"] // 4, 10))  # fmt: skip
    refiner.meta = {k: v for k, v in result.items() if k != "curve"} | {"start": start, "nodal_groups": "per patient, from the notes"}
    import torch

    from cervicontour.io.atomic import atomic_path

    with atomic_path(folder / "refiner.pt") as tmp:
        torch.save(refiner.to_payload(), tmp)
    stage.update({"steps_done": result["steps"], "train_seconds": result["seconds"], "cases_seconds": round(cases_s, 1),
                  "val_dice_refine_grid": result["val_dice_refine_grid"], "curve": result["curve"]})  # fmt: skip
    return stage


def _with_refiner(stage1, path: Path):
    import copy

    import torch

    from cervicontour.networks.refine import Refiner

    if not path.is_file():
        return None
    model = copy.copy(stage1)
    model.refiner = Refiner.from_payload(torch.load(path, map_location="cpu", weights_only=False))
    return model


def _assemble(stage1, refined, source_model, choice: dict, frozen: tuple[str, ...], path: Path, *, name: str):
    """The shipped model: stage 1 (with the refiner when CTVn chose it), the zero-shot model as
    the fallback for the structures it kept; written float16 to ``path`` and re-read."""
    from cervicontour.networks.bundle import load_model, save_model

    main = refined if choice.get("CTVn") == "stage1+refiner" and refined is not None else stage1
    kept = tuple(n for n, c in choice.items() if c == "zeroshot")
    if source_model is not None:  # a channel no patient trained (e.g. no note included para-aortic nodes) stays the init's
        kept += tuple(n for n in frozen if n in source_model.plan.structures and n not in kept)
    # the whole init is the fallback (a chain when it has its own): a kept compound's parts come from
    # the init as the compound does, e.g. the shipped default's CTVp parts from its parts network
    meta = {**stage1.meta, "fit": {"choice": choice, "fallback_structures": list(kept)}}
    from cervicontour import __version__

    save_model(path, main.network, main.plan, main.arch, name=name, version=__version__, config_sha256=stage1.config_sha256,
               meta=meta, half=True, refiner=main.refiner, fallback=source_model if kept else None, fallback_structures=kept)  # fmt: skip
    return load_model(path)
