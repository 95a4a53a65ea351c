"""`cervicontour baseline atlas`: thin Typer front end of :mod:`cervicontour.baselines.atlas`.

Only typer and the standard library at module level, so ``--help`` stays instant; the main CLI
mounts :func:`atlas` under ``baseline``.
"""

# ruff: noqa: B008  -- typer.Argument/Option as parameter defaults is Typer's documented idiom

from __future__ import annotations

from pathlib import Path

import typer


def atlas(
    atlas_cohort: Path = typer.Argument(..., help="Labelled cohort whose cases are the atlases."),
    target: Path = typer.Argument(..., help="A NIfTI CT, or a cohort folder (all its patients)."),
    out: Path = typer.Argument(..., help="Output folder: OUT/<patient_id>/structures/<Name>.nii.gz + atlas.json."),
    k: int = typer.Option(5, "--k", min=1, help="Atlases fused per target (the K most similar after rigid)."),
    fusion: str = typer.Option("majority", "--fusion", help="'majority' (even-K ties follow the best atlas) or 'staple'."),
    deformable: str = typer.Option("demons", "--deformable", help="'demons' (default: best and fastest measured on the phantom, benchmarks/results/atlas_baseline.json), 'bspline' or 'none' (affine only)."),
    structures: list[str] | None = typer.Option(
        None, "--structures", help="Structures to contour (repeatable; default: the primary five)."
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="SimpleITK threads (0 = its default, all cores)."),
) -> None:
    """Multi-atlas baseline: register K atlases to each target, propagate, fuse per structure."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cervicontour.cli_common import guard as _guard

    if threads:
        import SimpleITK as sitk

        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
    from cervicontour.baselines.atlas import predict_cohort
    from cervicontour.structures import PRIMARY

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("atlas registrations", total=None)

        def on_progress(done: int, total: int, description: str) -> None:
            bar.update(task, completed=done, total=total, description=description)

        seconds = _guard(
            predict_cohort,
            atlas_cohort,
            target,
            out,
            k=k,
            fusion=fusion,
            deformable=deformable,
            structures=tuple(structures) if structures else PRIMARY,
            on_progress=on_progress,
        )
    for patient_id, value in seconds.items():
        typer.echo(f"{patient_id}: {value:.1f} s -> {out / patient_id}")
