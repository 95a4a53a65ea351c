"""``cervicontour fit``: a hospital's labelled cohort → its own validated model, in one call.

Stages (each recorded in ``MODEL_DIR/fit.json`` when it ends; ``resume=True`` skips the ended
ones and continues the one a kill interrupted)::

    gate      validate the cohort: errors stop the fit (nothing written), warnings are recorded
    plan      split (held-out fold), the cohort's fingerprint, what the plan takes from the source
    targets   each channel's training target (training/targets.py: labels, partitioned compounds,
              distilled source channels), written as a cohort folder
    zeroshot  the init scored on the validation patients (what the fit must not fall below)
    stage1    fine-tune the init (model/train.py) for a step count fixed from the budget
    refiner   fine-tune (or train) the CTVn second stage on stage 1's output, same rule (skipped
              when the budget left cannot pay for stage 1 on every patient and its scoring)
    select    score stage 1 and stage 1 + refiner; per structure the best, never below zero-shot
    export    float16 model.pt (+ the zero-shot model for structures it kept), card.md, card.json

Layout of ``MODEL_DIR``: ``model.pt``, ``card.md``, ``card.json``, ``fit.json`` (the run record,
:func:`read_fit_record`), ``work/`` (targets, cache, stage runs and checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND, PRIMARY
from cervicontour.training.config import FitConfig

FIT_SCHEMA = "cervicontour-fit/1"
STAGES = ("gate", "plan", "targets", "zeroshot", "stage1", "refiner", "select", "export")
#: seconds kept for selection and export, per validation patient and candidate (measured on the
#: zero-shot scoring, this is the floor)
_RESERVE_FLOOR_S = 30.0


@dataclass
class FitRecord:
    """``fit.json``: what a fit did, stage by stage (schema :data:`FIT_SCHEMA`)."""

    cohort: str
    init: str
    config: dict
    stages: dict = field(default_factory=dict)
    schema: str = FIT_SCHEMA
    started: str = ""

    def to_dict(self) -> dict:
        return {"schema": self.schema, "cohort": self.cohort, "init": self.init, "config": self.config, "started": self.started, "stages": self.stages}

    def elapsed_s(self) -> float:
        return float(sum(s.get("seconds", 0.0) for s in self.stages.values()))

    def done(self, stage: str) -> bool:
        return self.stages.get(stage, {}).get("status") == "done"


def read_fit_record(path: str | os.PathLike) -> FitRecord:
    """Read ``fit.json`` (a model folder or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the fit record ({exc}); is this a `cervicontour fit` output folder?") from None
    if data.get("schema") != FIT_SCHEMA:
        raise InputError(f"{path}: fit record schema {data.get('schema')!r}, expected {FIT_SCHEMA!r}")
    return FitRecord(data["cohort"], data["init"], data["config"], data.get("stages", {}), data["schema"], data.get("started", ""))


@dataclass
class FitResult:
    model_dir: Path
    model_path: Path
    record: FitRecord


Event = Callable[[str, float, float, str], None]  # (stage, done, total, text)


def fit(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    init: str = "default",
    config: FitConfig = FitConfig(),
    resume: bool = False,
    on_event: Event | None = None,
) -> FitResult:
    """Fit a model to a labelled cohort by transfer from ``init`` (see the module docstring).

    Args:
        cohort: labelled cohort folder (five compound masks per patient are enough).
        out: the model folder (new or empty; an interrupted fit's folder with ``resume=True``).
        init: ``default`` (the shipped model), a run folder or ``model.pt``, ``nnunet:DIR``
            (an nnU-Net v2 results folder), or ``none`` (from scratch).
        config: :class:`~cervicontour.training.config.FitConfig` (``resume``: read from the record).
        on_event: progress callback ``(stage, done, total, text)``.

    Raises:
        InputError: validation errors (the patients named; nothing written), an unusable init,
            a non-empty ``out`` without ``resume``, or nothing to resume.
    """
    out = Path(out)
    emit = on_event or (lambda *a: None)
    t_start = time.perf_counter()
    if resume:
        if not (out / "fit.json").is_file():
            raise InputError(f"{out}: nothing to resume (no fit.json); start the fit without --resume")
        record = read_fit_record(out)
        config = FitConfig(**record.config)
        init, cohort = record.init, record.cohort
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"{out} exists and is not empty; choose a new folder, or pass --resume to continue an interrupted fit")
        record = FitRecord(str(Path(cohort).resolve()), str(init), config.to_dict(), started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    clock = _Budget(config.budget_minutes * 60.0, record.elapsed_s(), t_start)

    # ---- gate: the init, the patients and the cohort's validation, before anything is written
    source_model, source = _open_init(init)
    cases = _cases(cohort)
    if not record.done("gate"):
        t = time.perf_counter()
        gate = _gate(cohort, emit)
        out.mkdir(parents=True, exist_ok=True)
        _finish(out, record, "gate", t, gate, emit)

    # ---- plan: split, fingerprint, provenance of each plan field
    if not record.done("plan"):
        t = time.perf_counter()
        emit("plan", 0, 1, "fingerprinting the cohort")
        _finish(out, record, "plan", t, _plan(cases, source, source_model, config), emit)
    plan_info = record.stages["plan"]
    train_ids, val_ids = plan_info["train_patients"], plan_info["val_patients"]
    by_id = {c.patient_id: c for c in cases}
    train_cases, val_cases = [by_id[p] for p in train_ids], [by_id[p] for p in val_ids]
    compounds = plan_info["cohort_structures"]

    # ---- targets: what every channel trains on
    from cervicontour.training.targets import ChannelPlan, write_targets

    channels = ChannelPlan(tuple(plan_info["channels"]["structures"]), plan_info["channels"]["targets"])
    targets_dir = out / "work" / "targets"
    if not record.done("targets"):
        t = time.perf_counter()
        per_case = write_targets(train_cases + val_cases, source_model, channels, targets_dir, on_case=_counter(emit, "targets", len(cases)))
        _finish(out, record, "targets", t, {"folder": str(targets_dir), "per_patient": per_case, "channels": channels.to_dict()}, emit)

    # ---- zero-shot: the init on the validation patients
    from cervicontour.training.selection import choose, score_model

    if not record.done("zeroshot"):
        t = time.perf_counter()
        info: dict = {"applicable": False}
        if source_model is not None and set(compounds) & _predicts(source_model):
            info = {"applicable": True, **score_model(source_model, val_cases, compounds, device=config.device, on_case=_counter(emit, "zeroshot", len(val_cases)))}
        else:
            info["why"] = "the init predicts none of the cohort's structures by name" if source_model is not None else "no init model (from scratch or an encoder-only source)"
        # seconds to predict one patient (what selection and the refiner's inputs cost): measured on the
        # init when it was scored, else a conservative guess for this CPU
        info["seconds_per_case"] = (time.perf_counter() - t) / max(len(val_cases), 1) if info["applicable"] else 10.0
        _finish(out, record, "zeroshot", t, info, emit)
    zero = record.stages["zeroshot"]
    per_case_eval_s = max(float(zero.get("seconds_per_case", 2.0)), 0.5)

    # ---- stage 1: fine-tune
    stage1_dir = out / "work" / "stage1"
    has_refiner_stage = "CTVn" in compounds and (source_model is None or source_model.refiner is not None or "CTVn" in channels.structures or any(n in channels.structures for n in COMPOUND["CTVn"]))
    if not record.done("stage1"):
        t = time.perf_counter()
        stage = record.stages.get("stage1", {})
        per_patient = record.stages["targets"]["per_patient"]
        frozen = [n for n, how in channels.source.items() if how == "parts" and not any(v["parts_voxels"].get(n, 0) for p, v in per_patient.items() if p in train_ids)]
        train_config = _train_config(channels, config).replace(unlabelled_ok=tuple(frozen) or None)
        if "steps" not in stage:  # the budget becomes a step count once, when the stage first starts
            reserve = max(_RESERVE_FLOOR_S, per_case_eval_s * len(val_cases) * 3 + per_case_eval_s * (len(train_cases) + len(val_cases)))
            available = clock.left() - reserve
            share = config.stage1_share if has_refiner_stage else 1.0
            emit("stage1", 0, 1, "measuring the speed of a training step")
            step_s = _stage1_step_seconds(targets_dir, out / "work", train_config, init, source)
            steps = _steps(available * share, step_s, config.min_steps, config.max_stage1_steps)
            stage = {"steps": steps, "step_seconds_measured": round(step_s, 3), "budget_seconds": round(available * share, 1), "status": "running",
                     "frozen_channels": {n: "no voxel of any training patient's compound went to it: left out of the loss, its head row kept from the init" for n in frozen}}  # fmt: skip
            record.stages["stage1"] = stage
            _write_record(out, record)
        result = _run_stage1(targets_dir, stage1_dir, train_config.replace(steps=stage["steps"]), _init_spec(init, source), out / "work" / "cache", emit)
        stage.update({"run": str(stage1_dir), "steps_done": result.steps_done, "train_seconds": round(result.seconds, 1),
                      "working_grid_validation": result.validation, "transfer": result.transfer})  # fmt: skip
        _finish(out, record, "stage1", t, stage, emit)

    from cervicontour.model import load_model

    stage1 = load_model(stage1_dir)  # stage 1 alone: no second stage (the init's refiner is where the refiner stage starts)

    # ---- refiner
    refiner_dir = out / "work" / "refiner"
    refined = None
    if has_refiner_stage:
        # the refiner's floor: stage 1 on every patient (its inputs) and one more candidate to score;
        # a budget that cannot pay for it keeps the fit near its budget (a 5-minute fit on a CPU)
        floor_s = per_case_eval_s * (len(train_cases) + 2 * len(val_cases)) + _RESERVE_FLOOR_S
        if not record.done("refiner") and "steps" not in record.stages.get("refiner", {}) and clock.left() < floor_s:
            why = f"budget: {max(clock.left(), 0.0):.0f} s left, its floor is ~{floor_s:.0f} s (stage 1 on every patient, then scoring)"
            record.stages["refiner"] = {"status": "done", "skipped": why, "seconds": 0.0}
            _write_record(out, record)
            emit("refiner", 1, 1, "skipped: " + why)
        if not record.done("refiner"):
            t = time.perf_counter()
            info = _run_refiner(stage1, source_model, train_cases, val_cases, refiner_dir, record, out, clock, config, per_case_eval_s, emit)
            _finish(out, record, "refiner", t, info, emit)
        refined = _with_refiner(stage1, refiner_dir / "refiner.pt")
    else:
        record.stages["refiner"] = {"status": "done", "skipped": "the cohort has no CTVn" if "CTVn" not in compounds else "no refiner to start from", "seconds": 0.0}

    # ---- select
    if not record.done("select"):
        t = time.perf_counter()
        emit("select", 0, 1, "scoring the candidates on the validation patients")
        candidates = {"stage1": stage1, **({"stage1+refiner": refined} if refined is not None else {})}
        scores = {"zeroshot": zero} if zero.get("applicable") else {}
        for name, model in candidates.items():
            scores[name] = score_model(model, val_cases, compounds, device=config.device, on_case=_counter(emit, f"select: {name}", len(val_cases)))
        fitted = [n for n in ("stage1+refiner", "stage1") if n in candidates]
        choice = choose(scores, compounds, fitted=fitted, baseline="zeroshot" if "zeroshot" in scores else None)
        _finish(out, record, "select", t, {"candidates": {k: {kk: v[kk] for kk in ("dice", "dice_sd", "hd95_mm", "mean_dice")} for k, v in scores.items()},
                                            "choice": choice, "per_case": {k: v["per_case"] for k, v in scores.items()}}, emit)  # fmt: skip
    choice = record.stages["select"]["choice"]

    # ---- export
    if not record.done("export"):
        t = time.perf_counter()
        emit("export", 0, 1, "assembling the chosen model")
        from cervicontour.pipeline import active_refiner

        staged = out / "work" / "model.pt"  # moved into place last: a model.pt in OUT is a finished fit's
        frozen = tuple(record.stages["stage1"].get("frozen_channels", {}))
        final = _assemble(stage1, refined, source_model, choice, frozen, staged, name=f"fit-{out.name}")
        final_scores = score_model(final, val_cases, compounds, device=config.device, on_case=_counter(emit, "export: final model", len(val_cases)))
        info = {"model": str(out / "model.pt"), "validation": {k: final_scores[k] for k in ("dice", "dice_sd", "hd95_mm", "mean_dice")},
                "per_case": final_scores["per_case"], "fallback_structures": list(final.fallback_structures),
                "refined": [r.structure for r in [active_refiner(final)] if r is not None]}  # fmt: skip
        from cervicontour.training.card import write_card

        record.stages["export"] = {**info, "status": "running"}
        write_card(out, record, final)
        os.replace(staged, out / "model.pt")
        _finish(out, record, "export", t, info, emit)
    return FitResult(out, out / "model.pt", record)


# ----------------------------------------------------------------------------- stages
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
    from cervicontour.model import transfer

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
    from cervicontour.model import load_model

    # an init that carries a fallback (the shipped default: its CTVp-parts network, with the previous
    # network kept for the structures the parts fine-tune did not improve) transfers its main network;
    # what it predicts with the fallback stays there for the selection to keep (see _assemble)
    return load_model(spec), source


def _predicts(model) -> set[str]:
    names = set(model.plan.structures)
    return names | {c for c, parts in COMPOUND.items() if names & set(parts)}


def _plan(cases, source, source_model, config: FitConfig) -> dict:
    from cervicontour.model.data import split_cases
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
    from cervicontour.model.config import TrainConfig

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

    from cervicontour.model import train

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
    from cervicontour.model import train

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

    from cervicontour.model.refine import new_refiner, train_refiner
    from cervicontour.pipeline import refine_training_cases
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

    from cervicontour.model.refine import Refiner

    if not path.is_file():
        return None
    model = copy.copy(stage1)
    model.refiner = Refiner.from_payload(torch.load(path, map_location="cpu", weights_only=False))
    return model


def _assemble(stage1, refined, source_model, choice: dict, frozen: tuple[str, ...], path: Path, *, name: str):
    """The shipped model: stage 1 (with the refiner when CTVn chose it), the zero-shot model as
    the fallback for the structures it kept; written float16 to ``path`` and re-read."""
    from cervicontour.model import load_model, save_model

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


# ----------------------------------------------------------------------------- bookkeeping
class _Budget:
    def __init__(self, total_s: float, spent_before_s: float, t0: float) -> None:
        self.total, self.before, self.t0 = total_s, spent_before_s, t0

    def left(self) -> float:
        return self.total - self.before - (time.perf_counter() - self.t0)


def _counter(emit, stage: str, total: int):
    state = {"n": 0}
    emit(stage, 0, total, "")  # the stage starts now: its elapsed time and estimate count from here

    def one(pid):
        state["n"] += 1
        emit(stage, state["n"], total, str(pid))

    return one


def _finish(out: Path, record: FitRecord, stage: str, t0: float, info: dict, emit=None) -> None:
    if emit is not None:
        emit(stage, 1, 1, "done")
    record.stages[stage] = {**info, "status": "done", "seconds": round(time.perf_counter() - t0, 1)}  # this run's time (a killed run's is not recorded)
    _write_record(out, record)


def _write_record(out: Path, record: FitRecord) -> None:
    from cervicontour.model.run_files import write_json

    write_json(out / "fit.json", record.to_dict())


__all__ = ["FIT_SCHEMA", "FitRecord", "FitResult", "STAGES", "fit", "read_fit_record"]
