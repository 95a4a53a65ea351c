"""Evaluation metrics for auto-contours: exact, fast, with every unstated choice stated.

Families (Mackay et al. 2023, Clin Oncol 35:354):

* classification and overlap — :mod:`~cervicontour.metrics.overlap` (Dice, Jaccard, precision,
  recall, specificity, accuracy, F-beta; TN over the full field of view);
* volume — also from the confusion counts (reference/predicted volume, difference,
  relative difference, volume similarity);
* surface — :mod:`~cervicontour.metrics.surface` (HD, HD95, pooled HD95, ASSD, MASD, surface
  Dice), boundary model ``voxel6`` or ``surfel`` (:mod:`~cervicontour.metrics.boundary`);
* moment — :mod:`~cervicontour.metrics.moments` (centroid distance, principal-axis lengths);
* estimated editing — :mod:`~cervicontour.metrics.editing` (APL, FNPL, FNV, FPV).

Each function takes ``reference, prediction, spacing_mm`` (spacing required, no default) and
documents what it returns for empty masks. Masks are cropped to their union bounding box once
(:mod:`~cervicontour.metrics.crop`). No torch here.

Example:
    >>> import numpy as np
    >>> from cervicontour.metrics import surface_distances
    >>> a = np.zeros((8, 8, 8), bool); a[2:5, 2:5, 2:5] = True
    >>> d = surface_distances(a, np.roll(a, 1, axis=0), (2.5, 0.98, 0.98))
    >>> d.hausdorff_mm(), d.surface_dice(2.5)
    (2.5, 1.0)
"""

from cervicontour.metrics.boundary import BOUNDARY_MODELS, surfel_area_table
from cervicontour.metrics.crop import MaskPair, bounding_box, crop_pair
from cervicontour.metrics.editing import (
    added_path_length_mm,
    false_negative_path_length_mm,
    slice_axis_of,
)
from cervicontour.metrics.cohort import CohortEvaluation, evaluate_cohort
from cervicontour.metrics.evaluate import (
    DEFAULT_TOLERANCES_MM,
    EvaluationSettings,
    evaluate_case,
    evaluate_pair,
    metric_columns,
    nsd_column,
    write_csv,
)
from cervicontour.metrics.moments import Moments, centroid_distance_mm, moments
from cervicontour.metrics.overlap import ConfusionCounts, confusion_counts, dice, jaccard
from cervicontour.metrics.summary import SUMMARY_COLUMNS, bootstrap_ci, describe, summarize
from cervicontour.metrics.surface import (
    SurfaceDistances,
    ToleranceBelowSpacingWarning,
    surface_distances,
)

__all__ = [
    "BOUNDARY_MODELS",
    "DEFAULT_TOLERANCES_MM",
    "SUMMARY_COLUMNS",
    "CohortEvaluation",
    "ConfusionCounts",
    "EvaluationSettings",
    "MaskPair",
    "Moments",
    "SurfaceDistances",
    "ToleranceBelowSpacingWarning",
    "added_path_length_mm",
    "bootstrap_ci",
    "bounding_box",
    "centroid_distance_mm",
    "confusion_counts",
    "crop_pair",
    "describe",
    "dice",
    "evaluate_case",
    "evaluate_cohort",
    "evaluate_pair",
    "false_negative_path_length_mm",
    "jaccard",
    "metric_columns",
    "moments",
    "nsd_column",
    "slice_axis_of",
    "summarize",
    "surface_distances",
    "surfel_area_table",
    "write_csv",
]
