"""Masks cropped to their bounding boxes on one shared voxel lattice.

The rules compare several structures voxel by voxel. Full-size masks are mostly zeros, so each is
cropped once to its bounding box (`CroppedMask`) and every overlap, union and centroid is computed
on the crops. Volumes passed in may already be crops of a common grid: they only need the same
spacing and direction and origins a whole number of voxels apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage

from cervicontour.boxes import bounding_box, box_slices
from cervicontour.errors import InputError
from cervicontour.structures import STRUCTURES, canonical_name
from cervicontour.volume import Volume

#: 26-connectivity (faces, edges and corners) for connected components.
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
_VOCAB_ORDER = {name: i for i, name in enumerate(STRUCTURES)}


@dataclass(frozen=True)
class Lattice:
    """The shared voxel lattice: index ``ijk`` sits at ``origin_mm + direction @ (spacing_mm * ijk)``."""

    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: np.ndarray

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    def index_to_world(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction * np.asarray(self.spacing_mm)[None, :]).T + np.asarray(self.origin_mm)


@dataclass(frozen=True, eq=False)
class CroppedMask:
    """A binary mask cropped to its bounding box.

    Attributes:
        name: canonical structure name.
        array: boolean crop, shape ``(0, 0, 0)`` when the mask is empty.
        offset: lattice index of ``array[0, 0, 0]``.
        lattice: the shared lattice.
    """

    name: str
    array: np.ndarray
    offset: tuple[int, int, int]
    lattice: Lattice

    @cached_property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.array))

    @property
    def empty(self) -> bool:
        return self.voxels == 0

    @property
    def volume_cc(self) -> float:
        return self.voxels * self.lattice.voxel_volume_cc

    @property
    def lo(self) -> np.ndarray:
        return np.asarray(self.offset)

    @property
    def hi(self) -> np.ndarray:
        """Exclusive upper lattice index of the crop."""
        return np.asarray(self.offset) + np.asarray(self.array.shape)

    @cached_property
    def centroid_index(self) -> np.ndarray:
        """Mean lattice index of the mask's voxels (NaN if empty)."""
        return centroid_index(self.array, self.offset)

    @property
    def centroid_mm(self) -> np.ndarray:
        """Centroid in LPS mm (NaN if empty)."""
        return self.lattice.index_to_world(self.centroid_index)

    def component_sizes(self) -> np.ndarray:
        """Voxel counts of the 26-connected components, largest first."""
        if self.empty:
            return np.zeros(0, dtype=np.int64)
        labels, n = ndimage.label(self.array, structure=FULL_CONNECTIVITY)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        return np.sort(sizes)[::-1]

    def components(self) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, sizes)``: label array on the crop and voxel count per label (index 0 = background)."""
        labels, n = ndimage.label(self.array, structure=FULL_CONNECTIVITY)
        return labels, np.bincount(labels.ravel(), minlength=n + 1)


def centroid_index(array: np.ndarray, offset=(0, 0, 0)) -> np.ndarray:
    """Mean index of the non-zero voxels of a 3-D array, plus ``offset`` (NaN if none)."""
    total = np.count_nonzero(array)
    if total == 0:
        return np.full(3, np.nan)
    out = np.empty(3)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(array, axis=other)
        out[axis] = float(np.dot(np.arange(counts.size), counts)) / total + offset[axis]
    return out


def crop_volume(volume: Volume) -> Volume:
    """The smallest sub-volume holding every non-zero voxel, as a boolean Volume.

    The crop keeps spacing and direction and moves the origin to the first kept voxel, so it lies
    on the same lattice as ``volume``. An all-zero volume comes back as one ``False`` voxel at the
    original origin (a :class:`Volume` cannot have a zero-length axis).
    """
    box = box_slices(volume.array)
    if box is None:
        return Volume(np.zeros((1, 1, 1), bool), volume.spacing_mm, volume.origin_mm, volume.direction)
    array = np.asarray(volume.array[box] != 0)
    origin = volume.index_to_world(np.array([s.start for s in box], dtype=float))
    return Volume(np.ascontiguousarray(array), volume.spacing_mm, tuple(origin), volume.direction)


def to_cropped_masks(structures: Mapping[str, Volume], *, tolerance_mm: float = 1e-3) -> dict[str, CroppedMask]:
    """Crop every mask (non-zero = inside) onto one lattice, in vocabulary order.

    Raises:
        InputError: spacing or direction differ, or an origin is not a whole number of voxels
            from the first mask's (beyond ``tolerance_mm``).
    """
    items = sorted(((canonical_name(n), v) for n, v in structures.items()), key=lambda nv: _VOCAB_ORDER.get(nv[0], 1 << 30))
    if not items:
        return {}
    first_name, ref = items[0]
    lattice = Lattice(ref.spacing_mm, ref.origin_mm, ref.direction)
    out: dict[str, CroppedMask] = {}
    for name, vol in items:
        if not np.allclose(vol.spacing_mm, ref.spacing_mm, atol=tolerance_mm, rtol=0) or not np.allclose(
            vol.direction, ref.direction, atol=1e-5, rtol=0
        ):
            raise InputError(
                f"mask {name!r} is not on the grid of {first_name!r}: spacing_mm {vol.spacing_mm} vs "
                f"{ref.spacing_mm}, orientation {vol.orientation} vs {ref.orientation}; resample it "
                "onto the image grid (`cervicontour clean`)"
            )
        shift = ref.world_to_index(np.asarray(vol.origin_mm))
        whole = np.round(shift)
        if np.any(np.abs((shift - whole) * np.asarray(ref.spacing_mm)) > tolerance_mm):
            raise InputError(
                f"mask {name!r} origin {vol.origin_mm} is not a whole number of voxels from "
                f"{first_name!r}'s {ref.origin_mm}; resample it onto the image grid"
            )
        box = box_slices(vol.array)
        if box is None:
            out[name] = CroppedMask(name, np.zeros((0, 0, 0), bool), tuple(int(w) for w in whole), lattice)  # type: ignore[arg-type]
            continue
        array = np.ascontiguousarray(vol.array[box] != 0)
        offset = tuple(int(w) + s.start for w, s in zip(whole, box))
        out[name] = CroppedMask(name, array, offset, lattice)  # type: ignore[arg-type]
    return out


def on_box(mask: CroppedMask, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The mask resampled onto the lattice box ``[lo, hi)`` (zeros outside the mask's crop)."""
    shape = tuple(int(h - l) for l, h in zip(lo, hi))
    out = np.zeros(shape, dtype=bool)
    if mask.empty:
        return out
    a_lo = np.maximum(lo, mask.lo)
    a_hi = np.minimum(hi, mask.hi)
    if np.any(a_hi <= a_lo):
        return out
    dst = tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(a_lo, a_hi, lo))
    src = tuple(slice(int(a - m), int(b - m)) for a, b, m in zip(a_lo, a_hi, mask.lo))
    out[dst] = mask.array[src]
    return out


def intersection(a: CroppedMask, b: CroppedMask) -> tuple[np.ndarray, np.ndarray]:
    """``(array, lo)``: voxels in both masks on the overlap of their boxes (empty array if none)."""
    lo = np.maximum(a.lo, b.lo)
    hi = np.maximum(np.minimum(a.hi, b.hi), lo)
    if a.empty or b.empty:
        return np.zeros((0, 0, 0), bool), lo
    return on_box(a, lo, hi) & on_box(b, lo, hi), lo


def union_box(masks: list[CroppedMask]) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of the smallest box holding every non-empty mask."""
    present = [m for m in masks if not m.empty]
    lo = np.min([m.lo for m in present], axis=0)
    hi = np.max([m.hi for m in present], axis=0)
    return lo, hi


def pair_name(a: str, b: str) -> str:
    """``"CTVn/CTVp"``: a pair of structures in vocabulary order."""
    first, second = sorted((a, b), key=lambda n: _VOCAB_ORDER.get(n, 1 << 30))
    return f"{first}/{second}"


def describe_location(array: np.ndarray, lo: np.ndarray, lattice: Lattice) -> tuple[str, tuple[float, float, float] | None]:
    """``("centred at (x, y, z) mm LPS, z -6.0 to -3.0 mm", where_mm)`` for the voxels of ``array``.

    World coordinates, so the text does not depend on how the masks were cropped or stored; the
    z range is that of the voxel centres (the slice positions a planning system shows).
    """
    if not np.any(array):
        return "nowhere", None
    centre = lattice.index_to_world(centroid_index(array, lo))
    box = bounding_box(array)  # inclusive (first, last) per axis
    corners = np.array([[a, b, c] for a in box[0] for b in box[1] for c in box[2]], dtype=float)
    z = lattice.index_to_world(corners + np.asarray(lo, dtype=float))[:, 2]
    span = f"z {z.min():.1f} mm" if np.isclose(z.min(), z.max()) else f"z {z.min():.1f} to {z.max():.1f} mm"
    return (
        f"centred at ({centre[0]:.1f}, {centre[1]:.1f}, {centre[2]:.1f}) mm LPS, {span}",
        tuple(float(c) for c in centre),  # type: ignore[return-value]
    )
