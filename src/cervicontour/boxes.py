"""The bounding box of a mask, one helper for every package (metrics, rules, validate, synth).

:func:`bounding_box` gives the inclusive ``(first, last)`` index per axis; :func:`box_slices`
gives the same box as slices, optionally grown by a margin and clipped to the array. Below every
package that crops: it imports numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Inclusive ``(first, last)`` index of the nonzero voxels along each axis.

    Args:
        mask: N-D array; nonzero means inside. Read in its memory order, 8 bytes at a time
            for bool/uint8 masks, so a 512×512×200 mask costs a few milliseconds.

    Returns:
        One ``(first, last)`` pair per axis, or ``None`` if the mask is empty.

    Example:
        >>> m = np.zeros((4, 5, 6), bool); m[1, 2:4, 5] = True
        >>> bounding_box(m)
        ((1, 1), (2, 3), (5, 5))
    """
    mask = np.asarray(mask)
    if mask.ndim == 0 or mask.size == 0:
        return None
    if mask.dtype.itemsize != 1 or mask.dtype.kind == "f":
        mask = mask != 0
    # Walk the array in memory order: outermost axis = largest stride.
    order = tuple(int(a) for a in np.argsort([-abs(s) for s in mask.strides], kind="stable"))
    view = mask.transpose(order)
    if not view.flags.c_contiguous:
        view = np.ascontiguousarray(view)
    rows = view.reshape(view.shape[0], -1).view(np.uint8)
    outer = _any_rows(rows)
    hits = np.flatnonzero(outer)
    if hits.size == 0:
        return None
    first0, last0 = int(hits[0]), int(hits[-1])
    slab = rows[first0 : last0 + 1]
    if slab.shape[1] % 8 == 0:
        plane = np.bitwise_or.reduce(slab.view(np.uint64), axis=0).view(np.uint8)
    else:
        plane = np.bitwise_or.reduce(slab, axis=0)
    plane = plane.reshape(view.shape[1:]) != 0
    box_view = [(first0, last0)]
    for axis in range(plane.ndim):
        other = tuple(a for a in range(plane.ndim) if a != axis)
        idx = np.flatnonzero(plane.any(axis=other) if other else plane)
        box_view.append((int(idx[0]), int(idx[-1])))
    box = [None] * mask.ndim
    for view_axis, array_axis in enumerate(order):
        box[array_axis] = box_view[view_axis]
    return tuple(box)  # type: ignore[return-value]


def _any_rows(rows: np.ndarray) -> np.ndarray:
    if rows.shape[1] % 8 == 0:
        return np.bitwise_or.reduce(rows.view(np.uint64), axis=1) != 0
    return rows.any(axis=1)


def box_slices(mask: np.ndarray, margin_vox: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """The box of ``mask``'s nonzero voxels as slices (stop exclusive), grown by ``margin_vox``
    voxels on each side (one number, or one per axis) and clipped to the array; ``None`` if empty.

    Example:
        >>> m = np.zeros((4, 5, 6), bool); m[1, 2:4, 5] = True
        >>> box_slices(m), box_slices(m, (1, 0, 2))
        ((slice(1, 2, None), slice(2, 4, None), slice(5, 6, None)), (slice(0, 3, None), slice(2, 4, None), slice(3, 6, None)))
    """
    box = bounding_box(mask)
    if box is None:
        return None
    margins = np.broadcast_to(np.asarray(margin_vox, dtype=int), (len(box),))
    return tuple(slice(max(first - int(m), 0), min(last + 1 + int(m), n)) for (first, last), m, n in zip(box, margins, np.shape(mask)))
