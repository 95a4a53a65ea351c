"""`Volume`: a voxel array that carries its geometry everywhere it goes.

Conventions (one for the whole package, the one ITK and DICOM use):

* ``array`` is indexed ``[i, j, k]`` = ITK index order (x, y, z): axis 0 runs along the
  first column of ``direction``. This is *not* the ``[z, y, x]`` order that
  ``SimpleITK.GetArrayFromImage`` returns; :mod:`cervicontour.io` converts.
* ``spacing_mm[a]`` is the voxel size along array axis ``a``.
* ``origin_mm`` is the world position of voxel ``[0, 0, 0]``'s centre, in patient LPS
  coordinates (x → patient left, y → posterior, z → superior), as in DICOM and ITK.
* ``direction`` is a 3×3 matrix whose *columns* are the unit vectors of the array axes in LPS.

So the world position of index ``ijk`` is ``origin_mm + direction @ (spacing_mm * ijk)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Letters for the direction an axis *points to* (nibabel's aff2axcodes convention, in LPS):
_POSITIVE = "LPS"
_NEGATIVE = "RAI"


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code of the directions the array axes point to, e.g. ``"LPS"``.

    Args:
        direction: 3×3 direction cosines (columns = axes, LPS world).

    Returns:
        e.g. ``"LPS"`` for an identity direction, ``"RAS"`` for the NIfTI/nibabel default
        ``diag(-1, -1, 1)``. Oblique axes are named by their dominant world component.

    Example:
        >>> orientation_code(np.diag([-1.0, -1.0, 1.0]))
        'RAS'
    """
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    code = []
    for axis in range(3):
        col = direction[:, axis]
        world = int(np.argmax(np.abs(col)))
        code.append(_POSITIVE[world] if col[world] > 0 else _NEGATIVE[world])
    return "".join(code)


def is_oblique(direction: np.ndarray, *, tolerance: float = 1e-6) -> bool:
    """True when any array axis is not parallel to a world axis."""
    d = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    return bool(np.any((d > tolerance) & (d < 1 - tolerance)))


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D voxel array with its physical geometry.

    Attributes:
        array: 3-D array indexed ``[i, j, k]`` (ITK index order). Never modified in place by
            this package: functions return new volumes.
        spacing_mm: voxel size in mm along each array axis, all > 0.
        origin_mm: LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
        direction: 3×3 orthonormal direction cosines, columns = array axes in LPS.

    Example:
        >>> v = Volume(np.zeros((4, 5, 6), np.int16), (0.98, 0.98, 2.5))
        >>> v.shape, v.orientation
        ((4, 5, 6), 'LPS')
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(
                f"a Volume needs a 3-D array, got shape {array.shape} ({array.ndim}-D); "
                "split 4-D series into 3-D volumes first"
            )
        spacing = tuple(float(s) for s in self.spacing_mm)
        origin = tuple(float(o) for o in self.origin_mm)
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3).copy()
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing_mm must be three positive numbers, got {self.spacing_mm!r}")
        if len(origin) != 3 or not all(np.isfinite(o) for o in origin):
            raise ValueError(f"origin_mm must be three finite numbers, got {self.origin_mm!r}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError(
                f"direction must be orthonormal (columns = axis unit vectors), got\n{direction}"
            )
        direction.setflags(write=False)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", origin)
        object.__setattr__(self, "direction", direction)

    # ----------------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def orientation(self) -> str:
        """Directions the array axes point to, e.g. ``"LPS"`` or ``"RAS"``."""
        return orientation_code(self.direction)

    @property
    def affine_lps(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous index ``(i, j, k, 1)`` to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing_mm)[None, :]
        affine[:3, 3] = self.origin_mm
        return affine

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cubic centimetres (1 cc = 1000 mm³)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Field-of-view length along each array axis (voxel count × spacing)."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing_mm))  # type: ignore[return-value]

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` to LPS mm ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction * np.asarray(self.spacing_mm)[None, :]).T + np.asarray(
            self.origin_mm
        )

    def world_to_index(self, xyz_mm: np.ndarray) -> np.ndarray:
        """Map LPS mm ``(..., 3)`` to continuous voxel indices ``(..., 3)``."""
        xyz = np.asarray(xyz_mm, dtype=float) - np.asarray(self.origin_mm)
        return (xyz @ self.direction) / np.asarray(self.spacing_mm)

    def same_grid(self, other: "Volume", *, tolerance_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape, spacing, origin and direction.

        Spacing and origin are compared within ``tolerance_mm``; direction within 1e-5.
        """
        return not self.grid_differences(other, tolerance_mm=tolerance_mm)

    def grid_differences(self, other: "Volume", *, tolerance_mm: float = 1e-3) -> list[str]:
        """Human-readable list of how ``other``'s grid differs from this one (empty if same)."""
        diffs = []
        if self.shape != other.shape:
            diffs.append(f"shape {other.shape} != {self.shape}")
        if not np.allclose(self.spacing_mm, other.spacing_mm, atol=tolerance_mm, rtol=0):
            diffs.append(f"spacing_mm {_fmt(other.spacing_mm)} != {_fmt(self.spacing_mm)}")
        if not np.allclose(self.origin_mm, other.origin_mm, atol=tolerance_mm, rtol=0):
            diffs.append(f"origin_mm {_fmt(other.origin_mm)} != {_fmt(self.origin_mm)}")
        if not np.allclose(self.direction, other.direction, atol=1e-5, rtol=0):
            diffs.append(f"direction {other.orientation} != {self.orientation}")
        return diffs

    def with_array(self, array: np.ndarray, **metadata: Any) -> "Volume":
        """A new Volume on the same grid holding ``array`` (shape must match)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.shape}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction, {**metadata})

    def __repr__(self) -> str:
        oblique = ", oblique" if is_oblique(self.direction) else ""
        return (
            f"Volume(shape={self.shape}, spacing_mm={_fmt(self.spacing_mm)}, "
            f"origin_mm={_fmt(self.origin_mm)}, orientation={self.orientation}{oblique}, "
            f"dtype={self.array.dtype})"
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def lps_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """How to re-index an array so its axes point L, P, S: ``(order, flips)``.

    ``order[w]`` is the array axis closest to world axis ``w``; after ``np.transpose(a, order)``,
    the axes in ``flips`` run the wrong way and are flipped. The one place this mapping is derived
    (:func:`to_lps`, :func:`array_to_lps`, :func:`array_from_lps` use it).

    Raises:
        ValueError: two world axes share one array axis (a grid more than 45° oblique).
    """
    direction = np.asarray(direction, dtype=float)
    order = tuple(int(np.argmax(np.abs(direction[w, :]))) for w in range(3))
    if sorted(order) != [0, 1, 2]:
        raise ValueError(f"cannot map {orientation_code(direction)} onto LPS by permutation")
    flips = tuple(w for w in range(3) if direction[w, order[w]] < 0)
    return order, flips  # type: ignore[return-value]


def array_to_lps(array: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``array`` (on a grid with ``direction``) indexed [L, P, S]: a view, transposes and flips only."""
    order, flips = lps_axes(direction)
    out = np.transpose(array, order)
    return np.flip(out, axis=flips) if flips else out


def array_from_lps(array_lps: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Inverse of :func:`array_to_lps`: an [L, P, S] array back in the grid's own index order."""
    order, flips = lps_axes(direction)
    out = np.flip(array_lps, axis=flips) if flips else array_lps
    return np.transpose(out, np.argsort(order))


def to_lps(volume: Volume, *, copy: bool = True) -> Volume:
    """The same voxels re-indexed so the array axes point L, P, S (direction ≈ identity).

    Only axis permutations and flips are applied (no resampling), so oblique volumes keep
    their small residual rotation. Use it for display and for code that needs "axis 0 runs
    to the patient's left"; the world position of every voxel is unchanged. ``copy=False``:
    the array is a view of ``volume``'s (read it, crop it; a contiguous copy of a flipped
    full-size CT costs ~0.9 s on this CPU).
    """
    order, flips = lps_axes(volume.direction)
    new_dir = volume.direction[:, list(order)].copy()
    spacing = tuple(volume.spacing_mm[a] for a in order)
    corner = np.zeros(3)
    for w in flips:
        corner[order[w]] = volume.shape[order[w]] - 1
        new_dir[:, w] = -new_dir[:, w]
    origin = volume.index_to_world(corner)
    array = array_to_lps(volume.array, volume.direction)
    return Volume(np.ascontiguousarray(array) if copy else array, spacing, tuple(origin), new_dir, dict(volume.metadata))


def image_sha256(image: Volume) -> str:
    """Hash of the voxel values and the geometry (the same CT as NIfTI or DICOM hashes alike)."""
    h = hashlib.sha256()
    h.update(memoryview(np.ascontiguousarray(image.array)).cast("B"))  # C order, as every earlier record: UIDs stay stable
    h.update(json.dumps([str(image.array.dtype), image.shape, [round(v, 5) for v in image.spacing_mm], [round(v, 4) for v in image.origin_mm], np.round(image.direction, 6).tolist()]).encode())
    return h.hexdigest()
