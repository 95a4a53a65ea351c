"""`evaluate` and `report`: scoring predictions against references, and the case report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predictions: a cohort folder or <patient_id>/structures/ folders."),
    ref: Path = typer.Option(..., "--ref", help="Reference cohort folder."),
    out: Path = typer.Option(..., "--out", help="CSV, a row per (patient_id, structure); *_summary.csv beside it."),
    tolerance_mm: str = typer.Option("1,2,3", "--tolerance-mm", help="Surface-Dice tolerances in mm, comma-separated."),
    boundary: str = typer.Option("voxel6", "--boundary", help="'voxel6' (MONAI/medpy) or 'surfel' (DeepMind)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report with box plots."),
    structures: Optional[str] = typer.Option(None, "--structures", help="Comma-separated (default: primary five)."),
    apl_tolerance_mm: float = typer.Option(0.0, "--apl-tolerance-mm", min=0.0, help="In-plane tolerance of the APL."),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases evaluated in parallel processes."),
    parts: bool = typer.Option(True, "--parts/--no-parts", help="Also score the CTV parts (structures/sub) both sides have, apart: <out>_parts.csv and its summary."),
) -> None:
    """Score predicted contours against reference contours (overlap, surface, volume, editing).

    The CTV parts (Cervix, GTVp, Uterus, Vagina; GTVn, LN_*) are scored apart, each with its
    compound, when the reference and the prediction both have them; a GTVp/GTVn absent from the
    reference and predicted is a false positive, absent from both is not scored.
    """
    from rich.console import Console

    from cervicontour.io.atomic import check_writable
    from cervicontour.metrics import EvaluationSettings, evaluate_cohort, summarize, write_csv
    from cervicontour.metrics.summary import SUMMARY_COLUMNS
    from cervicontour.progress import progress

    for path in (out, html):  # before the work, not after it
        if path is not None:
            _guard(check_writable, path)
    try:
        tolerances = tuple(float(t) for t in tolerance_mm.split(",") if t.strip())
        settings = EvaluationSettings(tolerances_mm=tolerances, boundary=boundary, apl_tolerance_mm=apl_tolerance_mm)
    except ValueError as exc:
        _fail(f"--tolerance-mm/--boundary: {exc} (e.g. --tolerance-mm 1,2,3 --boundary voxel6)")
    names = [s.strip() for s in structures.split(",") if s.strip()] if structures else None
    with progress() as show:
        result = _guard(
            evaluate_cohort, ref, pred, structures=names, settings=settings, workers=workers, parts=parts,
            on_progress=lambda done, total: show("evaluating cases", done, total),
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
    for line in result.part_notes:
        console.print(f"parts: {line}", highlight=False)
    if result.part_rows:
        from cervicontour.metrics.parts import PART_SUMMARY_COLUMNS, summarize_parts

        parts_path = out.with_name(f"{out.stem}_parts.csv")
        write_csv(result.part_rows, result.part_columns, parts_path)
        write_csv(summarize_parts(result.part_rows, result.metric_columns), PART_SUMMARY_COLUMNS, out.with_name(f"{out.stem}_parts_summary.csv"))
        typer.echo(f"wrote {len(result.part_rows)} part rows to {parts_path} and their summary to {out.with_name(f'{out.stem}_parts_summary.csv')}")
    elif parts:
        typer.echo("no part scored: the reference or the prediction has no CTV parts (structures/sub)")
    if html:
        from cervicontour.report.metrics_report import write_metrics_report

        settings_note = f"boundary {boundary}, tolerances {tolerance_mm} mm, APL tolerance {apl_tolerance_mm:g} mm"
        notes = [settings_note, *result.unmatched, *result.warnings]
        page = write_metrics_report(result.rows, result.metric_columns, html, columns=result.columns, notes=notes)
        typer.echo(f"report: {page}")
        if result.part_rows:
            page = write_metrics_report(result.part_rows, result.metric_columns, html.with_name(f"{html.stem}_parts.html"), columns=result.part_columns,
                                        title="Part-level evaluation (CTV parts)", notes=[settings_note, *result.part_notes])  # fmt: skip
            typer.echo(f"parts report: {page}")




@app.command()
def report(
    case_dir: Path = typer.Argument(..., help="Case folder (image.nii.gz + structures/, or a predict output with prediction.json)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort whose labelled patients give the volume ranges."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default CASE_DIR/report)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML (default: the clinicians' rules)."),
) -> None:
    """One-page QA report of a case: overlays, volumes vs cohort, rule findings, provenance."""
    from cervicontour.progress import working
    from cervicontour.report.case_report import write_case_report
    from cervicontour.rules import load_rules

    loaded_rules = _guard(load_rules, rules)
    with working("writing the report"):
        page = _guard(write_case_report, case_dir, out_dir=out, cohort=cohort, rules=loaded_rules)
    typer.echo(f"report: {page}")
