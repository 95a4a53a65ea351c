"""Rasterise implicit shapes defined in a patient's anatomy frame onto a voxel grid.

The phantom's anatomy is described in an *anatomy frame* (mm, LPS axes: x → patient left,
y → posterior, z → superior, origin between the femoral heads). A :class:`Grid` maps voxel
indices to that frame through the patient's pose (scale, rotation, shift) and the scanner
geometry. Every shape is evaluated only inside its own bounding box, which keeps a 512×512×200
patient within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cervicontour.volume import Volume


@dataclass(frozen=True)
class Grid:
    """Voxel grid + the affine map from voxel index to anatomy-frame mm.

    Attributes:
        shape: voxel counts along the array axes.
        index_to_anatomy: 4×4 affine, homogeneous index → anatomy-frame mm.
        volume_template: an empty Volume carrying the scanner geometry (spacing/origin/direction).
    """

    shape: tuple[int, int, int]
    index_to_anatomy: np.ndarray
    template: Volume

    @property
    def anatomy_to_index(self) -> np.ndarray:
        return np.linalg.inv(self.index_to_anatomy)

    def bbox(self, lo_mm: np.ndarray, hi_mm: np.ndarray, margin_vox: int = 1) -> tuple[slice, ...] | None:
        """Index-space slices covering the anatomy-frame box ``[lo_mm, hi_mm]`` (None if outside)."""
        corners = np.array(np.meshgrid(*zip(lo_mm, hi_mm), indexing="ij")).reshape(3, -1).T
        idx = corners @ self.anatomy_to_index[:3, :3].T + self.anatomy_to_index[:3, 3]
        lo = np.floor(idx.min(axis=0)).astype(int) - margin_vox
        hi = np.ceil(idx.max(axis=0)).astype(int) + margin_vox + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def coords(self, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anatomy-frame x, y, z (float32, broadcast to the box's shape) of the voxels in ``box``."""
        i = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None, None]
        j = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None]
        k = np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, None, :]
        m = self.index_to_anatomy.astype(np.float32)
        return tuple(m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3))  # type: ignore[return-value]

    def z_range_mm(self) -> tuple[float, float]:
        """Anatomy-frame z covered by the grid (min, max over its corners)."""
        corners = np.array(np.meshgrid(*[(0, n - 1) for n in self.shape], indexing="ij")).reshape(3, -1).T
        z = corners @ self.index_to_anatomy[2, :3] + self.index_to_anatomy[2, 3]
        return float(z.min()), float(z.max())


class Canvas:
    """A full-grid boolean mask built from shapes, each rasterised in its bounding box."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.mask = np.zeros(grid.shape, dtype=bool)

    def add(self, shape: "Shape") -> "Canvas":
        if isinstance(shape, Tube):  # each segment in its own small box, not the tube's whole box
            return add_tube(self, shape)
        for box in self._chunks(shape):
            self.mask[box] |= shape.inside(*self.grid.coords(box))
        return self

    def cut(self, shape: "Shape") -> "Canvas":
        for box in self._chunks(shape):
            self.mask[box] &= ~shape.inside(*self.grid.coords(box))
        return self

    def _chunks(self, shape: "Shape", max_voxels: int = 4_000_000):
        """The shape's bounding box, split along axis 2 so temporaries stay small."""
        box = self.grid.bbox(*shape.bounds())
        if box is None:
            return
        plane = (box[0].stop - box[0].start) * (box[1].stop - box[1].start)
        step = max(1, max_voxels // max(plane, 1))
        for k in range(box[2].start, box[2].stop, step):
            yield box[0], box[1], slice(k, min(k + step, box[2].stop))


class Shape:
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def inside(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def rotation(rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx (angles in degrees about the anatomy axes)."""
    a, b, c = np.deg2rad([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class Ellipsoid(Shape):
    """Solid ellipsoid; ``rot`` turns its local axes into the anatomy frame."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rot: np.ndarray | None = None

    def bounds(self):
        r = max(self.radii) if self.rot is not None else np.asarray(self.radii)
        c = np.asarray(self.center)
        return c - r, c + r

    def inside(self, x, y, z):
        dx, dy, dz = x - self.center[0], y - self.center[1], z - self.center[2]
        if self.rot is not None:
            r = self.rot.astype(np.float32)
            dx, dy, dz = (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
                          r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
                          r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)
        a, b, c = self.radii
        return (dx / a) ** 2 + (dy / b) ** 2 + (dz / c) ** 2 <= 1.0


@dataclass(frozen=True)
class Box(Shape):
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def bounds(self):
        return np.asarray(self.lo, float), np.asarray(self.hi, float)

    def inside(self, x, y, z):
        return ((x >= self.lo[0]) & (x <= self.hi[0]) & (y >= self.lo[1]) & (y <= self.hi[1])
                & (z >= self.lo[2]) & (z <= self.hi[2]))


def smooth_path(points: np.ndarray, samples_per_segment: int = 8) -> np.ndarray:
    """Catmull-Rom curve through control points ``(n, d)`` (d columns are interpolated too)."""
    p = np.asarray(points, dtype=float)
    if len(p) < 3:
        return p
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    t = np.linspace(0, 1, samples_per_segment, endpoint=False)[:, None]
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    out.append(p[-1:])
    return np.vstack(out)


@dataclass(frozen=True)
class Tube(Shape):
    """Tube along a polyline; rows of ``path`` are ``(x, y, z, rx, ry)`` in mm.

    ``rx``/``ry`` are the cross-section radii along the anatomy x and y axes (equal for round
    vessels, different for flattened organs such as the vagina or the sacrum).
    """

    path: np.ndarray

    def bounds(self):
        p = np.asarray(self.path)
        r = p[:, 3:5].max()
        return p[:, :3].min(axis=0) - r, p[:, :3].max(axis=0) + r

    def segments(self):
        p = np.asarray(self.path, dtype=np.float32)
        for a, b in zip(p[:-1], p[1:]):
            yield a, b


def _segment_inside(a, b, x, y, z):
    d = b[:3] - a[:3]
    length2 = float(d @ d) or 1e-6
    t = ((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    rx = a[3] + t * (b[3] - a[3])
    ry = a[4] + t * (b[4] - a[4])
    rz = 0.5 * (rx + ry)
    return (((x - a[0] - t * d[0]) / rx) ** 2 + ((y - a[1] - t * d[1]) / ry) ** 2
            + ((z - a[2] - t * d[2]) / rz) ** 2) <= 1.0


def add_tube(canvas: Canvas, tube: Tube) -> Canvas:
    """Rasterise a tube segment by segment, each in its own bounding box."""
    for a, b in tube.segments():
        r = float(max(a[3], a[4], b[3], b[4]))
        lo = np.minimum(a[:3], b[:3]) - r
        hi = np.maximum(a[:3], b[:3]) + r
        box = canvas.grid.bbox(lo, hi)
        if box is not None:
            canvas.mask[box] |= _segment_inside(a, b, *canvas.grid.coords(box))
    return canvas


def paint(grid: Grid, *shapes: Shape) -> np.ndarray:
    """Union of shapes as a full-grid boolean mask."""
    canvas = Canvas(grid)
    for shape in shapes:
        canvas.add(shape)
    return canvas.mask
