"""Clinical target volumes built the clinical way from the phantom's anatomy.

* CTVn: pelvic vessels + 7 mm margin (Taylor et al. 2005, IJROBP 63:1604; a style may choose
  another) minus bone, muscle, bowel, kidney, CTVp and Anorectum (it may overlap the Bladder), split by the nearest vessel
  group into ``LN_ParaAortic`` (aorta/IVC, only when the patient's CTVn includes them),
  ``LN_CommonIliac`` and ``LN_Pelvic`` (external + internal iliac, down to the femoral-head roof),
  plus ``GTVn`` when a pathological node exists.
* CTVp = Cervix ∪ GTVp ∪ Uterus ∪ Vagina (upper part), exactly; how much of the vagina is the
  upper part is the anatomy's, or a style's share of its length (:func:`split_vagina`).
* Parametrium: tissue lateral to the cervix and upper vagina out to the pelvic side wall.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cervicontour.boxes import box_slices
from cervicontour.synth.raster import Box, Canvas, Ellipsoid, Grid

MARGIN_MM = 7.0
GROUPS = {
    "LN_ParaAortic": ("A_Aorta", "V_Venacava_I"),
    "LN_CommonIliac": ("A_Iliac_Cm_L", "A_Iliac_Cm_R", "V_Iliac_Cm_L", "V_Iliac_Cm_R"),
    "LN_Pelvic": tuple(f"{v}_Iliac_{k}_{s}" for v in "AV" for k in ("Ext", "Int") for s in "LR"),
}


def nodal_ctv(
    grid: Grid,
    spacing_mm: tuple[float, float, float],
    masks: dict[str, np.ndarray],
    exclude: np.ndarray,
    *,
    para_aortic: bool,
    pelvic_floor_z_mm: float,
    para_aortic_top_z_mm: float,
    gtvn: np.ndarray | None,
    margin_mm: float = MARGIN_MM,
) -> dict[str, np.ndarray]:
    """LN sub-structures and GTVn as full-grid boolean masks (CTVn is their union); ``margin_mm``
    is the vessel margin."""
    group_id = np.zeros(grid.shape, np.uint8)
    for gid, names in enumerate(GROUPS.values(), start=1):
        for name in names:
            if name in masks:
                group_id[masks[name]] = gid
    margin_vox = tuple(int(np.ceil(margin_mm / s)) + 1 for s in spacing_mm)
    box = box_slices(group_id > 0, margin_vox)
    out: dict[str, np.ndarray] = {}
    if box is not None:
        sub = group_id[box]
        dist, (ii, jj, kk) = ndimage.distance_transform_edt(sub == 0, sampling=spacing_mm, return_indices=True)
        nearest = sub[ii, jj, kk]
        ctv = (dist <= margin_mm) & ~exclude[box]
        z = grid.coords(box)[2]
        for gid, name in enumerate(GROUPS, start=1):
            part = ctv & (nearest == gid)
            if name == "LN_ParaAortic":
                if not para_aortic:
                    continue
                part &= z <= para_aortic_top_z_mm
            if name == "LN_Pelvic":
                part &= z >= pelvic_floor_z_mm
            full = np.zeros(grid.shape, bool)
            full[box] = _largest_components(part, keep=4 if name == "LN_Pelvic" else 2)
            out[name] = full
    if gtvn is not None:
        node = gtvn & ~exclude
        if node.any():
            out["GTVn"] = node
    return out


def _largest_components(mask: np.ndarray, keep: int) -> np.ndarray:
    """Drop specks the exclusions leave behind: keep the ``keep`` largest components."""
    labels, n = ndimage.label(mask)
    if n <= keep:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.argsort(sizes)[::-1][:keep] + 1
    return np.isin(labels, kept)


def parametrium(
    grid: Grid,
    cervix: np.ndarray,
    upper_vagina: np.ndarray,
    exclude: np.ndarray,
    *,
    side_wall_mm: float,
) -> np.ndarray:
    """Tissue lateral to cervix and upper vagina, out to ``side_wall_mm`` from the midline."""
    core = cervix | upper_vagina
    box = box_slices(core, (0, 0, 0))
    if box is None:
        return np.zeros(grid.shape, bool)
    _, y, z = grid.coords(box)
    inside = core[box]
    z_lo, z_hi = float(z[inside].min()), float(z[inside].max())
    yc = float(y[inside].mean())
    zc, half_z = 0.5 * (z_lo + z_hi), 0.5 * (z_hi - z_lo) + 6.0
    # Lateral wings: from the cervix's side to the side wall; anteriorly the bladder wall,
    # posteriorly the uterosacral ligaments (not the tissue in front of or behind the cervix).
    canvas = Canvas(grid).add(Ellipsoid((0.0, yc, zc), (side_wall_mm, 24.0, half_z)))
    canvas.cut(Box((-7.0, yc - 40, zc - half_z - 1), (7.0, yc + 40, zc + half_z + 1)))
    return canvas.mask & ~exclude & ~core


def split_vagina(grid: Grid, vagina: np.ndarray, centre_line_mm, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split the whole vagina into (upper, lower) at ``fraction`` of its centre line's length.

    Args:
        grid: the patient's grid (anatomy-frame coordinates of each voxel).
        vagina: bool mask of the whole vagina (upper and lower), shape ``grid.shape``.
        centre_line_mm: polyline points (anatomy mm), from the cervix down to the introitus.
        fraction: 0-1; each voxel goes to the upper part when its projection onto the nearest
            segment lies less than ``fraction`` × length from the top (0: no upper part; 1: all).

    Returns:
        ``(upper, lower)`` bool masks, disjoint, whose union is ``vagina``.
    """
    upper = np.zeros(grid.shape, bool)
    box = box_slices(vagina, (0, 0, 0))
    if box is None or fraction <= 0.0:
        return upper, vagina.copy()
    if fraction >= 1.0:
        return vagina.copy(), upper
    inside = vagina[box]
    points = np.stack([c[inside] for c in grid.coords(box)], axis=1).astype(float)
    line = np.asarray(centre_line_mm, float)
    best_dist = np.full(len(points), np.inf)
    arc = np.zeros(len(points))
    start = 0.0
    for a, b in zip(line[:-1], line[1:]):
        d = b - a
        length = float(np.linalg.norm(d))
        t = np.clip((points - a) @ d / length**2, 0.0, 1.0)
        dist = np.linalg.norm(points - (a + t[:, None] * d), axis=1)
        nearer = dist < best_dist
        best_dist[nearer], arc[nearer] = dist[nearer], start + t[nearer] * length
        start += length
    sub = np.zeros(inside.shape, bool)
    sub[inside] = arc < fraction * start
    upper[box] = sub
    return upper, vagina & ~upper
