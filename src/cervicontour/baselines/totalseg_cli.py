"""`cervicontour baseline totalseg`: thin front end of :mod:`cervicontour.baselines.totalseg`."""

from __future__ import annotations

from pathlib import Path

import typer

# typer.Argument/Option as defaults is typer's documented style (as in cervicontour.cli)
# ruff: noqa: B008


def totalseg(
    ct: Path = typer.Argument(..., help="CT NIfTI file (any orientation); outputs are on its exact grid."),
    out: Path = typer.Argument(..., help="Output root: OUT/<pid>/structures/{Bladder,CTVn}.nii.gz + totalseg_baseline.json."),
    ts_output: Path | None = typer.Option(
        None, "--ts-output",
        help="Existing TotalSegmentator output: multi-label file (v2 'total' ids) or per-class folder. "
             "Without it TotalSegmentator is run, if it and its weights are installed."),
    para_aortic: bool = typer.Option(False, "--para-aortic/--no-para-aortic",
                                     help="Include aorta and IVC (+7 mm) up to --para-aortic-top."),
    para_aortic_top: str = typer.Option("L2", "--para-aortic-top",
                                        help="Vertebra whose superior border ends the para-aortic CTVn: S1, L5 ... T10."),
    patient_id: str | None = typer.Option(None, "--patient-id", help="Output folder name (default: CT file name)."),
    fast: bool = typer.Option(True, "--fast/--full", help="TotalSegmentator's 3 mm fast model or the full 1.5 mm one."),
) -> None:
    """TotalSegmentator baseline: zero-shot Bladder and a guideline CTVn (vessels + 7 mm, Taylor 2005)."""
    from cervicontour.baselines.totalseg import run_baseline
    from cervicontour.cli_common import guard as _guard

    folder, result = _guard(run_baseline, ct, out, ts_output=ts_output, patient_id=patient_id,
                            para_aortic=para_aortic, para_aortic_top=para_aortic_top, fast=fast)
    volumes = result.report["volumes_cc"]
    typer.echo(f"labels: {result.report['labels']['source']} {result.report['labels']['path'] or ''}".rstrip())
    typer.echo(f"Bladder {volumes['Bladder']:.1f} cc, CTVn {volumes['CTVn']:.1f} cc -> {folder / 'structures'}")
    for finding in result.findings:
        typer.echo(f"{finding.severity.value}: {finding.check} {finding.structure or ''}: {finding.actual} ({finding.hint})")
