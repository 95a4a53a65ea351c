"""Part-level evaluation: the parts a compound target is made of (``structures/sub/``), scored
apart from the five primary structures.

CTVp = Cervix ∪ GTVp ∪ Uterus ∪ Vagina and CTVn = GTVn ∪ LN_CommonIliac ∪ LN_Pelvic ∪
LN_ParaAortic (:data:`cervicontour.structures.COMPOUND`). A part is scored when the reference and
the prediction both have it; what an absent part means follows the vocabulary:

* a compound none of whose parts the reference has (a cohort labelled with the five compound
  masks only) → none of its parts is scored;
* a compound none of whose parts the prediction has (a model that does not predict them) → not
  scored, said once per compound in the notes;
* a part the reference has and the prediction lacks → not scored, in the notes;
* an optional part (:data:`~cervicontour.structures.ABSENT_MEANS_EMPTY`: GTVp, GTVn) absent
  (no file, or an empty mask) from the reference means the patient has none: absent or empty in
  the prediction too → agreement, *not scored* (no row: Dice of two empty masks is undefined);
  predicted → a row against an empty reference (Dice 0, every predicted voxel in ``fpv_cc``),
  with a note saying so;
* any other part the reference lacks was not contoured for that patient (e.g. LN_ParaAortic when
  the clinician's CTVn stops at the common iliac nodes) → not scored.

Example:
    >>> part_columns([2.0])[:4]
    ['patient_id', 'structure', 'compound', 'dice']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cervicontour.cohort import Case
from cervicontour.metrics.evaluate import ID_COLUMNS, TRAILING_COLUMNS, metric_columns, score_structure
from cervicontour.metrics.summary import SUMMARY_COLUMNS, summarize
from cervicontour.structures import ABSENT_MEANS_EMPTY, COMPOUND, STRUCTURES

#: The note of a part row scored against an empty reference (an optional part the patient has not).
FALSE_POSITIVE_NOTE = "not in the reference (the patient has none): every predicted voxel is a false positive"
#: Columns of the per-part summary (:func:`summarize_parts`).
PART_SUMMARY_COLUMNS = ("structure", "compound", *SUMMARY_COLUMNS[1:])


def part_columns(tolerances_mm: Sequence[float]) -> list[str]:
    """Columns of a part row: the ids, ``compound``, the metrics, ``boundary`` and ``note``."""
    return [*ID_COLUMNS, "compound", *metric_columns(tolerances_mm), *TRAILING_COLUMNS]


def evaluate_parts(reference: Case, prediction: Case, settings, *, exclude: Sequence[str] = ()) -> tuple[list[dict], list[str]]:
    """Rows for the parts of one patient (see the module docstring for what is scored).

    Args:
        reference: the reference case.
        prediction: the predicted case.
        settings: :class:`~cervicontour.metrics.evaluate.EvaluationSettings`.
        exclude: parts not to score here (already scored as requested structures).

    Returns:
        ``(rows, notes)``: rows with the :func:`part_columns` keys, compounds in
        :data:`~cervicontour.structures.COMPOUND` order; notes on what was not scored, as
        ``(structure, why)`` lines for :func:`part_notes`.
    """
    rows: list[dict] = []
    notes: list[str] = []
    for compound, parts in COMPOUND.items():
        if not any(reference.has(p) for p in parts):
            continue  # the reference has the compound only
        if not any(prediction.has(p) for p in parts):
            notes.append(f"{compound} parts: the prediction has none; not scored")
            continue
        for part in parts:
            if part in exclude:
                continue
            ref_mask = reference.load_structure(part) if reference.has(part) else None
            if part in ABSENT_MEANS_EMPTY and (ref_mask is None or not np.any(ref_mask.array)):
                pred_mask = prediction.load_structure(part) if prediction.has(part) else None
                if pred_mask is None or not np.any(pred_mask.array):
                    continue  # none in either: agreement, not scored
                empty = pred_mask.with_array(np.zeros(pred_mask.shape, np.uint8))
                row = score_structure(reference.patient_id, part, empty, pred_mask, settings)
                rows.append({**row, "compound": compound, "note": FALSE_POSITIVE_NOTE})
            elif ref_mask is None:
                continue  # not contoured for this patient
            elif not prediction.has(part):
                notes.append(f"{part} ({compound}): in the reference, not in the prediction; not scored")
            else:
                row = score_structure(reference.patient_id, part, ref_mask, prediction.load_structure(part), settings)
                rows.append({**row, "compound": compound})
    return rows, notes


def part_notes(notes: Sequence[str]) -> list[str]:
    """Per-patient notes of :func:`evaluate_parts` as one line each with its patient count."""
    counts: dict[str, int] = {}
    for note in notes:
        counts[note] = counts.get(note, 0) + 1
    return [f"{note} ({n} patient{'s' if n > 1 else ''})" for note, n in counts.items()]


def summarize_parts(rows: Sequence[dict], metrics: Sequence[str], *, seed: int = 0) -> list[dict]:
    """:func:`~cervicontour.metrics.summary.summarize` of part rows, each with its compound
    (keys :data:`PART_SUMMARY_COLUMNS`)."""
    return [{**s, "compound": STRUCTURES[s["structure"]].parent} for s in summarize(rows, metrics, seed=seed)]
