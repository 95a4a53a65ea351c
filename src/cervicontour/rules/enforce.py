"""Make predicted structures obey the rules, and say exactly what changed.

Inference calls :func:`enforce` on the model's per-structure probability maps. It thresholds
them, gives every voxel two structures may not share to the one with the higher probability,
and removes stray components, returning the masks and one :class:`Change` per edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cervicontour.errors import InputError
from cervicontour.rules.config import Rules
from cervicontour.rules.loader import default_rules
from cervicontour.boxes import box_slices
from cervicontour.rules.masks import FULL_CONNECTIVITY
from cervicontour.structures import STRUCTURES, canonical_name
from cervicontour.volume import Volume


@dataclass(frozen=True)
class Change:
    """One edit :func:`enforce` made.

    Attributes:
        rule: ``"overlap"`` (voxels given to another structure) or ``"components"`` (stray
            components removed).
        structure: the structure that lost voxels.
        voxels: how many voxels it lost.
        volume_cc: the same in cc.
        detail: in words, e.g. ``"12 voxels went to CTVp (higher probability)"``.
        other: for ``"overlap"``, the structure that kept them.
    """

    rule: str
    structure: str
    voxels: int
    volume_cc: float
    detail: str
    other: str | None = None


@dataclass(frozen=True)
class Enforced:
    """What :func:`enforce` returns: binary uint8 masks on the input grid and the edits made."""

    masks: dict[str, Volume]
    changes: tuple[Change, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def enforce(probabilities: Mapping[str, Volume], *, rules: Rules | None = None) -> Enforced:
    """Threshold predicted probabilities and resolve every rule violation the rules allow to fix.

    Steps, in order:

    1. a voxel is in a structure when its probability is ``>= rules.enforce.threshold``;
    2. a voxel in two structures whose overlap has a severity in ``rules.enforce.resolve`` goes to
       the one with the higher probability (ties: the structure first in the vocabulary); allowed
       overlaps (e.g. Parametrium with anything) are kept;
    3. every 26-connected component smaller than ``rules.enforce.min_component_cc`` is removed,
       except the largest; with ``limit_components``, only the ``max`` largest components of a
       structure that has a ``[[components]]`` rule are kept.

    Args:
        probabilities: structure name (any synonym) → probability Volume in ``[0, 1]``, all on
            one grid. Never modified.
        rules: default the packaged clinicians' rules.

    Returns:
        :class:`Enforced` with one mask per input structure (an all-below-threshold structure
        gives an all-zero mask) and the changes, in the order made.

    Raises:
        InputError: the volumes are not on one grid.

    Example:
        >>> p = np.zeros((6, 6, 6), np.float32); p[1:4, 1:4, 1:4] = 0.9
        >>> q = np.zeros((6, 6, 6), np.float32); q[2:5, 1:4, 1:4] = 0.7
        >>> out = enforce({"CTVp": Volume(p, (10, 10, 10)), "CTVn": Volume(q, (10, 10, 10))})
        >>> [(c.structure, c.voxels, c.other) for c in out.changes]
        [('CTVn', 18, 'CTVp')]
    """
    rules = rules or default_rules()
    cfg = rules.enforce
    if not probabilities:
        return Enforced({}, ())
    order = {name: i for i, name in enumerate(STRUCTURES)}
    items = sorted(((canonical_name(n), v) for n, v in probabilities.items()), key=lambda nv: order.get(nv[0], 1 << 30))
    names = [n for n, _ in items]
    grid = items[0][1]
    for name, vol in items[1:]:
        if not grid.same_grid(vol):
            raise InputError(
                f"probability map {name!r} is not on the grid of {names[0]!r}: "
                f"{'; '.join(grid.grid_differences(vol))}; resample the predictions onto one grid"
            )
    vcc = grid.voxel_volume_cc
    masks = {n: np.asarray(v.array) >= cfg.threshold for n, v in items}
    probs = {n: v.array for n, v in items}
    changes: list[Change] = []

    # ---- 2. contested voxels
    conflict = np.zeros((len(names), len(names)), dtype=bool)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                severity, _, _ = rules.overlap.rule_for(a, b)
                conflict[i, j] = severity is not None and severity in cfg.resolve
    if conflict.any():
        count = np.zeros(grid.shape, dtype=np.uint8)
        for n in names:
            count += masks[n]
        contested = np.nonzero(count >= 2)
        if contested[0].size:
            changes += _resolve(names, masks, probs, conflict, contested, vcc)

    # ---- 3. stray components
    for name in names:
        mask = masks[name]
        crop = box_slices(mask)
        if crop is None:
            continue
        labels, n = ndimage.label(mask[crop], structure=FULL_CONNECTIVITY)
        if n <= 1:
            continue
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        by_size = np.argsort(sizes, kind="stable")[::-1] + 1  # labels, largest first
        keep = {int(by_size[0])}
        limit = n
        rule = rules.component_rule(name)
        if cfg.limit_components and rule is not None:
            limit = max(rule.max, 1)
        for label in by_size[1:limit]:
            if sizes[label - 1] * vcc >= cfg.min_component_cc:
                keep.add(int(label))
        drop = [int(lab) for lab in by_size if int(lab) not in keep]
        if not drop:
            continue
        removed = np.isin(labels, drop)
        voxels = int(np.count_nonzero(removed))
        sub = mask[crop]
        sub[removed] = False
        changes.append(
            Change(
                "components", name, voxels, voxels * vcc,
                f"removed {len(drop)} of {n} components ({voxels} voxels, {voxels * vcc:.3f} cc): "
                f"smaller than {cfg.min_component_cc:g} cc"
                + (f" or beyond the {limit} largest" if limit < n else ""),
            )
        )

    out = {name: grid.with_array(masks[name].astype(np.uint8), structure=name) for name in names}
    return Enforced(out, tuple(changes))


def _resolve(names, masks, probs, conflict, contested, vcc) -> list[Change]:
    """Give contested voxels to the highest-probability structures that may share them.

    Per voxel, structures are visited best probability first; one is kept unless it conflicts with
    a structure already kept there. ``masks`` is edited in place (it is :func:`enforce`'s own copy).
    """
    k, n = len(names), contested[0].size
    held = np.stack([masks[name][contested] for name in names])  # (K, n)
    p = np.stack([np.asarray(probs[name][contested], dtype=np.float64) for name in names])
    p = np.where(held, p, -np.inf)
    rank = np.argsort(-p, axis=0, kind="stable")  # best first; ties keep vocabulary order
    kept = np.zeros_like(held)
    winner = np.full((k, n), -1, dtype=np.int64)
    columns = np.arange(n)
    for r in range(k):
        s = rank[r]
        active = held[s, columns]
        clash = conflict[s] & kept.T  # (n, K): kept structures that s may not share a voxel with
        blocked = clash.any(axis=1)
        keep = active & ~blocked
        kept[s[keep], columns[keep]] = True
        lost = active & blocked
        if lost.any():
            best = np.where(clash[lost], p[:, lost].T, -np.inf)
            winner[s[lost], columns[lost]] = np.argmax(best, axis=1)
    changes = []
    for i, name in enumerate(names):
        lost_here = held[i] & ~kept[i]
        if not lost_here.any():
            continue
        masks[name][tuple(c[lost_here] for c in contested)] = False
        for j in np.unique(winner[i, lost_here]):
            count = int(np.count_nonzero(winner[i, lost_here] == j))
            other = names[int(j)]
            changes.append(
                Change(
                    "overlap", name, count, count * vcc,
                    f"{count} voxels ({count * vcc:.3f} cc) went to {other} (higher probability; "
                    f"{name} and {other} may not overlap)",
                    other,
                )
            )
    return changes
