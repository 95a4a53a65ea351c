"""`validate` and `clean`: the cohort's checks (findings as data) and the safe fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli_common import guard as _guard


def _findings_table(findings, title: str):
    from rich.table import Table

    colours = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    table = Table(title=title, show_lines=False)
    for column in ("severity", "patient", "structure", "check"):
        table.add_column(column, no_wrap=True)
    for column in ("expected", "actual", "what to do"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(
            f"[{colours[f.severity.value]}]{f.severity.value}[/]", f.patient_id or "(cohort)", f.structure or "",
            f.check, f.expected, f.actual, f.hint,
        )
    return table


@app.command()
def validate(
    cohort: Path = typer.Argument(..., help="Cohort folder (canonical, synonym or nnU-Net raw layout)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the findings as JSON."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report (grouped by patient, thumbnails)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML (default: the clinicians' rules)."),
    show_info: bool = typer.Option(False, "--info", help="Also list info findings in the terminal."),
) -> None:
    """Check a cohort: headers, grids, masks, rules, outliers, de-identification. Exit 1 on errors."""
    from rich.console import Console

    from cervicontour.progress import progress
    from cervicontour.rules import load_rules, write_findings_json
    from cervicontour.validate import validate_cohort

    loaded_rules = _guard(load_rules, rules)
    with progress() as show:
        result = _guard(validate_cohort, cohort, rules=loaded_rules, on_case=show.counter("validating patients"))
    console = Console()
    shown = [f for f in result.findings if show_info or f.severity.value != "info"]
    if shown:
        console.print(_findings_table(shown, f"validation of {cohort}"))
    counts = result.counts
    console.print(
        f"{len(result.patients)} patients in {result.seconds:.1f} s: [bold red]{counts['error']} errors[/], "
        f"[yellow]{counts['warning']} warnings[/], [cyan]{counts['info']} info[/]"
        + ("" if show_info or not counts["info"] else " (--info lists them)"),
        highlight=False,
    )
    if json_out:
        write_findings_json(result.findings, json_out, meta=result.meta())
        console.print(f"findings: {json_out}")
    if html:
        from cervicontour.report.validation_report import write_validation_report

        write_validation_report(
            list(result.findings), html, cohort_root=cohort, notes=dict(result.notes), patients=list(result.patients),
            subtitle=f"rules {result.rules_source} (sha256 {result.rules_sha256[:12]})",
        )
        console.print(f"report: {html}")
    raise typer.Exit(1 if counts["error"] else 0)


@app.command()
def clean(
    cohort: Path = typer.Argument(..., help="Cohort folder to clean (only read)."),
    out: Path = typer.Argument(..., help="New folder for the cleaned copy (must be absent or empty)."),
    rules: Optional[Path] = typer.Option(None, "--rules", help="Rules TOML for the final validation."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the remaining findings as JSON."),
) -> None:
    """Write a cleaned copy (grids, binary masks, blank header text, vocabulary names) and validate it."""
    from rich.console import Console
    from rich.table import Table

    from cervicontour.progress import progress
    from cervicontour.rules import load_rules, write_findings_json
    from cervicontour.validate import clean_cohort

    loaded_rules = _guard(load_rules, rules)
    with progress() as show:
        result = _guard(clean_cohort, cohort, out, rules=loaded_rules, on_case=show.counter("cleaning patients"))
    console = Console()
    if result.changes:
        table = Table(title=f"changes ({out / 'changes.csv'})")
        for column in ("patient", "file", "what", "why"):
            table.add_column(column, overflow="fold")
        for c in result.changes:
            table.add_row(c.patient_id, c.file, c.what, c.why)
        console.print(table)
    remaining = [f for f in result.remaining.findings if f.severity.value != "info"]
    if remaining:
        console.print(_findings_table(remaining, "not fixed (needs a person)"))
    counts = result.remaining.counts
    console.print(
        f"{len(result.changes)} changes written to {out}; remaining: [bold red]{counts['error']} errors[/], "
        f"[yellow]{counts['warning']} warnings[/], [cyan]{counts['info']} info[/]",
        highlight=False,
    )
    if json_out:
        write_findings_json(result.remaining.findings, json_out, meta=result.remaining.meta())
    raise typer.Exit(1 if counts["error"] else 0)
