"""`synth`, `preview`, `info`, `structures`: phantom cohorts and what a cohort holds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cervicontour.cli.app import app
from cervicontour.cli_common import fail as _fail
from cervicontour.cli_common import guard as _guard


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Output cohort folder (created; must be empty or absent)."),
    patients: int = typer.Option(10, "--patients", "-n", min=1, help="Labelled patients."),
    holdout: int = typer.Option(0, "--holdout", min=0, help="Extra unlabelled (hold-out) patients."),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, identical files."),
    size: str = typer.Option("small", "--size", help="'full' (~512x512x150-220) or 'small' (<=128x128x64)."),
    preview: bool = typer.Option(False, "--preview", help="Also write axial/coronal/sagittal PNG overlays."),
    phantom: Optional[int] = typer.Option(None, "--phantom", help="Anatomy version: 1 (iliac vessels through the iliopsoas) or 2 (on their surface, as in the pelvis); default: the one the shipped model was trained on (cervicontour.synth.anatomy)."),
    style: Optional[Path] = typer.Option(None, "--style", help="A hospital's conventions (TOML, flat keys): ctvn_margin_mm, slice_thickness_mm, noise_hu, hu_offset, vagina_length_fraction, parametrium_extent, bladder_filling; recorded in OUT/style.toml."),
    primary_only: bool = typer.Option(False, "--primary-only", help="Only the five primary masks (Bladder, Anorectum, CTVn, CTVp, Parametrium; no structures/sub/), as a hospital's cohort has them."),
) -> None:
    """Write a synthetic female-pelvis CT cohort in the canonical layout.

    --style STYLE.toml draws the same patients labelled and scanned by another hospital's
    conventions (keys, all optional; defaults are the phantom's own, bit for bit):
    ctvn_margin_mm (7.0), slice_thickness_mm (drawn per patient), noise_hu (12.0),
    hu_offset (0.0), vagina_length_fraction (the anatomy's, ~0.4), parametrium_extent (1.0),
    bladder_filling (1.0). A non-default style is written, resolved, to OUT/style.toml.
    """
    from cervicontour.progress import progress
    from cervicontour.synth import Style, load_style, synthesize_cohort
    from cervicontour.synth.anatomy import DEFAULT_PHANTOM

    if size not in ("full", "small"):
        _fail(f"--size must be 'full' or 'small', got {size!r}")
    conventions = Style() if style is None else _guard(load_style, style)
    with progress() as show:
        cohort_dir = _guard(
            synthesize_cohort,
            out,
            patients=patients,
            holdout=holdout,
            seed=seed,
            size=size,
            phantom=DEFAULT_PHANTOM if phantom is None else phantom,
            style=conventions,
            primary_only=primary_only,
            on_case=show.counter("synthesising patients", patients + holdout),
        )
    typer.echo(f"wrote {patients} labelled + {holdout} hold-out patients to {cohort_dir}")
    if preview:
        preview_command(cohort_dir, patient=None, out=None)


@app.command("preview")
def preview_command(
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
