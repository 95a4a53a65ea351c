"""Planar contours from binary slices and back, in voxel index coordinates (pure NumPy).

Writing (:func:`trace_slice`): every contour runs along voxel *edges* — the outline of the
pixels, with vertices on pixel corners (half-integer indices). So

* the polygon area equals the pixel area exactly (a planning system that computes volumes from
  contours gets the mask's volume, not a shrunken one as with contours through pixel centres);
* no pixel centre ever lies on a contour, so rasterising by "centre inside" (:func:`fill_slice`)
  gives back exactly the pixels that were traced, for any shape;
* outer boundaries run counter-clockwise in the ``(i, j)`` plane and holes clockwise; every
  hole and every island is its own closed contour, and the even-odd rule (the convention of
  Eclipse, RayStation, Monaco, plastimatch) recovers holes on import. Two pixels that touch
  only at a corner belong to separate contours touching at that vertex (4-connected outlines).

Reading (:func:`fill_slice`): the even-odd rule over *all* contours of one ROI on one slice: a
pixel is inside when a ray from its centre crosses the contours an odd number of times. Nested
contours are therefore holes, and holes inside holes islands again.
"""

from __future__ import annotations

import numpy as np

#: Edge directions in the (i, j) plane: +i, +j, -i, -j. A left turn is ``(d + 1) % 4``.
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def trace_slice(mask: np.ndarray) -> list[np.ndarray]:
    """Outline a 2-D binary mask as closed polygons along the pixel edges.

    Args:
        mask: 2-D array indexed ``[i, j]``; non-zero pixels are inside. Not modified.

    Returns:
        One ``(n, 2)`` float array per closed contour, vertices in index coordinates (the
        pixel ``[i, j]`` is the square ``[i - 0.5, i + 0.5] × [j - 0.5, j + 0.5]``); collinear
        vertices are dropped and the first vertex is not repeated at the end. Outer contours are
        counter-clockwise (positive signed area), holes clockwise. An empty mask gives ``[]``.

    Example:
        >>> square = np.zeros((4, 4), bool); square[1:3, 1:3] = True
        >>> trace_slice(square)[0].tolist()
        [[0.5, 0.5], [2.5, 0.5], [2.5, 2.5], [0.5, 2.5]]
    """
    inside = np.pad(np.asarray(mask) != 0, 1)  # a background ring: every outline closes
    if not inside.any():
        return []
    ni, nj = inside.shape
    starts, directions = [], []
    # (neighbour offset, edge start corner relative to the pixel's lower corner, direction)
    for (di, dj), (ci, cj), d in (((0, -1), (0, 0), 0), ((1, 0), (1, 0), 1),
                                  ((0, 1), (1, 1), 2), ((-1, 0), (0, 1), 3)):
        neighbour = np.roll(inside, (-di, -dj), axis=(0, 1))
        i, j = np.nonzero(inside & ~neighbour)
        starts.append(np.column_stack([i + ci, j + cj]))
        directions.append(np.full(i.size, d))
    start = np.concatenate(starts)
    direction = np.concatenate(directions)
    end = start + _STEPS[direction]
    ncols = nj + 1
    start_id = start[:, 0] * ncols + start[:, 1]
    end_id = end[:, 0] * ncols + end[:, 1]

    # Outgoing edges per corner: one, or two at a saddle (diagonal pixels).
    order = np.argsort(start_id, kind="stable")
    sorted_ids = start_id[order]
    first = np.searchsorted(sorted_ids, end_id, side="left")
    count = np.searchsorted(sorted_ids, end_id, side="right") - first
    candidate_a = order[first]
    candidate_b = order[np.minimum(first + 1, order.size - 1)]
    left_turn = (direction + 1) % 4
    take_b = (count == 2) & (direction[candidate_b] == left_turn)
    following = np.where(take_b, candidate_b, candidate_a)

    contours = []
    visited = np.zeros(start.shape[0], bool)
    for seed in range(start.shape[0]):
        if visited[seed]:
            continue
        loop = []
        edge = seed
        while not visited[edge]:
            visited[edge] = True
            loop.append(edge)
            edge = following[edge]
        loop = np.asarray(loop)
        turn = direction[loop] != direction[np.roll(loop, 1)]  # keep corners where it turns
        vertices = start[loop[turn]].astype(float) - 1.5  # undo the padding; corners at ±0.5
        contours.append(vertices)
    return contours


def signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of a closed polygon ``(n, 2)``: positive when counter-clockwise."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def fill_slice(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise closed polygons with the even-odd rule, testing pixel centres.

    Args:
        polygons: ``(n, 2)`` vertex arrays in index coordinates ``(i, j)`` (pixel centres at
            integers), closed implicitly; any winding, any number (holes and islands of one ROI
            on one slice together). Polygons with fewer than 3 vertices add nothing.
        shape: ``(ni, nj)`` of the slice. Parts outside the slice are clipped.

    Returns:
        Boolean ``(ni, nj)`` array: ``True`` where a centre lies inside an odd number of
        polygons. A centre exactly on an edge counts as inside for left/bottom edges and outside
        for right/top ones (half-open rule, so two polygons sharing an edge never both claim it).

    Example:
        >>> fill_slice([np.array([[0.5, 0.5], [2.5, 0.5], [2.5, 2.5], [0.5, 2.5]])], (4, 4)).astype(int).tolist()
        [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    ni, nj = shape
    toggles = np.zeros((ni + 1, nj), np.int32)
    for polygon in polygons:
        polygon = np.asarray(polygon, float)
        if polygon.shape[0] < 3:
            continue
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        low, high = np.minimum(y0, y1), np.maximum(y0, y1)
        # Rows j with low <= j < high (half-open: a vertex on a row is counted once).
        first = np.maximum(np.ceil(low), 0).astype(np.int64)
        last = np.minimum(np.ceil(high) - 1, nj - 1).astype(np.int64)
        rows = np.maximum(last - first + 1, 0)
        if not rows.any():
            continue
        edge = np.repeat(np.arange(x0.size), rows)
        j = first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(rows) - rows, rows))
        t = (j - y0[edge]) / (y1[edge] - y0[edge])
        x = x0[edge] + t * (x1[edge] - x0[edge])
        # The centre (i, j) is inside when an odd number of crossings lie at x < i.
        column = np.clip(np.floor(x).astype(np.int64) + 1, 0, ni)
        np.add.at(toggles, (column, j), 1)
    return (np.cumsum(toggles, axis=0)[:ni] % 2).astype(bool)


def format_ds(value: float) -> str:
    """A DICOM Decimal String of at most 16 bytes, as precise as fits (at most 6 decimals).

    Trailing zeros are dropped (``12.5`` not ``12.500000``) and ``-0`` is written ``0``.
    Raises ``ValueError`` for non-finite values or magnitudes too large for 16 characters.

    Example:
        >>> format_ds(-123.456789012), format_ds(2.0), format_ds(-1e-9)
        ('-123.456789', '2', '0')
    """
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"a decimal string needs a finite number, got {value}")
    for decimals in range(6, -1, -1):
        text = f"{value:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text in ("-0", ""):
            text = "0"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} does not fit a 16-byte DICOM decimal string")
