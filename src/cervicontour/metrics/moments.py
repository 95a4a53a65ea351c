"""Moment-based metrics: centroid distance and principal-axis lengths, in world millimetres.

Moments are taken over voxel centres mapped to patient (LPS) coordinates with each volume's
own geometry, so a reference and a prediction on different grids (another origin, a flipped
or oblique axis, another spacing) are compared where they really are.

Empty masks: a mask without voxels has no centroid and no axes, so the centroid distance and
the axis-length differences are NaN when either mask is empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cervicontour.metrics.crop import bounding_box
from cervicontour.volume import Volume


@dataclass(frozen=True)
class Moments:
    """First and second moments of a mask in world coordinates.

    Attributes:
        n_voxels: number of voxels inside.
        centroid_mm: ``(3,)`` LPS position of the mean voxel centre (NaN if empty).
        covariance_mm2: ``(3, 3)`` population covariance of the voxel centres (NaN if empty).
    """

    n_voxels: int
    centroid_mm: np.ndarray
    covariance_mm2: np.ndarray

    def principal_axis_lengths_mm(self) -> np.ndarray:
        """Axis lengths ``2·√(5·λ)`` of the solid ellipsoid with these second moments, longest first.

        ``λ`` are the covariance eigenvalues (a solid ellipsoid with semi-axis ``a`` has variance
        ``a²/5`` along it). ``(3,)`` NaN if empty.
        """
        if self.n_voxels == 0:
            return np.full(3, np.nan)
        eigenvalues = np.clip(np.linalg.eigvalsh(self.covariance_mm2), 0.0, None)
        return np.sort(2.0 * np.sqrt(5.0 * eigenvalues))[::-1]


def moments_from_indices(indices: np.ndarray, volume: Volume) -> Moments:
    """Moments of voxel indices ``(n, 3)`` (full-grid index order) of ``volume``'s grid."""
    n = len(indices)
    if n == 0:
        return Moments(0, np.full(3, np.nan), np.full((3, 3), np.nan))
    ijk = indices.astype(np.float64)
    mean_ijk = ijk.mean(axis=0)
    centred = ijk - mean_ijk
    cov_ijk = centred.T @ centred / n
    linear = volume.direction * np.asarray(volume.spacing_mm)[None, :]
    return Moments(n, volume.index_to_world(mean_ijk), linear @ cov_ijk @ linear.T)


def moments(mask: Volume) -> Moments:
    """First and second moments of a mask volume (nonzero = inside) in LPS mm.

    Example:
        >>> m = np.zeros((5, 5, 5), np.uint8); m[1:4, 2, 2] = 1
        >>> moments(Volume(m, (2.0, 1.0, 1.0))).centroid_mm
        array([4., 2., 2.])
    """
    box = bounding_box(mask.array)
    if box is None:
        return moments_from_indices(np.zeros((0, 3), int), mask)
    region = tuple(slice(lo, hi + 1) for lo, hi in box)
    indices = np.argwhere(mask.array[region] != 0) + np.array([lo for lo, _ in box])
    return moments_from_indices(indices, mask)


def centroid_distance_mm(reference: Volume, prediction: Volume) -> float:
    """Distance in mm between the centroids of two masks, in world coordinates.

    The grids may differ. NaN if either mask is empty.

    Example:
        >>> a = np.zeros((6, 6, 6), np.uint8); a[1:3, 1:3, 1:3] = 1
        >>> centroid_distance_mm(Volume(a, (1, 1, 2.5)), Volume(np.roll(a, 2, axis=2), (1, 1, 2.5)))
        5.0
    """
    return centroid_distance_from_moments(moments(reference), moments(prediction))


def centroid_distance_from_moments(reference: Moments, prediction: Moments) -> float:
    if reference.n_voxels == 0 or prediction.n_voxels == 0:
        return math.nan
    return float(np.linalg.norm(prediction.centroid_mm - reference.centroid_mm))


def axis_length_differences_mm(reference: Moments, prediction: Moments) -> np.ndarray:
    """Predicted minus reference principal-axis lengths (major, middle, minor), mm; NaN if either is empty."""
    return prediction.principal_axis_lengths_mm() - reference.principal_axis_lengths_mm()
