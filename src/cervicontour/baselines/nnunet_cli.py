"""`cervicontour baseline nnunet`: export a cohort to nnU-Net v2, import its predictions, or run it all.

Thin commands over :mod:`cervicontour.baselines.nnunet` and :mod:`.nnunet_run`; heavy imports
happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="nnU-Net v2 baseline: overlapping structures as nnU-Net regions (export, import, run).",
)


@app.command("export")
def export_command(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder: labelled patients → imagesTr/labelsTr, hold-out → imagesTs.")],
    nnunet_raw: Annotated[Path, typer.Argument(help="nnUNet_raw folder; Dataset{ID}_{NAME} is created inside.")],
    dataset_id: Annotated[int, typer.Option("--dataset-id", min=1, max=999, help="nnU-Net dataset id.")],
    name: Annotated[str, typer.Option("--name", help="Dataset name (letters/digits).")] = "Cervix",
    structures: Annotated[list[str] | None, typer.Option("--structures", "-s", help="Repeatable; default: the five.")] = None,
    per_structure: Annotated[bool, typer.Option("--per-structure", help="One binary dataset per structure (consecutive ids).")] = False,
) -> None:
    """Write an nnU-Net v2 raw dataset; overlaps kept as one region per structure."""
    from rich.progress import Progress

    from cervicontour.baselines.nnunet import export_dataset
    from cervicontour.cli_common import guard as _guard
    from cervicontour.cohort import load_cohort
    from cervicontour.structures import PRIMARY

    loaded = _guard(load_cohort, cohort)
    with Progress(transient=True) as progress:
        task = progress.add_task("exporting", total=len(loaded))
        datasets = _guard(
            export_dataset, loaded, nnunet_raw, dataset_id=dataset_id, name=name,
            structures=structures or PRIMARY, per_structure=per_structure,
            on_case=lambda pid: progress.advance(task),
        )  # fmt: skip
    for dataset in datasets:
        typer.echo(
            f"wrote {dataset.folder} ({len(dataset.training)} training, {len(dataset.test)} test cases; "
            f"regions: {', '.join(dataset.structures)})"
        )


@app.command("import")
def import_command(
    pred_dir: Annotated[Path, typer.Argument(help="nnU-Net prediction folder (<case>.nii.gz, <case>.npz + .pkl).")],
    out: Annotated[Path, typer.Argument(help="Output cohort folder: OUT/<case>/structures/<Name>.nii.gz.")],
    dataset_json: Annotated[Path, typer.Option("--dataset-json", help="The dataset's dataset.json.")],
    reference: Annotated[Path | None, typer.Option("--reference", help="Cohort folder or CT file the predictions were made for (grid check).")] = None,
) -> None:
    """Turn nnU-Net predictions into per-structure masks (probabilities keep overlaps)."""
    import warnings

    from rich.console import Console

    from cervicontour.baselines.nnunet import import_predictions
    from cervicontour.cli_common import guard as _guard

    console = Console(stderr=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = _guard(import_predictions, pred_dir, out, dataset_json=dataset_json, reference=reference)
    for message in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"[yellow]warning:[/] {message}", highlight=False, markup=True)
    typer.echo(f"wrote {len(written)} case(s) to {out}")


@app.command("run")
def run_command(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder: trains on its labelled patients, predicts its hold-out ones.")],
    work: Annotated[Path, typer.Argument(help="Work folder (nnU-Net folders, logs, predictions/, timings.json).")],
    dataset_id: Annotated[int, typer.Option("--dataset-id", min=1, max=999, help="nnU-Net dataset id.")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs (nnU-Net default 1000).")],
    iterations_per_epoch: Annotated[int, typer.Option("--iterations-per-epoch", min=1, help="Iterations per epoch.")] = 250,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    configuration: Annotated[str, typer.Option("--configuration", help="nnU-Net configuration.")] = "3d_fullres",
    fold: Annotated[str, typer.Option("--fold", help="'all' (every case) or 0..4.")] = "all",
    no_mirroring: Annotated[bool, typer.Option("--no-mirroring", help="Skip test-time mirroring (~8× faster in 3-D).")] = False,
    num_processes: Annotated[int, typer.Option("--num-processes", min=1, help="Preprocessing workers.")] = 1,
) -> None:
    """Export, plan + preprocess, train, predict with probabilities, import; write timings.json."""
    import json

    from rich.console import Console

    from cervicontour.baselines.nnunet_run import run_nnunet
    from cervicontour.cli_common import guard as _guard

    console = Console(stderr=True)
    with console.status("nnU-Net") as status:
        result = _guard(
            run_nnunet, cohort, None, work, dataset_id=dataset_id, epochs=epochs,
            iterations_per_epoch=iterations_per_epoch, device=device, configuration=configuration, fold=fold,
            use_mirroring=not no_mirroring, num_processes=num_processes,
            on_stage=lambda stage: status.update(f"nnU-Net: {stage} (logs in {work / 'logs'})"),
        )  # fmt: skip
    typer.echo(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result["timings"].items()}, indent=2))
    typer.echo(f"predictions: {result['predictions']}")


@app.command("curve")
def curve_command(
    work: Annotated[Path, typer.Argument(help="Work folder; run again on it to resume from nnU-Net's checkpoint_latest.pth.")],
    curve: Annotated[Path | None, typer.Option("--curve", help="Curve JSON (default WORK/curve.json), rewritten atomically per point.")] = None,
    structures: Annotated[list[str] | None, typer.Option("--structures", "-s", help="Repeatable; default: the five.")] = None,
    train_seed: Annotated[int, typer.Option("--train-seed", help="Phantom seed of the training patients.")] = 2002,
    train_patients: Annotated[int, typer.Option("--train-patients", min=1)] = 20,
    val_seed: Annotated[int, typer.Option("--val-seed", help="Phantom seed of the validation patients (the curve's).")] = 4004,
    val_patients: Annotated[int, typer.Option("--val-patients", min=1)] = 3,
    test_seed: Annotated[int, typer.Option("--test-seed", help="Phantom seed of the test patients (exported, not scored).")] = 3003,
    test_patients: Annotated[int, typer.Option("--test-patients", min=1)] = 10,
    dataset_id: Annotated[int, typer.Option("--dataset-id", min=1, max=999)] = 701,
    iterations_per_epoch: Annotated[int, typer.Option("--iterations-per-epoch", min=1, help="nnU-Net 250; the learning-rate schedule per iteration stays nnU-Net's.")] = 50,
    eval_every_minutes: Annotated[float, typer.Option("--eval-every-minutes", help="Training CPU minutes between curve points.")] = 20.0,
    stop_structure: Annotated[str, typer.Option("--stop-structure")] = "Bladder",
    stop_dice: Annotated[float, typer.Option("--stop-dice", help="Stop once the stop structure's mean validation Dice exceeds this.")] = 0.8,
    stop_cpu_hours: Annotated[float, typer.Option("--stop-cpu-hours", help="Or after this much training CPU.")] = 3.0,
) -> None:
    """Train nnU-Net (CPU plan) until it learns, resumably; validation Dice against CPU training time."""
    import time

    from cervicontour.baselines.nnunet_curve import CurveConfig, run_curve
    from cervicontour.cli_common import guard as _guard
    from cervicontour.structures import PRIMARY

    config = _guard(
        CurveConfig, structures=tuple(structures or PRIMARY), train_seed=train_seed, train_patients=train_patients,
        val_seed=val_seed, val_patients=val_patients, test_seed=test_seed, test_patients=test_patients,
        dataset_id=dataset_id, iterations_per_epoch=iterations_per_epoch, eval_every_cpu_s=eval_every_minutes * 60,
        stop_structure=stop_structure, stop_dice=stop_dice, stop_cpu_s=stop_cpu_hours * 3600,
    )  # fmt: skip
    record = _guard(run_curve, config, work, curve, on_stage=lambda s: typer.echo(f"[{time.strftime('%H:%M:%S')}] {s}", err=True))
    for point in record["points"]:
        dice = ", ".join(f"{s} {d['mean']:.3f}" for s, d in point["dice"].items())
        typer.echo(f"{point['iterations']:>6} iterations  {point['train_cpu_s'] / 60:7.1f} min CPU  {dice}")
    typer.echo(f"finished: {record['finished']['reason']}" if record["finished"] else "not finished: run again to resume")
