"""Progress and wall time (cervicontour.progress): the lines a log gets, and every command's last line."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cervicontour import progress as progress_module
from cervicontour.cli import app
from cervicontour.progress import Display, format_seconds

runner = CliRunner()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _display() -> tuple[Display, io.StringIO, Clock]:
    text, clock = io.StringIO(), Clock()
    return Display(console=Console(file=text, width=200), clock=clock), text, clock


def test_format_seconds():
    assert format_seconds(0.04) == "0.0 s"
    assert format_seconds(59.94) == "59.9 s"
    assert format_seconds(60.0) == "1 min 00 s"
    assert format_seconds(312.4) == "5 min 12 s"
    assert format_seconds(3725.0) == "1 h 02 min"


def test_lines_are_throttled_and_estimate_the_time_left_from_the_current_total():
    """Without a terminal: first and last update always, else at most one line per LINE_EVERY_S per
    task. A stage that first measures (total 1), then counts 100 steps is estimated on the steps:
    10 steps in 20 s -> 90 steps left take 180 s."""
    show, text, clock = _display()
    show("stage1", 0, 1, "measuring")
    clock.now += 30.0
    show("stage1", 0, 100, "")  # the step count is known now: the estimate starts here
    clock.now += 1.0
    show("stage1", 5, 100, "loss 0.5")  # within LINE_EVERY_S of the line before: not written
    clock.now += 19.0
    show("stage1", 10, 100, "loss 0.4")
    clock.now += 1.0
    show("stage1", 100, 100, "done")  # the last one always
    lines = text.getvalue().splitlines()
    assert lines == [
        "stage1: 0/1 measuring (0.0 s)",
        "stage1: 0/100 (30.0 s)",
        "stage1: 10/100 loss 0.4 (50.0 s, ~3 min 00 s left)",
        "stage1: 100/100 done (51.0 s)",
    ]


def test_a_counter_names_each_case_and_tasks_are_apart():
    show, text, clock = _display()
    count = show.counter("predicting cases", 2)
    other = show.counter("validating patients")  # no total: counted, no estimate
    clock.now += 6.0
    count("P01")
    other("P01")
    clock.now += 6.0
    count("P02")
    assert text.getvalue().splitlines() == [
        "predicting cases: 0/2 (0.0 s)",
        "validating patients: 0 (0.0 s)",
        "predicting cases: 1/2 P01 (6.0 s, ~6.0 s left)",
        "validating patients: 1 P01 (6.0 s)",
        "predicting cases: 2/2 P02 (12.0 s)",
    ]
    assert show.seconds_left("predicting cases", 1) == pytest.approx(12.0)  # 1 case in 12 s (clock now), 1 left


def _wall_line(output: str, command: str) -> re.Match | None:
    return re.search(rf"^\S* ?{command}: (\d+\.\d s|\d+ min \d\d s) wall$", output, re.MULTILINE)


def test_commands_end_with_their_wall_time_and_show_progress_in_a_log(tmp_path, monkeypatch):
    """synth and validate through the real CLI (CliRunner: no terminal, so progress comes as lines):
    a per-case progress line, then the wall-time line last, on stderr (stdout keeps the results)."""
    monkeypatch.setattr(progress_module, "WALL_TIME_FROM_S", 0.0)  # tiny cohort: may finish within a second
    cohort = tmp_path / "c"
    result = runner.invoke(app, ["synth", str(cohort), "--patients", "1", "--holdout", "1", "--seed", "3", "--primary-only"])
    assert result.exit_code == 0, result.output
    assert "synthesising patients: 2/2 SYN002" in result.stderr
    assert _wall_line(result.stderr, "synth") and result.stderr.rstrip().splitlines()[-1].endswith(" wall")
    assert "wall" not in result.stdout
    assert not (cohort / "SYN001" / "structures" / "sub").exists()
    assert sorted(p.name for p in (cohort / "SYN001" / "structures").iterdir()) == sorted(
        f"{n}.nii.gz" for n in ("Bladder", "Anorectum", "CTVn", "CTVp", "Parametrium"))  # fmt: skip

    result = runner.invoke(app, ["validate", str(cohort)])
    assert result.exit_code in (0, 1), result.output  # 1: errors found; the wall time comes all the same
    assert re.search(r"^validating patients: \d+", result.stderr, re.MULTILINE)
    assert _wall_line(result.stderr, "validate")

    result = runner.invoke(app, ["export-dicom", str(cohort / "SYN001"), "--out", str(tmp_path / "ct")])  # one piece of work: a line as it starts and ends
    assert result.exit_code == 0, result.output
    assert re.search(r"^writing the DICOM series: 0 \(.*\n(.*\n)*writing the DICOM series: 1/1 done \(", result.stderr, re.MULTILINE)
    assert _wall_line(result.stderr, "export-dicom")


def test_an_instant_command_has_no_wall_time_line():
    result = runner.invoke(app, ["structures"])
    assert result.exit_code == 0 and " wall" not in result.stderr
    result = runner.invoke(app, ["synth", "--help"])
    assert result.exit_code == 0 and " wall" not in result.output


def test_a_long_line_is_not_wrapped_in_a_log():
    text = io.StringIO()
    show = Display(console=Console(file=text, width=40), clock=Clock())
    reason = "skipped: budget: 0 s left, its floor is ~2527 s (stage 1 on every patient, then scoring)"
    show("refiner", 1, 1, reason)
    assert text.getvalue() == f"refiner: 1/1 {reason} (0.0 s)\n"
