"""Hand-made box phantoms for the rules and validation tests: every number derivable by hand.

Grid: 40 × 40 × 20 voxels of 3 mm (one voxel = 27 mm³ = 0.027 cc), LPS axes, origin
(-60, -60, -30) mm. Index ranges below are half-open ``[lo, hi)``.

=============  ====================  ==========  =======  ==============
structure      i (x → left)          j (y → P)   k (z)    voxels (cc)
=============  ====================  ==========  =======  ==============
Bladder        15–24                 5–12        4–11     441 (11.907)
Anorectum      16–23                 28–35       2–12     490 (13.230)
CTVp           15–24                 15–25       5–13     720 (19.440)
CTVn           3–9 and 30–36         14–26       6–16     1440 (38.880), 2 components
Parametrium    10–14 and 25–29       16–24       6–10     256 (6.912), 2 components
=============  ====================  ==========  =======  ==============

Every default rule holds: CTVn, CTVp and Anorectum are disjoint, the Bladder's centroid
(j = 8) is 69 mm anterior of the Anorectum's (j = 31), volumes lie in range.
"""

from __future__ import annotations

import numpy as np

from cervicontour.volume import Volume

SHAPE = (40, 40, 20)
SPACING = (3.0, 3.0, 3.0)
ORIGIN = (-60.0, -60.0, -30.0)
VOXEL_CC = 0.027

BOXES: dict[str, list[tuple[tuple[int, int, int], tuple[int, int, int]]]] = {
    "Bladder": [((15, 5, 4), (24, 12, 11))],
    "Anorectum": [((16, 28, 2), (23, 35, 12))],
    "CTVp": [((15, 15, 5), (24, 25, 13))],
    "CTVn": [((3, 14, 6), (9, 26, 16)), ((30, 14, 6), (36, 26, 16))],
    "Parametrium": [((10, 16, 6), (14, 24, 10)), ((25, 16, 6), (29, 24, 10))],
}
VOXELS = {"Bladder": 441, "Anorectum": 490, "CTVp": 720, "CTVn": 1440, "Parametrium": 256}


def box(*boxes, shape=SHAPE) -> np.ndarray:
    """uint8 array with ones in each ``(lo, hi)`` box."""
    out = np.zeros(shape, np.uint8)
    for lo, hi in boxes:
        out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return out


def primary_arrays() -> dict[str, np.ndarray]:
    return {name: box(*boxes) for name, boxes in BOXES.items()}


def ct_array() -> np.ndarray:
    """int16 HU: air (-1000) outside an elliptic body of soft tissue (40 HU) with a bony bar (700)."""
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    body = ((i - 19.5) / 19) ** 2 + ((j - 19.5) / 18) ** 2 <= 1
    out = np.full(SHAPE, -1000, np.int16)
    out[body] = 40
    out[18:22, 36:38, :] = 700
    return out


def as_volume(array: np.ndarray, orientation: str = "LPS") -> Volume:
    """``array`` laid out on the LPS grid above, stored as ``orientation``.

    ``"LPS"``: as is. ``"RAS"``: the same voxels at the same world positions, with axes 0 and 1
    reversed (how nibabel-canonical files are stored). ``"oblique"``: the LPS grid rotated 20°
    about the superior axis through the origin (world positions change; relations between
    structures, all rotated together, do not).
    """
    if orientation == "LPS":
        return Volume(array, SPACING, ORIGIN)
    if orientation == "RAS":
        base = Volume(array, SPACING, ORIGIN)
        corner = base.index_to_world(np.array([SHAPE[0] - 1, SHAPE[1] - 1, 0]))
        return Volume(array[::-1, ::-1, :].copy(), SPACING, tuple(corner), np.diag([-1.0, -1.0, 1.0]))
    if orientation == "oblique":
        a = np.deg2rad(20.0)
        rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        return Volume(array, SPACING, ORIGIN, rot)
    raise ValueError(orientation)


def primary_volumes(orientation: str = "LPS", **replace: np.ndarray) -> dict[str, Volume]:
    arrays = {**primary_arrays(), **replace}
    return {name: as_volume(a, orientation) for name, a in arrays.items()}
