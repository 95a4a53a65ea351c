"""Axial / coronal / sagittal PNG overlays in radiological display convention.

Axial: patient's right on the image's left, anterior at the top. Coronal: right on the left,
superior at the top. Sagittal: anterior on the left, superior at the top. Volumes are first
re-indexed to LPS (:func:`cervicontour.volume.to_lps`), so the picture is right whatever the
file's storage orientation, and pixels are drawn at their true aspect ratio in mm.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cervicontour.structures import COLOURS, PRIMARY
from cervicontour.volume import Volume, to_lps

WINDOW_HU = (-160.0, 240.0)  # soft-tissue window (W400 / L40)


def _views(array: np.ndarray, spacing: tuple[float, float, float], centre: tuple[int, int, int]):
    """(title, 2-D slice, extent) for axial, coronal, sagittal, from an LPS-indexed array."""
    i, j, k = centre
    sx, sy, sz = spacing
    nx, ny, nz = array.shape
    return [
        ("axial", array[:, :, k].T, (0, nx * sx, ny * sy, 0)),
        ("coronal", array[:, j, :].T[::-1], (0, nx * sx, 0, nz * sz)),
        ("sagittal", array[i, :, :].T[::-1], (0, ny * sy, 0, nz * sz)),
    ]


def _body_box(array: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the body (HU > -500) in-plane, so the picture is not mostly air."""
    inside = array > -500
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(inside.any(axis=other))
        if axis == 2 or hits.size == 0:
            box.append(slice(0, array.shape[axis]))
        else:
            box.append(slice(max(hits[0] - 5, 0), min(hits[-1] + 6, array.shape[axis])))
    return tuple(box)


def _cropped(volume: Volume, box: tuple[slice, ...]) -> Volume:
    origin = volume.index_to_world(np.array([b.start for b in box]))
    return Volume(volume.array[box], volume.spacing_mm, tuple(origin), volume.direction)


def _styles(masks) -> dict[str, tuple[str, str]]:
    """(colour, line style) per mask name: a name like ``"Bladder (reference)"`` takes its structure's
    colour; a second mask of the same structure is drawn dashed (reference vs prediction)."""
    out, seen = {}, set()
    for name in masks:
        base = name.split(" (")[0]
        out[name] = (COLOURS.get(base, "white"), "dashed" if base in seen else "solid")
        seen.add(base)
    return out


def render_overlay(
    image: Volume,
    masks: dict[str, Volume],
    path: str | os.PathLike,
    *,
    centre_on: str | None = "CTVp",
    title: str = "",
) -> Path:
    """Write a 1×3 PNG (axial, coronal, sagittal) with mask contours over the CT.

    Args:
        image: CT in HU.
        masks: structure name → binary mask on the image grid.
        path: output PNG (written atomically).
        centre_on: slices go through this structure's centroid (else the volume centre).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ct = to_lps(image)
    lps_masks = {n: to_lps(m) for n, m in masks.items()}
    body = _body_box(ct.array)
    ct = _cropped(ct, body)
    lps_masks = {n: _cropped(m, body) for n, m in lps_masks.items()}
    centre = tuple(s // 2 for s in ct.shape)
    if centre_on in lps_masks and lps_masks[centre_on].array.any():
        centre = tuple(int(round(c)) for c in np.argwhere(lps_masks[centre_on].array).mean(axis=0))
    style = _styles(masks)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), facecolor="black")
    views = _views(ct.array, ct.spacing_mm, centre)
    mask_views = {n: _views(m.array, m.spacing_mm, centre) for n, m in lps_masks.items()}
    for col, (name, plane, extent) in enumerate(views):
        ax = axes[col]
        ax.imshow(plane, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], extent=extent, interpolation="nearest")
        for structure, mviews in mask_views.items():
            mplane = mviews[col][1]
            if mplane.any():
                ax.contour(mplane.astype(float), levels=[0.5], colors=[style[structure][0]], linestyles=[style[structure][1]],
                           linewidths=1.2, extent=extent, origin="upper")
        ax.set_title(name, color="white")
        ax.axis("off")
    handles = [plt.Line2D([], [], color=style[n][0], linestyle=style[n][1], label=n) for n in masks]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), facecolor="black", labelcolor="white",
               frameon=False)
    orient = "axial/coronal: patient right on image left · sagittal: anterior on left"
    fig.suptitle(f"{title}\n{image!r}\n{orient}", color="white", fontsize=9)
    from cervicontour.io.atomic import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90, facecolor="black", format="png")
    finally:
        plt.close(fig)
    return path


def write_preview(case, path: str | os.PathLike) -> Path:
    """Overlay of a cohort case's primary structures (those it has)."""
    image = case.load_image()
    masks = {n: case.load_structure(n) for n in PRIMARY if n in case.structure_names}
    return render_overlay(image, masks, path, title=f"{case.patient_id} — {case.note or 'no note'}")
