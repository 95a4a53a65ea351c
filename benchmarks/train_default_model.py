"""Train the shipped default model: source pretraining on anatomy labels, then target fine-tuning.

Data (all synthetic, made here by our own phantom; nothing downloaded):
  source cohort  synth --patients 40 --seed 1001 --size small   (anatomy labels under structures/sub/)
  target cohort  synth --patients 100 --seed 2002 --size small  (the five primary structures; ~100
                 labelled CTs is what the hospital has)
  test cohort    synth --patients 10 --seed 3003 --size small   (never used for training; see evaluate)

Usage:
  python benchmarks/train_default_model.py [--work out/default_model] [--stage all|pretrain|nodal|nodal-continue|ship|evaluate|...]

``--stage all`` is the shipped recipe, end to end from an empty WORK folder: synthesize the three
cohorts, pretrain on the source anatomy (1200 steps), fine-tune the eight nodal-group channels
(``--nodal-steps`` 1500), continue at lr 1e-3 (``--continue-steps``, default 1000), ship whichever of
the two fine-tunes scores better on the validation patients (never the test set), then evaluate on
the test cohort and write the model card. The older five-channel stages (finetune, continue) remain
for the experiments that used them.

Writes runs under WORK/ and, at the ``ship`` stage, src/cervicontour/models/default/model.pt
(float16 weights) plus a JSON record of the training provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from cervicontour.structures import DEFAULT_OUTPUTS, NODAL_OUTPUTS, PRIMARY

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.8.0"  # of the shipped model: 0.2 = the GPU-trained `cpu` preset; 0.3 = 0.2 adapted to phantom 2 on the CPU; 0.4 = 0.3 continued (a second adaptation run); 0.5 = 0.4 + the CTVn refiner (second stage); 0.6 = 0.5 fine-tuned with the CTVp parts (Cervix, GTVp, Uterus, Vagina); 0.7 = 0.6 with its parts network trained on (70 more minutes at half the learning rate); 0.8 = 0.7 with its parts network trained 72 more minutes (lr 4e-4, one thread)
COHORTS = {"source": (40, 1001), "target": (100, 2002), "test": (10, 3003)}


def cohort(data: Path, name: str, phantom: int) -> Path:
    """The synthetic cohort ``name`` of anatomy version ``phantom`` under the folder ``data``,
    synthesized if it is not there (phantom 1: ``<name>_s<seed>``; 2: ``<name>_s<seed>_phantom2``)."""
    from cervicontour.synth import synthesize_cohort

    patients, seed = COHORTS[name]
    path = data / (f"{name}_s{seed}" + (f"_phantom{phantom}" if phantom != 1 else ""))
    if not (path / "notes.csv").is_file():
        if path.exists():
            shutil.rmtree(path)
        synthesize_cohort(path, patients=patients, seed=seed, size="small", phantom=phantom)
    return path


def progress(prefix: str):
    t0 = time.time()

    def show(step, total, loss, val):
        if step % 25 == 0 or val is not None:
            extra = f" val_dice {val:.3f}" if val is not None else ""
            print(f"{prefix} step {step}/{total} loss {loss:.4f}{extra} ({time.time() - t0:.0f} s)", flush=True)

    return show


def main() -> None:
    import torch

    from cervicontour.training.train import train
    from cervicontour.training.train_config import TrainConfig
    from cervicontour.training.train_config import source_structures

    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "default_model")
    parser.add_argument("--pretrain-steps", type=int, default=1200)
    parser.add_argument("--finetune-steps", type=int, default=1500)
    parser.add_argument("--stage", default="all", choices=["all", "data", "pretrain", "finetune", "continue", "nodal", "nodal-continue", "adapt", "parts", "ship-parts", "refine", "candidate", "select", "ship", "evaluate"])
    parser.add_argument("--nodal-steps", type=int, default=1500, help="steps of the nodal-group fine-tune (stage nodal)")
    parser.add_argument("--ship-run", default=None, help="ship this run (a folder name under WORK) instead of the better nodal fine-tune on validation")
    parser.add_argument("--continue-steps", type=int, default=0, help="steps of the lr-1e-3 continuation (stage nodal-continue: 0 means 1000; stage continue: 0 means none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--soft-labels", action="store_true", help="nodal stages: partial-volume targets (runs finetune_nodal_soft[_continued])")
    parser.add_argument("--data", type=Path, default=None, help="folder of the synthetic cohorts (default WORK/data); stage data makes all three")
    # a larger recipe for a GPU (benchmarks/gpu_session.py); the defaults are the shipped CPU recipe
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--network", default="cpu-small", help="architecture preset of the pretraining (the fine-tunes inherit it)")
    parser.add_argument("--patch", type=int, nargs=3, default=None, help="training patch (voxels) instead of the plan's")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--pretrain-minutes", type=float, default=None, help="pretrain for this much training time, the learning rate decaying over it (lr_schedule time)")
    parser.add_argument("--nodal-minutes", type=float, default=None, help="likewise for the nodal fine-tune")
    parser.add_argument("--continue-minutes", type=float, default=None, help="likewise for the nodal continuation")
    parser.add_argument("--checkpoint-every", type=int, default=25)
    parser.add_argument("--phantom", type=int, default=1, choices=[1, 2], help="anatomy version of the cohorts (cervicontour.synth.anatomy.PHANTOMS)")
    parser.add_argument("--adapt-from", type=Path, default=None, help="stage adapt: the nodal run to continue on --phantom's target cohort (WORK/finetune_nodal_adapted)")
    parser.add_argument("--parts-minutes", type=float, default=40.0, help="stage parts: training time of the CTVp-parts fine-tune of the shipped model")
    parser.add_argument("--parts-from", type=Path, default=None, help="stage parts: continue this parts run (WORK/finetune_parts) instead of fine-tuning the shipped model")
    parser.add_argument("--parts-run", default="finetune_parts", help="stages parts/ship-parts: the parts run folder under WORK")
    parser.add_argument("--parts-lr", type=float, default=1e-3, help="stage parts: peak learning rate (decayed over --parts-minutes)")
    parser.add_argument("--adapt-minutes", type=float, default=None, help="stage adapt: training time, the learning rate decaying over it")
    parser.add_argument("--adapt-run", default="finetune_nodal_adapted", help="stage adapt: the run folder under WORK (a further adaptation of an adapted run: finetune_nodal_adapted2)")
    parser.add_argument("--refine-from", type=Path, default=None, help="stage refine: the stage-1 run whose CTVn to refine (default WORK/finetune_nodal_adapted2)")
    parser.add_argument("--refine-steps", type=int, default=2000, help="stage refine: training steps of the CTVn refiner (batch 4 of 48x48x32)")
    parser.add_argument("--refiner", type=Path, default=None, help="stage ship: a refine run (WORK/refiner_ctvn, or its model.pt) whose refiner ships inside the model")
    parser.add_argument("--runs", type=Path, nargs="+", default=None, help="stages select/ship: the candidate fine-tune runs, from any work folders (default: WORK's nodal runs); each folder's pretraining is its sibling `pretrain`")
    args = parser.parse_args()
    phantom = args.phantom
    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data = args.data or work / "data"  # --data: cohorts shared between work folders
    if args.stage == "data":
        make_cohorts(data, phantom)
        return
    common = {"device": args.device, "batch_size": args.batch_size, "checkpoint_every": args.checkpoint_every, "patch_size": tuple(args.patch) if args.patch else None}

    def timed(minutes):  # a time budget instead of a step count: as many steps as fit, lr decayed over it
        return {"steps": 10**6, "max_minutes": minutes, "lr_schedule": "time", "val_every": 400} if minutes else {}

    pre_run, fine_run = work / "pretrain", work / "finetune"
    if args.stage in ("all", "pretrain"):
        config = TrainConfig(structures=source_structures(), steps=args.pretrain_steps, val_every=300, val_cases=2, folds=10, seed=1, threads=args.threads, network=args.network)
        config = config.replace(**common, **timed(args.pretrain_minutes))
        train(cohort(data, "source", phantom), pre_run, config, resume=(pre_run / "checkpoint_last.pt").is_file(), on_progress=progress("pretrain"))
    if args.stage == "finetune":
        config = TrainConfig(steps=args.finetune_steps, val_every=250, val_cases=4, folds=5, seed=2, threads=args.threads, strategy="full")
        train(cohort(data, "target", phantom), fine_run, config, init=pre_run, resume=(fine_run / "checkpoint_last.pt").is_file(), on_progress=progress("finetune"))
    if args.stage == "continue" and args.continue_steps:
        more = work / "finetune_continued"
        # same seed as the fine-tune: the same train/validation split
        config = TrainConfig(steps=args.continue_steps, lr=1e-3, val_every=200, val_cases=4, folds=5, seed=2, threads=args.threads)
        train(cohort(data, "target", phantom), more, config, init=fine_run, resume=(more / "checkpoint_last.pt").is_file(), on_progress=progress("continue"))
    nodal_run = work / ("finetune_nodal_soft" if args.soft_labels else "finetune_nodal")
    nodal_more = work / f"{nodal_run.name}_continued"
    if args.stage in ("all", "nodal"):
        config = TrainConfig(structures=NODAL_OUTPUTS, steps=args.nodal_steps, val_every=250, val_cases=8, folds=5, seed=2, threads=args.threads, strategy="full", soft_labels=args.soft_labels)
        config = config.replace(**common, **timed(args.nodal_minutes))
        train(cohort(data, "target", phantom), nodal_run, config, init=pre_run, resume=(nodal_run / "checkpoint_last.pt").is_file(), on_progress=progress("nodal"))
    if args.stage in ("all", "nodal-continue"):  # same seed as the nodal fine-tune: the same train/validation split
        config = TrainConfig(structures=NODAL_OUTPUTS, steps=args.continue_steps or 1000, lr=1e-3, val_every=250, val_cases=8, folds=5, seed=2, threads=args.threads, soft_labels=args.soft_labels)
        config = config.replace(**common, **timed(args.continue_minutes))
        train(cohort(data, "target", phantom), nodal_more, config, init=nodal_run, resume=(nodal_more / "checkpoint_last.pt").is_file(), on_progress=progress("nodal-continue"))
    if args.stage == "adapt":  # a shipped chain continued on another phantom's target cohort (same seed: same split)
        if args.adapt_from is None or not (args.adapt_from / "model.pt").is_file():
            raise SystemExit(f"--stage adapt needs --adapt-from RUN with a model.pt, got {args.adapt_from}")
        adapted = work / args.adapt_run
        config = TrainConfig(structures=NODAL_OUTPUTS, steps=args.continue_steps or 1000, lr=1e-3, val_every=250, val_cases=8, folds=5, seed=2, threads=args.threads)
        config = config.replace(**common, **timed(args.adapt_minutes))
        train(cohort(data, "target", phantom), adapted, config, init=args.adapt_from, resume=(adapted / "checkpoint_last.pt").is_file(), on_progress=progress("adapt"))
        return
    if args.stage == "parts":  # the shipped model fine-tuned with four more channels: the CTVp's parts
        shipped = ROOT / "src" / "cervicontour" / "models" / "default" / "model.pt"
        run = work / args.parts_run
        # same seed as the first parts fine-tune: the same train/validation split when continuing it
        config = TrainConfig(structures=DEFAULT_OUTPUTS, steps=args.continue_steps or 1000, lr=args.parts_lr, val_cases=8, folds=5, seed=2, threads=args.threads, strategy="full")
        config = config.replace(**common, **timed(args.parts_minutes))
        train(cohort(data, "target", phantom), run, config, init=args.parts_from or shipped, resume=(run / "checkpoint_last.pt").is_file(), on_progress=progress("parts"))
        return
    if args.stage == "ship-parts":
        ship_parts(work / args.parts_run)
        evaluate(work, data, phantom)
        return
    if args.stage == "refine":
        train_ctvn_refiner(args.refine_from or work / "finetune_nodal_adapted2", work / "refiner_ctvn", cohort(data, "target", phantom), steps=args.refine_steps)
        return
    if args.stage in ("pretrain", "finetune", "continue", "nodal", "nodal-continue"):
        return
    if args.stage == "candidate":  # score a run on the test cohort without shipping it
        run = work / (args.ship_run or "finetune_nodal")
        evaluate(work, data, phantom, model=run, out=ROOT / "benchmarks" / "results" / f"candidate_{run.name}_eval.json", card=False)
        return
    if args.stage == "evaluate":
        evaluate(work, data, phantom)
        return
    if args.ship_run:
        best = work / args.ship_run
    else:
        # keep whichever fine-tune scores better on its validation patients (never the test set)
        nodal = [work / f"finetune_nodal{v}{c}" for v in ("", "_soft") for c in ("", "_continued")]
        runs = args.runs or [r for r in nodal if (r / "model.pt").is_file()] or [r for r in (fine_run, work / "finetune_continued") if (r / "model.pt").is_file()]
        best = select(work, data, phantom, runs)
        if args.stage == "select":
            return
    ship(best, work, phantom, refiner=args.refiner)
    evaluate(work, data, phantom)


def train_ctvn_refiner(stage1: Path, out: Path, target: Path, *, steps: int, seed: int = 0) -> dict:
    """Train the second stage for CTVn with `cervicontour refine` (called in-process) on the
    stage-1 run's own split of the target cohort: its training patients train the refiner, its
    validation patients (never the test set) measure it. Writes OUT/model.pt (stage 1 + refiner)
    and OUT/refiner.json; OUT must not exist yet."""
    from cervicontour.cli.training import refine

    refine(target, model=str(stage1), out=out, structure="CTVn", context="CTVp,Anorectum,Bladder", steps=steps, max_minutes=None, seed=seed)
    return json.loads((out / "refiner.json").read_text())


def make_cohorts(data: Path, phantom: int) -> None:
    """The three cohorts, synthesized side by side (one process each)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(len(COHORTS)) as pool:
        for path in pool.map(cohort, [data] * len(COHORTS), list(COHORTS), [phantom] * len(COHORTS)):
            print("cohort ready:", path, flush=True)


def select(work: Path, data: Path, phantom: int, runs: list[Path]) -> Path:
    """The run with the best mean Dice over the five primary structures on the fine-tune's
    validation patients (never the test set), scored like the test set: on each patient's own grid,
    rules enforced, CTVn composed from the reference's nodal groups. Binary- and soft-label runs
    are compared fairly only there (the training-time validation is on the working grid)."""
    from cervicontour.metrics import evaluate_cohort
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.cohort import predict

    target = cohort(data, "target", phantom)
    val = sorted({pid for r in runs for pid in _val_cases(r)})
    view = work / "data" / "target_validation"
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    for pid in val:
        (view / pid).symlink_to((target / pid).resolve(), target_is_directory=True)
    names = [r.name for r in runs]
    label = {r: r.name if names.count(r.name) == 1 else f"{r.parent.name}/{r.name}" for r in runs}  # runs of several work folders
    scores = {}
    for run in runs:
        pred = work / "validation_predictions" / label[run].replace("/", "__")
        if pred.exists():
            shutil.rmtree(pred)
        nodal = "CTVn" not in load_model(run).structures
        predict(view, pred, model=run, all_cases=True, nodal_groups="reference" if nodal else None)
        rows = [r for r in evaluate_cohort(view, pred).rows if r["structure"] in PRIMARY]
        scores[run] = float(np.mean([r["dice"] for r in rows if np.isfinite(r["dice"])]))
    best = max(scores, key=scores.get)
    record = {"validation_patients": val, "mean_dice": {label[r]: round(v, 4) for r, v in scores.items()}, "ship": label[best]}
    (work / "selection.json").write_text(json.dumps(record, indent=2))
    print("validation mean Dice (input grid, five structures):", record["mean_dice"], "→ ship", record["ship"])
    return best


def _val_cases(run: Path) -> list[str]:
    """A candidate's validation patients: a training run's (run.json) or a refine run's (refiner.json)."""
    if (run / "run.json").is_file():
        return json.loads((run / "run.json").read_text())["val_cases"]
    return json.loads((run / "refiner.json").read_text())["val_patients"]


def evaluate(work: Path, data: Path, phantom: int, model: str | Path = "default", out: Path | None = None, card: bool = True) -> None:
    """Score a model on the test cohort (seed 3003, never trained on); write the model card.

    A model that predicts the nodal groups composes each patient's CTVn from the groups that
    patient's reference CTVn includes (``nodal_groups="reference"``): whether para-aortic nodes are
    treated is the clinician's decision, given to the model as an input, not guessed from the CT.
    """
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort, summarize
    from cervicontour.networks.bundle import load_model
    from cervicontour.inference.cohort import predict

    test = cohort(data, "test", phantom)
    pred = work / ("test_predictions" if card else f"test_predictions_{Path(model).name}")
    if pred.exists():
        shutil.rmtree(pred)
    nodal = "CTVn" not in load_model(model).structures
    t = time.time()
    predict(test, pred, model=model, all_cases=True, nodal_groups="reference" if nodal else None)
    seconds = time.time() - t
    result = evaluate_cohort(test, pred, settings=EvaluationSettings(tolerances_mm=(2.0, 5.0)), parts=True)
    summary = summarize(result.rows, ["dice", "hd95_mm", "assd_mm", "nsd_5mm"])
    parts_table = {}
    for row in summarize(result.part_rows, ["dice", "hd95_mm"]) if result.part_rows else []:
        parts_table.setdefault(row["structure"], {})[row["metric"]] = {k: row[k] for k in ("n", "mean", "median", "q1", "q3", "n_inf")}
    table = {}
    for row in summary:
        table.setdefault(row["structure"], {})[row["metric"]] = {k: row[k] for k in ("n", "mean", "median", "q1", "q3", "ci95_low", "ci95_high", "n_inf")}
    record = {
        "data": "synthetic phantom (cervicontour.synth), test cohort never trained on", "model": str(model),
        "ctvn_composition": "per patient, the nodal groups of the reference CTVn" if nodal else "predicted directly",
        "test_cohort": {"patients": COHORTS["test"][0], "seed": COHORTS["test"][1], "size": "small", "phantom": phantom}, "predict_seconds_total": round(seconds, 1), "summary": table,
        "parts_summary": parts_table,
    }  # fmt: skip
    out = out or ROOT / "benchmarks" / "results" / "default_model_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float))
    if card:
        write_card(record)
    print(json.dumps({n: {m: round(v["mean"], 3) for m, v in t.items()} for n, t in table.items()}, indent=1))


def score_test(test: Path, pred: Path, model: str | Path) -> list[dict]:
    """Predict the labelled cohort ``test`` with ``model`` into ``pred`` (CTVn composed per patient from
    the reference's nodal groups) and return the evaluation rows of the five primary structures."""
    from cervicontour.metrics import evaluate_cohort
    from cervicontour.inference.cohort import predict

    shutil.rmtree(pred, ignore_errors=True)
    predict(test, pred, model=model, all_cases=True, nodal_groups="reference")
    return [r for r in evaluate_cohort(test, pred).rows if r["structure"] in PRIMARY]


def means(rows: list[dict], metric: str, digits: int = 4) -> dict[str, float]:
    """Mean of ``metric`` per primary structure over ``rows``."""
    return {s: round(float(np.mean([r[metric] for r in rows if r["structure"] == s])), digits) for s in PRIMARY}


def write_card(record: dict) -> None:
    from cervicontour.networks.bundle import load_model

    model = load_model("default")
    meta = model.meta
    rows = []
    for name, metrics in record["summary"].items():
        d, h = metrics["dice"], metrics["hd95_mm"]
        rows.append(f"| {name} | {d['mean']:.3f} | {d['median']:.3f} [{d['q1']:.3f}, {d['q3']:.3f}] | {h['mean']:.2f} | {h['median']:.2f} |")
    params = sum(p.numel() for p in model.network.parameters())
    path = model.path
    card = CARD.format(
        size_mb=path.stat().st_size / 1e6, params=params, plan=model.plan, config=model.config_sha256,
        pre=meta["pretrain"], fine=meta["finetune"], table="\n".join(rows), test=record["test_cohort"],
        seconds=record["predict_seconds_total"], source=meta["data"]["source"], target=meta["data"]["target"],
        shipped="finetune_nodal_continued" if meta.get("adapted") else meta.get("shipped_run", "finetune"),
        first=(f", continuing a {meta['finetune_first']['steps_done']}-step fine-tune" if meta.get("finetune_first") else ""),
        task=TASK_NODAL if "CTVn" not in model.structures else TASK_DIRECT, composition=record.get("ctvn_composition", "predicted directly"),
        version=model.version, network=meta.get("network", "cpu-small"), machine=_machine(meta), selection=_selection(meta),
        adaptation=_adaptation(meta)[0], adapted_line=_adaptation(meta)[1], phantom=meta["data"]["test"]["phantom"],
        second_stage=_second_stage(model), parts_line=_parts_line(meta, record),
    )
    (path.parent / "MODEL_CARD.md").write_text(card)
    (path.parent / "training.json").write_text(json.dumps({**meta, "evaluation": record}, indent=2, default=float))


def _parts_training(parts: dict) -> str:
    """``"400 steps, 40 min"``, or every run of a continued one: ``"400 + 782 steps (each run …), 40 + 70 min"``."""
    earlier = parts.get("continued_from")
    if not earlier:
        return f"{parts['steps_done']} steps, {parts['seconds'] / 60:.0f} min"
    runs = [*(earlier if isinstance(earlier, list) else [earlier]), parts]  # one earlier run was recorded as a dict before 0.8.0
    return (f"{' + '.join(str(r['steps_done']) for r in runs)} steps (each run continued the one before at a lower learning rate), "
            f"{' + '.join(str(round(r['seconds'] / 60)) for r in runs)} min")


def _parts_line(meta: dict, record: dict) -> str:
    """The card's line on the CTVp parts (stage ``parts``) and their test Dice."""
    parts = meta.get("parts")
    if not parts:
        return ""
    scored = record.get("parts_summary") or {}
    dice = ", ".join(f"{n} {scored[n]['dice']['mean']:.3f}" for n in ("Cervix", "GTVp", "Uterus", "Vagina", "LN_CommonIliac", "LN_Pelvic", "LN_ParaAortic", "GTVn") if n in scored)
    return (f"- CTV parts: the nodal groups (the CTVn is composed from them) and the CTVp's Cervix, GTVp, Uterus, Vagina. "
            f"The CTVp's parts come from a second network: {parts['init']} fine-tuned with four more channels on the target "
            f"cohort's drawn parts ({_parts_training(parts)} on this CPU, patches "
            f"{parts.get('train_patch_size')}). That fine-tune lost Dice on the five structures (test cohort, "
            f"`benchmarks/results/candidate_finetune_parts_eval.json`), so the five structures, the nodal groups and the CTVn "
            f"refiner stay {parts['init']}'s network, unchanged (`model.pt` holds both; `predict` runs both). `predict` splits "
            f"the predicted CTVp among its parts (`cervicontour.contours.parts`: every part inside it, their union it). "
            f"Test Dice of the parts: {dice or 'not scored'}.\n")


def _machine(meta: dict) -> str:
    trained = meta.get("trained_on") or {}
    if trained.get("device") == "cuda":
        budgets = " + ".join(f"{trained[k]:g}" for k in ("pretrain_minutes", "finetune_minutes", "continue_minutes") if trained.get(k))
        return (f"one lent NVIDIA H100 GPU through `benchmarks/gpu_session.py`, time budgets of {budgets} min (pretraining, fine-tune"
                f"{', continuation from the fine-tune stored as float16' if trained.get('continue_minutes') else ''}), the learning rate "
                "decayed over each: GPU training is not bit-reproducible")  # fmt: skip
    return "2 shared CPU cores; CPU training is deterministic: `--stage all` on an empty work folder re-makes this model"


def _adaptation(meta: dict) -> tuple[str, str]:
    """The model card's data-table rows and "made by" sentences for a chain adapted to phantom 2 ("" if not),
    one per adaptation run."""
    rows, lines = [], []
    for a in meta.get("adapted") or []:
        name = a["run"]
        where = "this CPU" if a["device"] == "cpu" else a["device"]
        what = ("adaptation to phantom 2: the chain above continued on the target cohort redrawn with phantom 2" if not rows
                else f"adaptation continued (`{name}`): from the end of the run above, the learning rate restarted")
        rows.append(f"\n| {what} (same seed, same split; {a['steps_done']} steps, {a['seconds'] / 60:.0f} min on {where}, "
                    f"lr 1e-3 decayed over the time budget) | `synth --size small --seed {a['seed']} --phantom 2` | {a['patients']} |")
        lines.append(f"\n{'Then adapted to' if not lines else 'Then continued on'} phantom 2 on {where}: run `{name}`, {a['steps_done']} steps of batch 2 "
                     f"(`--stage adapt --adapt-run {name} --adapt-minutes {a['minutes']:g}`); the step count of a time budget depends on the machine's speed.")
    return "".join(rows), "".join(lines)


def _second_stage(model) -> str:
    """The model card's lines on the refiner ("" without one)."""
    r = model.refiner
    if r is None:
        return ""
    params = sum(p.numel() for p in r.network.parameters())
    val = r.meta["val_dice_refine_grid"]
    return (f"- Second stage (`cervicontour.networks.refine`): a {params:,}-parameter `PlainConvUNet` refines {r.structure} on the input's own grid\n"
            f"  (LPS; spacing clipped into {tuple(round(v, 2) for v in r.spacing_min_mm)}-{tuple(round(v, 2) for v in r.spacing_max_mm)} mm, resampled there when outside),\n"
            f"  from the CT and the coarse {', '.join(r.inputs)} maps; trained {r.meta['steps']} steps ({r.meta['seconds'] / 60:.0f} min on this CPU) on the stage-1\n"
            f"  run's training patients; its validation patients: {r.structure} Dice {val['coarse']:.3f} → {val['refined']:.3f} (refine grid).\n"
            f"  On a finer CT (e.g. 1 × 1 × 3 mm) it refines at that trained spacing, so the {r.structure} boundary is no finer than the phantoms'.\n")  # fmt: skip


def _selection(meta: dict) -> str:
    sel = meta.get("selection")
    if not sel:
        return "n/a"
    return ", ".join(f"`{k}` {v:.4f}" for k, v in sel["mean_dice"].items()) + f" → `{sel['ship']}`"


TASK_DIRECT = "five overlapping structures, one sigmoid channel each — Bladder, Anorectum, CTVn, CTVp, Parametrium."
TASK_NODAL = """eight overlapping sigmoid channels — Bladder, Anorectum, CTVp, Parametrium and the CTVn parts
  GTVn, LN_CommonIliac, LN_Pelvic, LN_ParaAortic. `predict` composes CTVn from the nodal groups the clinician
  chooses (default GTVn + common iliac + pelvic; `--para-aortic` adds the para-aortic group; the review page
  recomposes it), because extending the field to the para-aortic nodes is a clinical decision the CT does not show."""

CARD = """# Model card: cervicontour-default {version}

**Synthetic-only model. Not for clinical use.** It has never seen a real patient's CT with these
structures; it exists so that `cervicontour predict` and `make demo` work out of the box and as a
starting point for fine-tuning on real hospital data.

## What it is
- Task: {task}
- Network: nnU-Net's `PlainConvUNet` (dynamic-network-architectures), preset `{network}`,
  {params:,} parameters, stored as float16 ({size_mb:.2f} MB).
- Preprocessing (plan.json inside model.pt): LPS reorientation, body crop (HU > {plan.body_threshold_hu:g}),
  working spacing {plan.spacing_mm} mm (cohort median), patch {plan.patch_size},
  CT normalisation clip [{plan.normalization.lower_hu:.0f}, {plan.normalization.upper_hu:.0f}] HU then z-score
  (mean {plan.normalization.mean:.1f}, sd {plan.normalization.std:.1f}).
{second_stage}{parts_line}- Post-processing: the clinicians' rules (`rules.toml`) enforced on the probabilities.

## Data (all made by `cervicontour.synth`, our own phantom; nothing downloaded)
| use | cohort | patients |
|---|---|---|
| source pretraining: 35 anatomy labels + Bladder | `synth --size small --seed {source[seed]} --phantom {source[phantom]}` | {source[patients]} |
| target fine-tuning (80 % train / 20 % validation, fold 0 of 5; validation Dice on 8 of them) | `synth --size small --seed {target[seed]} --phantom {target[phantom]}` | {target[patients]} |
| (LN_ParaAortic channel: only the fine-tuning patients whose CTVn includes para-aortic nodes; for the others it is left out of the loss) | | |{adaptation}
| test (never trained on) | `synth --size small --seed {test[seed]} --phantom {test[phantom]}` | {test[patients]} |

Phantom versions (`cervicontour.synth.anatomy.PHANTOMS`): 1 runs the iliac vessels through the iliopsoas,
2 along its surface, as in the pelvis; only the vessels differ, the same seed draws the same patients.
The phantom-1 cohorts are bit-identical on the CPU and the GPU machine
(`benchmarks/results/gpu_session/session1_arms.json` records their hashes).

Made by `python benchmarks/train_default_model.py` (source pretraining {pre[steps_done]} steps,
{pre[seconds]:.0f} s; fine-tuning {fine[steps_done]} steps, {fine[seconds]:.0f} s, run `{shipped}`{first};
{machine}).{adapted_line}
Chosen among the candidates by mean Dice on the fine-tune's validation patients (input grid): {selection}.
Fine-tune config sha256 `{config}`.

## Metrics on the synthetic test cohort (seed {test[seed]}, phantom {phantom}, input grid, rules enforced; CTVn {composition})
| structure | Dice mean | Dice median [IQR] | HD95 mean (mm) | HD95 median (mm) |
|---|---|---|---|---|
{table}

Predicting all {test[patients]} test patients took {seconds:.0f} s on this CPU. These numbers are on
phantoms drawn from the same generator as the training data: they say the pipeline works, not
how well the model would do on real CT.

## Limitations
- Trained on synthetic phantoms only (small grids, ~3.5 × 3.5 × 5 mm); real CT differs in texture,
  anatomy variation, contrast, artefacts and field of view. Fine-tune on real labelled data before any use.
- Female pelvic anatomy only; edge cases covered are those the phantom draws (missing GTVp, partial
  kidneys, extra slices, no contrast, small parametrium).
- Every output is a draft for clinician review; `prediction.json` flags structures to review closely.
"""


def ship(fine_run: Path, work: Path, phantom: int, refiner: Path | None = None) -> None:
    """Copy the fine-tuned model into the package as float16 and record where it came from (its
    pretraining is the run folder's sibling ``pretrain``; the selection is ``WORK/selection.json``)."""
    from cervicontour.networks.bundle import load_model, save_model

    model = load_model(fine_run)
    stage1 = fine_run
    target = ROOT / "src" / "cervicontour" / "models" / "default" / "model.pt"
    adaptations = []  # an adapted run's `init` is the run it continued (itself adapted, for a further adaptation)
    while fine_run.name.startswith("finetune_nodal_adapted"):
        info = json.loads((fine_run / "run.json").read_text())
        adaptations.insert(0, (fine_run.name, info))
        fine_run = Path(info["init"])
    fine_info = json.loads((fine_run / "run.json").read_text())
    pre_info = json.loads((fine_run.parent / "pretrain" / "run.json").read_text())
    chain_phantom = 1 if adaptations else phantom
    meta = {
        "trained_by": "benchmarks/train_default_model.py",
        "data": {name: {"patients": p, "seed": s, "size": "small", "generator": "cervicontour.synth", "phantom": phantom if name == "test" else chain_phantom}
                 for name, (p, s) in COHORTS.items()},
        "pretrain": {k: pre_info.get(k) for k in ("config_sha256", "steps_done", "seconds", "validation", "train_cases")},
        "finetune": {k: fine_info.get(k) for k in ("config_sha256", "steps_done", "seconds", "validation", "train_cases", "val_cases")},
        "shipped_run": fine_run.name,
        "network": pre_info["config"]["network"],  # the fine-tunes inherit the pretraining's architecture
        "trained_on": {"device": fine_info["config"]["device"], "pretrain_minutes": pre_info["config"].get("max_minutes"), "finetune_minutes": fine_info["config"].get("max_minutes")},
    }
    selection = work / "selection.json"
    if selection.is_file():
        meta["selection"] = json.loads(selection.read_text())
    if fine_run.name.endswith("_continued"):
        first = json.loads((fine_run.parent / fine_run.name.removesuffix("_continued") / "run.json").read_text())
        meta["finetune_first"] = {k: first.get(k) for k in ("config_sha256", "steps_done", "seconds", "validation")}
        meta["trained_on"].update(finetune_minutes=first["config"].get("max_minutes"), continue_minutes=fine_info["config"].get("max_minutes"))
    if adaptations:
        meta["adapted"] = [{"run": name, **{k: info.get(k) for k in ("config_sha256", "steps_done", "seconds", "validation", "train_cases", "val_cases")},
                            "phantom": phantom, "device": info["config"]["device"], "minutes": info["config"].get("max_minutes"),
                            "patients": COHORTS["target"][0], "seed": COHORTS["target"][1]} for name, info in adaptations]
        meta["shipped_run"] = adaptations[-1][0]
    second = None
    if refiner is not None:
        second = load_model(refiner).refiner  # a refine run (stage 1 + refiner)
        if second is None:
            raise SystemExit(f"{refiner}: no refiner in this model")
        if Path(second.meta["stage1"]).resolve() != stage1.resolve():
            raise SystemExit(f"{refiner} refines {second.meta['stage1']}, not the shipped run {stage1}")
        meta["refiner"] = {"file": str(refiner), **second.meta}
    save_model(target, model.network, model.plan, model.arch, name="cervicontour-default", version=VERSION, config_sha256=model.config_sha256, meta=meta, half=True, refiner=second)
    print(f"shipped {target} ({os.path.getsize(target) / 1e6:.2f} MB)")


def ship_parts(run: Path) -> None:
    """Ship the CTVp-parts fine-tune (stage ``parts``) of the shipped model: the shipped provenance
    is kept and the fine-tune added under ``parts``; the shipped CTVn refiner is kept (its inputs,
    CTVp/Anorectum/Bladder from stage 1, come from the fine-tuned network now: the test evaluation
    that follows measures the pair)."""
    from cervicontour.networks.bundle import load_model, save_model

    target = ROOT / "src" / "cervicontour" / "models" / "default" / "model.pt"
    shipped, model = load_model(target), load_model(run)
    # re-shipping over a model that already carries a parts network: its fallback is the network kept for the five structures
    shipped = shipped.fallback if shipped.fallback is not None else shipped
    info = json.loads((run / "run.json").read_text())
    meta = dict(shipped.meta)
    meta["parts"] = {"run": run.name, **{k: info.get(k) for k in ("config_sha256", "steps_done", "seconds", "validation", "train_cases", "val_cases")},
                     "structures": list(model.plan.structures), "init": f"cervicontour-default {shipped.version}",
                     "device": info["config"]["device"], "minutes": info["config"].get("max_minutes"),
                     "patients": COHORTS["target"][0], "seed": COHORTS["target"][1]}
    # predict windows stay the shipped model's (the fine-tune may use smaller training patches: the
    # network is fully convolutional, and the evaluation that follows measures it this way)
    from dataclasses import replace

    plan = replace(model.plan, patch_size=shipped.plan.patch_size)
    meta["parts"]["train_patch_size"] = list(model.plan.patch_size)
    earlier, chain = info.get("init"), []  # a relative init is relative to the repository
    while earlier and (ROOT / earlier / "run.json").is_file():  # continuations of earlier parts runs (--parts-from): all count
        first = json.loads((ROOT / earlier / "run.json").read_text())
        chain.insert(0, {"run": Path(earlier).name, **{k: first.get(k) for k in ("config_sha256", "steps_done", "seconds", "validation")},
                         "init": first.get("init"), "minutes": first["config"].get("max_minutes")})
        earlier = first.get("init")
    if chain:
        meta["parts"]["continued_from"] = chain  # earliest first
    # the fine-tune lost Dice on the five structures (test cohort: benchmarks/results/candidate_finetune_parts_eval.json):
    # the shipped network stays the one that predicts them (and its CTVn refiner), the parts network adds the CTVp's parts
    meta["parts"]["fallback"] = "the five structures (and the nodal groups) from the previous network, unchanged"
    save_model(target, model.network, plan, model.arch, name="cervicontour-default", version=VERSION, config_sha256=model.config_sha256, meta=meta, half=True,
               refiner=shipped.refiner, fallback=shipped, fallback_structures=PRIMARY)
    print(f"shipped {target} ({os.path.getsize(target) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
