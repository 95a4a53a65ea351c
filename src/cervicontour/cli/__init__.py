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

import os
import sys

from cervicontour.baselines.cli import app as baseline_app
from cervicontour.baselines.compare_cli import compare as compare_command
from cervicontour.cli.app import app

# each module registers its commands; imported in data-flow order, the order `--help` lists them
from cervicontour.cli import data, checks, training, predict, evaluate, review, dicom  # noqa: E402, F401, I001

app.add_typer(baseline_app, name="baseline")
app.command("compare")(compare_command)

__all__ = ["app", "main"]


def main() -> None:
    """The console script: run the command, then end the process without the interpreter's teardown.

    CI saw ``predict`` (a DICOM series in, RTSTRUCT and report out) finish, print its timing and then
    abort in glibc ("double free or corruption", exit -6) while the interpreter unloaded torch,
    SimpleITK and matplotlib together; once in several hundred runs, never reproduced on demand.
    Every command has closed and atomically renamed its outputs before it returns, so nothing is
    left to the teardown: the streams are flushed and the process ends with the command's exit code.
    An exception other than ``SystemExit`` still ends the normal way, with its traceback.
    """
    try:
        app(prog_name="cervicontour")
        code = 0
    except SystemExit as done:
        code = exit_code(done)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    os._exit(code)


def exit_code(done: SystemExit) -> int:
    """The status the interpreter would give ``SystemExit(done.code)``: None → 0, an int as is, else
    (a message) printed to stderr and 1.

    Example:
        >>> exit_code(SystemExit(None)), exit_code(SystemExit(2))
        (0, 2)
    """
    if done.code is None:
        return 0
    if isinstance(done.code, int):
        return done.code
    print(done.code, file=sys.stderr)
    return 1
