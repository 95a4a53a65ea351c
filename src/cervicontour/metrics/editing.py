"""Estimated editing effort: added path length, false-negative path length and volumes.

Clinicians edit contours slice by slice, so these metrics work on the 2-D contours of each
slice along ``slice_axis`` (axial slices: array axis 2 for an axial CT in ITK index order; use
:func:`slice_axis_of` for a :class:`~cervicontour.volume.Volume`).

* The contour of a slice is the set of mask pixels with at least one of their four in-plane
  neighbours outside the mask or outside the field of view (a 40×40 square has 156).
* Each contour pixel stands for one pixel length of path: the in-plane pixel size, or the
  geometric mean ``√(s_u·s_v)`` when in-plane pixels are not square.
* **Added path length** (APL, Vaassen et al. 2020, phiRO 13:1): the length of reference contour
  farther than ``tolerance_mm`` (Euclidean, in-plane) from the predicted contour of the same
  slice: the path an editor must draw.
* **False-negative path length** (FNPL): the length of reference contour lying outside the
  predicted mask.
* **False-negative / false-positive volume** (cc): reference volume missed / predicted volume
  outside the reference (see :class:`~cervicontour.metrics.overlap.ConfusionCounts`).

Empty masks: all four are well defined and finite. An empty prediction gives APL = FNPL = the
whole reference contour length and FNV = the reference volume; an empty reference gives
APL = FNPL = FNV = 0 and FPV = the predicted volume; both empty give 0.
"""

from __future__ import annotations

import math

import numpy as np

from cervicontour.metrics.crop import MaskPair, crop_pair
from cervicontour.metrics.nearest import nearest_distances_mm
from cervicontour.volume import Volume


def slice_axis_of(volume: Volume) -> int:
    """The array axis that runs most nearly head–foot (superior–inferior): the slice axis."""
    return int(np.argmax(np.abs(np.asarray(volume.direction)[2, :])))


def slice_contours(mask: np.ndarray, slice_axis: int) -> np.ndarray:
    """Per-slice 4-connected contour of a padded 3-D mask, with the slice axis moved last.

    Args:
        mask: bool array whose outermost layer is background (a :class:`MaskPair` crop).
        slice_axis: the axis along which slices are stacked.

    Returns:
        bool array of shape ``(n_u, n_v, n_slices)``: True on contour pixels.
    """
    m = np.moveaxis(mask, slice_axis, 2)
    inner = m[1:-1, 1:-1, :]
    interior = inner & m[:-2, 1:-1, :] & m[2:, 1:-1, :] & m[1:-1, :-2, :] & m[1:-1, 2:, :]
    contour = np.zeros(m.shape, bool)
    contour[1:-1, 1:-1, :] = inner & ~interior
    return contour


def _check_axis(slice_axis: int, ndim: int) -> int:
    if ndim != 3 or not -3 <= slice_axis < 3:
        raise ValueError(f"editing metrics need 3-D masks and a slice axis in 0..2, got {ndim}-D and {slice_axis}")
    return slice_axis % 3


def _pixel_mm(pair: MaskPair, slice_axis: int) -> tuple[float, float]:
    u, v = (pair.spacing_mm[a] for a in range(3) if a != slice_axis)
    return u, v


def added_path_length_from_pair(pair: MaskPair, *, tolerance_mm: float = 0.0, slice_axis: int = 2) -> float:
    """:func:`added_path_length_mm` on an already cropped :class:`MaskPair`."""
    slice_axis = _check_axis(slice_axis, pair.reference.ndim)
    tolerance_mm = float(tolerance_mm)
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
    su, sv = _pixel_mm(pair, slice_axis)
    ref_contour = slice_contours(pair.reference, slice_axis)
    pred_contour = slice_contours(pair.prediction, slice_axis)
    if tolerance_mm == 0.0:
        added = int(np.count_nonzero(ref_contour & ~pred_contour))
    else:
        # Slices are set farther apart than the tolerance so no match can cross slices.
        spacing = (su, sv, 2.0 * tolerance_mm + su + sv)
        distances = nearest_distances_mm(
            np.argwhere(ref_contour), np.argwhere(pred_contour), spacing, target_map=pred_contour
        )
        added = int(np.count_nonzero(distances > tolerance_mm))
    return added * math.sqrt(su * sv)


def added_path_length_mm(reference, prediction, spacing_mm, *, tolerance_mm: float = 0.0, slice_axis: int = 2) -> float:
    """Added path length: reference contour length (mm) not within ``tolerance_mm`` of the predicted contour.

    Args:
        reference: 3-D array, nonzero = inside; never modified.
        prediction: 3-D array, same shape.
        spacing_mm: voxel size in mm per array axis (required).
        tolerance_mm: in-plane Euclidean distance up to which a reference contour pixel counts
            as already drawn (0 = only exact pixel matches).
        slice_axis: the axis slices are stacked along (2 = axial for ITK-ordered axial CT).

    Returns:
        APL in mm (0.0 if the reference is empty; the whole contour if the prediction is).

    Example:
        >>> r = np.zeros((44, 44, 8), bool); r[2:42, 2:42, 1:5] = True
        >>> round(added_path_length_mm(r, np.roll(r, 2, axis=2), (0.98, 0.98, 2.5)), 2)
        305.76
    """
    return added_path_length_from_pair(
        crop_pair(reference, prediction, spacing_mm), tolerance_mm=tolerance_mm, slice_axis=slice_axis
    )


def false_negative_path_length_from_pair(pair: MaskPair, *, slice_axis: int = 2) -> float:
    """:func:`false_negative_path_length_mm` on an already cropped :class:`MaskPair`."""
    slice_axis = _check_axis(slice_axis, pair.reference.ndim)
    su, sv = _pixel_mm(pair, slice_axis)
    ref_contour = slice_contours(pair.reference, slice_axis)
    outside = ~np.moveaxis(pair.prediction, slice_axis, 2)
    return int(np.count_nonzero(ref_contour & outside)) * math.sqrt(su * sv)


def false_negative_path_length_mm(reference, prediction, spacing_mm, *, slice_axis: int = 2) -> float:
    """False-negative path length: reference contour length (mm) lying outside the predicted mask.

    Args and empty-mask behaviour as :func:`added_path_length_mm`.
    """
    return false_negative_path_length_from_pair(crop_pair(reference, prediction, spacing_mm), slice_axis=slice_axis)
