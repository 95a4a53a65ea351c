"""What a user sees while a command runs: progress with the time left, and the wall time at the end.

One helper for every command (``cli.py``; the library only calls back):

* :func:`progress` yields a :class:`Display`; ``display(task, done, total, text)`` has the signature
  of the library's ``on_event``/``on_progress`` callbacks, and ``display.counter(task, total)`` makes
  an ``on_case(patient_id)`` callback. On a terminal it draws rich bars (elapsed time and an estimate
  of the time left per task); anywhere else (a log file, a pipe, CI, ``make demo-fit | tee``) it
  writes one line per update, at most one every :data:`LINE_EVERY_S` seconds per task, with the same
  kind of estimate: ``stage1: 120/400 loss 0.31 (1 min 05 s, ~3 min 02 s left)``.
  :func:`working` is the same for one piece of work without a count (one case's export).
* :func:`time_command` makes a command end with its wall time on stderr
  (``cervicontour fit: 5 min 12 s wall``) once it has run for :data:`WALL_TIME_FROM_S` or more.

Both write to stderr, so a command's own output on stdout stays as it was. Nothing happens at import.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Without a terminal, a task writes a line at most this often (its first and last update always).
LINE_EVERY_S = 5.0
#: Commands shorter than this end without the wall-time line (``--help``, ``structures``).
WALL_TIME_FROM_S = 1.0


def format_seconds(seconds: float) -> str:
    """A duration as people read it.

    Example:
        >>> format_seconds(4.26), format_seconds(312.0), format_seconds(3725.0)
        ('4.3 s', '5 min 12 s', '1 h 02 min')
    """
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


@dataclass
class _Task:
    """A task's start, and where its estimate starts: the time and count of its first update with
    its current total (a stage that first measures, then counts steps, is estimated on the steps)."""

    start: float
    total: float | None
    t0: float
    done0: float
    last_line: float = float("-inf")


class Display:
    """Progress of named tasks; see :func:`progress`. Call it as ``display(task, done, total, text)``."""

    def __init__(self, bar=None, console=None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._bar, self._console, self._clock = bar, console, clock
        self._tasks: dict[str, _Task] = {}
        self._ids: dict[str, int] = {}

    def __call__(self, task: str, done: float, total: float | None = None, text: str = "") -> None:
        now = self._clock()
        state = self._tasks.get(task)
        if state is None:
            state = self._tasks[task] = _Task(now, total, now, done)
        elif state.total != total:  # the total changed: estimate afresh
            state.total, state.t0, state.done0 = total, now, done
        if self._bar is not None:
            if task not in self._ids:
                self._ids[task] = self._bar.add_task(task, total=total, text="")
            self._bar.update(self._ids[task], completed=done, total=total, text=text)
            return
        finished = total is not None and done >= total
        if now - state.last_line < LINE_EVERY_S and not finished and state.last_line != float("-inf"):
            return
        state.last_line = now
        count = f"{done:.0f}/{total:.0f}" if total is not None else f"{done:.0f}"
        timing = format_seconds(now - state.start)
        left = self.seconds_left(task, done)
        if left is not None and not finished:
            timing += f", ~{format_seconds(left)} left"
        self._console.print(f"{task}: {count}{' ' + text if text else ''} ({timing})", highlight=False, markup=False, soft_wrap=True)

    def seconds_left(self, task: str, done: float) -> float | None:
        """The time ``task`` still needs at the rate since its current total was set (None: unknown yet)."""
        state = self._tasks.get(task)
        if state is None or state.total is None or done <= state.done0:
            return None
        return (self._clock() - state.t0) / (done - state.done0) * max(state.total - done, 0.0)

    def counter(self, task: str, total: int | None = None) -> Callable[[object], None]:
        """An ``on_case(item)`` callback: each call counts one item of ``task`` done and names it."""
        count = [0]
        self(task, 0, total)

        def one(item: object = "") -> None:
            count[0] += 1
            self(task, count[0], total, str(item))

        return one


@contextlib.contextmanager
def progress(*, transient: bool = True) -> Iterator[Display]:
    """Show the progress of a command's work on stderr (see the module docstring).

    Args:
        transient: on a terminal, remove the bars when done (False: leave them, e.g. a fit's stages).

    Example:
        >>> with progress() as show:  # doctest: +SKIP
        ...     synthesize_cohort(out, patients=12, on_case=show.counter("synthesising patients", 12))
    """
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield Display(console=console)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[text]}"),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=transient) as bar:
        yield Display(bar=bar)


@contextlib.contextmanager
def working(task: str) -> Iterator[None]:
    """One piece of work without a count (a single case's export): a pulsing bar with the elapsed
    time on a terminal, a line when it starts and one when it ends in a log."""
    with progress() as show:
        show(task, 0, None)
        yield
        show(task, 1, 1, "done")


def time_command(ctx) -> None:
    """Make the command of click context ``ctx`` end with its wall time on stderr.

    Registered on the context, so the line comes also after an error exit or an exception; a run
    shorter than :data:`WALL_TIME_FROM_S` (help, instant commands) ends without it.
    """
    t0 = time.perf_counter()

    def report() -> None:
        seconds = time.perf_counter() - t0
        if seconds >= WALL_TIME_FROM_S:
            import click

            name = " ".join(filter(None, (ctx.info_name, ctx.invoked_subcommand)))
            click.echo(f"{name}: {format_seconds(seconds)} wall", err=True)

    ctx.call_on_close(report)


__all__ = ["Display", "LINE_EVERY_S", "WALL_TIME_FROM_S", "format_seconds", "progress", "time_command", "working"]
