"""Exact nearest-boundary distances between two point sets on one voxel grid.

Most boundary points of a reasonable prediction lie on, or a few voxels from, the reference
boundary. So the search first tries grid offsets in increasing order of physical distance (a
point whose first hit is offset *k* has exactly that distance: every closer offset was tried
first) and hands the points still unresolved to a KD-tree: after the first ``SHELL_MIN_OFFSETS``
offsets, it stops as soon as a block of ``SHELL_BLOCK`` offsets resolves too few points to beat
a KD-tree query (far-apart masks go to the tree almost at once). Distances are
evaluated from integer offsets as ``sqrt((Δ0·s0)² + (Δ1·s1)² + (Δ2·s2)²)``, the expression
SciPy's Euclidean distance transform uses, so results match EDT-based libraries bit for bit
(up to ties between equally near points).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.spatial import cKDTree

#: The shell search tries at most this many of the nearest grid offsets ...
SHELL_OFFSETS = 1024
#: ... at least this many, then goes on in blocks of ``SHELL_BLOCK`` offsets while each block
#: resolves at least ``SHELL_MIN_RESOLVED`` of the points still open (one KD-tree query costs
#: about as much as a hundred offset look-ups).
SHELL_MIN_OFFSETS = 64
SHELL_BLOCK = 32
SHELL_MIN_RESOLVED = 0.2


def _length_mm(offsets: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    scaled = offsets.astype(np.float64) * spacing
    squared = scaled[:, 0] * scaled[:, 0]
    for axis in range(1, scaled.shape[1]):
        squared += scaled[:, axis] * scaled[:, axis]
    return np.sqrt(squared)


@functools.lru_cache(maxsize=32)
def _shell(spacing: tuple[float, ...], count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At least ``count`` grid offsets, all of those up to the count-th distance, nearest first.

    Returns ``(offsets (n, d) int, distances_mm (n,), reach (d,) int)``.
    """
    sp = np.asarray(spacing, float)
    radius = float(sp.max())
    while True:
        reach = np.floor(radius / sp).astype(int)
        axes = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
        offsets = np.stack([a.ravel() for a in axes], axis=1)
        lengths = _length_mm(offsets, sp)
        inside = lengths <= radius
        if inside.sum() >= count:
            break
        radius *= 1.5
    offsets, lengths = offsets[inside], lengths[inside]
    order = np.argsort(lengths, kind="stable")
    offsets, lengths = offsets[order], lengths[order]
    keep = lengths <= lengths[count - 1]
    return offsets[keep], lengths[keep], reach


def nearest_distances_mm(
    points: np.ndarray,
    targets: np.ndarray,
    spacing_mm,
    *,
    target_map: np.ndarray | None = None,
) -> np.ndarray:
    """Distance in mm from each point to the nearest target point.

    Args:
        points: int ``(n, d)`` grid indices.
        targets: int ``(m, d)`` grid indices on the same grid.
        spacing_mm: ``d`` voxel sizes in mm.
        target_map: optional bool array of the grid, True at the targets; enables the fast
            shell search before the KD-tree.

    Returns:
        float64 ``(n,)``; all ``inf`` when there are no targets, empty when there are no points.

    Example:
        >>> nearest_distances_mm(np.array([[0, 0, 0]]), np.array([[0, 0, 2]]), (1.0, 1.0, 2.5))
        array([5.])
    """
    points = np.asarray(points)
    targets = np.asarray(targets)
    spacing = np.asarray(spacing_mm, float)
    if len(points) == 0:
        return np.zeros(0)
    if len(targets) == 0:
        return np.full(len(points), np.inf)
    out = np.empty(len(points))
    todo = np.arange(len(points))
    if target_map is not None and points.shape[1] == target_map.ndim:
        todo = _shell_search(points, target_map, spacing, out)
    if todo.size:
        tree = cKDTree(targets * spacing, leafsize=32, balanced_tree=False, compact_nodes=False)
        _, nearest = tree.query(points[todo] * spacing, k=1)
        out[todo] = _length_mm(targets[nearest] - points[todo], spacing)
    return out


def _shell_search(points: np.ndarray, target_map: np.ndarray, spacing: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Resolve points whose nearest target is among the shell offsets; return the rest's indices."""
    offsets, lengths, reach = _shell(tuple(float(s) for s in spacing), SHELL_OFFSETS)
    padded = np.pad(target_map, [(int(r), int(r)) for r in reach]).ravel()
    padded_shape = np.asarray(target_map.shape) + 2 * reach
    strides = np.array([int(np.prod(padded_shape[a + 1 :])) for a in range(len(padded_shape))])
    base = (points + reach) @ strides
    todo = np.arange(len(points))
    open_at_block_start = todo.size
    for index, (step, length) in enumerate(zip(offsets @ strides, lengths)):
        if index >= SHELL_MIN_OFFSETS and index % SHELL_BLOCK == 0:
            if todo.size > (1.0 - SHELL_MIN_RESOLVED) * open_at_block_start:
                break  # this shell resolves too little: the KD-tree is cheaper now
            open_at_block_start = todo.size
        hit = padded[base + step]
        if hit.any():
            out[todo[hit]] = length
            miss = ~hit
            todo, base = todo[miss], base[miss]
            if todo.size == 0:
                break
    return todo
