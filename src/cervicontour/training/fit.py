"""``cervicontour fit``: a hospital's labelled cohort → its own validated model, in one call.

Stages (each recorded in ``MODEL_DIR/fit.json`` when it ends; ``resume=True`` skips the ended
ones and continues the one a kill interrupted)::

    gate      validate the cohort: errors stop the fit (nothing written), warnings are recorded
    plan      split (held-out fold), the cohort's fingerprint, what the plan takes from the source
    targets   each channel's training target (training/targets.py: labels, partitioned compounds,
              distilled source channels), written as a cohort folder
    zeroshot  the init scored on the validation patients (what the fit must not fall below)
    stage1    fine-tune the init (training/train.py) for a step count fixed from the budget
    refiner   fine-tune (or train) the CTVn second stage on stage 1's output, same rule (skipped
              when the budget left cannot pay for stage 1 on every patient and its scoring)
    select    score stage 1 and stage 1 + refiner; per structure the best, never below zero-shot
    export    float16 model.pt (+ the zero-shot model for structures it kept), card.md, card.json

The record and its bookkeeping: :mod:`.fit_record`; the stages' work: :mod:`.fit_stages`.

Layout of ``MODEL_DIR``: ``model.pt``, ``card.md``, ``card.json``, ``fit.json`` (the run record,
:func:`read_fit_record`), ``work/`` (targets, cache, stage runs and checkpoints).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cervicontour.errors import InputError
from cervicontour.structures import COMPOUND
from cervicontour.training.config import FitConfig
from cervicontour.training.fit_record import (
    _RESERVE_FLOOR_S,
    FIT_SCHEMA,
    STAGES,
    FitRecord,
    _Budget,
    _counter,
    _finish,
    _write_record,
    read_fit_record,
)
from cervicontour.training.fit_stages import (
    _assemble,
    _cases,
    _gate,
    _init_spec,
    _open_init,
    _plan,
    _predicts,
    _run_refiner,
    _run_stage1,
    _stage1_step_seconds,
    _steps,
    _train_config,
    _with_refiner,
)

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

    from cervicontour.networks.bundle import load_model

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
        from cervicontour.inference.case import active_refiner

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


__all__ = ["FIT_SCHEMA", "FitRecord", "FitResult", "STAGES", "fit", "read_fit_record"]
