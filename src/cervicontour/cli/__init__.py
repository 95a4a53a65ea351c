"""`cervicontour` command line: thin commands that parse, call the library, render.

One module per command group (each registers its commands on :data:`.app.app`):

    data       synth, preview, info, structures
    checks     validate, clean
    training   train, pretrain, refine, fit
    predict    demo, predict
    evaluate   evaluate, report
    dicom      rtstruct export|import, export-dicom, dicom-to-cohort
    review     compose, margin, review, decide
    baseline   the field's methods (cervicontour.baselines.cli) and compare

Heavy imports (numpy, SimpleITK, torch, pydicom) happen inside commands so `--help` is instant.
Exit codes: 0 success, 1 the work found problems (e.g. validation errors), 2 unusable input.
"""

from __future__ import annotations

from cervicontour.baselines.cli import app as baseline_app
from cervicontour.baselines.compare_cli import compare as compare_command
from cervicontour.cli.app import app

# each module registers its commands; imported in data-flow order, the order `--help` lists them
from cervicontour.cli import data, checks, training, predict, evaluate, review, dicom  # noqa: E402, F401, I001

app.add_typer(baseline_app, name="baseline")
app.command("compare")(compare_command)

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="cervicontour")
