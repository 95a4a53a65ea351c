"""`cervicontour baseline universeg`: meta-train the UniverSeg-style model, predict a cohort.

Thin commands: parse, call :mod:`.universeg` / :mod:`.universeg_train`, render. torch is
imported inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="UniverSeg-style 2D in-context baseline (Butoi et al., ICCV 2023).",
)


@app.command()
def train(
    cohort: Annotated[Path, typer.Argument(help="Labelled cohort to meta-train on (every label is a task).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint file to write (e.g. model.pt).")],
    max_minutes: Annotated[float, typer.Option("--max-minutes", min=0.0, help="Wall-clock budget.")] = 10.0,
    max_steps: Annotated[int, typer.Option("--max-steps", min=0, help="Step cap (0: time budget only).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling and initialisation seed.")] = 0,
    support_size: Annotated[int, typer.Option("--support-size", "-k", min=1, help="K during training.")] = 4,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Tasks per step.")] = 2,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-4,
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads.")] = 2,
) -> None:
    """Meta-train from scratch (fp32, CPU) and save the checkpoint with its config."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cervicontour.baselines.universeg_train import MetaTrainConfig, meta_train
    from cervicontour.cli_common import guard as _guard

    config = MetaTrainConfig(
        seed=seed, max_minutes=max_minutes, max_steps=max_steps, batch_size=batch_size,
        support_size=support_size, lr=lr, threads=threads,
    )
    total = max_steps or None
    with Progress(
        TextColumn("meta-training"), BarColumn(), TextColumn("step {task.completed}  loss {task.fields[loss]}"),
        TimeElapsedColumn(), transient=True,
    ) as progress:
        task = progress.add_task("train", total=total, loss="-")

        def on_step(step: int, loss: float, elapsed: float) -> None:
            progress.update(task, completed=step, loss=f"{loss:.4f}")

        result = _guard(meta_train, cohort, out, config, on_step=on_step)
    losses = result.losses
    tail = sum(losses[-20:]) / len(losses[-20:])
    Console(soft_wrap=True).print(
        f"wrote {result.path}: {result.steps} steps in {result.seconds:.0f} s "
        f"({result.seconds_per_step:.2f} s/step), loss first {losses[0]:.4f} → last-20 mean {tail:.4f}"
    )


@app.command()
def predict(
    support: Annotated[Path, typer.Argument(help="Labelled cohort the support slices come from.")],
    cohort: Annotated[Path, typer.Argument(help="Cohort to segment (labelled or hold-out).")],
    out: Annotated[Path, typer.Argument(help="Output folder: OUT/<pid>/structures/<Name>.nii.gz.")],
    weights: Annotated[Path | None, typer.Option(
        "--weights", "-w",
        help="Our checkpoint or the official universeg state dict; absent: meta-train on SUPPORT first.",
    )] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Support size.")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Support draw.")] = 0,
    structures: Annotated[list[str] | None, typer.Option("--structure", "-s", help="Repeatable; default: the five.")] = None,
    train_minutes: Annotated[float, typer.Option("--train-minutes", help="Budget when no --weights.")] = 10.0,
) -> None:
    """Segment every case slice by slice; masks land on each input grid."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from rich.console import Console

    from cervicontour.baselines.universeg_cohort import predict_cohort
    from cervicontour.cli_common import guard as _guard
    from cervicontour.structures import PRIMARY

    torch.set_num_threads(2)
    result = _guard(
        predict_cohort, weights, support, cohort, out,
        structures=tuple(structures) if structures else PRIMARY, k=k, seed=seed, train_minutes=train_minutes,
    )
    console = Console(soft_wrap=True)
    if result["weights"]:
        console.print(result["weights"])
    for pid, info in result["cases"].items():
        console.print(f"{pid}: {len(info['structures'])} structures in {info['seconds']:.1f} s")
