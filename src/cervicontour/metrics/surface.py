"""Surface distances: computed once per structure pair, every surface metric derived from them.

:func:`surface_distances` crops both masks to their union box, extracts each boundary once
(:mod:`~cervicontour.metrics.boundary`), and finds for every boundary point of one mask the
distance in mm to the nearest boundary point of the other (:mod:`~cervicontour.metrics.nearest`:
a shell search over the nearest grid offsets, then a KD-tree; distances are evaluated from
integer voxel offsets exactly as SciPy's Euclidean distance transform does). The returned
:class:`SurfaceDistances` derives HD, HD95, pooled HD95, ASSD, MASD and surface Dice.

Empty masks (a policy, the same for every surface metric):

* both masks empty: every distance metric and the surface Dice are NaN (nothing to measure);
* exactly one empty: HD, HD95, pooled HD95, ASSD and MASD are ``inf`` (no surface to reach)
  and the surface Dice is 0.0 (no boundary element lies within any tolerance).

Percentiles follow the boundary model: ``voxel6`` uses NumPy's default linear interpolation
over boundary voxels (as MONAI, MetricsReloaded and medpy); ``surfel`` uses the area-weighted
rule of DeepMind surface-distance (the smallest distance whose cumulative area fraction
reaches the percentile).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from cervicontour.metrics.boundary import check_boundary, surfel_boundary, voxel6_boundary
from cervicontour.metrics.crop import MaskPair, crop_pair
from cervicontour.metrics.nearest import nearest_distances_mm


class ToleranceBelowSpacingWarning(UserWarning):
    """A surface-Dice tolerance smaller than the slice spacing (it can only credit in-plane agreement)."""


@dataclass(frozen=True, eq=False)
class SurfaceDistances:
    """Nearest-boundary distances between a reference and a predicted mask, both ways.

    Attributes:
        boundary: ``"voxel6"`` or ``"surfel"`` (see :mod:`cervicontour.metrics.boundary`).
        spacing_mm: voxel size per array axis.
        reference_to_prediction_mm: float64 ``(n_ref,)``: for each reference boundary element,
            the distance to the nearest predicted boundary element (``inf`` if the prediction
            is empty).
        prediction_to_reference_mm: float64 ``(n_pred,)``, the other way round.
        reference_weights: ``(n_ref,)`` weight of each reference element: 1.0 for ``voxel6``,
            surfel area in mm² for ``surfel``.
        prediction_weights: ``(n_pred,)``, likewise.
    """

    boundary: str
    spacing_mm: tuple[float, ...]
    reference_to_prediction_mm: np.ndarray
    prediction_to_reference_mm: np.ndarray
    reference_weights: np.ndarray
    prediction_weights: np.ndarray

    @property
    def reference_empty(self) -> bool:
        return self.reference_to_prediction_mm.size == 0

    @property
    def prediction_empty(self) -> bool:
        return self.prediction_to_reference_mm.size == 0

    def _empty_value(self) -> float | None:
        """NaN if both masks are empty, inf if one is, None if neither."""
        if self.reference_empty and self.prediction_empty:
            return math.nan
        if self.reference_empty or self.prediction_empty:
            return math.inf
        return None

    # ------------------------------------------------------------------ metrics
    def hausdorff_mm(self) -> float:
        """Hausdorff distance: the largest nearest-boundary distance, either way (mm).

        Both masks empty → NaN; one empty → inf.
        """
        empty = self._empty_value()
        if empty is not None:
            return empty
        return float(max(self.reference_to_prediction_mm.max(), self.prediction_to_reference_mm.max()))

    def hd95_mm(self, percentile: float = 95.0) -> float:
        """HD95: the larger of the two *directed* 95th-percentile distances (mm).

        This is the MONAI / DeepMind / MetricsReloaded definition. Both empty → NaN; one empty → inf.
        """
        empty = self._empty_value()
        if empty is not None:
            return empty
        return max(
            self._percentile(self.reference_to_prediction_mm, self.reference_weights, percentile),
            self._percentile(self.prediction_to_reference_mm, self.prediction_weights, percentile),
        )

    def hd95_pooled_mm(self, percentile: float = 95.0) -> float:
        """Pooled HD95: the 95th percentile of both directions' distances pooled together (mm).

        This is medpy's ``hd95``; it is never larger than :meth:`hd95_mm`. Both empty → NaN;
        one empty → inf.
        """
        empty = self._empty_value()
        if empty is not None:
            return empty
        return self._percentile(*self._pooled(), percentile)

    def assd_mm(self) -> float:
        """Average symmetric surface distance: the mean of the pooled distances (mm).

        Weighted by surfel area for ``surfel``. Both empty → NaN; one empty → inf.
        """
        empty = self._empty_value()
        if empty is not None:
            return empty
        distances, weights = self._pooled()
        return float(np.sum(distances * weights) / np.sum(weights))

    def masd_mm(self) -> float:
        """Mean average surface distance: the mean of the two directed mean distances (mm).

        (medpy calls this ``assd``.) Both empty → NaN; one empty → inf.
        """
        empty = self._empty_value()
        if empty is not None:
            return empty
        directed = [
            np.sum(d * w) / np.sum(w)
            for d, w in (
                (self.reference_to_prediction_mm, self.reference_weights),
                (self.prediction_to_reference_mm, self.prediction_weights),
            )
        ]
        return float((directed[0] + directed[1]) / 2.0)

    def surface_dice(self, tolerance_mm: float) -> float:
        """Surface Dice (normalised surface distance, NSD) at ``tolerance_mm``.

        The fraction of both boundaries (by count for ``voxel6``, by area for ``surfel``) that
        lies within ``tolerance_mm`` of the other boundary (distance ≤ tolerance). Warns with
        :class:`ToleranceBelowSpacingWarning` when the tolerance is below the largest spacing.
        Both empty → NaN; one empty → 0.0.

        Example:
            >>> m = np.zeros((5, 5, 5), bool); m[1:4, 1:4, 1:4] = True
            >>> surface_distances(m, m, (1.0, 1.0, 1.0)).surface_dice(1.0)
            1.0
        """
        tolerance_mm = float(tolerance_mm)
        if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
            raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
        warn_tolerance(tolerance_mm, self.spacing_mm)
        if self.reference_empty and self.prediction_empty:
            return math.nan
        if self.reference_empty or self.prediction_empty:
            return 0.0
        correct = np.sum(self.reference_weights[self.reference_to_prediction_mm <= tolerance_mm]) + np.sum(
            self.prediction_weights[self.prediction_to_reference_mm <= tolerance_mm]
        )
        total = np.sum(self.reference_weights) + np.sum(self.prediction_weights)
        return float(correct / total)

    # ------------------------------------------------------------------ helpers
    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([self.reference_to_prediction_mm, self.prediction_to_reference_mm]),
            np.concatenate([self.reference_weights, self.prediction_weights]),
        )

    def _percentile(self, distances: np.ndarray, weights: np.ndarray, percentile: float) -> float:
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be within [0, 100], got {percentile!r}")
        if self.boundary == "voxel6":
            return float(np.percentile(distances, percentile))
        order = np.lexsort((weights, distances))
        distances, weights = distances[order], weights[order]
        cumulative = np.cumsum(weights) / np.sum(weights)
        index = int(np.searchsorted(cumulative, percentile / 100.0))
        return float(distances[min(index, distances.size - 1)])


def warn_tolerance(tolerance_mm: float, spacing_mm) -> None:
    """Warn when a surface-Dice tolerance is below the slice (largest) spacing."""
    slice_mm = max(spacing_mm)
    if tolerance_mm < slice_mm:
        warnings.warn(
            f"surface Dice tolerance {tolerance_mm:g} mm is below the slice spacing {slice_mm:g} mm: "
            "it can only credit agreement within a slice; consider a tolerance >= the slice spacing",
            ToleranceBelowSpacingWarning,
            stacklevel=3,
        )


def surface_distances(reference, prediction, spacing_mm, *, boundary: str = "voxel6") -> SurfaceDistances:
    """Nearest-boundary distances between two 3-D masks, both ways (the one expensive call).

    Args:
        reference: 3-D array, nonzero = inside (e.g. ``Volume.array``); never modified.
        prediction: 3-D array of the same shape.
        spacing_mm: voxel size in mm per array axis (required; e.g. ``Volume.spacing_mm``).
        boundary: ``"voxel6"`` (MONAI/medpy/MetricsReloaded) or ``"surfel"`` (DeepMind).

    Returns:
        :class:`SurfaceDistances`; see the module docstring for the empty-mask policy.

    Example:
        >>> a = np.zeros((8, 8, 8), bool); a[2:5, 2:5, 2:5] = True
        >>> b = np.roll(a, 2, axis=2)
        >>> surface_distances(a, b, (1.0, 1.0, 2.5)).hausdorff_mm()
        5.0
    """
    return surface_distances_from_pair(crop_pair(reference, prediction, spacing_mm), boundary=boundary)


def surface_distances_from_pair(pair: MaskPair, *, boundary: str = "voxel6") -> SurfaceDistances:
    """:func:`surface_distances` on an already cropped :class:`MaskPair`."""
    check_boundary(boundary)
    if pair.reference.ndim != 3:
        raise ValueError(f"surface distances need 3-D masks, got {pair.reference.ndim}-D")
    if boundary == "voxel6":
        ref_map, pred_map = voxel6_boundary(pair.reference), voxel6_boundary(pair.prediction)
        ref_points, pred_points = np.argwhere(ref_map), np.argwhere(pred_map)
        ref_weights, pred_weights = np.ones(len(ref_points)), np.ones(len(pred_points))
    else:
        ref_map, ref_points, ref_weights = surfel_boundary(pair.reference, pair.spacing_mm)
        pred_map, pred_points, pred_weights = surfel_boundary(pair.prediction, pair.spacing_mm)
    return SurfaceDistances(
        boundary,
        pair.spacing_mm,
        nearest_distances_mm(ref_points, pred_points, pair.spacing_mm, target_map=pred_map),
        nearest_distances_mm(pred_points, ref_points, pair.spacing_mm, target_map=ref_map),
        ref_weights,
        pred_weights,
    )
