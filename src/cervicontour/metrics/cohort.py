"""Evaluate a predicted cohort against its reference cohort, optionally in parallel processes.

:func:`evaluate_cohort` pairs two cohort folders (the canonical layout, or a predictions folder
of ``<patient_id>/structures/``) and scores every structure (:mod:`.evaluate`); with
``parts=True`` it also scores the parts of the compound targets (:mod:`.parts`), in rows of
their own. Above both of them: neither imports this module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from cervicontour.cohort import Case, load_cohort
from cervicontour.metrics.evaluate import ID_COLUMNS, TRAILING_COLUMNS, EvaluationSettings, evaluate_case
from cervicontour.metrics.parts import evaluate_parts, part_columns, part_notes
from cervicontour.structures import canonical_name


@dataclass
class CohortEvaluation:
    """The result of :func:`evaluate_cohort`.

    Attributes:
        rows: one dict per (patient_id, structure), in reference cohort order.
        columns: CSV column order.
        unmatched: reference patients with no prediction folder (not scored) and requested
            structures a reference patient lacks, as human-readable lines.
        warnings: distinct warning messages raised while scoring (e.g. a surface-Dice
            tolerance below the slice spacing), for the caller to show once.
        part_rows: with ``parts=True``, one dict per (patient_id, part) scored
            (:func:`cervicontour.metrics.parts.evaluate_parts`), each with its ``compound``.
        part_columns: their CSV column order (``[]`` without ``parts``).
        part_notes: the parts not scored and why, one line each with its patient count.
    """

    rows: list[dict]
    columns: list[str]
    unmatched: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    part_rows: list[dict] = field(default_factory=list)
    part_columns: list[str] = field(default_factory=list)
    part_notes: list[str] = field(default_factory=list)

    @property
    def metric_columns(self) -> list[str]:
        return [c for c in self.columns if c not in (*ID_COLUMNS, *TRAILING_COLUMNS)]


def evaluate_cohort(
    reference_dir: str | os.PathLike,
    prediction_dir: str | os.PathLike,
    *,
    structures: Sequence[str] | None = None,
    settings: EvaluationSettings = EvaluationSettings(),
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    parts: bool = False,
) -> CohortEvaluation:
    """Evaluate every labelled reference patient that has a prediction folder.

    Args:
        reference_dir: reference cohort (any layout :func:`~cervicontour.cohort.load_cohort` reads).
        prediction_dir: predictions: a cohort, or a folder of ``<patient_id>/structures/*.nii.gz``.
        structures: structure names or synonyms (default: the primary five each reference has).
        settings: tolerances, boundary model, APL tolerance.
        workers: processes to run cases in (1 = in this process).
        on_progress: called as ``(cases_done, cases_total)`` before the first case and after
            each one (e.g. to drive a progress bar).
        parts: also score the compound targets' parts both sides have (``part_rows``; see
            :mod:`cervicontour.metrics.parts` for absent and optional parts); parts named in
            ``structures`` are scored there instead.

    Returns:
        :class:`CohortEvaluation`.

    Raises:
        InputError: a folder cannot be read, or a prediction is not on its reference grid.
    """
    reference = load_cohort(reference_dir)
    prediction = load_cohort(prediction_dir)
    cases = reference.labelled()
    jobs = [(case, prediction[case.patient_id]) for case in cases if case.patient_id in prediction]
    unmatched = [
        f"patient {c.patient_id!r}: no prediction folder in {prediction.root}; not scored"
        for c in cases
        if c.patient_id not in prediction
    ]
    if structures is not None:
        wanted = [canonical_name(s) for s in structures]
        for case, _ in jobs:
            unmatched += [
                f"patient {case.patient_id!r}: no reference {n!r}; not scored" for n in wanted if not case.has(n)
            ]
    results: dict[str, tuple[list[dict], list[str], list[dict], list[str]]] = {}
    report = on_progress or (lambda done, total: None)
    report(0, len(jobs))
    if workers <= 1 or len(jobs) <= 1:
        for ref_case, pred_case in jobs:
            results[ref_case.patient_id] = _case_job(ref_case, pred_case, structures, settings, parts)
            report(len(results), len(jobs))
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = {
                pool.submit(_case_job, ref_case, pred_case, structures, settings, parts): ref_case.patient_id
                for ref_case, pred_case in jobs
            }
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                report(len(results), len(jobs))
    rows = [row for ref_case, _ in jobs for row in results[ref_case.patient_id][0]]
    messages = list(dict.fromkeys(m for ref_case, _ in jobs for m in results[ref_case.patient_id][1]))
    if not parts:
        return CohortEvaluation(rows, settings.columns, unmatched, messages)
    part_rows = [row for ref_case, _ in jobs for row in results[ref_case.patient_id][2]]
    notes = part_notes([n for ref_case, _ in jobs for n in results[ref_case.patient_id][3]])
    return CohortEvaluation(rows, settings.columns, unmatched, messages, part_rows, part_columns(settings.tolerances_mm), notes)


def _case_job(reference: Case, prediction: Case | None, structures, settings, parts: bool = False) -> tuple[list[dict], list[str], list[dict], list[str]]:
    """:func:`evaluate_case` (and the parts) with its warnings captured (workers cannot print them usefully)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = evaluate_case(reference, prediction, structures, settings)
        part_rows, notes = [], []
        if parts and prediction is not None:
            part_rows, notes = evaluate_parts(reference, prediction, settings, exclude=[r["structure"] for r in rows])
    return rows, [str(w.message) for w in caught], part_rows, notes
