"""Evaluate predicted contours against reference contours: one row per (patient, structure).

:func:`evaluate_pair` computes every metric family for one structure from a single crop and a
single surface-distance computation; :func:`evaluate_case` scores one patient and
:func:`write_csv` saves rows. Two cohort folders are paired by
:func:`cervicontour.metrics.cohort.evaluate_cohort` (which also scores parts).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cervicontour.cohort import Case
from cervicontour.errors import InputError
from cervicontour.metrics.boundary import check_boundary
from cervicontour.metrics.crop import crop_pair
from cervicontour.metrics.editing import (
    added_path_length_from_pair,
    false_negative_path_length_from_pair,
    slice_axis_of,
)
from cervicontour.metrics.moments import (
    axis_length_differences_mm,
    centroid_distance_from_moments,
    moments_from_indices,
)
from cervicontour.metrics.overlap import confusion_counts_from_pair
from cervicontour.metrics.surface import surface_distances_from_pair
from cervicontour.structures import PRIMARY, canonical_name
from cervicontour.volume import Volume

DEFAULT_TOLERANCES_MM = (1.0, 2.0, 3.0)
ID_COLUMNS = ("patient_id", "structure")
TRAILING_COLUMNS = ("boundary", "note")
MISSING_PREDICTION_NOTE = "no predicted mask: scored as an empty prediction"


def nsd_column(tolerance_mm: float) -> str:
    """Column name of the surface Dice at a tolerance, e.g. ``nsd_2mm`` or ``nsd_2.5mm``."""
    return f"nsd_{float(tolerance_mm):g}mm"


def metric_columns(tolerances_mm: Sequence[float] = DEFAULT_TOLERANCES_MM) -> list[str]:
    """The metric columns of a row, in CSV order."""
    return [
        "dice", "jaccard", "precision", "recall", "specificity", "accuracy",
        "volume_ref_cc", "volume_pred_cc", "volume_diff_cc", "relative_volume_difference", "volume_similarity",
        "hd_mm", "hd95_mm", "hd95_pooled_mm", "assd_mm", "masd_mm",
        *(nsd_column(t) for t in tolerances_mm),
        "apl_mm", "fnpl_mm", "fnv_cc", "fpv_cc",
        "centroid_distance_mm", "major_axis_diff_mm", "middle_axis_diff_mm", "minor_axis_diff_mm",
    ]  # fmt: skip


@dataclass(frozen=True)
class EvaluationSettings:
    """Every knob of an evaluation.

    Attributes:
        tolerances_mm: surface-Dice tolerances, one ``nsd_<τ>mm`` column each.
        boundary: ``"voxel6"`` or ``"surfel"`` (see :mod:`cervicontour.metrics.boundary`).
        apl_tolerance_mm: in-plane tolerance of the added path length.
    """

    tolerances_mm: tuple[float, ...] = DEFAULT_TOLERANCES_MM
    boundary: str = "voxel6"
    apl_tolerance_mm: float = 0.0

    def __post_init__(self) -> None:
        tolerances = tuple(float(t) for t in self.tolerances_mm)
        if not tolerances or not all(np.isfinite(t) and t >= 0 for t in tolerances):
            raise ValueError(f"tolerances_mm must be one or more numbers >= 0, got {self.tolerances_mm!r}")
        object.__setattr__(self, "tolerances_mm", tolerances)
        check_boundary(self.boundary)

    @property
    def columns(self) -> list[str]:
        return [*ID_COLUMNS, *metric_columns(self.tolerances_mm), *TRAILING_COLUMNS]


def evaluate_pair(
    reference: Volume,
    prediction: Volume,
    *,
    tolerances_mm: Sequence[float] = DEFAULT_TOLERANCES_MM,
    boundary: str = "voxel6",
    apl_tolerance_mm: float = 0.0,
) -> dict[str, float]:
    """Every metric of one structure: classification, overlap, volume, surface, moments, editing.

    Args:
        reference: reference mask (nonzero = inside) with its geometry.
        prediction: predicted mask on the same grid.
        tolerances_mm: surface-Dice tolerances.
        boundary: boundary model of the surface metrics.
        apl_tolerance_mm: tolerance of the added path length.

    Returns:
        ``{column: value}`` for :func:`metric_columns`; empty masks follow each family's
        documented policy (NaN for undefined, inf for distances to nothing), never an exception.

    Raises:
        InputError: the two masks are not on the same grid.

    Example:
        >>> m = np.zeros((6, 6, 6), np.uint8); m[2:4, 2:4, 2:4] = 1
        >>> row = evaluate_pair(Volume(m, (1, 1, 2.5)), Volume(m, (1, 1, 2.5)), tolerances_mm=[2.5])
        >>> row["dice"], row["hd_mm"], row["nsd_2.5mm"]
        (1.0, 0.0, 1.0)
    """
    diffs = reference.grid_differences(prediction)
    if diffs:
        raise InputError(
            f"prediction is not on the reference grid ({'; '.join(diffs)}); "
            "resample the prediction onto the reference image grid first"
        )
    pair = crop_pair(reference.array, prediction.array, reference.spacing_mm)
    counts = confusion_counts_from_pair(pair)
    distances = surface_distances_from_pair(pair, boundary=boundary)
    slice_axis = slice_axis_of(reference)
    offset = np.asarray(pair.offset)
    ref_moments = moments_from_indices(np.argwhere(pair.reference) + offset, reference)
    pred_moments = moments_from_indices(np.argwhere(pair.prediction) + offset, reference)
    axis_diffs = axis_length_differences_mm(ref_moments, pred_moments)
    row = {
        "dice": counts.dice(),
        "jaccard": counts.jaccard(),
        "precision": counts.precision(),
        "recall": counts.recall(),
        "specificity": counts.specificity(),
        "accuracy": counts.accuracy(),
        "volume_ref_cc": counts.volume_reference_cc(),
        "volume_pred_cc": counts.volume_prediction_cc(),
        "volume_diff_cc": counts.volume_difference_cc(),
        "relative_volume_difference": counts.relative_volume_difference(),
        "volume_similarity": counts.volume_similarity(),
        "hd_mm": distances.hausdorff_mm(),
        "hd95_mm": distances.hd95_mm(),
        "hd95_pooled_mm": distances.hd95_pooled_mm(),
        "assd_mm": distances.assd_mm(),
        "masd_mm": distances.masd_mm(),
    }
    for tolerance in tolerances_mm:
        row[nsd_column(tolerance)] = distances.surface_dice(tolerance)
    row.update(
        {
            "apl_mm": added_path_length_from_pair(pair, tolerance_mm=apl_tolerance_mm, slice_axis=slice_axis),
            "fnpl_mm": false_negative_path_length_from_pair(pair, slice_axis=slice_axis),
            "fnv_cc": counts.false_negative_volume_cc(),
            "fpv_cc": counts.false_positive_volume_cc(),
            "centroid_distance_mm": centroid_distance_from_moments(ref_moments, pred_moments),
            "major_axis_diff_mm": float(axis_diffs[0]),
            "middle_axis_diff_mm": float(axis_diffs[1]),
            "minor_axis_diff_mm": float(axis_diffs[2]),
        }
    )
    return {k: float(v) for k, v in row.items()}


def _structures_for(reference: Case, structures: Sequence[str] | None) -> list[str]:
    if structures is None:
        return [n for n in reference.structure_names if n in PRIMARY]
    wanted = [canonical_name(s) for s in structures]
    return [n for n in wanted if reference.has(n)]


def evaluate_case(
    reference: Case,
    prediction: Case | None,
    structures: Sequence[str] | None = None,
    settings: EvaluationSettings = EvaluationSettings(),
) -> list[dict]:
    """Rows for one patient: each requested structure the reference has, primary five first.

    A structure the prediction lacks (or a missing prediction case) is scored as an empty
    prediction and says so in the ``note`` column. Masks are read in two threads, one structure
    ahead of the one being scored (decompression releases the GIL); at most two structures'
    masks are in memory at once.
    """
    names = _structures_for(reference, structures)
    rows: list[dict] = []
    with ThreadPoolExecutor(max_workers=2) as readers:

        def read(name: str):
            has_prediction = prediction is not None and prediction.has(name)
            return (
                readers.submit(reference.load_structure, name),
                readers.submit(prediction.load_structure, name) if has_prediction else None,  # type: ignore[union-attr]
            )

        upcoming = read(names[0]) if names else None
        for index, name in enumerate(names):
            ref_future, pred_future = upcoming  # type: ignore[misc]
            ref_mask = ref_future.result()
            pred_mask = pred_future.result() if pred_future is not None else None
            upcoming = read(names[index + 1]) if index + 1 < len(names) else None
            rows.append(score_structure(reference.patient_id, name, ref_mask, pred_mask, settings))
    return rows


def score_structure(patient_id: str, name: str, ref_mask: Volume, pred_mask: Volume | None, settings) -> dict:
    """One row: :func:`evaluate_pair` of ``name``'s masks with the id, boundary and note columns
    (``pred_mask=None`` is scored as an empty prediction, :data:`MISSING_PREDICTION_NOTE`)."""
    note = ""
    if pred_mask is None:
        pred_mask, note = ref_mask.with_array(np.zeros(ref_mask.shape, np.uint8)), MISSING_PREDICTION_NOTE
    try:
        values = evaluate_pair(
            ref_mask,
            pred_mask,
            tolerances_mm=settings.tolerances_mm,
            boundary=settings.boundary,
            apl_tolerance_mm=settings.apl_tolerance_mm,
        )
    except InputError as exc:
        raise InputError(f"patient {patient_id!r}, {name}: {exc}") from None
    return {"patient_id": patient_id, "structure": name, **values, "boundary": settings.boundary, "note": note}


def format_value(value: object) -> str:
    """CSV text of a value: floats at full precision, ``nan``/``inf`` spelled out."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(rows: Sequence[Mapping[str, object]], columns: Sequence[str], path: str | os.PathLike) -> Path:
    """Write rows to CSV atomically (temporary file, then rename); parent folders are created."""
    from cervicontour.io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_value(row.get(c, "")) for c in columns])
    return path
