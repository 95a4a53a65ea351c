"""A mask against its image's grid: how far apart they are, and when moving it is lossless.

A mask can be on the image's voxel lattice without being on its grid: stored in another
orientation (RAS vs LPS), cropped to a bounding box, or with an origin that differs only in the
last float digits. Then nearest-neighbour resampling onto the image grid is an exact re-indexing
(a signed axis permutation plus a whole-voxel offset) that keeps every voxel value.
:func:`lattice_map` finds that re-indexing when it exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from cervicontour.rules.findings import Finding, Severity
from cervicontour.validate.options import ValidateOptions
from cervicontour.volume import Volume


@dataclass(frozen=True)
class LatticeMap:
    """Image index → mask index: ``mask[axes[a]] = sign[a] * image[a] + offset[a]``.

    Attributes:
        axes: the mask axis that runs along each image axis.
        signs: +1 or -1 per image axis.
        offsets: whole-voxel offsets per image axis.
        residual_mm: the largest distance, over the image grid's corners, between an image voxel
            centre and the mask voxel centre it is given.
    """

    axes: tuple[int, int, int]
    signs: tuple[int, int, int]
    offsets: tuple[int, int, int]
    residual_mm: float

    @property
    def identity(self) -> bool:
        return self.axes == (0, 1, 2) and self.signs == (1, 1, 1) and self.offsets == (0, 0, 0)

    def apply(self, mask_array: np.ndarray, image_shape: tuple[int, int, int]) -> tuple[np.ndarray, int]:
        """``(array on the image grid, non-zero voxels that fell outside it)``.

        The input is never modified; the output is a new array (zeros where the mask has none).
        """
        arr = np.transpose(mask_array, self.axes)
        shifts = []
        for a in range(3):
            n_mask = arr.shape[a]
            if self.signs[a] < 0:
                arr = np.flip(arr, axis=a)
                shifts.append(n_mask - 1 - self.offsets[a])  # flipped index = image index + shift
            else:
                shifts.append(self.offsets[a])
        out = np.zeros(image_shape, dtype=mask_array.dtype)
        dst, src = [], []
        for a in range(3):
            lo = max(0, -shifts[a])
            hi = min(image_shape[a], arr.shape[a] - shifts[a])
            if hi <= lo:
                return out, int(np.count_nonzero(mask_array))
            dst.append(slice(lo, hi))
            src.append(slice(lo + shifts[a], hi + shifts[a]))
        window = arr[tuple(src)]
        out[tuple(dst)] = window
        return out, int(np.count_nonzero(mask_array)) - int(np.count_nonzero(window))


def lattice_map(image: Volume, mask: Volume, *, tolerance_mm: float) -> LatticeMap | None:
    """The exact re-indexing of ``mask`` onto ``image``'s grid, or ``None`` if there is none.

    There is one when the spacings match (per corresponding axis), the directions match up to
    axis order and sign, and the origins are a whole number of voxels apart — each within
    ``tolerance_mm`` at every corner of the image grid.

    Example:
        >>> a = Volume(np.zeros((4, 5, 6)), (1, 1, 2))
        >>> lattice_map(a, Volume(np.zeros((4, 5, 6)), (1, 1, 2), (0.001, 0, 0)), tolerance_mm=0.01).identity
        True
    """
    transform = np.linalg.inv(mask.affine_lps) @ image.affine_lps  # image index -> mask index
    rot, shift = transform[:3, :3], transform[:3, 3]
    perm = np.rint(rot)
    if not (np.all(np.abs(perm).sum(axis=0) == 1) and np.all(np.abs(perm).sum(axis=1) == 1)):
        return None
    offsets = np.rint(shift)
    hi = np.asarray(image.shape) - 1
    corners = np.array(list(product(*[(0, h) for h in hi])), dtype=float)
    mapped = corners @ perm.T + offsets
    residual = float(np.max(np.linalg.norm(image.index_to_world(corners) - mask.index_to_world(mapped), axis=1)))
    if residual > tolerance_mm:
        return None
    axes = tuple(int(np.flatnonzero(perm[:, a])[0]) for a in range(3))
    signs = tuple(int(perm[axes[a], a]) for a in range(3))
    return LatticeMap(axes, signs, tuple(int(offsets[axes[a]]) for a in range(3)), residual)  # type: ignore[arg-type]


def same_index_distance_mm(a: Volume, b: Volume) -> float | None:
    """Largest distance between the centres of the same voxel index on two grids (None if shapes differ)."""
    if a.shape != b.shape:
        return None
    hi = np.asarray(a.shape) - 1
    corners = np.array(list(product(*[(0, h) for h in hi])), dtype=float)
    return float(np.max(np.linalg.norm(a.index_to_world(corners) - b.index_to_world(corners), axis=1)))


def mask_on_image_grid(
    image: Volume, mask: Volume, inside: np.ndarray, pid, name, file, findings: list[Finding], options: ValidateOptions
) -> np.ndarray | None:
    """``inside`` on the image grid, with a ``grid.mismatch`` finding if the mask's grid differs.

    Returns:
        The mask on the image grid when that is exact (same grid within ``grid_tolerance_mm``, or
        a lossless re-indexing within ``snap_tolerance_mm``: see :mod:`cervicontour.validate.grid`);
        ``None`` when the mask cannot be used with its image.
    """
    diffs = image.grid_differences(mask, tolerance_mm=options.grid_tolerance_mm)
    if not diffs:
        return inside
    mapping = lattice_map(image, mask, tolerance_mm=options.snap_tolerance_mm)
    lost = mapping.apply(inside, image.shape)[1] if mapping is not None else 0
    if mapping is not None and lost == 0:
        moved = mapping.residual_mm
        how = "the same voxels" if mapping.identity else "the same voxels stored in another order or crop"
        hint = (
            f"{how}, every voxel centre within {moved:.4f} mm of the image's: `cervicontour clean` "
            "puts the mask on the image grid"
        )
    else:
        moved = same_index_distance_mm(image, mask)
        hint = "re-export the mask on its image's grid from the planning system"
        if mapping is not None:
            hint += f" ({lost} of its voxels lie outside the image)"
        elif moved is not None:
            hint += f" (`cervicontour clean` does not move masks by {moved:.3g} mm)"
    findings.append(
        Finding(
            "grid.mismatch", pid, name, Severity.ERROR,
            f"the image grid: shape {image.shape}, spacing_mm {_fmt(image.spacing_mm)}, origin_mm "
            f"{_fmt(image.origin_mm)}, orientation {image.orientation} (tolerance {options.grid_tolerance_mm:g} mm)",
            "; ".join(diffs) + (f"; voxel centres up to {moved:.4g} mm apart" if moved is not None else ""),
            hint,
            value=moved,
            unit="mm",
            where_mm=tuple(mask.index_to_world((np.asarray(mask.shape) - 1) / 2)),
            file=file,
        )
    )
    if mapping is None or lost:
        return None
    return mapping.apply(inside, image.shape)[0]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
