"""The `cervicontour` Typer app and what every command does on the way out (its wall time on stderr)."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Draft radiotherapy contours for cervical cancer — for clinician review, never final.",
)


@app.callback()
def _every_command(ctx: typer.Context) -> None:
    # every command ends with its wall time on stderr (cervicontour.progress.time_command)
    from cervicontour.progress import time_command

    time_command(ctx)
