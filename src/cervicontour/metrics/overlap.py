"""Classification, overlap and volume metrics: everything derived from the confusion counts.

The field of view for true negatives is the full array (the image grid the masks are on), so
accuracy and specificity grow with the scan extent: report them with that caveat (Mackay et al.
2023 advise against them for small structures).

Empty masks: every ratio whose denominator is zero is NaN ("undefined"), never 0 or 1 and
never an exception. So, with a reference ``R`` and a prediction ``P``:

* both empty: Dice, Jaccard, precision, recall, F-beta, relative volume difference and volume
  similarity are NaN; volumes and the volume difference are 0.0; accuracy and specificity are
  1.0 (every voxel of the field of view is a true negative);
* ``P`` empty, ``R`` not: Dice = Jaccard = recall = F-beta = 0.0, precision NaN, relative volume
  difference -1.0, volume similarity 0.0;
* ``R`` empty, ``P`` not: Dice = Jaccard = precision = F-beta = 0.0, recall NaN, relative volume
  difference +inf, volume similarity 0.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cervicontour.metrics.crop import MaskPair, crop_pair


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN for 0/0, ±inf for x/0."""
    if denominator == 0:
        return math.nan if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / denominator


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of a (reference, prediction) pair over the field of view.

    Attributes:
        tp: voxels inside both masks.
        fp: inside the prediction only.
        fn: inside the reference only.
        tn: inside neither, over the full array (the field of view).
        voxel_volume_cc: volume of one voxel in cc (1 cc = 1000 mm³).

    Example:
        >>> r = np.zeros((4, 4, 4), bool); r[:2] = True
        >>> p = np.zeros((4, 4, 4), bool); p[1:3] = True
        >>> c = confusion_counts(r, p, (1.0, 1.0, 1.0))
        >>> c.tp, c.fp, c.fn, c.tn, c.dice()
        (16, 16, 16, 16, 0.5)
    """

    tp: int
    fp: int
    fn: int
    tn: int
    voxel_volume_cc: float

    @property
    def n_voxels(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    # -------------------------------------------------------------- classification
    def accuracy(self) -> float:
        """(TP + TN) / all voxels of the field of view."""
        return _ratio(self.tp + self.tn, self.n_voxels)

    def precision(self) -> float:
        """TP / (TP + FP), the positive predictive value. NaN if the prediction is empty."""
        return _ratio(self.tp, self.tp + self.fp)

    def recall(self) -> float:
        """TP / (TP + FN), the sensitivity. NaN if the reference is empty."""
        return _ratio(self.tp, self.tp + self.fn)

    sensitivity = recall

    def specificity(self) -> float:
        """TN / (TN + FP) over the field of view. NaN only if the reference fills the field of view."""
        return _ratio(self.tn, self.tn + self.fp)

    def f_beta(self, beta: float = 1.0) -> float:
        """(1 + β²)·TP / ((1 + β²)·TP + β²·FN + FP); β > 1 weighs recall more. NaN if both empty."""
        b2 = float(beta) ** 2
        return _ratio((1 + b2) * self.tp, (1 + b2) * self.tp + b2 * self.fn + self.fp)

    # -------------------------------------------------------------- overlap
    def dice(self) -> float:
        """2·TP / (2·TP + FP + FN). NaN if both masks are empty."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def jaccard(self) -> float:
        """TP / (TP + FP + FN), intersection over union. NaN if both masks are empty."""
        return _ratio(self.tp, self.tp + self.fp + self.fn)

    # -------------------------------------------------------------- volume
    def volume_reference_cc(self) -> float:
        return (self.tp + self.fn) * self.voxel_volume_cc

    def volume_prediction_cc(self) -> float:
        return (self.tp + self.fp) * self.voxel_volume_cc

    def volume_difference_cc(self) -> float:
        """Predicted minus reference volume (signed, cc)."""
        return (self.fp - self.fn) * self.voxel_volume_cc

    def relative_volume_difference(self) -> float:
        """(V_pred − V_ref) / V_ref, signed (−0.1 = prediction 10 % too small). NaN if both empty."""
        return _ratio(self.fp - self.fn, self.tp + self.fn)

    def volume_similarity(self) -> float:
        """1 − |V_pred − V_ref| / (V_pred + V_ref), in [0, 1]. NaN if both empty."""
        total = 2 * self.tp + self.fp + self.fn
        if total == 0:
            return math.nan
        return 1.0 - abs(self.fp - self.fn) / total

    def false_negative_volume_cc(self) -> float:
        """Reference volume the prediction misses (cc): what an editor must add."""
        return self.fn * self.voxel_volume_cc

    def false_positive_volume_cc(self) -> float:
        """Predicted volume outside the reference (cc): what an editor must remove."""
        return self.fp * self.voxel_volume_cc


def confusion_counts(reference, prediction, spacing_mm) -> ConfusionCounts:
    """Confusion counts of two masks on the same grid.

    Args:
        reference: N-D array, nonzero = inside; never modified.
        prediction: array of the same shape.
        spacing_mm: voxel size in mm per axis (required: it sets the voxel volume).

    Returns:
        :class:`ConfusionCounts` with TN counted over the full array.
    """
    return confusion_counts_from_pair(crop_pair(reference, prediction, spacing_mm))


def confusion_counts_from_pair(pair: MaskPair) -> ConfusionCounts:
    """:func:`confusion_counts` on an already cropped :class:`MaskPair`."""
    n_ref = int(np.count_nonzero(pair.reference))
    n_pred = int(np.count_nonzero(pair.prediction))
    tp = int(np.count_nonzero(pair.reference & pair.prediction))
    fp, fn = n_pred - tp, n_ref - tp
    return ConfusionCounts(tp, fp, fn, pair.field_of_view_voxels - tp - fp - fn, pair.voxel_volume_cc)


def dice(reference, prediction) -> float:
    """Dice similarity coefficient 2|R∩P| / (|R| + |P|). NaN if both masks are empty.

    Example:
        >>> a = np.zeros((3, 3, 3), bool); a[0] = True
        >>> dice(a, a)
        1.0
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    return confusion_counts(reference, prediction, (1.0,) * reference.ndim).dice()


def jaccard(reference, prediction) -> float:
    """Jaccard index |R∩P| / |R∪P|. NaN if both masks are empty."""
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    return confusion_counts(reference, prediction, (1.0,) * reference.ndim).jaccard()
