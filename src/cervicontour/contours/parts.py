"""Split a compound target (CTVn, CTVp) into its parts: one rule for ``fit``'s targets and ``predict``.

A hospital contours the compound masks only; the clinician still chooses parts per patient
(which nodal groups make the CTVn; the CTVp's Cervix, GTVp, Uterus, Vagina). A model's part
channels give, voxel by voxel, how probable each part is; :func:`partition_compound` turns them
into masks that are *exactly* a split of the compound:

* gross disease (GTVp, GTVn: :data:`~cervicontour.structures.GROSS_DISEASE`) takes the compound
  voxels where its probability reaches 0.5. Where no anatomical part reaches 0.5 there, the voxel
  is gross disease only (a tumour grown beyond the cervix, into the parametrial
  part of the CTVp, is GTVp there and no Cervix, as clinicians draw it);
* the anatomical parts (Cervix, Uterus, Vagina; LN_CommonIliac, LN_Pelvic, LN_ParaAortic) tile
  the rest of the compound without overlap: each voxel goes to its most probable one (a voxel
  where none is confident takes the choice of the nearest voxel where one is); elsewhere the gross
  disease lies *on* them (a tumour in the cervix is GTVp and Cervix).

So every part lies inside the compound and the parts' union is the compound, voxel for voxel.
Measured why (synthetic phantom seed 8484, 8 test patients, model 0.7.0): with the anatomical parts
tiling the whole compound, tumour-only voxels went to the Cervix (Dice 0.615 on a patient whose
GTVp lies half outside its cervix). "Gross disease more probable than every anatomical part" took
too much (Cervix 0.786 → 0.571: inside the cervix the network's GTVp often beats its Cervix).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cervicontour.structures import GROSS_DISEASE

#: Below this probability a voxel of the compound takes the anatomical part of the nearest voxel
#: that one reaches (a source's parts rarely reach the edge of a wider hospital margin).
PART_CONFIDENCE = 0.05


def partition_compound(compound: np.ndarray, part_probabilities: Mapping[str, np.ndarray], spacing_mm, *, confidence: float = PART_CONFIDENCE) -> dict[str, np.ndarray]:
    """Split a compound mask among its parts by the parts' probabilities (see the module docstring).

    The nearest confident voxel is sought inside the compound's bounding box (the arrays may be
    much larger). A source that is nowhere ``confidence``-confident inside the compound (an untrained or foreign
    one) lowers the bar to half its highest anatomical-part probability there, so its relative
    preferences still decide. With only gross-disease parts given, they are treated as anatomical.

    Args:
        compound: ``(X, Y, Z)`` binary mask.
        part_probabilities: part name → ``(X, Y, Z)`` probabilities on the same grid (the chosen
            parts only; order breaks ties).
        spacing_mm: voxel spacing, for the nearest-voxel distances.

    Returns:
        part name → bool mask: each inside ``compound``, their union ``compound``; the anatomical
        parts pairwise disjoint, covering the compound but its gross-disease-only voxels. With all
        probabilities zero, everything goes to the first anatomical part.

    Example:
        >>> c = np.ones((4, 1, 1), bool)
        >>> p = {"Cervix": np.array([.9, .2, 0, 0]), "Uterus": np.array([.1, .4, 0, 0]), "GTVp": np.array([.7, 0, 0, 0])}
        >>> p = {k: v[:, None, None] for k, v in p.items()}
        >>> {k: v.ravel().astype(int).tolist() for k, v in partition_compound(c, p, (1, 1, 1)).items()}
        {'Cervix': [1, 0, 0, 0], 'Uterus': [0, 1, 1, 1], 'GTVp': [1, 0, 0, 0]}
        >>> p["GTVp"] = np.array([.7, .8, 0, 0])[:, None, None]   # voxel 1: GTVp, and no anatomical part reaches 0.5
        >>> {k: v.ravel().astype(int).tolist() for k, v in partition_compound(c, p, (1, 1, 1)).items()}
        {'Cervix': [1, 0, 0, 0], 'Uterus': [0, 0, 1, 1], 'GTVp': [1, 1, 0, 0]}
    """
    names = list(part_probabilities)
    full = np.asarray(compound) > 0
    out = {n: np.zeros(full.shape, bool) for n in names}
    if not full.any() or not names:
        return out
    # the split works inside the compound's bounding box (the nearest confident voxel is sought
    # there): on a full-size CT the CTVp's box is a small part of the box of everything predicted
    where = np.argwhere(full)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(where.min(0), where.max(0)))
    inside = full[box]
    for n, mask in _split(inside, {n: np.asarray(part_probabilities[n])[box] for n in names}, spacing_mm, confidence).items():
        out[n][box] = mask
    return out


def _split(inside: np.ndarray, part_probabilities: Mapping[str, np.ndarray], spacing_mm, confidence: float) -> dict[str, np.ndarray]:
    """:func:`partition_compound` on the compound's box (``inside``: its non-empty mask there)."""
    from scipy import ndimage

    names = list(part_probabilities)
    out = {n: np.zeros(inside.shape, bool) for n in names}
    anatomical = [n for n in names if n not in GROSS_DISEASE] or names
    gross = [n for n in names if n not in anatomical]
    for n in gross:
        out[n] = inside & (np.asarray(part_probabilities[n]) >= 0.5)
    probs = np.stack([np.asarray(part_probabilities[n], np.float32) for n in anatomical])
    best = np.argmax(probs, axis=0)
    top = probs.max(axis=0)
    bar = min(confidence, 0.5 * float(top[inside].max()))
    confident = (top >= bar) & (top > 0)
    if not confident.any():
        out[anatomical[0]] = inside.copy()
        return out
    if not confident[inside].all():
        _, nearest = ndimage.distance_transform_edt(~confident, sampling=spacing_mm, return_indices=True)
        best = best[tuple(nearest)]  # every voxel takes the choice of its nearest confident voxel
    # gross disease where no anatomical part reaches 0.5: no anatomy there
    gross_only = np.logical_or.reduce([out[n] for n in gross]) & (top < 0.5) if gross else np.zeros(inside.shape, bool)
    for k, n in enumerate(anatomical):
        out[n] = inside & (best == k) & ~gross_only
    return out


__all__ = ["PART_CONFIDENCE", "partition_compound"]
