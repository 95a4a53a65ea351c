"""`cervicontour` command line: thin commands that parse, call the library, render.

Heavy imports (numpy, SimpleITK, torch, pydicom) happen inside commands so `--help` is instant.
Exit codes: 0 success, 1 the work found problems (e.g. validation errors), 2 unusable input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Draft radiotherapy contours for cervical cancer — for clinician review, never final.",
)


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _guard(func, *args, **kwargs):
    """Run a library call; turn InputError into a clear message and exit code 2."""
    from cervicontour.errors import InputError
    from cervicontour.structures import UnknownStructureError

    try:
        return func(*args, **kwargs)
    except (InputError, UnknownStructureError) as exc:
        _fail(str(exc))


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output cohort folder (created; must be empty or absent)."),
    patients: int = typer.Option(10, "--patients", "-n", min=1, help="Labelled patients."),
    holdout: int = typer.Option(0, "--holdout", min=0, help="Extra unlabelled (hold-out) patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, identical files."),
    size: str = typer.Option("small", "--size", help="'full' (~512x512x150-220) or 'small' (<=128x128x64)."),
    preview: bool = typer.Option(False, "--preview", help="Also write axial/coronal/sagittal PNG overlays."),
) -> None:
    """Write a synthetic female-pelvis CT cohort in the canonical layout."""
    from rich.progress import Progress

    from cervicontour.synth import synthesize_cohort

    if size not in ("full", "small"):
        _fail(f"--size must be 'full' or 'small', got {size!r}")
    with Progress(transient=True) as progress:
        task = progress.add_task("synthesising patients", total=patients + holdout)
        cohort_dir = _guard(
            synthesize_cohort,
            out,
            patients=patients,
            holdout=holdout,
            seed=seed,
            size=size,
            on_case=lambda pid: progress.advance(task),
        )
    typer.echo(f"wrote {patients} labelled + {holdout} hold-out patients to {cohort_dir}")
    if preview:
        _write_previews(cohort_dir)


def _write_previews(cohort_dir: Path) -> None:
    from cervicontour.cohort import load_cohort
    from cervicontour.report.preview import write_preview

    cohort = load_cohort(cohort_dir)
    for case in cohort.labelled():
        png = write_preview(case, cohort_dir / "preview" / f"{case.patient_id}.png")
        typer.echo(f"preview: {png}")


@app.command()
def preview(
    cohort: Path = typer.Argument(..., help="Cohort folder."),
    patient: Optional[str] = typer.Option(None, "--patient", help="One patient id (default: all labelled)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default COHORT/preview)."),
) -> None:
    """Write axial/coronal/sagittal PNG overlays of the primary structures."""
    from cervicontour.cohort import load_cohort
    from cervicontour.report.preview import write_preview

    loaded = _guard(load_cohort, cohort)
    cases = [loaded[patient]] if patient else loaded.labelled()
    target = out or cohort / "preview"
    for case in cases:
        typer.echo(f"preview: {_guard(write_preview, case, target / f'{case.patient_id}.png')}")


@app.command()
def info(cohort: Path = typer.Argument(..., help="Cohort folder (canonical, synonym or nnU-Net raw layout).")) -> None:
    """Summarise a cohort: patients, grids, structures and notes (reads headers only)."""
    from rich.console import Console

    from cervicontour.cohort import load_cohort
    from cervicontour.report.summary import cohort_table

    loaded = _guard(load_cohort, cohort)
    Console().print(_guard(cohort_table, loaded))


@app.command()
def structures() -> None:
    """List the structure vocabulary: canonical names, roles and synonyms."""
    from rich.console import Console
    from rich.table import Table

    from cervicontour.structures import STRUCTURES

    table = Table(title="cervicontour structure vocabulary")
    for column in ("name", "role", "part of", "synonyms"):
        table.add_column(column)
    for s in STRUCTURES.values():
        table.add_row(s.name, s.role.value, s.parent or "", ", ".join(s.synonyms))
    Console().print(table)


@app.command()
def demo(
    out: Path = typer.Argument(Path("out/demo"), help="Folder for the demo cohort and outputs."),
    patients: int = typer.Option(4, "--patients"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """End to end on the built-in default: synthesise a small cohort, summarise and preview it."""
    import shutil

    from rich.console import Console

    from cervicontour.cohort import load_cohort
    from cervicontour.report.summary import cohort_table

    cohort_dir = out / "cohort"
    if cohort_dir.exists():
        shutil.rmtree(cohort_dir)
    synth(cohort_dir, patients=patients, holdout=1, seed=seed, size="small", preview=True)
    Console().print(cohort_table(load_cohort(cohort_dir)))
    typer.echo(
        "demo: segmentation model not shipped yet — this demo stops at the synthetic cohort "
        f"and its previews in {cohort_dir / 'preview'}"
    )


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predictions: a cohort folder or <patient_id>/structures/ folders."),
    ref: Path = typer.Option(..., "--ref", help="Reference cohort folder."),
    out: Path = typer.Option(..., "--out", help="CSV, one row per (patient_id, structure); a *_summary.csv goes beside it."),
    tolerance_mm: str = typer.Option("1,2,3", "--tolerance-mm", help="Surface-Dice tolerances in mm, comma-separated."),
    boundary: str = typer.Option("voxel6", "--boundary", help="'voxel6' (MONAI/medpy) or 'surfel' (DeepMind)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report with box plots."),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated names (default: the primary five)."),
    apl_tolerance_mm: float = typer.Option(0.0, "--apl-tolerance-mm", min=0.0, help="In-plane tolerance of the added path length."),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases evaluated in parallel processes."),
) -> None:
    """Score predicted contours against reference contours (overlap, surface, volume, editing)."""
    from rich.console import Console
    from rich.progress import Progress

    from cervicontour.metrics import EvaluationSettings, evaluate_cohort, summarize, write_csv
    from cervicontour.metrics.summary import SUMMARY_COLUMNS

    try:
        tolerances = tuple(float(t) for t in tolerance_mm.split(",") if t.strip())
        settings = EvaluationSettings(tolerances_mm=tolerances, boundary=boundary, apl_tolerance_mm=apl_tolerance_mm)
    except ValueError as exc:
        _fail(f"--tolerance-mm/--boundary: {exc} (e.g. --tolerance-mm 1,2,3 --boundary voxel6)")
    names = [s.strip() for s in structures.split(",") if s.strip()] if structures else None
    with Progress(transient=True) as progress:
        task = progress.add_task("evaluating cases", total=None)
        result = _guard(
            evaluate_cohort, ref, pred, structures=names, settings=settings, workers=workers,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )  # fmt: skip
    console = Console(stderr=True)
    for line in [*result.unmatched, *result.warnings]:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    if not result.rows:
        _fail(f"no (patient, structure) pairs to score between {ref} and {pred}", code=1)
    write_csv(result.rows, result.columns, out)
    summary_path = out.with_name(f"{out.stem}_summary.csv")
    write_csv(summarize(result.rows, result.metric_columns), SUMMARY_COLUMNS, summary_path)
    typer.echo(f"wrote {len(result.rows)} rows to {out} and the per-structure summary to {summary_path}")
    if html:
        from cervicontour.report.metrics_report import write_metrics_report

        notes = [f"boundary {boundary}, tolerances {tolerance_mm} mm, APL tolerance {apl_tolerance_mm:g} mm", *result.unmatched, *result.warnings]
        typer.echo(f"report: {write_metrics_report(result.rows, result.metric_columns, html, columns=result.columns, notes=notes)}")


def main() -> None:
    app(prog_name="cervicontour")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
