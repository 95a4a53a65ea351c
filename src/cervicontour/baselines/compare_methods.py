"""The methods of :func:`cervicontour.baselines.compare.compare`: each trains (or not) and predicts the test cases.

Every runner takes a :class:`Context` and returns a :class:`~.compare_options.MethodResult` (where its
predictions are, the seconds it trained and predicted, and what to know about it). A method named in
``Context.use`` is scored from that folder: its predictions, or its trained model predicting afresh.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.baselines.compare_options import CompareOptions, MethodResult
from cervicontour.errors import InputError


@dataclass
class Context:
    """What every runner needs: the cohorts, the output folder, the options and what is finished."""

    train: Path
    test: Path
    out: Path
    options: CompareOptions
    use: Mapping[str, Path]
    emit: Callable[[str], None]
    finished: Mapping[str, dict | None]

    def folder(self, name: str, *parts: str, fresh: bool = False) -> Path:
        path = self.out / "methods" / name
        path = path.joinpath(*parts)
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def test_cases(self, ids: Sequence[str] | None = None) -> list:
        from cervicontour.cohort import load_cohort

        cases = load_cohort(self.test).labelled()
        return [c for c in cases if ids is None or c.patient_id in ids]


def run(names: Sequence[str], ctx: Context) -> dict[str, MethodResult | None]:
    """Run one method (or both MedSAM settings together: one encoding per slice); ``None``: nothing to compare."""
    if names[0].startswith("medsam"):
        return _medsam(list(names), ctx)
    (name,) = names
    runner = {"default": _default, "fit": lambda c: _fit(c, "fit", "default"), "scratch": lambda c: _fit(c, "scratch", "none"),
              "nnunet": _nnunet, "atlas": _atlas, "universeg": _universeg, "totalseg-rule": _rule}[name]  # fmt: skip
    use = ctx.use.get(name)
    if use is not None and is_predictions(use, ctx):
        return {name: scored_from(use)}
    return {name: runner(ctx)}


#: beside a predictions folder given to ``--use``: what the run that made them measured
METHOD_FILE = "method.json"


def scored_from(folder: Path) -> MethodResult:
    """A predictions folder given to ``--use``; its ``method.json``, when there, gives the seconds
    the run that made them measured (``train_seconds``, ``predict_seconds_per_case``) and ``notes``
    (where and how: a GPU's seconds are not this CPU's).

    Raises:
        InputError: ``method.json`` is not a JSON object of those keys with numbers (or null) for the seconds.
    """
    from cervicontour.io.json_object import read_json_object

    said = f"scored from the predictions in {folder} (--use)"
    path = folder / METHOD_FILE
    if not path.is_file():
        return MethodResult(folder, None, None, f"{said}; training and prediction times not measured here")
    keys = {"train_seconds", "predict_seconds_per_case", "notes"}
    meta = read_json_object(path, expected=f"what the run measured, an object with some of {sorted(keys)}")
    seconds = [meta.get(k) for k in ("train_seconds", "predict_seconds_per_case")]
    if set(meta) - keys or not all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in seconds):
        raise InputError(f"{path}: expected an object with some of {sorted(keys)} (seconds as numbers or null); got {meta!r:.200}")
    train_s, predict_s = (None if v is None else float(v) for v in seconds)
    notes = f"{said}; " + str(meta.get("notes") or "seconds as the run that made them measured them (method.json)")
    return MethodResult(folder, train_s, predict_s, notes)


def is_predictions(folder: Path, ctx: Context) -> bool:
    """A predictions folder: some test patient has ``<folder>/<patient_id>/structures/``."""
    return any((folder / c.patient_id / "structures").is_dir() for c in ctx.test_cases())


# --------------------------------------------------------------------------- ours
def predict_with_model(model_spec, ctx: Context, pred: Path, ids: Sequence[str] | None = None) -> tuple[list[float], list[float], object]:
    """Our model on the test cases, each CTVn composed from the nodal groups its note records.

    Returns ``(wall seconds per case, process CPU seconds per case, model)``: the time of
    :func:`~cervicontour.inference.case.predict_case` (rules enforced; the model loaded once, before).
    """
    from cervicontour.cohort import write_case
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.case import predict_case
    from cervicontour.structures import COMPOUND
    from cervicontour.validate.notes import nodal_groups_for

    model = load_model(model_spec)
    composes = bool(set(model.plan.structures) & set(COMPOUND["CTVn"]))
    seconds, cpu = [], []
    for case in ctx.test_cases(ids):
        image = case.load_image()
        t, c = time.perf_counter(), time.process_time()
        result = predict_case(image, model, device=ctx.options.device, nodal_groups=nodal_groups_for(case.note) if composes else None)
        seconds.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        write_case(pred, case.patient_id, None, {s: result.masks[s] for s in ctx.options.structures if s in result.masks})
        ctx.emit(f"  {case.patient_id}: {seconds[-1]:.1f} s ({cpu[-1]:.1f} s CPU)")
    return seconds, cpu, model


def recorded_train_seconds(meta: Mapping) -> float | None:
    """The training seconds a model's metadata records (every stage's ``seconds``), or None."""
    total = 0.0
    for value in meta.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping) and isinstance(item.get("seconds"), (int, float)):
                total += float(item["seconds"])
    return total or None


def _default(ctx: Context) -> MethodResult:
    spec = ctx.use.get("default") or "default"
    pred = ctx.folder("default", "pred", fresh=True)
    seconds, cpu, model = predict_with_model(spec, ctx, pred)
    device = (model.meta.get("trained_on") or {}).get("device", "unknown")
    which = "the shipped model" if spec == "default" else f"the model in {spec} (--use)"
    notes = (f"{which} {model.name} {model.version}, not trained here: train seconds as its metadata records them "
             f"(its stages summed; trained on {device}); CTVn composed from the nodal groups each note records; "
             f"predict {np.mean(cpu):.1f} s process CPU per case")  # fmt: skip
    return MethodResult(pred, recorded_train_seconds(model.meta), float(np.mean(seconds)), notes, {"predict_cpu_s": cpu})


def _fit(ctx: Context, name: str, init: str) -> MethodResult:
    from cervicontour.training import fit, read_fit_record
    from cervicontour.training.config import FitConfig

    model_dir = ctx.use.get(name) or ctx.folder(name) / "model"
    trained_here = name not in ctx.use
    if trained_here and not (model_dir / "model.pt").is_file():
        config = FitConfig(budget_minutes=ctx.options.budget_minutes, device=ctx.options.device, threads=ctx.options.threads)
        stages: set[str] = set()

        def show(stage, done, total, text):
            if stage not in stages:
                stages.add(stage)
                ctx.emit(f"  {name}: {stage}")

        fit(ctx.train, model_dir, init=init, config=config, resume=(model_dir / "fit.json").is_file(), on_event=show)
    record = read_fit_record(model_dir) if (Path(model_dir) / "fit.json").is_file() else None
    pred = ctx.folder(name, "pred", fresh=True)
    seconds, cpu, model = predict_with_model(model_dir, ctx, pred)
    if record is None:
        return MethodResult(pred, recorded_train_seconds(model.meta), float(np.mean(seconds)), f"the model in {model_dir} (--use), predicting here; train seconds from its metadata")
    stages = record.stages
    steps = ", ".join(f"{k} {stages[k]['steps_done']} steps" if stages[k].get("steps_done") is not None else f"{k} skipped"
                      for k in ("stage1", "refiner") if k in stages)  # fmt: skip
    choice = (stages.get("select") or {}).get("choice", {})
    kept = sorted(s for s, c in choice.items() if "zero" in str(c) or "init" in str(c))
    how = "transfer from the shipped default" if init == "default" else "from scratch (random init), the same recipe"
    notes = (f"`cervicontour fit --init {init}` ({how}), --budget-minutes {record.config.get('budget_minutes')} on the train cohort "
             f"({steps}; validation fold of {record.config.get('folds')}){'; kept from the init: ' + ', '.join(kept) if kept else ''}; "
             f"predict {np.mean(cpu):.1f} s process CPU per case" + ("" if trained_here else f"; the fit in {model_dir} (--use)"))  # fmt: skip
    return MethodResult(pred, record.elapsed_s(), float(np.mean(seconds)), notes,
                        {"fit_stages_s": {k: v.get("seconds") for k, v in stages.items()}, "predict_cpu_s": cpu})  # fmt: skip


# --------------------------------------------------------------------------- nnU-Net
def find_nnunet_model(folder: Path) -> tuple[Path, Path]:
    """The trained nnU-Net model folder under ``folder`` and its checkpoint (final, else latest, else best).

    Raises:
        InputError: no ``plans.json`` beside a ``fold_*/checkpoint_*.pth`` under ``folder``.
    """
    found = []
    for plans in [folder / "plans.json", *folder.rglob("nnUNet_results/**/plans.json")]:
        for fold in sorted(plans.parent.glob("fold_*")):
            for kind in ("final", "latest", "best"):
                checkpoint = fold / f"checkpoint_{kind}.pth"
                if checkpoint.is_file():
                    found.append((checkpoint.stat().st_mtime, plans.parent, checkpoint))
                    break
    if not found:
        raise InputError(f"--use nnunet={folder}: no trained nnU-Net model there (expected plans.json beside "
                         "fold_*/checkpoint_{final,latest,best}.pth, e.g. an nnunet curve work folder once training has checkpointed)")  # fmt: skip
    _, model, checkpoint = max(found)
    return model, checkpoint


def _nnunet(ctx: Context) -> MethodResult:
    work = ctx.folder("nnunet")
    if "nnunet" in ctx.use:
        model, checkpoint = find_nnunet_model(ctx.use["nnunet"])
        return _nnunet_predict(ctx, model, checkpoint, work)
    from cervicontour.baselines.nnunet_run import run_nnunet

    budget_s = ctx.options.budget_minutes * 60
    one = [c.image_path for c in ctx.test_cases()[:1]]
    probe = run_nnunet(ctx.train, one, ctx.folder("nnunet", "probe", fresh=True), dataset_id=600, epochs=1, iterations_per_epoch=6,
                       device=ctx.options.device, fold="all", use_mirroring=False, on_stage=lambda s: ctx.emit(f"  nnU-Net probe: {s}"))  # fmt: skip
    per_it = float(probe["timings"]["train_s_per_iteration"])
    per_epoch = 25
    epochs = max(int(budget_s / per_it) // per_epoch, 1)
    result = run_nnunet(ctx.train, ctx.test, ctx.folder("nnunet", "run", fresh=True), dataset_id=601, epochs=epochs, iterations_per_epoch=per_epoch,
                        device=ctx.options.device, fold="all", use_mirroring=False, on_stage=lambda s: ctx.emit(f"  nnU-Net: {s}"))  # fmt: skip
    t = result["timings"]
    pred = ctx.folder("nnunet", "pred", fresh=True)
    shutil.copytree(result["predictions"], pred, dirs_exist_ok=True)
    notes = (f"nnU-Net v2 {t.get('configuration')} with its default plan, {epochs} epochs x {per_epoch} iterations sized to the budget "
             f"(probe {per_it:.1f} s/iteration), no test-time mirroring; plan + preprocess {t.get('plan_s', 0) + t.get('preprocess_s', 0):.0f} s "
             "not counted. Short CPU budgets do not train nnU-Net: score a long run with --use nnunet=WORK")  # fmt: skip
    return MethodResult(pred, float(t["train_s"]), float(np.mean(list(t["per_case_inference_s"].values()))), notes, {"timings": t})


def _nnunet_predict(ctx: Context, model: Path, checkpoint: Path, work: Path) -> MethodResult:
    """Predict the test cases with a trained nnU-Net checkpoint (nnU-Net's own predictor, in a subprocess)."""
    import torch

    from cervicontour.baselines.nnunet import import_predictions
    from cervicontour.baselines.nnunet_run import nnunet_env, predict_stage
    from cervicontour.baselines.nnunet_trainer import CPU_KEY

    cases = ctx.test_cases()
    raw = work / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    ctx.emit(f"  nnU-Net: predicting {len(cases)} cases with {checkpoint}")
    _, per_case = predict_stage(model, {c.patient_id: str(c.image_path) for c in cases}, raw, checkpoint=checkpoint,
                                configuration=model.name.split("__")[-1], fold=checkpoint.parent.name.removeprefix("fold_"),
                                device=ctx.options.device, use_mirroring=False, env=nnunet_env(work / "nnunet_env"), logs=work / "logs")  # fmt: skip
    pred = ctx.folder("nnunet", "pred", fresh=True)
    import_predictions(raw, pred, dataset_json=model / "dataset.json", reference={c.patient_id: c for c in cases})
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # the user's own run
    log = state.get("logging") or {}
    epochs_s = [e - s for s, e in zip(log.get("epoch_start_timestamps", []), log.get("epoch_end_timestamps", []))]
    cpu = log.get(CPU_KEY) or []
    cpu_s = float(sum(cpu[: len(epochs_s)])) if len(cpu) >= len(epochs_s) > 0 else None
    notes = (f"nnU-Net run scored from {checkpoint} (--use; {len(epochs_s)} epochs): train seconds = its epochs' wall time from the "
             f"checkpoint's log (evaluations between epochs excluded){f', {cpu_s:.0f} s of process CPU' if cpu_s is not None else ''}; "
             "predicted here with nnU-Net's predictor, no mirroring")  # fmt: skip
    return MethodResult(pred, float(sum(epochs_s)) if epochs_s else None, float(np.mean(list(per_case.values()))), notes,
                        {"checkpoint": str(checkpoint), "epochs": len(epochs_s), "train_cpu_s": cpu_s, "per_case_s": per_case})  # fmt: skip


# --------------------------------------------------------------------------- atlas, UniverSeg, the rule
def _atlas(ctx: Context) -> MethodResult:
    from cervicontour.baselines.atlas import predict_cohort

    k = ctx.options.atlas_k
    pred = ctx.folder("atlas", "pred", fresh=True)
    seconds = predict_cohort(ctx.train, ctx.test, pred, k=k, fusion="majority", deformable="demons", structures=ctx.options.structures,
                             on_progress=lambda done, total, what: None)  # fmt: skip
    return MethodResult(pred, 0.0, float(np.mean(list(seconds.values()))), f"multi-atlas, the train patients as atlases: rigid ranking of all, "
                        f"affine + demons (SimpleITK) for the K={k} most similar, majority vote; nothing trained")  # fmt: skip


def _universeg(ctx: Context) -> MethodResult:
    from cervicontour.baselines.universeg_cohort import predict_cohort
    from cervicontour.baselines.universeg_train import MetaTrainConfig, meta_train

    model_path, train_s, note = ctx.use.get("universeg"), None, ""
    if model_path is None:
        model_path = ctx.folder("universeg", "model", fresh=True) / "model.pt"
        t = time.perf_counter()
        # lr 3e-4 rather than the paper's 1e-4: minutes of CPU instead of the paper's long GPU run
        trained = meta_train(ctx.train, model_path, MetaTrainConfig(seed=0, max_minutes=ctx.options.budget_minutes, lr=3e-4,
                                                                   threads=ctx.options.threads or 2))  # fmt: skip
        train_s, note = time.perf_counter() - t, f"meta-trained here for the budget ({getattr(trained, 'steps', '?')} steps, lr 3e-4)"
    pred = ctx.folder("universeg", "pred", fresh=True)
    k = ctx.options.universeg_k
    result = predict_cohort(model_path, ctx.train, ctx.test, pred, structures=ctx.options.structures, k=k, seed=0)
    seconds = [c["seconds"] for c in result["cases"].values()]
    return MethodResult(pred, train_s, float(np.mean(seconds)), f"UniverSeg-style 2-D in-context segmenter, K={k} support slices from the "
                        f"train patients; {note or f'the model {model_path} (--use)'}; official weights not downloadable here")  # fmt: skip


def _rule(ctx: Context) -> MethodResult | None:
    from cervicontour.baselines.totalseg import predict_cohort

    if "CTVn" not in ctx.options.structures:
        return None
    pred = ctx.folder("totalseg-rule", "pred", fresh=True)
    seconds = predict_cohort(ctx.test, pred, para_aortic=None)
    if not seconds:
        return None
    return MethodResult(pred, 0.0, float(np.mean(list(seconds.values()))),
                        f"TotalSegmentator-style guideline CTVn (iliac vessels + 7 mm - bone - muscle + presacral strip) from the "
                        f"phantom's own vessel/bone/muscle labels: an upper bound of what TotalSegmentator's labels would give; "
                        f"para-aortic per the reference; {len(seconds)} of {len(ctx.test_cases())} test cases have vessel labels; CTVn only",
                        {"structures": ["CTVn"]})  # fmt: skip


# --------------------------------------------------------------------------- MedSAM
def _medsam(names: list[str], ctx: Context) -> dict[str, MethodResult | None]:
    import torch

    from cervicontour.baselines.medsam_cohort import REFERENCE, predict_cohort

    opts = ctx.options
    structures = list(opts.medsam_structures or opts.structures)
    cases = [c.patient_id for c in ctx.test_cases(opts.medsam_cases)]
    if opts.medsam_cases and len(cases) != len(set(opts.medsam_cases)):
        raise InputError(f"--medsam-cases {list(opts.medsam_cases)}: not all are labelled test patients ({[c.patient_id for c in ctx.test_cases()]})")
    results: dict[str, MethodResult | None] = {}
    settings, box_seconds, box_note = {}, {}, ""
    for name in names:
        if name in ctx.use:
            results[name] = MethodResult(ctx.use[name], None, None, f"scored from the predictions in {ctx.use[name]} (--use)")
            continue
        source: str | Path = REFERENCE
        if name == "medsam-auto":
            source, box_seconds, box_note = _auto_boxes(ctx, cases)
        settings[name] = (source, ctx.folder(name, "pred", fresh=True))
    if not settings:
        return results
    costs = predict_cohort(ctx.test, settings, structures=structures, cases=cases, margin_px=opts.medsam_margin_px,
                           on_case=lambda pid: ctx.emit(f"  MedSAM {pid} done"))  # fmt: skip
    everyone = len(ctx.test_cases())
    for name, (_, pred) in settings.items():
        per_case = costs[name]
        slices = sum(c["slices_encoded"] for c in per_case.values())
        boxes = sum(c["boxes_decoded"] for c in per_case.values())
        rate = {k: sum(c[k] for c in per_case.values()) for k in ("encode_s", "encode_cpu_s", "decode_s", "decode_cpu_s")}
        cost = (f"cost: {rate['encode_s'] / max(slices, 1):.2f} s wall / {rate['encode_cpu_s'] / max(slices, 1):.2f} s CPU per slice encoded "
                f"({slices} slices), {rate['decode_s'] / max(boxes, 1):.2f} s wall / {rate['decode_cpu_s'] / max(boxes, 1):.2f} s CPU per box decoded "
                f"({boxes} boxes), torch threads {torch.get_num_threads()}")  # fmt: skip
        scope = f"structures {', '.join(structures)}; cases {', '.join(cases)} ({len(cases)} of {everyone})"
        if name == "medsam-oracle":
            how = (f"LiteMedSAM, ORACLE BOX: per axial slice a box around each 2-D component of the reference mask "
                   f"(margin {opts.medsam_margin_px} px), as the MedSAM paper evaluates; it needs the answer, so it bounds a box-prompted tool")  # fmt: skip
            seconds = [c["seconds"] for c in per_case.values()]
        else:
            how = f"LiteMedSAM, boxes from our default model's prediction (no reference used; margin {opts.medsam_margin_px} px); {box_note}"
            seconds = [c["seconds"] + (box_seconds.get(pid) or 0.0) for pid, c in per_case.items()]
        results[name] = MethodResult(pred, 0.0, float(np.mean(seconds)), f"{how}; {scope}; {cost}",
                                     {"per_case_cost": per_case, "structures": structures, "cases": cases})  # fmt: skip
    return results


def _auto_boxes(ctx: Context, cases: list[str]) -> tuple[Path, dict[str, float | None], str]:
    """Where medsam-auto's boxes come from: this comparison's default predictions, else made here."""
    done = ctx.finished.get("default")
    if done and not done.get("skipped") and all((Path(done["pred"]) / pid / "structures").is_dir() for pid in cases):
        per_case = done.get("predict_seconds_per_case")
        return Path(done["pred"]), {pid: per_case for pid in cases}, (
            "the box source's time (the default method's predict seconds per case) included" if per_case is not None
            else "the box source's time unknown (default scored from --use predictions) and not included")  # fmt: skip
    pred = ctx.folder("medsam-auto", "boxes_default", fresh=True)
    seconds, _, model = predict_with_model("default", ctx, pred, cases)
    return pred, dict(zip(cases, seconds)), f"boxes predicted here by {model.name} {model.version}, its time included"
