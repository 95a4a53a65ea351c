"""Check a set of structures against the rules: the same engine for labels and predictions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cervicontour.rules.config import Rules, paired_structures
from cervicontour.rules.loader import default_rules
from cervicontour.rules.findings import Finding
from cervicontour.rules.masks import (
    CroppedMask,
    describe_location,
    intersection,
    on_box,
    pair_name,
    to_cropped_masks,
    union_box,
)
from cervicontour.volume import Volume

_WORDS = {
    "anterior_of": ("anterior of", "posterior of"),
    "posterior_of": ("posterior of", "anterior of"),
    "left_of": ("to the patient's left of", "to the patient's right of"),
    "right_of": ("to the patient's right of", "to the patient's left of"),
    "superior_to": ("superior to", "inferior to"),
    "inferior_to": ("inferior to", "superior to"),
}


def check(
    structures: Mapping[str, Volume],
    *,
    rules: Rules | None = None,
    patient_id: str | None = None,
) -> list[Finding]:
    """Check structures against the clinicians' rules.

    Args:
        structures: name (any vocabulary synonym) → mask. Non-zero voxels are inside. The masks
            must share spacing and direction and lie on one lattice (origins a whole number of
            voxels apart), so bounding-box crops of one grid are fine. An empty mask is treated as
            absent (``validate`` reports it as ``mask.empty``); a rule whose structures are absent
            is skipped.
        rules: the rule set; default the packaged clinicians' rules.
        patient_id: copied into every finding.

    Returns:
        Findings with check ids ``rules.overlap``, ``rules.compound``, ``rules.position``,
        ``rules.laterality``, ``rules.components`` and ``rules.volume``; empty if every rule holds.

    Raises:
        InputError: the masks are not on one lattice.

    Example:
        >>> box = np.zeros((10, 10, 10), np.uint8); box[2:5, 2:5, 2:5] = 1
        >>> [f.check for f in check({"CTVn": Volume(box, (1, 1, 1)), "CTVp": Volume(box, (1, 1, 1))})]
        ['rules.overlap', 'rules.volume', 'rules.volume']
    """
    rules = rules or default_rules()
    masks = {n: m for n, m in to_cropped_masks(structures).items() if not m.empty}
    findings: list[Finding] = []
    findings += _overlaps(masks, rules)
    findings += _compounds(masks, rules)
    findings += _positions(masks, rules)
    findings += _laterality(masks, rules)
    findings += _components(masks, rules)
    findings += _volumes(masks, rules)
    return [f.with_patient(patient_id) for f in findings]


# --------------------------------------------------------------------------- rules
def _overlaps(masks: dict[str, CroppedMask], rules: Rules) -> list[Finding]:
    out = []
    for a, b in rules.overlap.pairs():
        if a not in masks or b not in masks:
            continue
        severity, tolerance_cc, why = rules.overlap.rule_for(a, b)
        if severity is None:
            continue
        shared, lo = intersection(masks[a], masks[b])
        voxels = int(np.count_nonzero(shared))
        cc = voxels * masks[a].lattice.voxel_volume_cc
        if voxels == 0 or cc <= tolerance_cc:
            continue
        where, where_mm = describe_location(shared, lo, masks[a].lattice)
        name = pair_name(a, b)
        first, second = name.split("/")
        tolerance = f" (tolerance {tolerance_cc:g} cc)" if tolerance_cc else ""
        out.append(
            Finding(
                "rules.overlap",
                None,
                name,
                severity,
                f"no shared voxels: {why}{tolerance}",
                f"{cc:.3f} cc ({voxels} voxels) in both {first} and {second}, {where}",
                f"correct {first} or {second} where they meet in the planning system; "
                "`cervicontour clean` cannot decide which structure a voxel belongs to",
                value=cc,
                unit="cc",
                where_mm=where_mm,
            )
        )
    return out


def _compounds(masks: dict[str, CroppedMask], rules: Rules) -> list[Finding]:
    out = []
    for rule in rules.compound:
        parts = [p for p in rule.parts if p in masks]
        if rule.name not in masks or not parts:
            continue
        members = [masks[rule.name], *(masks[p] for p in parts)]
        lo, hi = union_box(members)
        target = on_box(masks[rule.name], lo, hi)
        union = np.zeros_like(target)
        for p in parts:
            union |= on_box(masks[p], lo, hi)
        extra = target & ~union
        missing = union & ~target
        n_extra, n_missing = int(np.count_nonzero(extra)), int(np.count_nonzero(missing))
        vcc = masks[rule.name].lattice.voxel_volume_cc
        differ_cc = (n_extra + n_missing) * vcc
        if n_extra + n_missing == 0 or differ_cc <= rule.tolerance_cc:
            continue
        absent = [p for p in rule.parts if p not in masks]
        formula = " ∪ ".join(parts)
        note = f" ({', '.join(absent)} absent)" if absent else ""
        where, where_mm = describe_location(extra | missing, lo, masks[rule.name].lattice)
        out.append(
            Finding(
                "rules.compound",
                None,
                rule.name,
                rule.severity,
                f"{rule.name} = {formula}{note}" + (f" within {rule.tolerance_cc:g} cc" if rule.tolerance_cc else ""),
                f"{n_extra * vcc:.3f} cc ({n_extra} voxels) of {rule.name} lie outside its parts and "
                f"{n_missing * vcc:.3f} cc ({n_missing} voxels) of the parts lie outside {rule.name}; {where}",
                f"redraw {rule.name} as the union of {', '.join(parts)}, or correct the part that is wrong",
                value=differ_cc,
                unit="cc",
                where_mm=where_mm,
            )
        )
    return out


def _positions(masks: dict[str, CroppedMask], rules: Rules) -> list[Finding]:
    out = []
    for rule in rules.position:
        if rule.structure not in masks or rule.other not in masks:
            continue
        axis, sign = rule.axis_sign
        a, b = masks[rule.structure].centroid_mm, masks[rule.other].centroid_mm
        ahead = sign * (a[axis] - b[axis])
        if ahead > rule.margin_mm:
            continue
        yes, no = _WORDS[rule.relation]
        actual = (
            f"{rule.structure}'s centroid is {abs(ahead):.1f} mm {no if ahead < 0 else yes} {rule.other}'s"
            if ahead != 0
            else f"{rule.structure}'s and {rule.other}'s centroids are level"
        )
        out.append(
            Finding(
                "rules.position",
                None,
                f"{rule.structure}/{rule.other}",
                rule.severity,
                f"{rule.structure} {yes} {rule.other} by more than {rule.margin_mm:g} mm (centroids)",
                actual,
                f"check that {rule.structure} and {rule.other} are not swapped and that the image "
                "orientation is right (`cervicontour info` shows it)",
                value=ahead,
                unit="mm",
                where_mm=tuple((a + b) / 2),
            )
        )
    return out


def _laterality(masks: dict[str, CroppedMask], rules: Rules) -> list[Finding]:
    rule = rules.laterality
    out = []
    if not rule.enabled:
        return out
    for left, right in paired_structures():
        if left not in masks or right not in masks:
            continue
        a, b = masks[left].centroid_mm, masks[right].centroid_mm
        ahead = a[0] - b[0]  # LPS: +x is the patient's left
        if ahead > rule.margin_mm:
            continue
        out.append(
            Finding(
                "rules.laterality",
                None,
                f"{left}/{right}",
                rule.severity,
                f"{left} to the patient's left of {right} by more than {rule.margin_mm:g} mm (centroids)",
                f"{left}'s centroid is {abs(ahead):.1f} mm to the patient's {'right' if ahead < 0 else 'left'} of {right}'s",
                "the left/right labels are swapped or the image is mirrored: check the image "
                "orientation (`cervicontour info`) and the structure names",
                value=ahead,
                unit="mm",
                where_mm=tuple((a + b) / 2),
            )
        )
    return out


def _components(masks: dict[str, CroppedMask], rules: Rules) -> list[Finding]:
    out = []
    for rule in rules.components:
        if rule.structure not in masks:
            continue
        mask = masks[rule.structure]
        labels, sizes = mask.components()
        counts = sizes[1:]
        n = int(counts.size)
        if rule.min <= n <= rule.max:
            continue
        vcc = mask.lattice.voxel_volume_cc
        order = np.argsort(counts)[::-1]
        listed = ", ".join(f"{counts[i] * vcc:.2f}" for i in order[:6]) + (", ..." if n > 6 else "")
        smallest = int(order[-1]) + 1
        where, where_mm = describe_location(labels == smallest, mask.lo, mask.lattice)
        expected = f"{rule.min}" if rule.min == rule.max else f"{rule.min} to {rule.max}"
        out.append(
            Finding(
                "rules.components",
                None,
                rule.structure,
                rule.severity,
                f"{expected} connected component{'s' if rule.max != 1 else ''} (26-connected)",
                f"{n} components of {listed} cc; the smallest is {where}",
                f"remove stray islands of {rule.structure} or join its pieces in the planning system",
                value=n,
                unit="components",
                where_mm=where_mm,
            )
        )
    return out


def _volumes(masks: dict[str, CroppedMask], rules: Rules) -> list[Finding]:
    out = []
    for rule in rules.volume:
        if rule.structure not in masks:
            continue
        cc = masks[rule.structure].volume_cc
        if rule.min_cc <= cc <= rule.max_cc:
            continue
        out.append(
            Finding(
                "rules.volume",
                None,
                rule.structure,
                rule.severity,
                f"{rule.min_cc:g} to {rule.max_cc:g} cc",
                f"{cc:.2f} cc",
                f"check that this really is {rule.structure} and that the spacing in the header is right",
                value=cc,
                unit="cc",
                where_mm=tuple(masks[rule.structure].centroid_mm),
            )
        )
    return out
