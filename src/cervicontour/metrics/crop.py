"""Crop a (reference, prediction) mask pair to the bounding box of their union, once.

Every metric in :mod:`cervicontour.metrics` reads a :class:`MaskPair`: two boolean arrays cut
to the union's bounding box plus a one-voxel margin. Voxels outside the field of view count as
background, so the margin is filled with zeros even where the box touches the edge of the
image: a mask touching the field-of-view edge has its boundary there (as in MONAI, medpy and
DeepMind surface-distance). Only one pass over each full-size mask is made (to find its box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cervicontour.boxes import bounding_box

MARGIN = 1


@dataclass(frozen=True, eq=False)
class MaskPair:
    """Two masks cropped to their union bounding box plus a zero margin.

    Attributes:
        reference: bool array, the reference (ground-truth) mask on the crop.
        prediction: bool array, same shape, the predicted mask on the crop.
        spacing_mm: voxel size in mm along each array axis.
        offset: index of crop voxel ``[0, 0, 0]`` in the full array (may be -1 where the
            margin lies outside the field of view).
        full_shape: shape of the full arrays (the field of view).
    """

    reference: np.ndarray
    prediction: np.ndarray
    spacing_mm: tuple[float, ...]
    offset: tuple[int, ...]
    full_shape: tuple[int, ...]

    @property
    def reference_empty(self) -> bool:
        return not self.reference.any()

    @property
    def prediction_empty(self) -> bool:
        return not self.prediction.any()

    @property
    def field_of_view_voxels(self) -> int:
        """Number of voxels in the full arrays (the field of view used for true negatives)."""
        return int(np.prod(self.full_shape, dtype=np.int64))

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0


def check_spacing(spacing_mm, ndim: int) -> tuple[float, ...]:
    """Validate a spacing: ``ndim`` finite positive numbers in mm (no default exists)."""
    try:
        spacing = tuple(float(s) for s in spacing_mm)
    except TypeError:
        raise ValueError(
            f"spacing_mm must be a sequence of {ndim} voxel sizes in mm, got {spacing_mm!r}; "
            "pass Volume.spacing_mm"
        ) from None
    if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"spacing_mm must be {ndim} positive voxel sizes in mm (one per array axis), "
            f"got {spacing_mm!r}; pass Volume.spacing_mm"
        )
    return spacing


def crop_pair(reference: np.ndarray, prediction: np.ndarray, spacing_mm) -> MaskPair:
    """Cut both masks to the bounding box of their union, plus a one-voxel zero margin.

    Args:
        reference: N-D array (nonzero = inside), e.g. ``Volume.array`` of a uint8 mask.
        prediction: array of the same shape.
        spacing_mm: voxel size in mm per array axis; required.

    Returns:
        A :class:`MaskPair`. If both masks are empty the crop is a ``(1, 1, 1)`` block of
        background (every metric then applies its documented empty-mask policy).

    Raises:
        ValueError: shapes differ or the spacing is not one positive number per axis.
    """
    reference = np.asarray(reference)
    prediction = np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(
            f"reference has shape {reference.shape} but prediction has {prediction.shape}: "
            "both masks must be on the same grid; resample the prediction onto the reference grid"
        )
    spacing = check_spacing(spacing_mm, reference.ndim)
    boxes = [b for b in (bounding_box(reference), bounding_box(prediction)) if b is not None]
    if not boxes:
        shape = (1,) * reference.ndim
        empty = np.zeros(shape, bool)
        return MaskPair(empty, empty.copy(), spacing, (0,) * reference.ndim, reference.shape)
    lo = [min(b[a][0] for b in boxes) - MARGIN for a in range(reference.ndim)]
    hi = [max(b[a][1] for b in boxes) + MARGIN + 1 for a in range(reference.ndim)]
    crop_shape = tuple(h - low for low, h in zip(lo, hi))
    src = tuple(slice(max(low, 0), min(h, n)) for low, h, n in zip(lo, hi, reference.shape))
    dst = tuple(slice(s.start - low, s.stop - low) for s, low in zip(src, lo))
    out = []
    for mask in (reference, prediction):
        crop = np.zeros(crop_shape, bool)
        part = mask[src]
        crop[dst] = part if part.dtype == bool else part != 0
        out.append(crop)
    return MaskPair(out[0], out[1], spacing, tuple(lo), reference.shape)
