"""What every command-line front end shares (``cervicontour.cli`` and ``baselines/*_cli``): the error exit.

Below every CLI module and importing none of them, so the command groups need not import each other.
"""

from __future__ import annotations

import typer


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code`` (2: unusable input)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def guard(func, *args, **kwargs):
    """Run a library call; turn InputError into a clear message and exit code 2."""
    from cervicontour.errors import InputError
    from cervicontour.structures import UnknownStructureError

    try:
        return func(*args, **kwargs)
    except (InputError, UnknownStructureError) as exc:
        fail(str(exc))


def reviewer_name(who: str | None) -> str:
    """``who``, else the login name (``"unknown"`` in a container that has none): logged with every choice."""
    import getpass

    try:
        return who or getpass.getuser()
    except (KeyError, OSError):  # no login name in a container
        return "unknown"

