"""What a predicted case leaves with, besides its masks: the RTSTRUCT for the planning system and
the clinician's QA report (``predict --rtstruct --report``), one call per case folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Delivered:
    """What :func:`deliver_case` wrote: the RTSTRUCT (and the series it references, when this call
    wrote the NIfTI CT as one; else it references the input's series) and the report; None for what
    was not asked for."""

    rtstruct: Path | None = None
    series_written: Path | None = None
    report: Path | None = None


def deliver_case(case_dir: str | os.PathLike, *, rtstruct: bool, report: bool, cohort: str | os.PathLike | None = None, rules=None) -> Delivered:
    """The RTSTRUCT (AUTOMATIC, against the input's DICOM series or the NIfTI CT written as one:
    :func:`cervicontour.export.ct_series.prediction_rtstruct`) and/or the QA report
    (:func:`cervicontour.report.case_report.write_case_report`) of one ``predict`` output case.

    Raises:
        InputError: no ``prediction.json``, its input gone or changed (RTSTRUCT), an unreadable case.
    """
    case_dir = Path(case_dir)
    exported = series = html = None
    if rtstruct:
        from cervicontour.export.ct_series import prediction_rtstruct

        exported, series = prediction_rtstruct(case_dir)
    if report:
        from cervicontour.report.case_report import write_case_report

        html = write_case_report(case_dir, cohort=cohort, rules=rules)
    return Delivered(exported.path if exported else None, series.folder if series else None, html)
